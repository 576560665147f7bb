"""Tests of the paper metrics (nclsm_utils.metrics) and Table II.

The vectorised :func:`evaluate` is compared with a slow, literal, whole-image
reference written here from the shared README's definitions (scipy only, no
crops, no OpenCV), on hand-built cases with known answers and on random label
images (hypothesis).
"""
from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage, stats

from nclsm_utils import metrics
from nclsm_utils.cli import main
from nclsm_utils.core.io import DataError, write_tiff
from nclsm_utils.metrics import (
    PER_FIBRE_COLUMNS, SUMMARY_COLUMNS, MetricWarning, aggregate_instance_metrics,
    channel_percentile, evaluate, instance_metrics, label_boxes, modality_half_width,
    positive_thresholds, read_per_fibre_csv, read_per_fibre_table, ring_masks, summarise,
)

PERCENT_COLUMNS = ["gt_membrane_included", "gt_mass_missed", "pred_membrane_included",
                   "pred_mass_missed"]
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------------------- reference
def reference_evaluate(gt, pred, image=None, k=None, match="gt_centroid") -> pd.DataFrame:
    """The README's definitions, literally: whole-image masks, one fibre at a time.

    ``match="pred_centroid"``: the direction the published notebook tests (the first
    predicted fibre whose centroid lies in the GT fibre's filled region)."""
    eight = np.ones((3, 3), bool)

    def filled(labels, label):
        # holes: background not 8-connected to the outside of the image
        return ndimage.binary_fill_holes(labels == label, structure=eight)

    gt_ids = [int(v) for v in np.unique(gt) if v]
    pred_ids = [int(v) for v in np.unique(pred) if v]
    pred_filled = {p: filled(pred, p) for p in pred_ids}

    def centroid(region):
        rr, cc = np.nonzero(region)
        return int(np.floor(rr.mean())), int(np.floor(cc.mean()))

    pred_centroid = {p: centroid(pred_filled[p]) for p in pred_ids}
    if image is not None:
        membrane_pos = image[..., 0] > np.percentile(image[..., 0], 85)
        mass_pos = image[..., 1] > np.percentile(image[..., 1], 75)
        square = np.ones((2 * k + 1, 2 * k + 1), bool)

    def percentages(region):
        # erosion: outside the image counts as region (cv2.erode's default border)
        inner = region & ~ndimage.binary_erosion(region, square, border_value=1)
        outer = ndimage.binary_dilation(region, square, border_value=0) & ~region
        membrane = 100.0 * np.sum(inner & membrane_pos) / np.sum(inner) if inner.any() else math.nan
        mass = 100.0 * np.sum(outer & mass_pos) / np.sum(outer) if outer.any() else math.nan
        return membrane, mass

    rows = []
    for g in gt_ids:
        region = filled(gt, g)
        r, c = centroid(region)
        if match == "gt_centroid":
            hit = next((p for p in pred_ids if pred_filled[p][r, c]), None)
        else:
            hit = next((p for p in pred_ids if region[pred_centroid[p]]), None)
        row = {"gt_id": g, "pred_id": 0, "matched": False, "iou": 0.0,
               "gt_area": int(region.sum()), "pred_area": 0, "centroid_row": r,
               "centroid_col": c, **{name: math.nan for name in PERCENT_COLUMNS},
               "n_gt": len(gt_ids), "n_pred": len(pred_ids)}
        if image is not None:
            row["gt_membrane_included"], row["gt_mass_missed"] = percentages(region)
        if hit is not None:
            other = pred_filled[hit]
            row.update(pred_id=hit, matched=True, pred_area=int(other.sum()),
                       iou=np.sum(region & other) / np.sum(region | other))
            if image is not None:
                row["pred_membrane_included"], row["pred_mass_missed"] = percentages(other)
        rows.append(row)
    return pd.DataFrame(rows, columns=PER_FIBRE_COLUMNS)


def assert_tables_equal(ours: pd.DataFrame, ref: pd.DataFrame):
    assert list(ours.columns) == PER_FIBRE_COLUMNS
    assert len(ours) == len(ref)
    if not len(ref):
        return
    for column in PER_FIBRE_COLUMNS:
        a, b = ours[column].to_numpy(), ref[column].to_numpy()
        if column in PERCENT_COLUMNS or column == "iou":
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=0, atol=1e-9,
                                       err_msg=column)
        else:
            np.testing.assert_array_equal(a, b, err_msg=column)


