"""Cellpose and StarDist segmenters: quick training, caching and the offline-pretrained policy.

Everything runs on the tiny synthetic NCL-SM (``tiny_root``: IMC P01/P02 192 px, IF S10/S11
256 px; train split P01, S10) with ``quick=True`` params, with the network blocked and the
pretrained-weight folders pointed at empty temporary folders, so the tests neither find a
user's weights nor could download any.
"""
from __future__ import annotations

import dataclasses
import logging
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from nclsm_utils.dataset import Dataset
from nclsm_utils.segmenters import PretrainedUnavailable, get_segmenter
from nclsm_utils.segmenters import cellpose_seg, stardist_seg
from nclsm_utils.segmenters.base import predict_only_fields
from nclsm_utils.segmenters.cellpose_seg import CellposeParams
from nclsm_utils.segmenters.stardist_seg import StarDistParams, interior_channel


@pytest.fixture(scope="module")
def tiny(tiny_root) -> Dataset:
    return Dataset(tiny_root)


@pytest.fixture
def offline(monkeypatch):
    """Fail any attempt to open a network connection."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point Cellpose's model folder and the Keras cache at empty folders."""
    cellpose_dir = tmp_path / "cellpose-models"
    keras_dir = tmp_path / "keras"
    cellpose_dir.mkdir()
    keras_dir.mkdir()
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(cellpose_dir))
    if "cellpose.models" in sys.modules:
        monkeypatch.setattr(sys.modules["cellpose.models"], "MODEL_DIR", cellpose_dir)
    monkeypatch.setattr(stardist_seg, "keras_cache_dirs", lambda: [keras_dir])
    return {"cellpose": cellpose_dir, "keras": keras_dir}


def _no_training(*args, **kwargs):
    """Stands in for ``_fit`` where a cached model must be loaded."""
    raise AssertionError("the cached model should have been loaded")


def _fit_predict_and_reload(method, tiny, workdir, caplog, expect_objects=True):
    train = tiny.sections(split="train")
    caplog.set_level(logging.INFO, logger="nclsm_utils")
    seg = get_segmenter(method, workdir=workdir, quick=True, device="cpu").fit(train)
    assert seg.source == "trained from scratch (no weights on disk)"
    # the one log line about the missing pretrained weights, naming where they were looked for
    lines = [r.getMessage() for r in caplog.records
             if r.name.endswith(f"{method}_seg") and "not found at" in r.getMessage()]
    assert len(lines) == 1 and "training from scratch" in lines[0]
    assert "\n" not in lines[0]

    predictions = {}
    for section in tiny.sections(split="test"):
        labels = seg.predict(section.image(), modality=section.modality)
        assert labels.dtype == np.uint32
        assert labels.shape == section.shape()
        n = int(labels.max())
        assert n >= 1 or not expect_objects
        assert set(np.unique(labels)) == set(range(n + 1))     # labels 1..N, no gaps
        predictions[section.key] = labels

    # a second fit with the same params and data loads the cached model, never retrains
    again = get_segmenter(method, workdir=workdir, quick=True, device="cpu")

    again._fit = _no_training
    fresh = get_segmenter(method, workdir=Path(workdir).parent / "elsewhere", quick=True, device="cpu")
    assert not fresh.has_cached_model(train)
    assert again.has_cached_model(train)
    again.fit(train)
    assert again.model_dir == seg.model_dir
    assert again.source == "trained from scratch (no weights on disk)"
    section = tiny.section("P02")
    np.testing.assert_array_equal(again.predict(section.image(), "IMC"), predictions["IMC/P02"])
    return seg


# ------------------------------------------------------------------------------ cellpose
def test_cellpose_quick_fit_predicts_and_caches(tiny, tmp_path, caplog, offline, empty_caches):
    # two epochs from scratch (still in train_seg's learning-rate warm-up) may find nothing
    seg = _fit_predict_and_reload("cellpose", tiny, tmp_path / "work", caplog,
                                  expect_objects=False)
    assert str(empty_caches["cellpose"] / "cyto3") in seg.unavailable_message()
    assert "nclsm models fetch cyto3" in seg.unavailable_message()
    assert (seg.model_dir / cellpose_seg.WEIGHTS_FILE).is_file()
    # Cellpose's own network: its default widths
    assert list(seg.model.nbase) == [2, 32, 64, 128, 256]
    # nothing of the toolkit's after the network: only the tiling and the (off) fragment filter
    assert predict_only_fields(seg.params) == ["tile_size", "tile_overlap", "min_fibre_fraction"]
    assert seg.params.min_fibre_fraction == 0
    train = tiny.sections(split="train")
    other = get_segmenter("cellpose", params={"n_epochs": 3}, workdir=tmp_path / "work",
                          quick=True, device="cpu")
    assert other.params.n_epochs == 2                   # the quick budget sets the epochs
    longer = get_segmenter("cellpose", workdir=tmp_path / "work", budget="report")
    assert longer.model_dir != seg.model_dir and not longer.has_cached_model(train)
    assert get_segmenter("cellpose", budget="full").params.n_epochs == 2000


