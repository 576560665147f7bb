"""The explorer: pure view/overlay/ring/count functions and the ipywidgets app driven programmatically.

Predictions are perturbed copies of the ground truth written where the pipeline caches them
(``<workdir>/predictions/<method>/<modality>_<id>.tiff`` and the per-fibre tables from
``metrics.evaluate`` in ``<workdir>/results/<method>/``), so no segmenter runs here. The
explorer notebook is executed headless with papermill on the same tiny data.
"""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ipywidgets")

from nclsm_utils import explore
from nclsm_utils import metrics  # noqa: E402
from nclsm_utils.dataset import Dataset  # noqa: E402
from nclsm_utils.explore import (EXTRA_COLOUR, GT_COLOUR, MISSED_COLOUR, Explorer,  # noqa: E402
                                 ExploreData, Region, downsample_image, downsample_labels,
                                 fibre_rings, label_boundaries, overlay, png_bytes,
                                 threshold_counts, view_sampling, worst_fibres, zoom_region)
from nclsm_utils.core.io import write_csv, write_tiff  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "06_explore.ipynb"


# ---------------------------------------------------------------------------- fixtures
def perturb(gt: np.ndarray, shift, drop: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = np.unique(gt)
    ids = ids[ids > 0]
    lookup = np.arange(int(gt.max()) + 1, dtype=np.uint32)
    lookup[rng.choice(ids, int(drop * len(ids)), replace=False)] = 0
    return np.roll(lookup[gt], shift, axis=(0, 1))


def cache_prediction(work: Path, method: str, section, pred: np.ndarray, table: bool = True):
    """Write a prediction (and its per-fibre table) as run_method caches them."""
    stem = f"{section.modality}_{section.id}"
    write_tiff(work / "predictions" / method / f"{stem}.tiff", pred.astype(np.uint32))
    (work / "predictions" / method / f"{stem}.json").write_text(json.dumps({"method": method}))
    if table:
        frame = metrics.evaluate(section.mask("myofibres"), pred, section.image(),
                                 half_width=section.half_width)
        frame.insert(0, "section", section.id)
        frame.insert(0, "modality", section.modality)
        frame.insert(0, "method", method)
        write_csv(work / "results" / method / f"{stem}.csv", frame)


@pytest.fixture(scope="module")
def cached(tiny_root, tmp_path_factory):
    """Tiny data + a workdir with methods ``shifted`` (3 sections), ``coarse`` (P02, S11 only)
    and ``empty`` (an empty mask on P02)."""
    work = tmp_path_factory.mktemp("explore") / "work"
    dataset = Dataset(tiny_root)
    for section in dataset.sections(ids=["P01", "P02", "S11"]):
        gt = section.mask("myofibres")
        cache_prediction(work, "shifted", section, perturb(gt, (1, 1), 0.1, 0))
        if section.id != "P01":
            cache_prediction(work, "coarse", section, perturb(gt, (3, -2), 0.25, 1))
    p02 = dataset.section("P02")
    cache_prediction(work, "empty", p02, np.zeros(p02.shape(), np.uint32))
    return tiny_root, work


def table_of(work: Path, method: str, key: str) -> pd.DataFrame:
    modality, section_id = key.split("/")
    return metrics.read_per_fibre_table(work / "results" / method / f"{modality}_{section_id}.csv")


@pytest.fixture()
def app(cached):
    data, work = cached
    return Explorer(data=data, workdir=work, methods=["shifted"], section="P02")


# ---------------------------------------------------------------------------- pure functions
def test_zoom_region_and_sampling_crop_first_then_downsample():
    assert zoom_region((1000, 1500)) == Region(0, 1000, 0, 1500)
    region = zoom_region((1000, 1500), zoom=4, centre=(1.0, 0.0))
    assert region == Region(750, 1000, 0, 375)
    assert view_sampling(Region(0, 12000, 0, 15000), 640) == (24, 1)
    assert view_sampling(Region(0, 150, 0, 100), 640) == (1, 4)
    labels = np.arange(200 * 300).reshape(200, 300)
    view = downsample_labels(labels, Region(50, 150, 100, 300), max_side=50)
    np.testing.assert_array_equal(view, labels[50:150:4, 100:300:4])  # exact labels, no mixing
    image = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    small = downsample_image(image, Region(50, 150, 100, 300), max_side=50)
    assert small.shape == view.shape + (3,) and small.dtype == np.uint8
    # area averaging: the mean brightness of the crop is kept
    assert abs(small.mean() - image[50:150, 100:300].mean()) < 1.0
    big = downsample_labels(labels[:20, :30], max_side=60)  # enlarged, pixels stay square
    assert big.shape == (40, 60) and (big[::2, ::2] == labels[:20, :30]).all()


def test_threshold_counts_by_hand_and_equal_to_summarise(cached):
    table = pd.DataFrame({"gt_id": [1, 2, 3, 4], "pred_id": [7, 8, 8, 0],
                          "matched": [True, True, True, False], "iou": [0.95, 0.85, 0.5, 0.0],
                          "n_pred": 5})
    c = threshold_counts(table, iou_threshold=0.8)
    assert (c["gt"], c["matched"], c["missed"], c["extra"], c["MF-A"]) == (4, 2, 2, 3, 3)
    assert c["A%"] == pytest.approx(200 / 3)
    assert threshold_counts(table, iou_threshold=0.9)["extra"] == 4
    assert threshold_counts(table, iou_threshold=0.0)["extra"] == 3  # 7 and 8 matched
    empty = threshold_counts(table.iloc[:0], n_pred=2, iou_threshold=0.8)
    assert (empty["gt"], empty["matched"], empty["extra"]) == (0, 0, 2) and np.isnan(empty["A%"])

    _, work = cached
    for method, key in (("shifted", "IMC/P02"), ("coarse", "IF/S11")):
        per_fibre = table_of(work, method, key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summary = metrics.summarise(per_fibre).iloc[0]
        for t in metrics.A_THRESHOLDS:
            counts = threshold_counts(per_fibre, iou_threshold=t)
            assert counts["A%"] == pytest.approx(summary[metrics.a_column(t)])
            assert counts["matched"] == int((per_fibre["matched"] & (per_fibre["iou"] > t)).sum())
            assert counts["missed"] == len(per_fibre) - counts["matched"]
        at_zero = threshold_counts(per_fibre, iou_threshold=0.0)
        assert at_zero["matched"] == summary["MF-A"]
        assert at_zero["extra"] == summary["unmatched predictions"]


def test_worst_fibres_lists_unmatched_then_ascending_iou():
    table = pd.DataFrame({"gt_id": [1, 2, 3, 4], "matched": [True, False, True, True],
                          "iou": [0.9, 0.0, 0.6, 0.75]})
    assert worst_fibres(table) == [2, 3, 4, 1]


def test_overlay_colours_contours_by_iou_and_highlights_missed_and_extra():
    image = np.full((40, 60, 3), 100, np.uint8)
    gt = np.zeros((40, 60), np.uint32)
    gt[5:15, 5:15] = 1      # matched with IoU 1.0
    gt[5:15, 25:35] = 2     # missed
    pred = np.zeros_like(gt)
    pred[5:15, 5:15] = 11
    pred[25:35, 40:50] = 12  # extra
    table = pd.DataFrame({"gt_id": [1, 2], "pred_id": [11, 0], "matched": [True, False],
                          "iou": [1.0, 0.0], "n_pred": 2})
    lut = explore.colour_lut("cool")
    rgb = overlay(image, gt, pred, table, iou_threshold=0.8, lut=lut, dim=1.0)
    assert tuple(rgb[5, 5]) == tuple(lut[-1])                 # predicted contour: IoU 1.0
    assert tuple(rgb[5, 25]) == GT_COLOUR                      # GT contour
    assert tuple(rgb[25, 40]) == EXTRA_COLOUR                  # unmatched prediction contour
    inside_missed = rgb[10, 30].astype(int)
    assert inside_missed[2] > 100 and inside_missed[0] < 100   # tinted blue
    assert (rgb[30, 45].astype(int)[:2] != 100).any()          # extra tinted
    assert tuple(rgb[10, 10]) == (100, 100, 100)               # a matched fibre is untouched
    assert tuple(rgb[2, 2]) == (100, 100, 100)
    # the threshold moves fibre 1 to missed / its prediction to extra
    strict = overlay(image, gt, pred, table, iou_threshold=0.8, lut=lut, dim=1.0)
    table.loc[0, "iou"] = 0.7
    loose = overlay(image, gt, pred, table, iou_threshold=0.8, lut=lut, dim=1.0)
    assert not np.array_equal(strict, loose)
    assert tuple(label_boundaries(gt)[5, 5:7]) == (True, True)
    assert png_bytes(rgb)[:8] == b"\x89PNG\r\n\x1a\n"
    assert MISSED_COLOUR[2] > MISSED_COLOUR[0]


def test_fibre_rings_are_the_metrics_rings(cached):
    data, work = cached
    dataset = Dataset(data)
    for key, k in (("IMC/P02", 2), ("IF/S11", 6)):
        section = dataset.section(key)
        gt, image = section.mask("myofibres"), section.image()
        pred = explore.read_array(work / "predictions" / "shifted" / f"{key.replace('/', '_')}.tiff")
        table = table_of(work, "shifted", key)
        thresholds = metrics.positive_thresholds(image)
        for _, row in table[table["matched"]].head(8).iterrows():
            rings = fibre_rings(gt, int(row["gt_id"]), k, image, thresholds)
            assert rings.half_width == k
            assert rings.membrane_included == pytest.approx(row["gt_membrane_included"], nan_ok=True)
            assert rings.mass_missed == pytest.approx(row["gt_mass_missed"], nan_ok=True)
            assert int(rings.filled.sum()) == row["gt_area"]
            other = fibre_rings(pred, int(row["pred_id"]), k, image, thresholds)
            assert other.membrane_included == pytest.approx(row["pred_membrane_included"],
                                                            nan_ok=True)
            assert other.mass_missed == pytest.approx(row["pred_mass_missed"], nan_ok=True)
        # the ring is a band of width k inside (AiB) and outside (AoB) the region
        rings = fibre_rings(gt, int(table["gt_id"].iloc[len(table) // 2]), k)
        assert not (rings.inner & rings.outer).any() and (rings.inner <= rings.filled).all()
        assert not (rings.outer & rings.filled).any()
        assert np.isnan(rings.membrane_included)
    assert fibre_rings(np.zeros((5, 5), np.uint8), 1, 2) is None


def test_view_cache_is_keyed_by_section_method_and_size(cached):
    data, work = cached
    store = ExploreData(data, work)
    section = store.dataset.section("P02")
    first = store.section_view(section, "shifted", max_side=128)
    misses = store.views.misses
    again = store.section_view(section, "shifted", max_side=128)
    assert store.views.misses == misses and store.views.hits >= 3
    assert again.image is first.image and again.pred is first.pred
    other = store.section_view(section, "coarse", max_side=128)
    assert other.image is first.image and other.pred is not first.pred
    assert store.section_view(section, "shifted", max_side=64).image.shape[0] == 64
    bounded = explore.ViewCache(max_bytes=1000)
    for i in range(5):
        bounded.put(i, np.zeros(400, np.uint8))
    assert len(bounded) == 2 and 4 in bounded and 0 not in bounded
    with pytest.raises(explore.MissingPrediction, match="no cached prediction of coarse"):
        store.prediction_path("coarse", store.dataset.section("P01"))


def _copy_without_overviews(work: Path, tmp_path: Path) -> Path:
    """A copy of the shared workdir without the overviews other tests wrote into it."""
    import shutil

    copy = shutil.copytree(work, tmp_path / "work")
    shutil.rmtree(copy / "overviews", ignore_errors=True)
    return copy


def _no_full_reads(monkeypatch, store=None):
    """Make every full-resolution read of ``store`` (image, masks, predictions) raise; of
    every store when ``store`` is None."""
    import nclsm_utils.core.dataset as dataset_module
    import nclsm_utils.explore.store as store_module

    def no_reads(*args, **kwargs):
        raise AssertionError("a full-resolution file was read")

    monkeypatch.setattr(dataset_module, "read_array", no_reads)
    monkeypatch.setattr(store_module, "read_array", no_reads)
    monkeypatch.setattr(dataset_module.Section, "image", no_reads)
    monkeypatch.setattr(dataset_module.Section, "mask", no_reads)
    monkeypatch.setattr(store if store is not None else store_module.ExploreData, "full",
                        no_reads)


def test_overviews_are_cached_on_disk_and_equal_the_in_memory_views(cached, tmp_path,
                                                                      monkeypatch):
    data, shared = cached
    work = _copy_without_overviews(shared, tmp_path)
    memory = ExploreData(data, work, overview_cache=False)
    section = memory.dataset.section("S11")
    expected = memory.section_view(section, "shifted", max_side=128)
    assert expected.image.shape == (128, 128, 3) and expected.gt.shape == (128, 128)
    assert not (work / "overviews").exists()  # nothing written without the cache

    first = ExploreData(data, work).section_view(section, "shifted", max_side=128)
    folder = work / "overviews" / "IF_S11"
    assert sorted(p.name for p in folder.iterdir()) == ["gt_128.npz", "image_128.npz",
                                                        "pred-shifted_128.npz"]
    # a fresh store (a new process) reads them without decoding any full-resolution file
    fresh = ExploreData(data, work)
    _no_full_reads(monkeypatch, fresh)
    assert fresh.shape(section) == (256, 256)  # from the TIFF header
    again = fresh.section_view(section, "shifted", max_side=128)
    for view in (first, again):
        for name in ("image", "gt", "pred"):
            got, want = getattr(view, name), getattr(expected, name)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    assert (again.step, again.up) == (2, 1) and not fresh.is_loaded(section, "image")
    # a zoom (a region smaller than the section) crops the full-resolution arrays
    zoom = Region(100, 132, 60, 92)
    with pytest.raises(AssertionError, match="full-resolution file was read"):
        fresh.view(section, "gt", zoom, max_side=128)
    monkeypatch.undo()
    gt = section.mask("myofibres")
    zoomed = fresh.view(section, "gt", zoom, max_side=128)
    assert zoomed.shape == (128, 128)  # 32 x 32 full-resolution pixels, each shown 4 x 4
    np.testing.assert_array_equal(zoomed[::4, ::4], gt[100:132, 60:92])
    image = fresh.view(section, "image", zoom, max_side=128)
    np.testing.assert_array_equal(image[::4, ::4], section.image()[100:132, 60:92])


def test_a_changed_file_rebuilds_its_overview_and_build_overviews_writes_all(cached, tmp_path):
    import os

    data, shared = cached
    work = _copy_without_overviews(shared, tmp_path)
    store = ExploreData(data, work, max_side=128)
    built = store.build_overviews()
    # 4 sections x (image, gt, thresholds) + predictions: shifted on 3 sections, coarse on 2,
    # empty on 1
    assert len(built) == 4 * 3 + 3 + 2 + 1 and set(built["status"]) == {"written"}
    assert set(built.loc[built["section"] == "IMC/P02", "layer"]) == {
        "image", "gt", "pred:shifted", "pred:coarse", "pred:empty", "thresholds"}
    assert all(Path(p).is_file() for p in built["path"]) and store._full == {}
    assert set(ExploreData(data, work).build_overviews(max_side=128)["status"]) == {"read"}
    # the thresholds are read back in a new process, equal to the whole image's percentiles
    s11 = store.dataset.section("S11")
    assert (work / "overviews" / "IF_S11" / "thresholds.npz").is_file()
    fresh = ExploreData(data, work)
    fresh.full = None  # any full-resolution read fails
    assert fresh.thresholds(s11) == metrics.positive_thresholds(s11.image())
    assert ExploreData(data, work, overview_cache=False)._thresholds(s11)[1] == "computed"

    # a re-run of a method (another prediction file) invalidates its overview only
    section = store.dataset.section("P02")
    path = store.prediction_path("coarse", section)
    old = ExploreData(data, work).overview(section, "pred:coarse", 128)
    new_pred = perturb(section.mask("myofibres"), (5, 5), 0.5, 7).astype(np.uint32)
    stat = path.stat()
    write_tiff(path, new_pred)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    fresh = ExploreData(data, work, max_side=128)
    assert fresh.read_overview(section, "pred:coarse") is None  # stale: not used
    assert fresh.read_overview(section, "pred:shifted") is not None
    view = fresh.overview(section, "pred:coarse")
    np.testing.assert_array_equal(view, downsample_labels(new_pred, max_side=128))
    assert not np.array_equal(view, old)
    np.testing.assert_array_equal(ExploreData(data, work).read_overview(
        section, "pred:coarse", 128), view)  # rewritten with the new key
    # a corrupt overview file is rebuilt, not an error
    gt_path = fresh.overview_path(section, "gt")
    gt_path.write_bytes(b"not an npz")
    np.testing.assert_array_equal(ExploreData(data, work).overview(section, "gt", 128),
                                  downsample_labels(section.mask("myofibres"), max_side=128))
    assert ExploreData(data, work).read_overview(section, "gt", 128) is not None


def test_app_opens_on_cached_overviews_without_full_resolution_reads(cached, tmp_path,
                                                                     monkeypatch):
    """A new app on a section with cached overviews (and tables) reads no full-resolution
    file; selecting a fibre then builds its panel from full-resolution crops."""
    from nclsm_utils.explore.views import _decode_png

    data, shared = cached
    work = _copy_without_overviews(shared, tmp_path)
    # first visit: the overviews are computed from the full-resolution arrays and written
    computed = Explorer(data=data, workdir=work, methods=["shifted"], section="S11")
    assert (work / "overviews" / "IF_S11" / "image_640.npz").is_file()
    assert computed.fibre_image.value == b""
    computed.store.build_overviews()  # every section, and the thresholds

    _no_full_reads(monkeypatch)
    app = Explorer(data=data, workdir=work, methods=["shifted"], section="S11")
    assert app.state["messages"] == [] and app.state["section"] == "IF/S11"
    assert app.image_a.value == computed.image_a.value  # the same picture, from the disk cache
    assert app.state["counts"]["shifted"] == computed.state["counts"]["shifted"]
    assert app.fibre_image.value == b"" and "full resolution" in app.fibre_info.value
    app.threshold.value = 0.9  # the controls work on the overview alone
    app.select(section="P02")  # a section switch reads nothing either
    app.select(section="S11")
    assert app.image_a.value != computed.image_a.value  # IoU > 0.9 tints more fibres
    with pytest.raises(AssertionError, match="full-resolution file was read"):
        app.store.full(app.current_section, "gt")
    monkeypatch.undo()

    section = app.current_section
    table = table_of(work, "shifted", "IF/S11")
    # the matched fibre nearest the centre (its window is not clipped by the section edge)
    matched = table[table["matched"] & (table["gt_id"] != app.fibre.value)]
    label = int(matched.loc[((matched["centroid_row"] - 128) ** 2
                             + (matched["centroid_col"] - 128) ** 2).idxmin(), "gt_id"])
    app.fibre.value = label  # selecting a fibre builds its panel at full resolution
    assert app.fibre_image.value[:4] == b"\x89PNG" and "Cannot show" not in app.fibre_info.value
    row = table.set_index("gt_id").loc[label]
    assert app.fibre_rows["shifted"]["pred_id"] == row["pred_id"]
    assert app.fibre_rows["shifted"]["iou"] == pytest.approx(row["iou"])
    assert f"{row['gt_membrane_included']:.3g}" in app.fibre_info.value \
        or f"{row['gt_membrane_included']:.1f}" in app.fibre_info.value
    # the GT panel is the full-resolution crop (dimmed), each pixel enlarged `up` times
    window, _ = app._fibre_plan(section, label)
    assert min(window.row0, window.col0) > 0 and window.row1 < 256 and window.col1 < 256
    up = max(1, 240 // max(window.height, window.width))
    shown = _decode_png(app.fibre_image.value)[:window.height * up, :window.width * up]
    image = section.image()
    expected = (image[window.slices].astype(np.float32) * 0.6).astype(np.uint8)
    for edge in (np.s_[0], np.s_[-1], np.s_[:, 0], np.s_[:, -1]):  # outside the rings
        np.testing.assert_array_equal(shown[::up, ::up][edge], expected[edge])
    assert app.store.thresholds(section) == metrics.positive_thresholds(image)


@pytest.mark.slow
def test_a_full_size_section_with_cached_overviews_opens_in_seconds(sample_dir, tmp_path,
                                                                    monkeypatch):
    """The real 12272 x 15129 S11 mask with an RGB PNG image: its overview comes from the
    on-disk cache within 5 s in a new store, and a new app shows it with its counts within
    5 s without any full-resolution read; a zoom on a fibre shows full-resolution pixels."""
    import os
    import time

    import cv2

    mask = sample_dir / "S11_groundtruth_mask.tiff"
    if not mask.is_file():
        pytest.skip(f"{mask} is missing")
    root, work = tmp_path / "data", tmp_path / "work"
    (root / "IF" / "Mask_All_Myofibres").mkdir(parents=True)
    os.symlink(mask, root / "IF" / "Mask_All_Myofibres" / "S11.tiff")
    (work / "predictions" / "same").mkdir(parents=True)
    os.symlink(mask, work / "predictions" / "same" / "IF_S11.tiff")
    gt = np.asarray(Dataset(root).section("S11").mask("myofibres"))
    rgb = np.zeros(gt.shape + (3,), np.uint8)
    rgb[..., 1] = (gt % 251).astype(np.uint8)           # OpenCV writes BGR: green as given
    rgb[..., 2] = np.where(label_boundaries(gt), 255, 0).astype(np.uint8)  # red: contours
    (root / "IF" / "Images").mkdir()
    assert cv2.imwrite(str(root / "IF" / "Images" / "S11.png"), rgb,
                       [cv2.IMWRITE_PNG_COMPRESSION, 1])
    del rgb

    first = ExploreData(root, work)
    section = first.dataset.section("S11")
    written = first.section_view(section, "same")  # decodes the files, writes the overviews
    assert written.image.shape == (512, 631, 3) and written.step == 24
    del first
    fresh = ExploreData(root, work)
    _no_full_reads(monkeypatch, fresh)
    start = time.perf_counter()
    shown = fresh.section_view(section, "same")
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0
    assert section.shape("image") == section.shape() == (12272, 15129)  # headers only
    for name in ("image", "gt", "pred"):
        np.testing.assert_array_equal(getattr(shown, name), getattr(written, name))
    np.testing.assert_array_equal(shown.gt, gt[::24, ::24])
    monkeypatch.undo()
    # a new app (the method's per-fibre table cached: every fibre matched with itself)
    ids = np.nonzero(np.bincount(gt.ravel()))[0][1:]
    write_csv(work / "results" / "same" / "IF_S11.csv",
              pd.DataFrame({"gt_id": ids, "pred_id": ids, "matched": True, "iou": 1.0,
                            "n_pred": len(ids)}))
    _no_full_reads(monkeypatch)
    start = time.perf_counter()
    app = Explorer(data=root, workdir=work, methods=["same"])
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, elapsed
    print(f"new app on the full-size section, overviews cached: {elapsed:.3f} s")
    assert app.state["section"] == "IF/S11" and app.state["messages"] == []
    assert app.state["counts"]["same"]["matched"] == len(ids) == 489
    assert app.image_a.value[:4] == b"\x89PNG" and app.panels["a"].rgb.shape == (512, 631, 3)
    assert app.fibre_image.value == b"" and len(app.fibre.options) == 489
    monkeypatch.undo()
    counts = np.bincount(gt[5000:7000, 7000:9000].ravel())
    ids = np.nonzero(counts)[0][1:]
    label = int(ids[np.argsort(counts[ids])[len(ids) // 2]])  # a fibre of median area there
    region = Region(*fresh.box(section, "gt", label))  # its bounding box, read at full size
    assert max(region.height, region.width) == 346
    zoomed = fresh.section_view(section, "same", region)
    assert (zoomed.step, zoomed.up) == (1, 1)  # every full-resolution pixel
    np.testing.assert_array_equal(zoomed.gt[::zoomed.up, ::zoomed.up], gt[region.slices])
    np.testing.assert_array_equal(zoomed.image[::zoomed.up, ::zoomed.up, 1],
                                  (gt[region.slices] % 251).astype(np.uint8))


# ---------------------------------------------------------------------------- the app
def test_app_opens_on_cached_predictions_and_counts_match_the_tables(app, cached):
    _, work = cached
    state = app.state
    assert state["section"] == "IMC/P02" and state["methods"] == ["shifted", "(none)"]
    assert state["messages"] == []
    assert app.image_a.value[:4] == b"\x89PNG"
    assert app.box_b.layout.display == "none"
    table = table_of(work, "shifted", "IMC/P02")
    expected = threshold_counts(table, iou_threshold=0.8)
    assert state["counts"]["shifted"] == expected
    assert f">{expected['matched']}<" in app.counts.value
    assert {"shifted", "coarse", "empty", "mitocyto", "unet"} <= set(app.method_a.options)


def test_threshold_slider_updates_counts_and_overlay(app, cached):
    _, work = cached
    table = table_of(work, "shifted", "IMC/P02")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = metrics.summarise(table).iloc[0]
    before = app.image_a.value
    seen = {}
    for t in (0.8, 0.9, 0.95):
        app.threshold.value = t
        counts = app.state["counts"]["shifted"]
        assert counts["A%"] == pytest.approx(summary[metrics.a_column(t)])
        assert counts["matched"] == int((table["matched"] & (table["iou"] > t)).sum())
        assert f"A%(IoU&gt;{t:.2f})" in app.counts.value or f"A%(IoU>{t:.2f})" in app.counts.value
        seen[t] = app.image_a.value
    assert seen[0.95] != before  # more fibres tinted as missed
    app.threshold.value = 0.0
    assert app.state["counts"]["shifted"]["matched"] == summary["MF-A"]


def test_switching_section_method_and_side_by_side(app, cached):
    _, work = cached
    p02 = app.image_a.value
    app.select(section="S11")
    state = app.state
    assert state["modality"] == "IF" and state["section"] == "IF/S11"
    assert app.image_a.value != p02
    assert state["counts"]["shifted"] == threshold_counts(table_of(work, "shifted", "IF/S11"),
                                                          iou_threshold=0.8)
    # the section dropdown works as a user would use it
    app.modality.value = "IMC"
    assert app.state["section"].startswith("IMC/")
    app.section.value = "IMC/P02"
    assert app.image_a.value == p02  # cached views, same picture
    # method A switch
    app.method_a.value = "coarse"
    assert app.state["counts"]["coarse"] == threshold_counts(table_of(work, "coarse", "IMC/P02"),
                                                             iou_threshold=0.8)
    coarse = app.image_a.value
    assert coarse != p02
    # two methods side by side on the same region
    app.method_b.value = "shifted"
    assert app.box_b.layout.display is None
    assert set(app.state["counts"]) == {"coarse", "shifted"}
    assert app.image_b.value == p02 and app.image_a.value == coarse
    assert app.panels["a"].rgb.shape == app.panels["b"].rgb.shape
    assert "<b>coarse</b>" in app.counts.value and "<b>shifted</b>" in app.counts.value
    # zoom and pan act on both panels
    app.zoom.value = 4.0
    region = app.state["region"]
    assert region[1] - region[0] == 48 and region[3] - region[2] == 48  # 192 / 4
    zoomed = app.image_a.value, app.image_b.value
    assert zoomed[0] != coarse and zoomed[1] != p02
    assert app.panels["a"].rgb.shape == app.panels["b"].rgb.shape
    app.centre_col.value = 0.9
    assert app.state["region"][3] > region[3] and app.image_a.value != zoomed[0]
    assert app.timings["refresh"] < 30  # recorded (speed is measured in the benchmark)


def test_selecting_a_fibre_shows_its_rings_and_metrics_row(app, cached):
    _, work = cached
    table = table_of(work, "shifted", "IMC/P02")
    ids = [v for _, v in app.fibre.options]
    assert ids == worst_fibres(table)  # worst first
    assert app.fibre.value in set(table.loc[table["matched"], "gt_id"])  # worst matched fibre
    # the fibre panel waits until a fibre is asked for
    assert app.fibre_image.value == b"" and "show fibre" in app.fibre_info.value
    assert app.fibre_rows == {} and "fibre" not in app.timings
    app.show_fibre_button.click()
    first = app.fibre_image.value
    assert first[:4] == b"\x89PNG"
    row = table.set_index("gt_id").loc[app.fibre.value]
    assert app.fibre_rows["shifted"]["iou"] == pytest.approx(row["iou"])
    best = ids[-1]
    app.fibre.value = best
    assert app.fibre_image.value != first
    row = table.set_index("gt_id").loc[best]
    shown = app.fibre_rows["shifted"]
    assert shown["pred_id"] == row["pred_id"] and shown["iou"] == pytest.approx(row["iou"])
    assert f">{best}<" in app.fibre_info.value
    assert f"{row['gt_membrane_included']:.1f}" in app.fibre_info.value \
        or f"{row['gt_membrane_included']:.3g}" in app.fibre_info.value
    app.fibre_order.value = "by id"
    assert [v for _, v in app.fibre.options] == sorted(ids) and app.fibre.value == best
    # zoom to a (small) fibre: the region shrinks around its centroid and selects it
    small = table.loc[table["matched"]].sort_values("gt_area").iloc[0]
    app.focus_fibre(int(small["gt_id"]))
    r0, r1, c0, c1 = app.state["region"]
    assert app.fibre.value == small["gt_id"] and app.zoom.value > 1
    assert (r1 - r0) < 192 and r0 <= small["centroid_row"] < r1
    assert c0 <= small["centroid_col"] < c1


def test_a_section_seen_before_is_shown_again_without_reading_its_files(app, monkeypatch):
    app.show_fibre()  # reads P02 at full resolution
    first = app.image_a.value, app.fibre_image.value
    second_fibre = app.fibre.options[1][1]  # among the prefetched fibres of P02
    app.select(section="S11", fibre=app.fibre.options[0][1])  # reads S11: P02's are dropped
    assert not app.store.is_loaded(app.store.dataset.section("P02"), "image")

    def no_reads(*args, **kwargs):
        raise AssertionError("a full-resolution file was read")

    monkeypatch.setattr(app.store, "full", no_reads)
    app.select(section="P02")
    assert app.image_a.value == first[0] and app.fibre_image.value == b""  # until asked for
    app.show_fibre()
    assert app.fibre_image.value == first[1]
    app.fibre.value = second_fibre  # its panel comes from the cached crops
    assert app.fibre_image.value[:4] == b"\x89PNG" and app.fibre_image.value != first[1]
    assert "Cannot show" not in app.fibre_info.value
    app.threshold.value = 0.9
    assert app.state["counts"]["shifted"]["threshold"] == 0.9


def test_missing_predictions_show_a_message_and_the_run_button(cached, tmp_path):
    import shutil

    data, shared = cached
    work = shutil.copytree(shared, tmp_path / "work")  # the run writes into it
    app = Explorer(data=data, workdir=work, methods=["shifted"], section="P02")
    app.method_a.value = "coarse"
    app.select(section="P01")  # coarse was not run on P01
    state = app.state
    assert state["missing"] == {"coarse": True}
    assert any("no cached prediction of coarse for IMC/P01" in m for m in state["messages"])
    assert app.run_a.layout.display is None and "Run coarse on P01" == app.run_a.description
    assert app.image_a.value[:4] == b"\x89PNG"  # the image with GT contours is still shown
    assert "Traceback" not in app.message.value

    calls = []

    def runner(method, dataset, sections, workdir, progress):
        calls.append((method, sections, Path(workdir)))
        section = dataset.section(sections[0])
        cache_prediction(Path(workdir), method, section,
                         perturb(section.mask("myofibres"), (2, 2), 0.2, 3))
        return type("Result", (), {"errors": {}})()

    app.runner = runner
    app.run_a.click()
    assert calls == [("coarse", ["P01"], work)]
    assert app.state["missing"] == {"coarse": False} and app.state["messages"] == []
    assert app.run_a.layout.display == "none"
    assert app.state["counts"]["coarse"] == threshold_counts(
        table_of(work, "coarse", "IMC/P01"), iou_threshold=app.threshold.value)

    def failing(method, dataset, sections, workdir, progress):
        raise RuntimeError("no GPU and no weights")

    app.runner = failing
    app.method_b.value = "unet"  # a method with no cached results at all
    assert any("unet has no cached predictions" in m for m in app.state["messages"])
    app.run_b.click()
    assert any("could not run" in m and "no GPU and no weights" in m for m in app.state["messages"])


def test_empty_masks_and_bad_input_give_messages_not_tracebacks(cached, tmp_path):
    data, work = cached
    app = Explorer(data=data, workdir=work, methods=["empty"], section="P02")
    state = app.state
    assert any("predicted no fibres" in m for m in state["messages"])
    counts = state["counts"]["empty"]
    assert (counts["matched"], counts["extra"], counts["missed"]) == (0, 0, counts["gt"])
    assert app.image_a.value[:4] == b"\x89PNG"

    # a section whose ground truth is empty
    empty_root = tmp_path / "empty-data"
    for role, array in (("Images", np.zeros((32, 32, 3), np.uint8)),
                        ("Mask_All_Myofibres", np.zeros((32, 32), np.uint16))):
        write_tiff(empty_root / "IMC" / role / "E01.tiff", array)
    empty_work = tmp_path / "empty-work"
    pred = np.zeros((32, 32), np.uint32)
    pred[4:12, 4:12] = 1
    cache_prediction(empty_work, "shifted", Dataset(empty_root).section("E01"), pred)
    app = Explorer(data=empty_root, workdir=empty_work, methods=["shifted"])
    assert any("has no fibres" in m for m in app.state["messages"])
    assert app.state["counts"]["shifted"]["extra"] == 1
    assert app.fibre.options == () and "No fibre" in app.fibre_info.value

    # a data folder that does not exist, then a good one through the Open button
    app = Explorer(data=tmp_path / "nowhere", workdir=work)
    assert app.store is None and "Cannot open the dataset" in app.message.value
    app.data_path.value, app.workdir_path.value = str(data), str(work)
    app.open_button.click()
    assert app.store is not None and app.state["counts"] and app.state["messages"] == []

    # an unknown section id is reported and the first section is shown instead
    app = Explorer(data=data, workdir=work, methods=["shifted"], section="X99")
    assert any("no section" in m and "X99" in m for m in app.state["messages"])
    assert app.state["section"] is not None


def test_external_masks_without_a_table_are_evaluated_on_the_fly(cached, tmp_path):
    data, work = cached
    section = Dataset(data).section("S11")
    pred = perturb(section.mask("myofibres"), (0, 2), 0.0, 5)
    write_tiff(tmp_path / "masks" / "S11.tif", pred.astype(np.uint16))
    method = f"external:{tmp_path / 'masks'}"
    app = Explorer(data=data, workdir=work, methods=[method], section="S11")
    expected = metrics.evaluate(section.mask("myofibres"), pred, section.image(),
                                half_width=section.half_width)
    assert app.state["counts"][method] == threshold_counts(expected, iou_threshold=0.8)
    app.select(section="P02")  # no mask for P02 in the folder: a message, no run button
    assert any("no mask for section IMC/P02" in m for m in app.state["messages"])
    assert app.run_a.layout.display == "none"


def test_snapshot_writes_png_and_html(app, tmp_path):
    app.method_b.value = "coarse"
    png = app.snapshot(tmp_path / "snap.png", tmp_path / "snap.html")
    assert png.read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "snap.html").read_text()
    assert "data:image/png;base64," in page and "shifted" in page and "coarse" in page
    bundle = app._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle and "text/html" in bundle


# ---------------------------------------------------------------------------- the notebook
def test_notebook_executes_headless_and_writes_the_snapshot(cached, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    papermill = pytest.importorskip("papermill")
    data, work = cached
    source = nbformat.read(str(NOTEBOOK), as_version=4)
    assert all(not c.get("outputs") for c in source.cells if c.cell_type == "code")
    params = papermill.inspect_notebook(str(NOTEBOOK))
    assert {"data", "workdir", "reports", "methods", "section"} <= set(params)
    assert params["data"]["default"].strip("'\"") == "../data"
    reports = tmp_path / "reports"
    out = tmp_path / "06_explore.ipynb"
    done = subprocess.run(
        [sys.executable, "-m", "papermill", str(NOTEBOOK), str(out), "-p", "data", str(data),
         "-p", "workdir", str(work), "-p", "reports", str(reports), "-y",
         "methods: [coarse, shifted]", "--no-progress-bar", "-k", "python3"],
        capture_output=True, text=True, cwd=NOTEBOOK.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    nb = nbformat.read(str(out), as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    kinds = {key for o in outputs for key in o.get("data", {})}
    assert {"application/vnd.jupyter.widget-view+json", "image/png", "text/html"} <= kinds
    assert (reports / "06_explore_snapshot.png").read_bytes()[:4] == b"\x89PNG"
    assert (reports / "06_explore_snapshot.html").is_file()
    text = json.dumps(nb)
    assert "coarse" in text and "shifted" in text