# ---------------------------------------------------------------------------- strategies
@st.composite
def label_images(draw, shape):
    """Rectangles (some touching or crossing the border, some with holes or a fibre
    inside a hole), reused labels (disconnected fibres) and a patch of pixel noise."""
    height, width = shape
    labels = np.zeros(shape, np.int32)
    for _ in range(draw(st.integers(0, 6))):
        r0 = draw(st.integers(-3, height - 1))
        c0 = draw(st.integers(-3, width - 1))
        h = draw(st.integers(1, height))
        w = draw(st.integers(1, width))
        label = draw(st.integers(1, 12))
        rs, cs = slice(max(r0, 0), max(r0 + h, 0)), slice(max(c0, 0), max(c0 + w, 0))
        labels[rs, cs] = label
        if h >= 5 and w >= 5 and draw(st.booleans()):
            inner = draw(st.sampled_from([0, 0, draw(st.integers(1, 12))]))
            labels[max(r0 + 2, 0):max(r0 + h - 2, 0), max(c0 + 2, 0):max(c0 + w - 2, 0)] = inner
    if draw(st.booleans()):
        r0, c0 = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
        patch = draw(st.lists(st.integers(0, 4), min_size=36, max_size=36))
        block = labels[r0:r0 + 6, c0:c0 + 6]
        block[...] = np.array(patch).reshape(6, 6)[:block.shape[0], :block.shape[1]]
    return labels


@st.composite
def cases(draw, with_image=True):
    shape = (draw(st.integers(3, 22)), draw(st.integers(3, 22)))
    gt = draw(label_images(shape))
    kind = draw(st.sampled_from(["independent", "shifted", "same", "empty"]))
    if kind == "independent":
        pred = draw(label_images(shape))
    elif kind == "shifted":
        dr, dc = draw(st.integers(-3, 3)), draw(st.integers(-3, 3))
        pred = np.roll(gt, (dr, dc), axis=(0, 1)) * draw(st.integers(1, 3))
    elif kind == "same":
        pred = gt.copy()
    else:
        pred = np.zeros_like(gt)
    image, k = None, None
    if with_image:
        seed = draw(st.integers(0, 2**32 - 1))
        top = draw(st.sampled_from([3, 255]))  # few levels: ties at the percentiles
        image = np.random.default_rng(seed).integers(0, top + 1, size=shape + (3,),
                                                     dtype=np.uint8)
        k = draw(st.integers(1, 3))
    return gt, pred.astype(draw(st.sampled_from([np.uint8, np.uint16, np.int32]))), image, k


# ---------------------------------------------------------------------------- properties
@SETTINGS
@given(cases())
def test_evaluate_matches_the_literal_reference(case):
    gt, pred, image, k = case
    assert_tables_equal(evaluate(gt, pred, image, half_width=k),
                        reference_evaluate(gt, pred, image, k))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_published_match_direction_matches_the_reference(case):
    gt, pred, image, k = case
    assert_tables_equal(evaluate(gt, pred, image, half_width=k, match="pred_centroid"),
                        reference_evaluate(gt, pred, image, k, match="pred_centroid"))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_scipy_fallback_equals_reference(case):
    """Without OpenCV (fill, erosion, dilation, histograms by scipy/numpy): same results."""
    gt, pred, image, k = case
    from nclsm_utils.core import imaging

    # every OpenCV call of the metrics reads one of these two names (histograms: imaging)
    saved = metrics._regions.cv2, imaging.cv2
    try:
        metrics._regions.cv2 = imaging.cv2 = None
        ours = evaluate(gt, pred, image, half_width=k)
    finally:
        metrics._regions.cv2, imaging.cv2 = saved
    assert_tables_equal(ours, reference_evaluate(gt, pred, image, k))


@settings(max_examples=30, deadline=None)
@given(cases(with_image=False))
def test_without_image_matching_and_iou_only(case):
    gt, pred, _, _ = case
    ours = evaluate(gt, pred)
    assert_tables_equal(ours, reference_evaluate(gt, pred))
    assert ours[PERCENT_COLUMNS].isna().all().all()


@SETTINGS
@given(shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
       dtype=st.sampled_from([np.uint8, np.uint16]), top=st.sampled_from([1, 5, 255, 65535]),
       q=st.sampled_from([0, 1, 25, 50, 75, 85, 99.9, 100]), seed=st.integers(0, 2**32 - 1))
def test_channel_percentile_is_numpy_percentile_exactly(shape, dtype, top, q, seed):
    top = min(top, np.iinfo(dtype).max)
    channel = np.random.default_rng(seed).integers(0, top + 1, size=shape).astype(dtype)
    assert channel_percentile(channel, q) == np.percentile(channel, q)


@SETTINGS
@given(shape=st.tuples(st.integers(0, 60), st.integers(1, 60)),
       dtype=st.sampled_from([np.uint8, np.uint16, np.uint32, np.int32, np.int64]),
       top=st.sampled_from([0, 1, 7, 300, 70_000, 2**31 - 1]), low=st.sampled_from([0, -3]),
       seed=st.integers(0, 2**32 - 1))