def _working(seg, section):
    from nclsm_utils.core.imaging import working_image

    return working_image(section.image(), seg.scale_for(section.modality))



def _assert_library_labels(seg, section, working, direct, modality):
    """The row's labels at the working scale are the library's ``direct`` labels, and
    ``predict`` only brings them back to the image's pixels (the shared bilinear vote, then
    numbered 1..N)."""
    from nclsm_utils.core.imaging import resize_labels
    from nclsm_utils.segmenters.base import _fill_label_gaps

    ours = seg._predict_working(working, modality)
    assert int(direct.max()) >= 1
    np.testing.assert_array_equal(ours, direct)
    expected = _fill_label_gaps(resize_labels(direct.astype(np.uint32), section.shape(),
                                              order=1))
    np.testing.assert_array_equal(seg.predict(section.image(), modality), expected)


def test_plain_cellpose_is_cellpose_eval_label_for_label(tiny, tmp_path, offline, empty_caches):
    """The ``cellpose`` row is ``CellposeModel.eval`` at its defaults: the same labels as
    calling it directly on the working image, and ``predict`` only scales them back."""
    import torch

    seg = get_segmenter("cellpose", workdir=tmp_path, quick=True, device="cpu")
    seg.fit(tiny.sections(split="train"))
    # two epochs from scratch leave the cell probability below Cellpose's threshold: a
    # forward hook on the (one, shared) network gives it the output of a trained one, flows
    # up the smoothed fibre interior and a high probability inside fibres, so that the two
    # calls have masks to compare
    import torch.nn.functional as F

    def trained_like(module, inputs, output):
        x = inputs[0]
        interior = torch.relu(x[:, 1:2] - x[:, 0:1])
        smooth = interior
        for _ in range(6):
            smooth = F.avg_pool2d(smooth, 5, stride=1, padding=2, count_include_pad=False)
        dy, dx = torch.gradient(smooth[:, 0], dim=(1, 2))
        norm = torch.sqrt(dy ** 2 + dx ** 2) + 1e-6
        flows = torch.stack([5 * dy / norm, 5 * dx / norm, 12 * (interior[:, 0] - 0.25)], 1)
        return (flows.to(output[0].dtype), *output[1:])

    seg.model.net.register_forward_hook(trained_like)
    section = tiny.section("P02")
    working = _working(seg, section)
    direct, _, _ = seg.model.eval(working, channels=[1, 2], channel_axis=2,
                                  diameter=seg.params.target_diameter)
    _assert_library_labels(seg, section, working, direct, "IMC")


def test_cellpose_require_without_weights_names_the_path(tiny, tmp_path, offline, empty_caches):
    seg = get_segmenter("cellpose", params=CellposeParams(pretrained="require"),
                        workdir=tmp_path / "work")
    with pytest.raises(PretrainedUnavailable) as info:
        seg.fit(tiny.sections(split="train"))
    message = str(info.value)
    assert str(empty_caches["cellpose"] / "cyto3") in message
    assert "\n" not in message and "nclsm models fetch cyto3" in message
    assert not (tmp_path / "work" / "models").exists()       # raised before any training

    missing = tmp_path / "nowhere" / "my-cyto3"
    seg = get_segmenter("cellpose", workdir=tmp_path / "work",
                        params=CellposeParams(pretrained="require", pretrained_model=str(missing)))
    with pytest.raises(PretrainedUnavailable, match="my-cyto3"):
        seg.fit(tiny.sections(split="train"))


def test_cellpose_weights_found_by_existence_and_keyed(tmp_path, empty_caches):
    seg = get_segmenter("cellpose", workdir=tmp_path)
    seg.train_ids = ["IMC/P01"]
    assert not seg.pretrained_available()
    key = seg.cache_key()
    (empty_caches["cellpose"] / "cyto3").write_bytes(b"weights")
    assert seg.pretrained_available()
    assert seg.cache_key() != key                    # a model trained from cyto3 is another model
    never = get_segmenter("cellpose", params=CellposeParams(pretrained="never"), workdir=tmp_path)
    assert not never.pretrained_available()
    with pytest.raises(ValueError, match="pretrained"):
        get_segmenter("cellpose", params=CellposeParams(pretrained="maybe"))


