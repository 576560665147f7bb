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


def _fit_predict_and_reload(method, tiny, workdir, caplog):
    train = tiny.sections(split="train")
    caplog.set_level(logging.INFO, logger="nclsm_utils")
    seg = get_segmenter(method, workdir=workdir, quick=True, device="cpu").fit(train)
    assert seg.source == "trained from scratch"
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
        assert n >= 1
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
    assert again.source == "trained from scratch"
    section = tiny.section("P02")
    np.testing.assert_array_equal(again.predict(section.image(), "IMC"), predictions["IMC/P02"])
    return seg


# ------------------------------------------------------------------------------ cellpose
def test_cellpose_quick_fit_predicts_and_caches(tiny, tmp_path, caplog, offline, empty_caches):
    seg = _fit_predict_and_reload("cellpose", tiny, tmp_path / "work", caplog)
    assert str(empty_caches["cellpose"] / "cyto3") in seg.unavailable_message()
    assert (seg.model_dir / cellpose_seg.WEIGHTS_FILE).is_file()

    # Cellpose's thresholds are PREDICT_ONLY: another value re-predicts with the same model
    assert predict_only_fields(seg.params) == [
        "tile_size", "tile_overlap", "min_fibre_fraction", "flow_threshold",
        "cellprob_threshold", "min_size", "eval_bsize", "background_level"]
    train = tiny.sections(split="train")
    strict = get_segmenter("cellpose", params={"cellprob_threshold": 3.0},
                           workdir=tmp_path / "work", quick=True, device="cpu")

    strict._fit = _no_training
    strict.fit(train)
    assert strict.model_dir == seg.model_dir and strict.cache_key() != seg.cache_key()
    section = tiny.section("P02")
    # a higher cell-probability threshold keeps fewer fibre pixels
    assert (np.count_nonzero(strict.predict(section.image(), "IMC"))
            < np.count_nonzero(seg.predict(section.image(), "IMC")))
    other = get_segmenter("cellpose", params={"learning_rate": 1e-3}, workdir=tmp_path / "work",
                          quick=True, device="cpu")
    assert other.model_dir != seg.model_dir and not other.has_cached_model(train)


def test_cellpose_require_without_weights_names_the_path(tiny, tmp_path, offline, empty_caches):
    seg = get_segmenter("cellpose", params=CellposeParams(pretrained="require"),
                        workdir=tmp_path / "work")
    with pytest.raises(PretrainedUnavailable) as info:
        seg.fit(tiny.sections(split="train"))
    message = str(info.value)
    assert str(empty_caches["cellpose"] / "cyto3") in message
    assert "\n" not in message and "CELLPOSE_LOCAL_MODELS_PATH" in message
    assert not (tmp_path / "work" / "models").exists()       # raised before any training

    missing = tmp_path / "nowhere" / "my-cyto3"
    seg = get_segmenter("cellpose", workdir=tmp_path / "work",
                        params=CellposeParams(pretrained="require", pretrained_model=str(missing)))
    with pytest.raises(PretrainedUnavailable, match="my-cyto3"):
        seg.fit(tiny.sections(split="train"))


def test_cellpose_drops_objects_on_empty_background(tmp_path):
    """Cellpose's masks pass the background filter StarDist's masks pass: an object on a black gap
    (mean membrane + mass signal under ``background_level``) is dropped, one on tissue kept,
    as are both with ``background_level=0`` (on the real S11 geometry this removed 15 false
    objects off the tissue)."""
    image = np.zeros((64, 96, 2), np.float32)
    image[:, :48, 1] = 0.6                                # tissue left, empty gap right
    masks = np.zeros((64, 96), np.int32)
    masks[10:40, 5:35] = 1
    masks[10:40, 60:90] = 2

    class FakeModel:
        def eval(self, *args, **kwargs):
            return masks.copy(), None, None

    seg = get_segmenter("cellpose", workdir=tmp_path)
    seg.model = FakeModel()
    labels = seg._predict_working(image, "IF")
    assert np.unique(labels).tolist() == [0, 1]
    assert np.count_nonzero(labels) == 900
    seg.params = dataclasses.replace(seg.params, background_level=0.0)
    assert np.unique(seg._predict_working(image, "IF")).tolist() == [0, 1, 2]


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


@pytest.mark.slow
def test_cellpose_fine_tunes_and_uses_local_pretrained_weights(tiny, tmp_path, offline,
                                                               empty_caches):
    """A CPnet of Cellpose's own widths saved as ``cyto3`` stands in for the real weights."""
    import torch
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(0)
    net = CPnet([2, *cellpose_seg.CELLPOSE_NBASE], 3, sz=3, mkldnn=False, max_pool=True,
                diam_mean=30.0)
    net.save_model(str(empty_caches["cellpose"] / "cyto3"))
    train = tiny.sections(split="train")
    seg = get_segmenter("cellpose", workdir=tmp_path / "a", quick=True, device="cpu").fit(train)
    assert seg.source == "fine-tuned"
    section = tiny.section("P02")
    labels = seg.predict(section.image(), "IMC")
    assert labels.shape == section.shape() and labels.dtype == np.uint32

    as_is = get_segmenter("cellpose", workdir=tmp_path / "b", device="cpu",
                          params=CellposeParams(finetune=False)).fit(train)
    assert as_is.source == "pretrained"
    assert as_is.model.diam_mean == pytest.approx(30.0)