def test_label_values_is_numpy_unique_exactly(shape, dtype, top, low, seed):
    from nclsm_utils.core.imaging import label_values

    info = np.iinfo(dtype)
    low, top = max(low, int(info.min)), min(top, int(info.max))
    labels = np.random.default_rng(seed).integers(low, top + 1, size=shape).astype(dtype)
    values = label_values(labels)
    assert values.dtype == labels.dtype
    np.testing.assert_array_equal(values, np.unique(labels))
    # a view that is not contiguous (a crop of a larger mask)
    np.testing.assert_array_equal(label_values(labels[::2, 1:]), np.unique(labels[::2, 1:]))


def test_positive_thresholds_exact_and_chunked():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(300, 501, 3), dtype=np.uint8)
    assert positive_thresholds(image) == (np.percentile(image[..., 0], 85),
                                          np.percentile(image[..., 1], 75))
    floats = image.astype(np.float32) / 7
    assert positive_thresholds(floats) == (np.percentile(floats[..., 0], 85),
                                           np.percentile(floats[..., 1], 75))
    expected = np.bincount(image[..., 1].ravel(), minlength=256)
    for chunk in (1000, 501 * 7, 10**7):  # several row chunks, and one
        np.testing.assert_array_equal(metrics._counts(image, 1, 256, chunk_pixels=chunk),
                                      expected)
        np.testing.assert_array_equal(
            metrics._counts(image[..., 1], None, 256, chunk_pixels=chunk), expected)


@SETTINGS
@given(labels=label_images((17, 23)))
def test_label_boxes_match_find_objects(labels):
    boxes = label_boxes(labels, chunk_rows=5)
    ids = np.unique(labels)
    ids = ids[ids > 0]
    np.testing.assert_array_equal(boxes.ids, ids)
    objects = ndimage.find_objects(labels)
    for i, label in enumerate(ids):
        rows, cols = objects[label - 1]
        assert (boxes.row0[i], boxes.row1[i], boxes.col0[i], boxes.col1[i]) == \
            (rows.start, rows.stop, cols.start, cols.stop)
        assert boxes.area[i] == np.sum(labels == label)


# ---------------------------------------------------------------------------- known answers
def square(shape, rows, cols, label=1, dtype=np.uint16):
    labels = np.zeros(shape, dtype)
    labels[rows, cols] = label
    return labels


def test_two_offset_squares_exact_iou():
    gt = square((20, 20), slice(0, 10), slice(0, 10))
    pred = square((20, 20), slice(2, 12), slice(3, 13), label=9)
    table = evaluate(gt, pred)
    assert table["pred_id"].tolist() == [9]
    assert table["iou"].iloc[0] == 56 / 144  # 8 x 7 overlap, 100 + 100 - 56 union
    assert (table["centroid_row"].iloc[0], table["centroid_col"].iloc[0]) == (4, 4)  # floor 4.5


def test_ring_pixel_counts():
    region = square((20, 20), slice(5, 15), slice(5, 15)).astype(bool)
    inner, outer = ring_masks(region, 2)
    assert inner.sum() == 100 - 36 and outer.sum() == 14 * 14 - 100
    inner, outer = ring_masks(region, 1)
    assert inner.sum() == 100 - 64 and outer.sum() == 12 * 12 - 100


def test_rings_at_the_image_border_follow_cv2_erode():
    # a 10 x 10 square against the left edge: no inner ring along the edge
    region = square((20, 20), slice(5, 15), slice(0, 10)).astype(bool)
    inner, outer = ring_masks(region, 2)
    assert inner.sum() == 100 - 6 * 8
    assert outer.sum() == 14 * 12 - 100
    cv2 = pytest.importorskip("cv2")
    kernel = np.ones((5, 5), np.uint8)
    eroded = cv2.erode(region.astype(np.uint8), kernel)  # the published code's call
    assert inner.sum() == region.sum() - eroded.sum()


def test_percentages_on_a_hand_made_image():
    gt = square((20, 20), slice(5, 15), slice(5, 15))
    image = np.zeros((20, 20, 3), np.uint8)
    image[5, 5:15, 0] = 200   # 10 membrane pixels on the fibre's top row (inside AiB)
    image[4, 5:15, 1] = 90    # 10 mass pixels just above the fibre (inside AoB)
    image[10, 10, 1] = 90     # mass inside the fibre: not in AoB
    # thresholds: 85th percentile of R and 75th of G are 0 (fewer than 15 % positive)
    table = evaluate(gt, gt, image, half_width=2)
    row = table.iloc[0]
    assert row["gt_membrane_included"] == pytest.approx(100 * 10 / 64, abs=1e-12)
    assert row["gt_mass_missed"] == pytest.approx(100 * 10 / 96, abs=1e-12)
    assert row["pred_membrane_included"] == row["gt_membrane_included"]
    assert row["iou"] == 1.0