def test_cellpose_optimizer_settings_reach_train_seg(tiny, tmp_path, monkeypatch, offline,
                                                     empty_caches):
    from cellpose import train

    seen = {}

    def stop(net, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stopped before training")

    sgd = get_segmenter("cellpose", params=CellposeParams(optimizer="sgd", learning_rate=0.2),
                        workdir=tmp_path, device="cpu")
    with monkeypatch.context() as patch, pytest.raises(RuntimeError, match="stopped before"):
        patch.setattr(train, "train_seg", stop)
        sgd.fit(tiny.sections(split="train"))
    assert seen["SGD"] is True and seen["learning_rate"] == 0.2
    assert "weight_decay" not in seen and seen["bsize"] == CellposeParams().bsize
    text = sgd.network_description()
    assert "SGD = True, learning_rate = 0.2" in text
    assert "SGD = False" not in text and "learning_rate = 0.005" not in text
    assert "learning_rate = 0.005" in get_segmenter("cellpose").network_description()
    assert get_segmenter("cellpose").optimizer_kwargs() == {}          # train_seg's own AdamW
    assert get_segmenter("cellpose", params=CellposeParams(
        optimizer="adamw", weight_decay=1e-4)).optimizer_kwargs() == {"SGD": False,
                                                                       "weight_decay": 1e-4}
    with pytest.raises(ValueError, match="optimizer must be one of None, sgd, adamw"):
        get_segmenter("cellpose", params=CellposeParams(optimizer="Adam"))


@pytest.mark.slow
def test_cellpose_fine_tunes_and_uses_local_pretrained_weights(tiny, tmp_path, offline,
                                                               empty_caches):
    """A CPnet of Cellpose's own widths saved as ``cyto3`` stands in for the real weights."""
    import torch
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(0)
    net = CPnet([2, 32, 64, 128, 256], 3, sz=3, mkldnn=False, max_pool=True, diam_mean=30.0)
    net.save_model(str(empty_caches["cellpose"] / "cyto3"))
    train = tiny.sections(split="train")
    seg = get_segmenter("cellpose", workdir=tmp_path / "a", quick=True, device="cpu").fit(train)
    assert seg.source == "fine-tuned from cyto3"
    section = tiny.section("P02")
    labels = seg.predict(section.image(), "IMC")
    assert labels.shape == section.shape() and labels.dtype == np.uint32

    as_is = get_segmenter("cellpose", workdir=tmp_path / "b", device="cpu",
                          params=CellposeParams(finetune=False)).fit(train)
    assert as_is.source == "pretrained cyto3 as is (no training)"
    assert as_is.model.diam_mean == pytest.approx(30.0)


# ------------------------------------------------------------------------------ stardist
def test_stardist_quick_fit_predicts_and_caches(tiny, tmp_path, caplog, offline, empty_caches):
    seg = _fit_predict_and_reload("stardist", tiny, tmp_path / "work", caplog)
    assert str(empty_caches["keras"]) in seg.unavailable_message()
    assert seg.input_mode == "membrane+mass"
    config = seg.model.config
    assert config.n_channel_in == 2 and config.n_rays == 32 and tuple(config.grid) == (2, 2)
    side = StarDistParams().train_patch_size
    assert config.unet_n_filter_base == 32 and tuple(config.train_patch_size) == (side, side)

    # stardist+refine shares the trained model and only adds the toolkit's steps
    train = tiny.sections(split="train")
    refine = get_segmenter("stardist+refine", workdir=tmp_path / "work", quick=True,
                           device="cpu")
    assert refine.has_cached_model(train)
    refine._fit = _no_training
    refine.fit(train)
    assert refine.model_dir == seg.model_dir and refine.cache_key() != seg.cache_key()
    assert refine.source == ("stardist trained from scratch (no weights on disk) + toolkit "
                             "post-processing")
    assert [s["step"].split(" ")[0] for s in refine.describe()["steps"]][:5] == [
        "membrane.refine_to_membrane", "membrane.grow_and_trim",
        "membrane.split_on_faint_membrane", "membrane.separate_touching", "remove_small"]
    with_filter = get_segmenter("stardist+refine", params={"background_level": 0.2})
    assert [s.name for s in with_filter.postprocessing()][3] == "membrane.drop_background_objects"

    assert seg.describe()["steps"][0]["step"].startswith("resize_labels")   # plain: nothing else
    section = tiny.sections(split="test")[0]
    refined = refine.predict(section.image(), section.modality)
    assert refined.shape == section.shape() and refined.max() >= 1
    assert get_segmenter("stardist", budget="full").params.epochs == 400


def test_plain_stardist_is_predict_instances_label_for_label(tiny, tmp_path, offline,
                                                             empty_caches):
    """The ``stardist`` row is ``StarDist2D.predict_instances``: the same labels as calling it
    directly on the working image, and ``predict`` only scales them back."""
    seg = get_segmenter("stardist", workdir=tmp_path, quick=True, device="cpu")
    seg.fit(tiny.sections(split="train"))
    section = tiny.section("S11")
    working = _working(seg, section)
    with stardist_seg._quiet():
        direct, _ = seg.model.predict_instances(working, axes="YXC",
                                                prob_thresh=seg.params.prob_thresh)
    _assert_library_labels(seg, section, working, direct, "IF")


def test_stardist_require_without_weights_names_the_path(tiny, tmp_path, offline, empty_caches):
    seg = get_segmenter("stardist", params=StarDistParams(pretrained="require"),
                        workdir=tmp_path / "work")
    with pytest.raises(PretrainedUnavailable) as info:
        seg.fit(tiny.sections(split="train"))
    message = str(info.value)
    assert str(empty_caches["keras"] / "models" / "StarDist2D" / "2D_versatile_fluo") in message
    assert "\n" not in message
    assert not (tmp_path / "work" / "models").exists()

    missing = tmp_path / "nowhere" / "my_versatile"
    seg = get_segmenter("stardist", workdir=tmp_path / "work",
                        params=StarDistParams(pretrained="require", pretrained_model=str(missing)))
    with pytest.raises(PretrainedUnavailable, match="my_versatile"):
        seg.fit(tiny.sections(split="train"))


def test_stardist_finds_keras3_cache_layout(tmp_path, empty_caches):
    seg = get_segmenter("stardist", workdir=tmp_path)
    seg.train_ids = ["IMC/P01"]
    assert seg.pretrained_path() is None
    key = seg.cache_key()
    folder = (empty_caches["keras"] / "models" / "StarDist2D" / "2D_versatile_fluo"
              / "2D_versatile_fluo_extracted")
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert seg.pretrained_path() is None                    # no weights file yet
    (folder / "weights_best.h5").write_bytes(b"")
    assert seg.pretrained_path() == folder
    assert seg.cache_key() != key
    never = get_segmenter("stardist", params=StarDistParams(pretrained="never"), workdir=tmp_path)
    assert never.pretrained_path() is None


def test_interior_channel_is_bright_inside_fibres():
    image = np.zeros((20, 20, 2), np.float32)
    image[..., 1] = 0.8                       # mass everywhere ...
    image[:, 9:11, 0] = 1.0                   # ... but a membrane line down the middle
    image[:, 9:11, 1] = 0.2
    interior = interior_channel(image)
    assert interior.shape == (20, 20, 1) and interior.dtype == np.float32
    assert interior[5, 3, 0] > 0.9 and interior[5, 9, 0] < 0.1


@pytest.mark.slow
def test_stardist_fine_tunes_local_versatile_model(tiny, tmp_path, offline, empty_caches):
    """A 1-channel StarDist model in the Keras-3 cache layout stands in for the real one."""
    from stardist.models import Config2D, StarDist2D

    base = empty_caches["keras"] / "models" / "StarDist2D" / "2D_versatile_fluo"
    config = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1, unet_n_filter_base=8,
                      train_tensorboard=False)
    fake = StarDist2D(config, name="2D_versatile_fluo_extracted", basedir=str(base))
    fake.keras_model.save_weights(str(base / "2D_versatile_fluo_extracted" / "weights_best.h5"))
    train = tiny.sections(split="train")
    seg = get_segmenter("stardist", workdir=tmp_path / "a", quick=True, device="cpu").fit(train)
    assert seg.source == "fine-tuned from 2D_versatile_fluo" and seg.input_mode == "interior"
    section = tiny.section("S11")
    labels = seg.predict(section.image(), "IF")
    assert labels.shape == section.shape() and labels.dtype == np.uint32

    reloaded = get_segmenter("stardist", workdir=tmp_path / "a", quick=True, device="cpu")
    reloaded.fit(train)
    assert reloaded.source == "fine-tuned from 2D_versatile_fluo" \
        and reloaded.input_mode == "interior"