# ------------------------------------------------------------------------------ stardist
def test_stardist_quick_fit_predicts_and_caches(tiny, tmp_path, caplog, offline, empty_caches):
    seg = _fit_predict_and_reload("stardist", tiny, tmp_path / "work", caplog)
    assert str(empty_caches["keras"]) in seg.unavailable_message()
    assert seg.input_mode == "membrane+mass"
    assert seg.model.config.n_channel_in == 2 and seg.model.config.n_rays == 32

    # a post-processing setting (PREDICT_ONLY) keeps the trained model and re-predicts;
    # a training setting makes another model
    train = tiny.sections(split="train")
    ridge = get_segmenter("stardist", params={"edge_mass": 0.0}, workdir=tmp_path / "work",
                          quick=True, device="cpu")
    assert {"edge_mass", "ridge_trim", "fill_fraction", "border_gap"} <= set(
        predict_only_fields(ridge.params))
    assert ridge.has_cached_model(train)

    ridge._fit = _no_training
    ridge.fit(train)
    assert ridge.model_dir == seg.model_dir and ridge.cache_key() != seg.cache_key()
    section = tiny.sections(split="test")[0]
    grown = int((seg.predict(section.image(), section.modality) > 0).sum())
    assert int((ridge.predict(section.image(), section.modality) > 0).sum()) < grown
    other = get_segmenter("stardist", params={"learning_rate": 1e-3}, workdir=tmp_path / "work",
                           quick=True, device="cpu")
    assert other.model_dir != seg.model_dir and not other.has_cached_model(train)


def _tiny_stardist(basedir):
    import keras
    from stardist.models import Config2D, StarDist2D

    keras.utils.set_random_seed(3)
    config = Config2D(n_rays=8, grid=(2, 2), n_channel_in=2, unet_n_depth=2,
                      unet_n_filter_base=8, train_patch_size=(32, 32), train_batch_size=2,
                      train_learning_rate=3e-3, train_reduce_lr=None, train_n_val_patches=2,
                      train_tensorboard=False, use_gpu=False)
    with stardist_seg._quiet():
        return StarDist2D(config, name="m", basedir=str(basedir))


def test_stardist_train_steps_gives_stardist_train_weights(tmp_path):
    """The plain loop is StarDist2D.train (same batches, loss, schedule): the same weights."""
    import keras

    rng = np.random.default_rng(0)
    labels = np.zeros((64, 64), np.int32)
    for i, (r, c) in enumerate([(12, 12), (12, 44), (44, 12), (44, 44), (28, 28)], 1):
        rr, cc = np.ogrid[:64, :64]
        labels[(rr - r) ** 2 + (cc - c) ** 2 < 81] = i
    image = np.stack([(labels == 0) * 0.8, (labels > 0) * 0.6], -1).astype(np.float32)
    image += rng.normal(0, 0.05, image.shape).astype(np.float32)
    xs, ys = [image, image[::-1].copy()], [labels, labels[::-1].copy()]

    def schedule(epoch):
        return 3e-3 * (1 - epoch / 3)

    reference = _tiny_stardist(tmp_path / "a")
    reference.prepare_for_training()
    reference.callbacks = [keras.callbacks.LearningRateScheduler(schedule)]
    with stardist_seg._quiet():
        reference.train(xs, ys, validation_data=(xs[:1], ys[:1]), epochs=3, steps_per_epoch=2)
    ours = _tiny_stardist(tmp_path / "b")
    history = stardist_seg.train_steps(ours, xs, ys, xs[:1], ys[:1], augmenter=None, epochs=3,
                                       steps_per_epoch=2, learning_rate=schedule)
    assert len(history["loss"]) == 3 and len(history["val_loss"]) == 1
    assert all(np.isfinite(history["loss"] + history["val_loss"]))
    for a, b in zip(reference.keras_model.get_weights(), ours.keras_model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(ours.keras_model.optimizer.learning_rate) == pytest.approx(schedule(2))


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
    assert seg.source == "fine-tuned" and seg.input_mode == "interior"
    section = tiny.section("S11")
    labels = seg.predict(section.image(), "IF")
    assert labels.shape == section.shape() and labels.dtype == np.uint32

    reloaded = get_segmenter("stardist", workdir=tmp_path / "a", quick=True, device="cpu")
    reloaded.fit(train)
    assert reloaded.source == "fine-tuned" and reloaded.input_mode == "interior"


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