def test_holes_are_filled_for_matching_iou_and_area():
    gt = square((16, 16), slice(2, 12), slice(2, 12))
    pred = gt.copy()
    pred[5:8, 5:8] = 0  # the GT centroid (6, 6) falls in the prediction's hole
    table = evaluate(gt, pred)
    assert table["matched"].iloc[0] and table["iou"].iloc[0] == 1.0
    assert table["pred_area"].iloc[0] == 100


def test_first_fibre_wins_when_filled_regions_nest():
    ring = square((16, 16), slice(1, 15), slice(1, 15), label=1)
    ring[4:12, 4:12] = 0
    ring[6:10, 6:10] = 5  # fibre 5 inside fibre 1's hole
    gt = square((16, 16), slice(6, 10), slice(6, 10), label=3)
    assert evaluate(gt, ring)["pred_id"].tolist() == [1]
    swapped = np.where(ring == 1, 7, np.where(ring == 5, 2, 0)).astype(np.uint16)
    assert evaluate(gt, swapped)["pred_id"].tolist() == [2]


def test_unmatched_fibres_on_both_sides_and_concave_centroid():
    gt = np.zeros((30, 30), np.uint16)
    gt[2:8, 2:8] = 1                   # detected
    gt[20:28, 20:28] = 2               # nothing predicted there
    gt[12:18, 12:14] = 3               # a U whose centroid lies in its gap
    gt[16:18, 12:20] = 3
    gt[12:18, 18:20] = 3
    pred = np.zeros_like(gt)
    pred[2:8, 3:8] = 4
    pred[0:2, 25:30] = 6               # a prediction no GT fibre matches
    pred[gt == 3] = 8                  # the same U: its centroid is not inside it
    table = evaluate(gt, pred)
    assert table["pred_id"].tolist() == [4, 0, 0]
    assert table["iou"].tolist() == [30 / 36, 0.0, 0.0]
    with pytest.warns(MetricWarning, match="at least 2"):
        summary = summarise(table)
    assert summary["unmatched predictions"].iloc[0] == 2
    assert summary["detected %"].iloc[0] == 100 / 3


def test_match_directions_differ_on_merged_and_split_fibres():
    gt = np.zeros((20, 30), np.uint16)
    gt[5:15, 2:12], gt[5:15, 14:24] = 1, 2
    merged = np.zeros_like(gt)
    merged[5:15, 2:24] = 3               # one prediction over both GT fibres
    readme = evaluate(gt, merged)
    assert readme["pred_id"].tolist() == [3, 3]  # both GT centroids lie inside it
    published = evaluate(gt, merged, match="pred_centroid")
    assert published["pred_id"].tolist() == [0, 0]  # its centroid (9, 12) is in the gap
    split = np.zeros_like(gt)
    split[5:15, 2:6], split[5:15, 6:12] = 4, 5   # GT fibre 1 cut in two
    assert evaluate(gt, split)["pred_id"].tolist() == [5, 0]    # GT centroid (9, 6) is in 5
    # both halves' centroids, (9, 3) and (9, 8), lie in GT fibre 1: the lowest label wins
    assert evaluate(gt, split, match="pred_centroid")["pred_id"].tolist() == [4, 0]
    with pytest.raises(ValueError, match="match must be"):
        evaluate(gt, split, match="overlap")


def test_empty_masks():
    empty = np.zeros((8, 9), np.uint16)
    table = evaluate(empty, empty)
    assert list(table.columns) == PER_FIBRE_COLUMNS and len(table) == 0
    assert table["matched"].dtype == bool and table["iou"].dtype == float
    gt = square((8, 9), slice(1, 4), slice(1, 4))
    image = np.full((8, 9, 3), 7, np.uint8)
    table = evaluate(gt, empty, image, half_width=2)
    assert table["pred_id"].tolist() == [0] and not table["matched"].any()
    assert table[["pred_membrane_included", "pred_mass_missed"]].isna().all().all()
    assert table["gt_membrane_included"].iloc[0] == 0.0  # nothing above a flat threshold


def test_fibre_filling_the_image_has_empty_rings():
    full = np.ones((6, 6), np.uint8)
    table = evaluate(full, full, np.zeros((6, 6, 3), np.uint8), half_width=1)
    assert math.isnan(table["gt_membrane_included"].iloc[0])
    assert math.isnan(table["gt_mass_missed"].iloc[0])