def model_digest(method: str, data: str, workdir: str, seed: int = 0) -> str:
    """Train ``method`` (quick) on ``data``'s train split; SHA-256 of the weights' arrays and
    of a prediction of its first test section."""
    import hashlib

    dataset = Dataset(data)
    seg = get_segmenter(method, workdir=workdir, quick=True, device="cpu")
    seg.params = dataclasses.replace(seg.params, seed=seed)
    seg.fit(dataset.sections(split="train"))
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(seg.model_dir).rglob("*") if p.suffix in (".pt", ".h5")):
        if path.suffix == ".h5":   # the arrays (an HDF5 file's bytes hold more than them)
            import h5py

            with h5py.File(path, "r") as f:
                f.visititems(lambda name, obj: digest.update(name.encode() + obj[()].tobytes())
                             if isinstance(obj, h5py.Dataset) else None)
        else:
            digest.update(path.read_bytes())
    section = dataset.sections(split="test")[0]
    digest.update(seg.predict(section.image(), section.modality).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("method", ["cellpose", "stardist"])
def test_training_twice_gives_bit_identical_models(method, tiny_root, tmp_path):
    """Same seed, data, machine and thread count: the same weights and predictions bit for
    bit (issue 16's reproducibility statement), each training in a fresh process as the
    notebooks run it (TensorFlow's op seeds depend on what the process built before)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]

    def train_in(folder, seed=0):
        code = ("import sys; sys.path.insert(0, sys.argv[1]); "
                "from tests.test_cellpose_stardist import model_digest; "
                "print('DIGEST', model_digest(sys.argv[2], sys.argv[3], sys.argv[4], "
                "int(sys.argv[5])))")
        done = subprocess.run([sys.executable, "-c", code, str(root), method, str(tiny_root),
                               str(folder), str(seed)], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return [line for line in done.stdout.splitlines() if line.startswith("DIGEST")][-1]

    assert train_in(tmp_path / "a") == train_in(tmp_path / "b")
    # (another seed gives another model: tests/test_uncertainty.py, the seeds test)


def test_dimmed_copies_darken_a_share_of_fibres_mass_only():
    from nclsm_utils.segmenters.augment import COPY_SHARE, DIM_LEVEL, with_dimmed_copies

    labels = np.repeat(np.repeat(np.arange(1, 21, dtype=np.int32).reshape(4, 5), 6, 0), 6, 1)
    x = np.stack([np.full(labels.shape, 0.3), np.full(labels.shape, 0.8)], -1).astype(np.float32)
    pairs = with_dimmed_copies([(x, labels)] * 2, copies=2, seed=4)
    assert len(pairs) == 6 and pairs[0][0] is x and pairs[1][0] is x    # originals first
    for image, lab in pairs[2:]:
        assert lab is labels and np.all(image[..., 0] == np.float32(0.3))  # membrane untouched
        dimmed = [i for i in range(1, 21) if image[..., 1][labels == i].max() < 0.8]
        assert COPY_SHARE[0] * 20 - 1 <= len(dimmed) <= COPY_SHARE[1] * 20 + 1
        assert image[..., 1][np.isin(labels, dimmed)].max() <= DIM_LEVEL[1] * 0.8 + 1e-6
    assert np.any(pairs[2][0] != pairs[3][0])                # each copy its own draw
    assert with_dimmed_copies([(x, labels)], copies=0) == [(x, labels)]


def test_training_configuration_of_the_budgets():
    report, full = StarDistParams(), StarDistParams().full()
    assert (full.train_patch_size, full.epochs, full.steps_per_epoch) == (256, 400, 100)
    assert report.train_patch_size < 256 and report.dimmed_copies == full.dimmed_copies
    seg = get_segmenter("stardist", budget="report")
    assert seg._train_config() == {"train_patch_size": (report.train_patch_size,) * 2,
                                   "train_batch_size": 4, "train_learning_rate": 3e-4}
    assert f"{report.train_patch_size}-px patches, batch 4" in seg.network_description()
    assert "with 50-100 % of its fibres mass-dimmed" in seg.network_description()
    assert CellposeParams().full().bsize == 224 and CellposeParams().bsize < 224
    text = get_segmenter("cellpose", budget="report").network_description()
    assert f"bsize = {CellposeParams().bsize}" in text
    assert "with 20-50 % of its fibres mass-dimmed" in text
