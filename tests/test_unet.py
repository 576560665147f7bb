"""The U-Net segmenter: weight map, targets, instances, training caches and checkpoints.

Training runs use a tiny synthetic dataset and a tiny network (a few seconds on a CPU).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nclsm_utils.dataset import Dataset  # noqa: E402
from nclsm_utils.segmenters import SegmenterError, get_segmenter  # noqa: E402
from nclsm_utils.segmenters.base import predict_only_fields  # noqa: E402
from nclsm_utils.segmenters.unet import (UNet2Segmenter, UNetParams, UNetSegmenter,  # noqa: E402
                                         build_unet, class_targets, instances_three_class,
                                         instances_two_class, load_checkpoint, save_checkpoint,
                                         weight_map)

#: A tiny, fast configuration (tiny network, short pretraining on the "tiny" synthetic preset).
FAST = dict(base_channels=8, depth=3, crop=96, batch_size=4, pretrain_steps=3, finetune_steps=40,
            lr=5e-3, finetune_lr=5e-3, pretrain_preset="tiny", tta=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks train fastest on one thread (and do not fight other processes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def two_squares(gap: int = 2) -> np.ndarray:
    labels = np.zeros((20, 30), np.int32)
    labels[5:15, 5:13] = 1
    labels[5:15, 13 + gap:21 + gap] = 2
    return labels


# ----------------------------------------------------------------------------- targets
def test_class_targets_ring_interior_background():
    target = class_targets(two_squares())
    row = target[10]
    assert list(row[3:26]) == [0, 0, 2, 1, 1, 1, 1, 1, 1, 2, 0, 0, 2, 1, 1, 1, 1, 1, 1, 2, 0, 0, 0]
    assert (target == 2).sum() == 2 * (2 * 10 + 2 * 8 - 4)          # 1-px rings of 10 x 8 boxes
    thick = class_targets(two_squares(), boundary_width=2)
    assert (thick == 1).sum() == 2 * 6 * 4
    assert set(np.unique(class_targets(two_squares(), classes=2))) == {0, 1}


def test_weight_map_known_values():
    labels = two_squares(gap=2)
    w0, sigma = 10.0, 5.0
    weights = weight_map(labels, w0=w0, sigma=sigma)
    target = class_targets(labels)
    counts = np.bincount(target.ravel(), minlength=3)
    balance = counts.sum() / (3 * counts)                            # mean class weight 1
    # inside fibres: only the class weight
    assert weights[10, 8] == pytest.approx(balance[1])
    assert weights[10, 5] == pytest.approx(balance[2])
    assert np.isclose((balance[target]).mean(), 1.0)
    # in the 2-px gap: d1 = 1, d2 = 2 -> the maximum of the map
    expected_gap = balance[0] + w0 * np.exp(-(1 + 2) ** 2 / (2 * sigma ** 2))
    assert weights[10, 13] == pytest.approx(expected_gap, rel=1e-5)
    assert weights[10, 14] == pytest.approx(expected_gap, rel=1e-5)
    assert weights.max() == pytest.approx(expected_gap, rel=1e-5)
    assert set(np.argwhere(np.isclose(weights, weights.max()))[:, 1]) == {13, 14}
    # far from both squares the separation term vanishes (d1 + d2 ~ 30 px >> sigma)
    assert weights[10, 29] == pytest.approx(balance[0], abs=1e-3)
    # a wider gap weighs less; one fibre alone has no separation term
    assert weight_map(two_squares(gap=4), w0, sigma).max() < weights.max()
    single = np.where(labels == 1, 1, 0)
    assert weight_map(single, w0, sigma).max() == pytest.approx(
        weight_map(single, 0.0, sigma).max())


# ----------------------------------------------------------------------------- instances
def test_three_class_instances_split_touching_fibres():
    labels = two_squares(gap=2)
    target = class_targets(labels)
    prob = np.stack([(target == k).astype(np.float32) for k in range(3)])
    # blur the gap so that fibre + boundary probability joins the two fibres
    prob[2][5:15, 13:15] = 0.6
    prob[0][5:15, 13:15] = 0.4
    params = UNetParams(min_area_fraction=0.0)
    out = instances_three_class(prob, params)
    assert out.dtype == np.uint32 and out.max() == 2
    areas = np.bincount(out.ravel())[1:]
    assert areas.sum() == 80 + 80 + 20                              # the gap is shared out
    assert areas.min() >= 80
    assert len(np.unique(out[labels == 1])) == 1 and len(np.unique(out[labels == 2])) == 1


def test_two_class_instances_split_by_distance():
    yy, xx = np.mgrid[:80, :120]
    fg = ((yy - 40) ** 2 + (xx - 38) ** 2 < 18 ** 2) | ((yy - 40) ** 2 + (xx - 78) ** 2 < 18 ** 2)
    prob = np.stack([1.0 - fg, fg]).astype(np.float32)
    out = instances_two_class(prob, UNetParams(classes=2))
    assert out.max() == 2
    assert out[40, 38] != out[40, 78]
    assert (out > 0).sum() == fg.sum()


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_roundtrip(tmp_path):
    model = build_unet(base_channels=4, depth=2, groups=2)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model)
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["base_channels"] == 4 and "state_dict" in payload
    loaded = load_checkpoint(path, dict(model.config))
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tiny(tiny_root):
    dataset = Dataset(tiny_root)
    return dataset.sections()


@pytest.fixture(scope="module")
def fitted(tiny, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("unet")
    seg = get_segmenter("unet", params=UNetParams(**FAST), workdir=workdir, device="cpu")
    seg.fit(tiny)
    return seg


def test_fit_predicts_labels(fitted, tiny):
    assert isinstance(fitted, UNetSegmenter)
    assert set(fitted.history) == {"pretrain", "finetune"}
    assert fitted.source == "fine-tuned from the toolkit's synthetic pretraining"
    assert (fitted.pretrain_dir / "pretrained.pt").is_file()
    assert (fitted.workdir / "synthetic-pretrain-tiny-1001" / "synth_manifest.json").is_file()
    losses = fitted.history["finetune"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    section = tiny[0]
    image = section.image()
    labels = fitted.predict(image, modality=section.modality)
    assert labels.dtype == np.uint32 and labels.shape == image.shape[:2]
    assert labels.max() >= 1
    assert set(np.unique(labels)) == set(range(int(labels.max()) + 1))   # sequential labels


def test_second_fit_loads_cache(fitted, tiny):
    model_file = fitted.model_dir / "model.pt"
    mtime = model_file.stat().st_mtime_ns
    again = get_segmenter("unet", params=UNetParams(**FAST), workdir=fitted.workdir, device="cpu")
    again.fit(tiny)
    assert again.model_dir == fitted.model_dir
    assert again.history == {}                                  # nothing was trained
    assert model_file.stat().st_mtime_ns == mtime
    assert again.source == "fine-tuned from the toolkit's synthetic pretraining"
    for key, value in fitted.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key])
    image = tiny[0].image()
    np.testing.assert_array_equal(again.predict(image, "IMC"), fitted.predict(image, "IMC"))


def test_post_processing_setting_reuses_the_model(fitted, tiny):
    """Seed and area thresholds are PREDICT_ONLY: another value loads the trained model and
    re-predicts (new predictions key); a training setting makes another model."""
    assert predict_only_fields(fitted.params) == [
        "tile_size", "tile_overlap", "min_fibre_fraction", "tta", "seed_threshold",
        "area_threshold", "seed_opening", "distance_h", "min_area_fraction"]
    strict = get_segmenter("unet", params=UNetParams(**(FAST | {"seed_threshold": 0.7})),
                           workdir=fitted.workdir, device="cpu")

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should have been loaded")

    strict._fit = strict._pretrain = no_training
    strict.fit(tiny)
    assert strict.model_dir == fitted.model_dir and strict.cache_key() != fitted.cache_key()
    assert strict.history == {}
    assert strict.source == "fine-tuned from the toolkit's synthetic pretraining"
    image = tiny[0].image()
    loose, few = fitted.predict(image, "IMC"), strict.predict(image, "IMC")
    # a stricter seed threshold re-predicts: other objects (seeds are a subset, so the
    # watershed covers no more of the fibre + boundary area)
    assert few.max() >= 1 and not np.array_equal(few, loose)
    assert np.count_nonzero(few) <= np.count_nonzero(loose)
    other = get_segmenter("unet", params=UNetParams(**(FAST | {"w0": 5.0})),
                          workdir=fitted.workdir, device="cpu")
    assert not other.has_cached_model(tiny)


def test_pretrained_model_is_shared_by_finetunings(fitted, tiny):
    pretrained = fitted.pretrain_dir / "pretrained.pt"
    mtime = pretrained.stat().st_mtime_ns
    other = get_segmenter("unet", params=UNetParams(**(FAST | {"finetune_steps": 2})),
                          workdir=fitted.workdir, device="cpu")
    assert other.pretrain_dir == fitted.pretrain_dir and other.model_dir != fitted.model_dir
    other.fit(tiny)
    assert set(other.history) == {"finetune"}                   # pretraining was reused
    assert pretrained.stat().st_mtime_ns == mtime


def test_other_architecture_checkpoint_is_refused(fitted, tiny, tmp_path):
    path = tmp_path / "other_arch.pt"
    save_checkpoint(path, build_unet(base_channels=4, depth=2, groups=2))
    seg = get_segmenter("unet", params=UNetParams(**(FAST | {"checkpoint": str(path)})),
                        workdir=tmp_path, device="cpu")
    with pytest.raises(SegmenterError, match="other_arch.pt") as info:
        seg.fit(tiny)
    message = str(info.value)
    assert "\n" not in message and "another architecture" in message
    assert "'base_channels': 8" in message                      # says what was expected
    junk = tmp_path / "junk.pt"
    torch.save([1, 2, 3], junk)
    seg = get_segmenter("unet", params=UNetParams(**(FAST | {"checkpoint": str(junk)})),
                        workdir=tmp_path, device="cpu")
    with pytest.raises(SegmenterError, match="junk.pt"):
        seg.fit(tiny)


def test_user_checkpoint_is_used_instead_of_pretraining(fitted, tiny, tmp_path):
    source = fitted.model_dir / "model.pt"
    params = UNetParams(**(FAST | {"checkpoint": str(source), "finetune_steps": 0}))
    seg = get_segmenter("unet", params=params, workdir=tmp_path, device="cpu")
    seg.fit(tiny)
    assert seg.source == "fine-tuned from a user checkpoint"
    assert "pretrain" not in seg.history
    assert not (tmp_path / "models" / seg.pretrain_dir.name).exists()
    assert not any(tmp_path.glob("synthetic-pretrain*"))
    for key, value in fitted.model.state_dict().items():       # zero fine-tuning steps
        assert torch.equal(value, seg.model.state_dict()[key])
    # the checkpoint's content is part of the cache key
    assert seg.cache_key() != get_segmenter("unet", params=dataclasses.replace(
        params, checkpoint=None), workdir=tmp_path).cache_key()


def test_two_class_variant_is_registered(tiny, tmp_path):
    seg = get_segmenter("unet2", params=dataclasses.replace(
        UNet2Segmenter.Params(), **(FAST | {"pretrain_steps": 0})), workdir=tmp_path, device="cpu")
    assert isinstance(seg, UNet2Segmenter) and seg.params.classes == 2
    assert UNet2Segmenter.Params().classes == 2 and UNetSegmenter.Params().classes == 3
    seg.fit(tiny)
    assert seg.source == "trained from scratch"
    assert seg.model.config["classes"] == 2
    labels = seg.predict(tiny[0].image(), modality=tiny[0].modality)
    assert labels.dtype == np.uint32 and labels.max() >= 1


def test_training_is_deterministic(fitted, tiny, tmp_path):
    seg = get_segmenter("unet", params=UNetParams(**FAST), workdir=tmp_path, device="cpu")
    seg.fit(tiny)
    for key, value in fitted.model.state_dict().items():
        assert torch.allclose(value, seg.model.state_dict()[key], atol=1e-5)


def test_quick_params_are_short():
    quick = UNetParams().quick()
    assert quick.pretrain_steps < UNetParams().pretrain_steps
    assert quick.finetune_steps < UNetParams().finetune_steps


def test_drop_mass_dims_only_the_mass_channel_of_the_whole_crop():
    from nclsm_utils.segmenters.augment import DROP_LEVEL, drop_mass

    x = np.full((2, 8, 8), 0.8, np.float32)          # channels first, as the sampler's crops
    out = drop_mass(x, np.random.default_rng(1), probability=1.0, channel_axis=0)
    assert np.all(out[0] == np.float32(0.8))          # membrane untouched
    share = float(out[1, 0, 0]) / 0.8
    assert DROP_LEVEL[0] <= share <= DROP_LEVEL[1] and np.all(out[1] == out[1, 0, 0])
    kept = sum(drop_mass(x, np.random.default_rng(s), 0.3, channel_axis=0) is x
               for s in range(200))
    assert 120 <= kept <= 160                          # about 70 % of crops unchanged


def test_upweight_dark_weighs_only_fibres_darker_than_the_share_of_the_median():
    from nclsm_utils.segmenters.unet import DARK_RELATIVE, upweight_dark

    fibres = np.zeros((4, 12), np.int32)
    fibres[:, 0:3], fibres[:, 4:7], fibres[:, 8:11] = 1, 2, 3
    mass = np.where(fibres > 0, 0.6, 0.0).astype(np.float32)
    mass[fibres == 3] = 0.6 * DARK_RELATIVE * 0.9          # just under the share: dark
    weights = np.full((4, 12), 2.0, np.float32)
    out = upweight_dark(weights, mass, fibres, 4.0)
    assert np.all(out[fibres == 3] == 8.0) and np.all(out[fibres != 3] == 2.0)
    assert np.all(weights == 2.0)                          # input untouched
    mass[fibres == 3] = 0.6 * DARK_RELATIVE * 1.1           # just over: nothing weighed more
    assert np.all(upweight_dark(weights, mass, fibres, 4.0) == 2.0)
    assert upweight_dark(weights, mass, fibres, 1.0) is weights