def test_bool_masks_are_one_fibre():
    gt = square((10, 10), slice(2, 6), slice(2, 6)).astype(bool)
    assert evaluate(gt, gt)["iou"].tolist() == [1.0]


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize("gt, pred, image, k, message", [
    (np.zeros((4, 4), int), np.zeros((4, 5), int), None, None, "different shapes"),
    (np.zeros((4, 4), float), np.zeros((4, 4), int), None, None, "integer label image"),
    (np.zeros((4, 4), int), np.full((4, 4), -1), None, None, "negative"),
    (np.zeros((4, 4, 3), int), np.zeros((4, 4, 3), int), None, None, "2-D"),
    (np.zeros((4, 4), int), np.zeros((4, 4), int), np.zeros((4, 4)), 2, r"\(H, W, 3\)"),
    (np.zeros((4, 4), int), np.zeros((4, 4), int), np.zeros((4, 4, 4)), 2, r"\(H, W, 3\)"),
    (np.zeros((4, 4), int), np.zeros((4, 4), int), np.zeros((5, 4, 3)), 2, "same height"),
    (np.zeros((4, 4), int), np.zeros((4, 4), int), np.zeros((4, 4, 3)), None, "required"),
    (np.zeros((4, 4), int), np.zeros((4, 4), int), np.zeros((4, 4, 3)), 0, ">= 1"),
    (np.zeros((4, 4), int), np.zeros((4, 4), int), np.zeros((4, 4, 3)), -2, ">= 1"),
    (np.zeros((4, 4), int), np.zeros((4, 4), int), np.zeros((4, 4, 3)), 2.5, "integer"),
    (np.zeros((4, 4), int), np.zeros((4, 4), int), np.zeros((4, 4, 3)), True, "integer"),
])
def test_invalid_inputs_raise_value_error(gt, pred, image, k, message):
    with pytest.raises(ValueError, match=message):
        evaluate(gt, pred, image, half_width=k)


def test_modality_half_width():
    assert modality_half_width("IMC") == 2 and modality_half_width("IF") == 6
    with pytest.raises(ValueError, match="IMC, IF"):
        modality_half_width("EM")


# ---------------------------------------------------------------------------- summary
def published_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_published_csv_summary(sample_dir):
    path = sample_dir / "S11_qa_vs_groundtruth_per_fibre.csv"
    rows = published_rows(path)
    found = [r for r in rows if r["Fibre_Assess"] != "not_found"]
    ious = [float(r["IoU_Score_Assess_GT"]) for r in found]
    summary = summarise(read_per_fibre_csv(path)).iloc[0]
    assert summary["MF-A"] == len(found) == 10
    assert summary["mean IoU"] == pytest.approx(sum(ious) / len(ious), abs=1e-12)
    for t in (0.80, 0.90, 0.95):
        expected = 100 * sum(i > t for i in ious) / len(ious)
        assert summary[f"A%(IoU>{t:.2f})"] == expected
    assert summary["A%(IoU>0.95)"] == 80.0
    gt_mass = [float(r["GT_proportion_mito_mass_missed"]) for r in found]
    qa_mass = [float(r["Assess_proportion_mito_mass_missed"]) for r in found]
    gt_memb = [float(r["GT_proportion_membrane_included"]) for r in found]
    qa_memb = [float(r["Assess_proportion_membrane_included"]) for r in found]
    assert summary["r_AoB"] == pytest.approx(stats.pearsonr(gt_mass, qa_mass)[0], abs=1e-12)
    assert summary["r_AiB"] == pytest.approx(stats.pearsonr(gt_memb, qa_memb)[0], abs=1e-12)
    assert summary["GT fibres"] == len(rows) == 489
    assert summary["detected %"] == 100 * 10 / 489
    assert summary["unmatched predictions"] == 0


def test_read_published_csv_columns(sample_dir):
    table = read_per_fibre_csv(sample_dir / "S11_qa_vs_groundtruth_per_fibre.csv")
    assert list(table.columns) == PER_FIBRE_COLUMNS + ["section"]
    assert table["gt_id"].tolist() == list(range(1, 490))
    hit = table[table["gt_id"] == 127].iloc[0]  # published Fibre_GT 126 -> Fibre_Assess 0
    assert hit["matched"] and hit["pred_id"] == 1 and hit["iou"] == 0.9775649498656354
    missed = table[~table["matched"]]
    assert (missed["pred_id"] == 0).all() and missed["pred_mass_missed"].isna().all()
    with pytest.raises(DataError, match="missing column"):
        bad = sample_dir / "IF_fibre_shape_features_ntm.csv"
        read_per_fibre_csv(bad)


