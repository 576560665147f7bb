"""Tests of nclsm_utils.metrics.morphology: published NTM shape features, the NTM rule, morphology."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nclsm_utils.metrics import morphology as M
from nclsm_utils.metrics.morphology import (COMPARE_COLUMNS, MORPHOLOGY_COLUMNS, SHAPE_COLUMNS,
                                    compare_morphology, convex_hull_mask, convex_hull_pixels,
                                    ellipse_axes, fibre_morphology, ntm_rule, perimeter_pixels,
                                    reduced_ratio, shape_features)

PUBLISHED_CSV = "IF_fibre_shape_features_ntm.csv"
S11_MASK = "S11_groundtruth_mask.tiff"
EXACT_COLUMNS = ["Fiber_on_Border", "Fiber_Area", "Fiber_Perimeter", "Fiber_Width_Ellipse",
                 "Fiber_Length_Ellipse", "Fiber_Width_Bbox", "Fiber_Length_Bbox"]
FLOAT_COLUMNS = ["Convexity", "Aspect_Ratio_Ellipse", "lengthsquared_by_Area_Ellipse",
                 "Aspect_Ratio_Bbox", "lengthsquared_by_area_Bbox",
                 "Fiber_Perimeter_by_Rectangular_Perimeter"]


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def published(sample_dir) -> pd.DataFrame:
    return pd.read_csv(sample_dir / PUBLISHED_CSV)


@pytest.fixture(scope="module")
def s11_published(published) -> pd.DataFrame:
    return published[published["FileName"] == "S11"].set_index("Fibre_ID").sort_index()


@pytest.fixture(scope="module")
def s11_labels(sample_dir) -> np.ndarray:
    from nclsm_utils.dataset import as_labels
    from nclsm_utils.core.io import read_array

    path = sample_dir / S11_MASK
    return as_labels(read_array(path), path)


@pytest.fixture(scope="module")
def s11_features(s11_labels) -> pd.DataFrame:
    return shape_features(s11_labels)


def _rng_masks(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        h, w = rng.integers(1, 35, size=2)
        mask = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        if mask.any():
            yield mask


def _blobs(shape=(160, 200), seed=0, count=12) -> np.ndarray:
    """Non-overlapping rotated ellipses labelled 1..count (label = draw order)."""
    from skimage.draw import ellipse

    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int32)
    for k in range(1, count + 1):
        rr, cc = ellipse(rng.integers(15, shape[0] - 15), rng.integers(15, shape[1] - 15),
                         rng.integers(3, 14), rng.integers(3, 14), shape=shape,
                         rotation=rng.uniform(0, np.pi))
        labels[rr, cc] = k
    return labels


# ---------------------------------------------------------------------------- published values
def test_s11_rows_are_the_published_fibres(s11_features, s11_published, s11_labels):
    assert list(s11_features.columns) == list(SHAPE_COLUMNS)
    assert len(s11_features) == 488 == len(s11_published)
    assert s11_features["label"].tolist() == s11_published.index.tolist()
    # the mask has 489 fibres: label 471 (3 pixels) is skipped, as in the published csv
    assert np.count_nonzero(s11_labels == 471) == 3
    assert 471 not in set(s11_features["label"])


def test_s11_matches_published_shape_features(s11_features, s11_published):
    ours = s11_features.set_index("label")
    for column in EXACT_COLUMNS:
        mismatch = ours.index[ours[column].to_numpy() != s11_published[column].to_numpy()]
        assert mismatch.empty, f"{column} differs for labels {list(mismatch[:10])}"
    for column in FLOAT_COLUMNS:
        np.testing.assert_allclose(ours[column], s11_published[column], rtol=0, atol=1e-6,
                                   err_msg=column)
    assert (ours["Convexity"] >= 1).all()
    assert int((ours["Fiber_Width_Ellipse"] == 0).sum()) == int(
        (s11_published["Fiber_Width_Ellipse"] == 0).sum())


def test_ntm_rule_reproduces_the_published_csv(published):
    flags = ntm_rule(published)
    assert flags.dtype == bool and flags.index.equals(published.index)
    assert len(flags) == 26871
    assert int(flags.sum()) == 10698
    assert (flags == published["NTM"]).all()


def test_ntm_rule_on_computed_s11_reproduces_published_flags(s11_features, s11_published):
    flags = ntm_rule(s11_features)
    assert flags.tolist() == s11_published["NTM"].tolist()
    assert int(flags.sum()) == int(s11_published["NTM"].sum()) == 47


# ---------------------------------------------------------------------------- pieces
def test_perimeter_pixels_definition():
    assert perimeter_pixels(np.ones((1, 1), bool)) == 1
    assert perimeter_pixels(np.ones((3, 4), bool)) == 10
    ring = np.ones((5, 5), bool)
    ring[2, 2] = False                       # a hole: its 4 neighbours are perimeter too
    assert perimeter_pixels(ring) == 16 + 4
    diagonal = np.eye(4, dtype=bool)         # 8-connected only: every pixel is perimeter
    assert perimeter_pixels(diagonal) == 4
    for mask in _rng_masks(1, 50):           # brute force: a 4-neighbour is background
        padded = np.pad(mask, 1)
        expected = sum(1 for r, c in zip(*np.nonzero(mask))
                       if not (padded[r, c + 1] and padded[r + 2, c + 1]
                               and padded[r + 1, c] and padded[r + 1, c + 2]))
        assert perimeter_pixels(mask) == expected


def test_convex_hull_equals_skimage_convex_hull_image():
    from skimage.morphology import convex_hull_image

    for mask in _rng_masks(2, 150):
        expected = convex_hull_image(mask)
        assert convex_hull_pixels(mask) == int(expected.sum())
        np.testing.assert_array_equal(convex_hull_mask(mask), expected)
    labels = _blobs(seed=3)
    for k in range(1, labels.max() + 1):
        mask = labels == k
        if mask.any():
            assert convex_hull_pixels(mask) == int(convex_hull_image(mask).sum())
    assert convex_hull_pixels(np.zeros((4, 4), bool)) == 0


def test_ellipse_axes_of_a_disc_and_of_tiny_fibres():
    yy, xx = np.mgrid[:80, :80]
    disc = (yy - 40) ** 2 + (xx - 40) ** 2 <= 25 ** 2
    first, second = ellipse_axes(disc)
    assert abs(first - 49) <= 2 and abs(second - 49) <= 2
    assert ellipse_axes(np.ones((2, 2), bool)) == (0, 0)       # too few contour points
    assert ellipse_axes(np.zeros((5, 5), bool)) == (0, 0)


def test_ellipse_axes_uses_published_coordinates():
    """A crop with its origin gives what the published code gives on the full image."""
    import cv2

    labels = _blobs(shape=(220, 260), seed=5, count=8)
    from scipy import ndimage as ndi

    for k, slices in enumerate(ndi.find_objects(labels), start=1):
        if slices is None:
            continue
        full = np.pad(((labels == k) * 255).astype(np.uint8), 10)
        edges = cv2.Canny(full, 100, 200)
        contours, hierarchy = cv2.findContours(edges, cv2.RETR_CCOMP, 2)
        holes = [c for i, c in enumerate(contours) if hierarchy[0][i][3] != -1]
        lengths = [len(c) for c in holes]
        expected = (0, 0)
        if holes and max(lengths) >= 10:
            _, axes, _ = cv2.fitEllipse(holes[lengths.index(max(lengths))])
            expected = (int(axes[0]), int(axes[1]))
        crop = labels[slices] == k
        assert ellipse_axes(crop, (slices[0].start, slices[1].start)) == expected


def test_reduced_ratio():
    assert reduced_ratio(140, 203) == 1.45
    assert reduced_ratio(203, 140) == 1.45
    assert reduced_ratio(433, 1409) == 1409 / 433
    assert reduced_ratio(0, 0) == 0.0
    assert reduced_ratio(0, 9) == math.inf


# ---------------------------------------------------------------------------- shape_features
def test_shape_features_rectangle_values():
    labels = np.zeros((40, 60), dtype=np.uint16)
    labels[5:25, 10:50] = 7                                     # 20 rows x 40 columns
    row = shape_features(labels).iloc[0]
    assert row["label"] == 7 and not row["Fiber_on_Border"]
    assert row["Fiber_Area"] == 800 and row["Fiber_Perimeter"] == 2 * 20 + 2 * 40 - 4
    assert row["Convexity"] == 1.0
    assert (row["Fiber_Width_Bbox"], row["Fiber_Length_Bbox"]) == (19, 39)
    assert row["Aspect_Ratio_Bbox"] == pytest.approx(39 / 19)
    assert row["lengthsquared_by_area_Bbox"] == pytest.approx(39 ** 2 / 800)
    assert row["Fiber_Perimeter_by_Rectangular_Perimeter"] == pytest.approx(116 / (2 * 19 + 2 * 39))
    # Canny cuts the corners of a rectangle: its hole contour has 8 (compressed) points,
    # fewer than 10, so the published code gives zero axes and zero ellipse ratios
    assert (row["Fiber_Width_Ellipse"], row["Fiber_Length_Ellipse"]) == (0, 0)
    assert row["Aspect_Ratio_Ellipse"] == 0.0 and row["lengthsquared_by_Area_Ellipse"] == 0.0


def test_shape_features_ellipse_columns_of_an_ellipse():
    from skimage.draw import ellipse

    labels = np.zeros((120, 160), dtype=np.uint16)
    rr, cc = ellipse(60, 80, 20, 45, shape=labels.shape, rotation=0.3)
    labels[rr, cc] = 2
    row = shape_features(labels).iloc[0]
    width, length = row["Fiber_Width_Ellipse"], row["Fiber_Length_Ellipse"]
    assert abs(min(width, length) - 40) <= 3 and abs(max(width, length) - 90) <= 4
    assert row["Aspect_Ratio_Ellipse"] == pytest.approx(max(width, length) / min(width, length))
    assert row["lengthsquared_by_Area_Ellipse"] == pytest.approx(length ** 2 / row["Fiber_Area"])
    assert 1.0 <= row["Convexity"] < 1.05


def test_shape_features_border_min_area_and_order():
    labels = np.zeros((30, 40), dtype=np.int32)
    labels[10:20, 30:40] = 9          # touches the right edge
    labels[0:6, 5:10] = 2             # 30 pixels, touches the top edge
    labels[12:17, 12:17] = 5          # 25 pixels: skipped
    labels[22:28, 2:8] = 3            # interior
    table = shape_features(labels)
    assert table["label"].tolist() == [2, 3, 9]
    assert table["Fiber_on_Border"].tolist() == [True, False, True]
    assert table["Fiber_Area"].tolist() == [30, 36, 100]
    assert shape_features(labels, min_area=0)["label"].tolist() == [2, 3, 5, 9]


def test_shape_features_empty_and_single_fibre():
    empty = shape_features(np.zeros((50, 50), dtype=np.uint16))
    assert empty.empty and list(empty.columns) == list(SHAPE_COLUMNS)
    assert empty["Fiber_Area"].dtype == np.int64 and empty["Fiber_on_Border"].dtype == bool
    assert shape_features(np.zeros((0, 0), dtype=np.uint8)).empty
    one = np.zeros((20, 20), dtype=bool)
    one[3:15, 4:12] = True                    # bool: one fibre, label 1
    table = shape_features(one)
    assert table["label"].tolist() == [1] and table["Fiber_Area"].tolist() == [96]


def test_shape_features_thin_line_has_infinite_bbox_ratio():
    labels = np.zeros((10, 60), dtype=np.uint8)
    labels[4, 5:45] = 1                       # one pixel thick: bbox width 0
    row = shape_features(labels).iloc[0]
    assert row["Fiber_Width_Bbox"] == 0 and row["Fiber_Length_Bbox"] == 39
    assert row["Aspect_Ratio_Bbox"] == math.inf
    assert row["Fiber_Perimeter"] == 40


def test_shape_features_huge_label_values_are_kept():
    labels = np.zeros((30, 30), dtype=np.uint32)
    labels[2:12, 2:12] = 4_000_000_000
    labels[15:25, 15:28] = 7
    table = shape_features(labels)
    assert table["label"].tolist() == [7, 4_000_000_000]
    assert table["Fiber_Area"].tolist() == [130, 100]
    morph = fibre_morphology(labels)
    assert morph["label"].tolist() == [7, 4_000_000_000]
    assert morph["area"].tolist() == [130.0, 100.0]


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4, 2), dtype=np.uint16), "2-D"),
    (np.zeros(10, dtype=np.uint16), "2-D"),
    (np.zeros((4, 4), dtype=np.float32), "integer"),
    (np.full((4, 4), -1, dtype=np.int16), "negative"),
])
def test_invalid_masks_raise_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        shape_features(bad)
    with pytest.raises(ValueError, match=message):
        fibre_morphology(bad)


# ---------------------------------------------------------------------------- ntm_rule
def _ntm_table(**overrides):
    base = {"Fiber_Area": 5000, "Convexity": 1.05, "lengthsquared_by_area_Bbox": 1.3,
            "Fiber_on_Border": False, "Aspect_Ratio_Ellipse": 1.2}
    base.update(overrides)
    return pd.DataFrame({k: [v] for k, v in base.items()})


@pytest.mark.parametrize("overrides, flagged", [
    ({}, True),
    ({"Fiber_Area": 210}, False), ({"Fiber_Area": 211}, True),
    ({"Fiber_Area": 27000}, False), ({"Fiber_Area": 26999}, True),
    ({"Convexity": 1.19}, False), ({"Convexity": 1.189}, True),
    ({"lengthsquared_by_area_Bbox": 3.10}, False),
    ({"Fiber_on_Border": True}, False), ({"Fiber_on_Border": "False"}, True),
    ({"Fiber_on_Border": "True"}, False),
    ({"Aspect_Ratio_Ellipse": 2.3, "lengthsquared_by_area_Bbox": 1.9}, False),
    ({"Aspect_Ratio_Ellipse": 2.3, "lengthsquared_by_area_Bbox": 1.8}, True),
    ({"Aspect_Ratio_Ellipse": 2.2, "lengthsquared_by_area_Bbox": 2.5}, True),
    ({"Aspect_Ratio_Ellipse": math.inf, "lengthsquared_by_area_Bbox": 1.9}, False),
    ({"Fiber_Area": math.nan}, False), ({"Convexity": math.nan}, False),
    ({"Aspect_Ratio_Ellipse": math.nan}, False), ({"Fiber_on_Border": None}, False),
])
def test_ntm_rule_thresholds_and_nan(overrides, flagged):
    assert ntm_rule(_ntm_table(**overrides)).tolist() == [flagged]


def test_ntm_rule_missing_column_and_empty():
    with pytest.raises(KeyError, match="Convexity"):
        ntm_rule(_ntm_table().drop(columns="Convexity"))
    empty = ntm_rule(shape_features(np.zeros((5, 5), dtype=np.uint8)))
    assert empty.empty and empty.dtype == bool


# ---------------------------------------------------------------------------- morphology
def test_fibre_morphology_rectangle_and_pixel_size():
    labels = np.zeros((50, 50), dtype=np.uint16)
    labels[10:20, 10:40] = 1                                    # 10 x 30 pixels
    base = fibre_morphology(labels).iloc[0]
    assert list(fibre_morphology(labels).columns) == list(MORPHOLOGY_COLUMNS)
    assert base["area"] == 300 and base["solidity"] == 1.0
    assert base["feret_diameter_max"] == pytest.approx(math.hypot(9, 30))
    assert base["feret_diameter_min"] == pytest.approx(10.0)
    assert base["circularity"] == pytest.approx(4 * math.pi * 300 / base["perimeter"] ** 2)
    assert base["shape_index"] == pytest.approx(base["perimeter"] / (2 * math.sqrt(math.pi * 300)))
    scaled = fibre_morphology(labels, pixel_size=0.5).iloc[0]
    assert scaled["area"] == pytest.approx(75.0)
    for column in ("perimeter", "major_axis_length", "minor_axis_length",
                   "feret_diameter_max", "feret_diameter_min"):
        assert scaled[column] == pytest.approx(0.5 * base[column])
    for column in ("circularity", "solidity", "eccentricity", "shape_index"):
        assert scaled[column] == pytest.approx(base[column])
    with pytest.raises(ValueError, match="pixel_size"):
        fibre_morphology(labels, pixel_size=0)


def test_fibre_morphology_matches_regionprops():
    from skimage.measure import regionprops_table

    labels = _blobs(seed=7)
    ours = fibre_morphology(labels)
    ref = pd.DataFrame(regionprops_table(labels, properties=(
        "label", "area", "perimeter", "solidity", "eccentricity", "feret_diameter_max",
        "axis_major_length", "axis_minor_length")))
    assert ours["label"].tolist() == ref["label"].tolist()
    for ours_col, ref_col in [("area", "area"), ("perimeter", "perimeter"),
                              ("solidity", "solidity"), ("eccentricity", "eccentricity"),
                              ("feret_diameter_max", "feret_diameter_max"),
                              ("major_axis_length", "axis_major_length"),
                              ("minor_axis_length", "axis_minor_length")]:
        np.testing.assert_allclose(ours[ours_col], ref[ref_col], rtol=1e-10, atol=1e-10,
                                   err_msg=ours_col)
    assert (ours["feret_diameter_min"] <= ours["feret_diameter_max"]).all()
    assert (ours["feret_diameter_min"] >= ours["minor_axis_length"] * 0.8).all()


def test_fibre_morphology_disc_and_empty():
    yy, xx = np.mgrid[:101, :101]
    disc = ((yy - 50) ** 2 + (xx - 50) ** 2 <= 40 ** 2).astype(np.uint8)
    row = fibre_morphology(disc).iloc[0]
    assert 0.88 < row["circularity"] < 1.0          # skimage's perimeter of a digital disc
    assert row["shape_index"] == pytest.approx(1 / math.sqrt(row["circularity"]))
    assert row["major_axis_length"] == pytest.approx(80, abs=0.5) and row["eccentricity"] < 1e-6
    assert row["feret_diameter_min"] == pytest.approx(row["feret_diameter_max"], rel=0.03)
    empty = fibre_morphology(np.zeros((10, 10), dtype=np.uint8))
    assert empty.empty and list(empty.columns) == list(MORPHOLOGY_COLUMNS)


def test_compare_morphology_statistics():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(11)
    method = pd.DataFrame({"label": range(40), "area": rng.normal(10, 2, 40),
                           "solidity": rng.uniform(0.8, 1, 40)})
    gt = pd.DataFrame({"label": range(55), "area": rng.normal(12, 2, 55),
                       "solidity": rng.uniform(0.8, 1, 55), "extra": 1.0})
    gt.loc[3, "area"] = np.nan                                   # NaNs are dropped
    table = compare_morphology(method, gt)
    assert list(table.columns) == list(COMPARE_COLUMNS)
    assert table["feature"].tolist() == ["area", "solidity"]
    row = table.set_index("feature").loc["area"]
    x, y = method["area"].to_numpy(), gt["area"].dropna().to_numpy()
    reference = mannwhitneyu(x, y, alternative="two-sided")
    assert (row["n_method"], row["n_gt"]) == (40, 54)
    assert row["median_method"] == pytest.approx(np.median(x))
    assert row["median_gt"] == pytest.approx(np.median(y))
    assert row["U"] == pytest.approx(reference.statistic)
    assert row["p_value"] == pytest.approx(reference.pvalue)
    u_min = min(reference.statistic, 40 * 54 - reference.statistic)
    assert row["rank_biserial"] == pytest.approx(1 - 2 * u_min / (40 * 54))
    assert row["cles"] == pytest.approx(np.mean(x[:, None] > y[None, :])
                                        + 0.5 * np.mean(x[:, None] == y[None, :]))
    assert row["rank_biserial"] == pytest.approx(abs(2 * row["cles"] - 1))
    assert row["cles"] < 0.5 and row["p_value"] < 0.01        # method areas are smaller


def test_compare_morphology_separation_and_identity():
    a = pd.DataFrame({"area": [1.0, 2.0, 3.0]})
    b = pd.DataFrame({"area": [4.0, 5.0, 6.0]})
    row = compare_morphology(a, b).iloc[0]
    assert (row["U"], row["rank_biserial"], row["cles"]) == (0.0, 1.0, 0.0)
    same = compare_morphology(a, a).iloc[0]
    assert same["rank_biserial"] == 0.0 and same["cles"] == 0.5


def test_compare_morphology_empty_tables():
    labels = _blobs(seed=2, count=5)
    gt = fibre_morphology(labels)
    empty = fibre_morphology(np.zeros((8, 8), dtype=np.uint8))
    table = compare_morphology(empty, gt)
    assert len(table) == len(MORPHOLOGY_COLUMNS) - 1
    assert (table["n_method"] == 0).all() and (table["n_gt"] == len(gt)).all()
    assert table[["median_method", "U", "p_value", "rank_biserial", "cles"]].isna().all().all()
    assert table["median_gt"].notna().all()
    both = compare_morphology(pd.DataFrame(), pd.DataFrame())
    assert len(both) == len(MORPHOLOGY_COLUMNS) - 1 and both["U"].isna().all()
    chosen = compare_morphology(empty, empty, features=["area"])
    assert chosen["feature"].tolist() == ["area"] and chosen["p_value"].isna().all()
    with pytest.raises(KeyError, match="nope"):
        compare_morphology(gt, gt, features=["nope"])


# ---------------------------------------------------------------------------- CLI
def test_cli_shape_features_and_ntm_rule(tmp_path, capsys):
    from nclsm_utils.cli import main
    from nclsm_utils.core.io import write_tiff

    labels = _blobs(seed=4, count=6).astype(np.uint16)
    write_tiff(tmp_path / "mask.tiff", labels)
    out = tmp_path / "features.csv"
    assert main(["shape-features", "--mask", str(tmp_path / "mask.tiff"), "--out", str(out)]) == 0
    written = pd.read_csv(out)
    expected = shape_features(labels)
    assert list(written.columns) == list(SHAPE_COLUMNS)
    pd.testing.assert_frame_equal(written, expected, check_dtype=False)
    capsys.readouterr()
    assert main(["ntm-rule", str(out), "--out", str(tmp_path / "ntm.csv")]) == 0
    printed = capsys.readouterr().out
    assert f"{int(ntm_rule(expected).sum())} of {len(expected)} fibres" in printed
    assert pd.read_csv(tmp_path / "ntm.csv")["NTM"].tolist() == ntm_rule(expected).tolist()


def test_cli_ntm_rule_on_published_csv(sample_dir, capsys):
    from nclsm_utils.cli import main

    assert main(["ntm-rule", str(sample_dir / PUBLISHED_CSV)]) == 0
    printed = capsys.readouterr().out
    assert "10698 of 26871 fibres flagged as NTM" in printed
    assert "26871 of 26871 rows" in printed


def test_cli_errors_name_the_problem(tmp_path, capsys):
    from nclsm_utils.cli import main

    assert main(["ntm-rule", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["ntm-rule", str(tmp_path / "bad.csv")]) == 2
    assert "Fiber_Area" in capsys.readouterr().err
    assert main(["shape-features", "--mask", str(tmp_path / "nomask.tiff"),
                 "--out", str(tmp_path / "o.csv")]) == 2
    assert "nomask.tiff" in capsys.readouterr().err


def test_module_constants_are_consistent():
    assert M.MIN_AREA == 25
    assert set(M.NTM_COLUMNS) <= set(SHAPE_COLUMNS)


def test_crofton_perimeter_equals_skimage_perimeter():
    from skimage.measure import perimeter

    for mask in _rng_masks(6, 120):
        assert M.crofton_perimeter_4(mask) == perimeter(mask, neighborhood=4)
    labels = _blobs(seed=8)
    for k in range(1, labels.max() + 1):
        if (labels == k).any():
            assert M.crofton_perimeter_4(labels == k) == perimeter(labels == k, neighborhood=4)