def test_summarise_cli_on_published_csv(sample_dir, capsys):
    path = sample_dir / "S11_qa_vs_groundtruth_per_fibre.csv"
    assert main(["summarise", str(path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    ious = [float(r["IoU_Score_Assess_GT"]) for r in published_rows(path)
            if r["Fibre_Assess"] != "not_found"]
    assert record["MF-A"] == 10
    assert record["mean IoU"] == pytest.approx(sum(ious) / 10, abs=1e-9)
    assert record["A%(IoU>0.95)"] == 80.0


def _table(gt_mass, pred_mass, iou=None):
    n = len(gt_mass)
    return pd.DataFrame({"gt_id": range(1, n + 1), "pred_id": range(1, n + 1),
                         "matched": True, "iou": iou or [0.9] * n,
                         "gt_mass_missed": gt_mass, "pred_mass_missed": pred_mass,
                         "gt_membrane_included": gt_mass, "pred_membrane_included": pred_mass})


def test_fewer_than_two_matched_gives_nan_r_with_warning():
    with pytest.warns(MetricWarning, match="at least 2"):
        summary = summarise(_table([1.0], [2.0]))
    assert summary["MF-A"].iloc[0] == 1
    assert math.isnan(summary["r_AoB"].iloc[0]) and math.isnan(summary["r_AiB"].iloc[0])
    assert summary["mean IoU"].iloc[0] == 0.9


def test_zero_variance_gives_nan_r_with_warning():
    with pytest.warns(MetricWarning, match="no variance"):
        summary = summarise(_table([1.0, 1.0, 1.0], [2.0, 3.0, 4.0]))
    assert math.isnan(summary["r_AoB"].iloc[0])


def test_nothing_matched():
    table = evaluate(square((8, 8), slice(0, 3), slice(0, 3)), np.zeros((8, 8), np.uint8))
    with pytest.warns(MetricWarning):
        summary = summarise(table)
    assert summary["MF-A"].iloc[0] == 0 and summary["detected %"].iloc[0] == 0
    assert math.isnan(summary["mean IoU"].iloc[0])
    assert math.isnan(summary["A%(IoU>0.80)"].iloc[0])


def test_summarise_pools_sections_and_matches_scipy():
    a = _table([1.0, 4.0, 2.0], [1.5, 3.0, 2.5], iou=[0.81, 0.99, 0.85]).assign(n_pred=5)
    b = _table([7.0, 0.5], [6.0, 1.0], iou=[0.96, 0.91]).assign(n_pred=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pooled = summarise([a, b]).iloc[0]
    both = pd.concat([a, b])
    assert list(summarise([a, b]).columns) == SUMMARY_COLUMNS
    assert pooled["MF-A"] == 5
    assert pooled["r_AoB"] == pytest.approx(
        stats.pearsonr(both["gt_mass_missed"], both["pred_mass_missed"])[0], abs=1e-12)
    assert pooled["mean IoU"] == pytest.approx(np.mean([0.81, 0.99, 0.85, 0.96, 0.91]))
    assert pooled["A%(IoU>0.90)"] == 60.0 and pooled["A%(IoU>0.95)"] == 40.0
    assert pooled["unmatched predictions"] == (5 - 3) + (2 - 2)
    concatenated = summarise(pd.concat([a.assign(section="A"), b.assign(section="B")]))
    assert concatenated["unmatched predictions"].iloc[0] == 2


def test_our_csv_round_trip_and_evaluate_cli(tmp_path, capsys):
    gt = np.zeros((40, 40), np.uint16)
    gt[2:12, 2:12], gt[20:35, 15:30], gt[25:38, 0:8] = 1, 2, 3
    pred = np.zeros_like(gt)
    pred[3:12, 2:13], pred[21:35, 16:31] = 5, 6
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    write_tiff(tmp_path / "gt.tiff", gt)
    write_tiff(tmp_path / "pred.tiff", pred)
    write_tiff(tmp_path / "image.tiff", image)
    out = tmp_path / "per_fibre.csv"
    assert main(["evaluate", "--gt", str(tmp_path / "gt.tiff"), "--pred",
                 str(tmp_path / "pred.tiff"), "--image", str(tmp_path / "image.tiff"),
                 "--modality", "IMC", "--out", str(out)]) == 0
    assert "3 GT fibres, 2 matched" in capsys.readouterr().out
    expected = evaluate(gt, pred, image, half_width=2)
    read_back = read_per_fibre_table(out)
    assert_tables_equal(read_back[PER_FIBRE_COLUMNS], expected)
    pd.testing.assert_frame_equal(summarise(read_back), summarise(expected))
    assert main(["summarise", str(out), str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["MF-A"] == 4
    assert main(["evaluate", "--gt", str(tmp_path / "gt.tiff"), "--pred",
                 str(tmp_path / "image.tiff"), "--out", str(out), "--modality", "IF"]) == 2
    assert "label mask" in capsys.readouterr().err


# ---------------------------------------------------------------------------- instance metrics
def test_instance_metrics_known_counts():
    gt = np.zeros((40, 40), np.uint16)
    gt[0:10, 0:10], gt[20:30, 0:10], gt[20:30, 20:30] = 1, 2, 3
    pred = np.zeros_like(gt)
    pred[0:10, 0:10] = 7                # exact: IoU 1
    pred[20:30, 2:12] = 8               # IoU 80 / 120 = 0.667
    pred[0:5, 30:35] = 9                # spurious
    table = instance_metrics(gt, pred, thresholds=[0.5, 0.7])
    assert table[["tp", "fp", "fn"]].to_numpy().tolist() == [[2, 1, 1], [1, 2, 2]]
    assert table["AP"].tolist() == [2 / 4, 1 / 5]
    assert table["precision"].tolist() == [2 / 3, 1 / 3]
    assert table["PQ"].iloc[0] == pytest.approx((1 + 80 / 120) / (2 + 0.5 + 0.5))
    assert table["f1"].iloc[1] == pytest.approx(2 / 6)
    default = instance_metrics(gt, pred)
    assert default["thresh"].tolist() == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_instance_metrics_equal_stardist_matching(seed):
    """Numpy overlap + assignment give stardist.matching's numbers, big sparse labels too."""
    from skimage.segmentation import watershed
    from stardist.matching import matching

    rng = np.random.default_rng(seed)
    shape = (120, 150)
    markers = np.zeros(shape, np.int32)
    points = rng.integers(0, 120, (40, 2))
    markers[points[:, 0], np.minimum(points[:, 1] * 150 // 120, 149)] = np.arange(1, 41)
    gt = watershed(np.zeros(shape), markers).astype(np.uint32)
    gt[rng.random(shape) < 0.02] = 0
    shifted = np.roll(gt, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
    pred = np.where(shifted > 0, shifted * 1_000 + 70_000, 0).astype(np.uint32)
    pred[pred == pred.max()] = 0                                   # a missed fibre
    thresholds = [0.1, 0.5, 0.75, 0.9]
    ours = instance_metrics(gt, pred, thresholds)
    for row, ref in zip(ours.itertuples(), matching(gt, pred, thresh=thresholds)):
        assert (row.tp, row.fp, row.fn, row.n_true, row.n_pred) == (
            ref.tp, ref.fp, ref.fn, ref.n_true, ref.n_pred)
        assert row.mean_matched_score == pytest.approx(ref.mean_matched_score, rel=1e-6)
        assert row.PQ == pytest.approx(ref.panoptic_quality, rel=1e-6)


def test_label_overlap_counts_in_chunks():
    gt = np.array([[1, 1, 0], [2, 2, 2], [0, 0, 7]], np.uint16)
    pred = np.array([[5, 0, 0], [5, 9, 9], [0, 9, 9]], np.uint32)
    whole, gt_ids, pred_ids = metrics.label_overlap(gt, pred)
    chunked, _, _ = metrics.label_overlap(gt, pred, chunk_rows=1)
    assert gt_ids.tolist() == [0, 1, 2, 7] and pred_ids.tolist() == [0, 5, 9]
    assert whole.tolist() == [[2, 0, 1], [1, 1, 0], [0, 1, 2], [0, 0, 1]]
    np.testing.assert_array_equal(whole, chunked)
    assert metrics.iou_matrix(whole)[1, 1] == pytest.approx(2 / 5)   # GT 2 vs predicted 9


def test_sparse_pairs_equal_the_dense_table_and_handle_specks():
    """overlap_pairs / match_pairs give label_overlap / match_counts' numbers (low thresholds
    with competing pairs included) and stay small for a prediction of many specks."""
    rng = np.random.default_rng(4)
    gt = np.repeat(np.repeat(rng.integers(0, 6, (6, 8)), 10, 0), 10, 1).astype(np.uint16)
    pred = np.roll(gt, (3, 4), axis=(0, 1)).astype(np.uint32) * 3
    pred[:, :5][pred[:, :5] > 0] += 1                              # split some objects
    dense = metrics.iou_matrix(metrics.label_overlap(gt, pred)[0])
    pairs = metrics.overlap_pairs(gt, pred)
    np.testing.assert_array_equal(dense[pairs["gt"], pairs["pred"]], pairs["iou"])
    assert np.count_nonzero(dense) == len(pairs["iou"])
    for thresh in (0.05, 0.2, 0.5, 0.7):
        assert metrics.match_pairs(pairs, thresh) == metrics.match_counts(dense, thresh)
    # 250,000 one-pixel objects against 48 fibres: 250,000 pairs, not a 48 x 250,000 table
    specks = np.arange(1, 250_001, dtype=np.uint32).reshape(500, 500)
    big = np.repeat(np.repeat(rng.integers(0, 49, (6, 8)), 84, 0), 63, 1)[:500, :500]
    table = instance_metrics(big.astype(np.uint16), specks, [0.5])
    assert table[["tp", "n_pred"]].iloc[0].tolist() == [0, 250_000]
    assert len(metrics.overlap_pairs(big.astype(np.uint16), specks)["iou"]) == np.count_nonzero(big)


def test_aggregate_equals_stardist_matching_dataset():
    from stardist.matching import matching_dataset

    rng = np.random.default_rng(1)
    pairs = []
    for _ in range(3):
        gt = np.zeros((30, 30), np.uint16)
        pred = np.zeros_like(gt)
        for label in range(1, 6):
            r, c = rng.integers(0, 24, 2)
            gt[r:r + 6, c:c + 6] = label
            dr, dc = rng.integers(-2, 3, 2)
            pred[max(r + dr, 0):r + dr + 6, max(c + dc, 0):c + dc + 6] = label + 10
        pairs.append((gt, pred))
    thresholds = [0.3, 0.5, 0.7]
    ours = aggregate_instance_metrics(instance_metrics(g, p, thresholds) for g, p in pairs)
    theirs = matching_dataset([g for g, _ in pairs], [p for _, p in pairs], thresh=thresholds,
                              show_progress=False)
    for row, ref in zip(ours.itertuples(), theirs):
        assert (row.tp, row.fp, row.fn) == (ref.tp, ref.fp, ref.fn)
        assert row.AP == pytest.approx(ref.accuracy) and row.f1 == pytest.approx(ref.f1)
        assert row.PQ == pytest.approx(ref.panoptic_quality)
    pooled = metrics.instance_metrics_dataset(iter(pairs), thresholds)
    pd.testing.assert_frame_equal(pooled, ours)


# ---------------------------------------------------------------------------- Table II
def test_table2_on_the_tiny_synthetic_dataset(tiny_root, capsys):
    from nclsm_utils.dataset import Dataset
    from nclsm_utils.report.tables import qa_row, section_per_fibre, table2

    dataset = Dataset(tiny_root)
    table = table2(dataset)
    assert table["method"].tolist() == ["QA-IMC", "QA-IF"]
    for modality, (_, row) in zip(("IMC", "IF"), table.iterrows()):
        sections = [s for s in dataset.sections(modality=modality) if s.has("qa")]
        assert row["TS"] == ", ".join(s.id for s in sections)
        direct = summarise([section_per_fibre(s, s.mask("qa")) for s in sections]).iloc[0]
        # the QA masks annotate a subset: every QA fibre is matched, MF-A counts only them
        assert row["MF-A"] == direct["MF-A"]
        assert row["MF-A"] == sum(len(np.unique(s.mask("qa"))) - 1 for s in sections)
        assert row["mean IoU"] == direct["mean IoU"] and row["mean IoU"] > 0.8
    # from the per-fibre rows already computed: the same table, cell for cell
    from nclsm_utils.report.tables import qa_per_fibre

    pd.testing.assert_frame_equal(table2(dataset, per_fibre=qa_per_fibre(dataset)), table)
    first = dataset.sections()[0]
    one = qa_row(dataset, [first.id], name="QA")
    assert one["TS"].iloc[0] == first.id and one["method"].iloc[0] == "QA"
    assert main(["table2", "--data", str(tiny_root), "--json"]) == 0
    assert [r["method"] for r in json.loads(capsys.readouterr().out)] == ["QA-IMC", "QA-IF"]


# ---------------------------------------------------------------------------- real S11 mask
def test_real_s11_mask_against_itself(sample_dir):
    from nclsm_utils.dataset import as_labels
    from nclsm_utils.core.io import read_array

    path = sample_dir / "S11_groundtruth_mask.tiff"
    gt = as_labels(read_array(path), path)
    table = evaluate(gt, gt)
    assert len(table) == 489 and table["matched"].all()
    assert (table["pred_id"] == table["gt_id"]).all() and (table["iou"] == 1.0).all()
    with pytest.warns(MetricWarning, match="without an image"):
        summary = summarise(table).iloc[0]
    assert summary["MF-A"] == 489 and summary["A%(IoU>0.95)"] == 100.0
    assert summary["unmatched predictions"] == 0
