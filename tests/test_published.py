"""``evaluate(..., definition="published")``: fibres, matches, IoUs and rings exactly as the
published NCL-SM notebook computes them, checked against a literal whole-image implementation
of its procedure (../shared/ncl-sm-sample/README.md, "Exactly as the published notebook does
it") and against the published per-fibre csvs of the real S60 and S11 sections."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

cv2 = pytest.importorskip("cv2")

from nclsm_utils.cli import main  # noqa: E402
from nclsm_utils.core.io import read_array, write_tiff  # noqa: E402
from nclsm_utils.metrics import (  # noqa: E402
    PER_FIBRE_COLUMNS, PUBLISHED_LABEL_COLUMNS, MetricWarning, evaluate, published_contours,
    read_per_fibre_csv, summarise,
)


# ---------------------------------------------------------------------------- literal reference
def literal_contours(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Steps 1-2: frame set to the maximum, then per value (ascending) the parented
    RETR_CCOMP contours of its inverted 0/255 mask, on the whole image."""
    m = mask.copy()
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = m.max()
    out = []
    for value in np.unique(m[m != 0]):
        inverted = (255 - (m == value).astype(np.uint8) * 255).astype(np.uint8)
        contours, hierarchy = cv2.findContours(inverted, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        if hierarchy is not None:
            out += [(int(value), c) for c, link in zip(contours, hierarchy[0]) if link[3] != -1]
    return out


def literal_published(gt, pred, image=None, k=None) -> pd.DataFrame:
    """Steps 3-6 on whole images, one fibre at a time (the notebook's cost)."""
    shape = gt.shape
    gts, preds = literal_contours(gt), literal_contours(pred)

    def filled(contour):
        canvas = np.zeros(shape, np.uint8)
        cv2.drawContours(canvas, [contour], -1, 255, thickness=cv2.FILLED)
        return canvas

    def centre(contour):
        m = cv2.moments(contour)
        return (int(m["m10"] / m["m00"]), int(m["m01"] / m["m00"])) if m["m00"] else None

    def rings(contour):
        black = filled(contour)
        element = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * k + 1, 2 * k + 1), (k, k))
        inner = (black - cv2.erode(black, element)) == 255
        outer = (cv2.dilate(black, element) - black) == 255
        membrane = image[..., 0] > np.quantile(image[..., 0], 0.85)
        mass = image[..., 1] > np.quantile(image[..., 1], 0.75)
        with np.errstate(invalid="ignore", divide="ignore"):
            return ((np.sum(membrane & inner) / np.sum(inner)) * 100,
                    (np.sum(mass & outer) / np.sum(outer)) * 100)

    centres = [centre(c) for _, c in preds]
    rows = []
    for i, (label, contour) in enumerate(gts):
        hit = next((j for j, c in enumerate(centres)
                    if c is not None and cv2.pointPolygonTest(contour, c, True) > 0), None)
        a = filled(contour) > 0
        row = {"gt_id": i + 1, "pred_id": 0, "iou": 0.0, "gt_area": int(a.sum()),
               "pred_area": 0, "gt_label": label, "pred_label": 0}
        if image is not None:
            row["gt_membrane_included"], row["gt_mass_missed"] = rings(contour)
        if hit is not None:
            b = filled(preds[hit][1]) > 0
            row.update(pred_id=hit + 1, iou=np.sum(a & b) / np.sum(a | b),
                       pred_area=int(b.sum()), pred_label=preds[hit][0])
            if image is not None:
                row["pred_membrane_included"], row["pred_mass_missed"] = rings(preds[hit][1])
        rows.append(row)
    table = pd.DataFrame(rows)
    table["n_gt"], table["n_pred"] = len(gts), len(preds)
    return table


def random_pair(seed: int):
    """Small masks with what trips a label-based reading: repeated values (several regions
    per value, diagonal touches), fibres inside others' holes, the frame, non-sequential
    labels; the prediction a shifted, relabelled copy with extra blobs."""
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(24, 56, 2))
    gt = np.zeros((h, w), np.uint16)
    values = rng.choice(np.arange(1, 400), size=int(rng.integers(3, 9)), replace=False)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(int(rng.integers(4, 14))):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        ry, rx = rng.integers(2, 9, 2)
        disc = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        gt[disc] = rng.choice(values)
    if seed % 3 == 0:   # speckle: diagonal neighbours and one-pixel regions
        speckle = rng.random((h, w)) < 0.03
        gt[speckle] = rng.choice(values, size=int(speckle.sum()))
    pred = np.roll(gt, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
    relabel = {int(v): int(u) for v, u in zip(values, rng.permutation(len(values)) * 7 + 3)}
    pred = np.vectorize(lambda v: relabel.get(int(v), 0), otypes=[np.int32])(pred)
    for _ in range(int(rng.integers(0, 3))):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        pred[max(cy - 3, 0):cy + 3, max(cx - 3, 0):cx + 3] = int(rng.integers(1, 60))
    image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    return gt, pred, image


@pytest.mark.parametrize("seed", range(40))
def test_published_definition_equals_the_literal_notebook_procedure(seed):
    gt, pred, image = random_pair(seed)
    k = (2, 6)[seed % 2]
    ours = evaluate(gt, pred, image, half_width=k, definition="published")
    theirs = literal_published(gt, pred, image, k)
    assert list(ours.columns) == PER_FIBRE_COLUMNS + PUBLISHED_LABEL_COLUMNS
    assert len(ours) == len(theirs)
    if not len(theirs):
        return
    for column in ("gt_id", "pred_id", "gt_area", "pred_area", "gt_label", "pred_label",
                   "n_gt", "n_pred"):
        assert ours[column].tolist() == theirs[column].tolist(), column
    assert ours["matched"].tolist() == (theirs["pred_id"] > 0).tolist()
    np.testing.assert_allclose(ours["iou"], theirs["iou"], rtol=0, atol=1e-12)
    for column in ("gt_membrane_included", "gt_mass_missed", "pred_membrane_included",
                   "pred_mass_missed"):
        expected = theirs[column].to_numpy(float) if column in theirs else np.full(len(ours),
                                                                                   np.nan)
        np.testing.assert_allclose(ours[column].to_numpy(float), expected, rtol=0, atol=1e-9,
                                   equal_nan=True, err_msg=column)


def test_contours_follow_the_notebook_order_on_crops():
    """Several regions per value, a fibre inside another's hole, the frame and the maximum
    value: the same contours, in the same order, as the whole-image procedure."""
    for seed in range(60):
        gt, _, _ = random_pair(1000 + seed)
        ours = published_contours(gt)
        theirs = literal_contours(gt)
        assert [f.label for f in ours] == [v for v, _ in theirs]
        assert all(np.array_equal(f.contour, c) for f, (_, c) in zip(ours, theirs))


def test_the_maximum_label_gains_the_frame_and_fibres_lose_their_border_pixels():
    mask = np.zeros((12, 12), np.uint8)
    mask[0:5, 3:7] = 1        # touches the top edge: the frame takes its first row
    mask[6:9, 6:9] = 2        # the maximum, away from the frame: a fibre
    mask[10:12, 1:4] = 2      # the maximum on the edge: joins the frame, no fibre
    fibres = published_contours(mask)
    assert [f.label for f in fibres] == [1, 2]
    table = evaluate(mask, mask, definition="published")
    # label 1 keeps rows 1-4 (4 x 4), traced one pixel outside: 6 x 6 without 4 corners
    assert table["gt_area"].tolist() == [32, 21] and table["iou"].tolist() == [1.0, 1.0]
    assert table["n_gt"].tolist() == [2, 2]


def test_a_value_with_two_regions_is_two_fibres_and_an_unmatched_row_is_zero():
    gt = np.zeros((20, 30), np.uint16)
    gt[3:8, 3:8] = 5
    gt[3:8, 20:25] = 5
    gt[12:17, 10:15] = 9
    pred = np.zeros_like(gt)
    pred[3:8, 4:9] = 1
    table = evaluate(gt, pred, definition="published")
    assert table["gt_label"].tolist() == [5, 5, 9]
    assert table["matched"].sum() == 1 and table["n_pred"].iloc[0] == 1
    assert table.loc[~table["matched"], "iou"].tolist() == [0.0, 0.0]
    assert table.loc[~table["matched"], "pred_label"].tolist() == [0, 0]


def test_definition_arguments():
    gt = np.zeros((10, 10), np.uint8)
    gt[2:6, 2:6] = 1
    with pytest.raises(ValueError, match="definition must be one of labels, published"):
        evaluate(gt, gt, definition="contours")
    with pytest.raises(ValueError, match="leave match out or pass match='pred_centroid'"):
        evaluate(gt, gt, match="gt_centroid", definition="published")
    assert evaluate(gt, gt, match="pred_centroid", definition="published")["iou"].tolist() == [1.0]
    empty = evaluate(np.zeros_like(gt), gt, definition="published")
    assert empty.empty and list(empty.columns) == PER_FIBRE_COLUMNS + PUBLISHED_LABEL_COLUMNS
    # the default stays the label-based definition: 16 label pixels, no extra columns
    default = evaluate(gt, gt)
    assert default["gt_area"].tolist() == [16] and "gt_label" not in default


@pytest.mark.filterwarnings("ignore::nclsm_utils.metrics.MetricWarning")
def test_evaluate_cli_definition(tmp_path, capsys):
    gt = np.zeros((40, 40), np.uint16)
    gt[5:15, 5:15], gt[20:30, 20:30] = 1, 2
    pred = np.zeros_like(gt)
    pred[6:16, 5:15] = 4
    write_tiff(tmp_path / "gt.tif", gt)
    write_tiff(tmp_path / "pred.tif", pred)
    out = tmp_path / "published.csv"
    assert main(["evaluate", "--gt", str(tmp_path / "gt.tif"), "--pred",
                 str(tmp_path / "pred.tif"), "--modality", "IF", "--definition", "published",
                 "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert table["gt_label"].tolist() == [1, 2] and table["pred_label"].tolist() == [4, 0]
    # 12 x 12 without corners (140) overlapping its copy shifted by a row: 128 / 152
    assert table["gt_area"].tolist() == [140, 140]
    assert math.isclose(table["iou"].iloc[0], 128 / 152, rel_tol=0, abs_tol=1e-12)
    assert "2 GT fibres, 1 matched" in capsys.readouterr().out


# ---------------------------------------------------------------------------- the real sections
@pytest.fixture(scope="module")
def s60(sample_dir):
    gt = read_array(sample_dir / "S60_groundtruth_mask.tiff")
    qa = read_array(sample_dir / "S60_qa_mask.tiff")
    published = read_per_fibre_csv(sample_dir / "S60_qa_vs_groundtruth_per_fibre.csv")
    return gt, qa, published


def test_every_s60_row_equals_the_published_csv(s60, sample_dir):
    """Fibre_GT, Fibre_Assess, both totals and IoU_Score_Assess_GT of all 586 rows."""
    gt, qa, _ = s60
    ours = evaluate(gt, qa, definition="published")
    raw = pd.read_csv(sample_dir / "S60_qa_vs_groundtruth_per_fibre.csv")
    assert len(ours) == len(raw) == 586
    assert (ours["gt_id"] - 1).tolist() == raw["Fibre_GT"].tolist()
    assess = [str(p - 1) if m else "not_found" for p, m in zip(ours["pred_id"], ours["matched"])]
    assert assess == raw["Fibre_Assess"].astype(str).tolist()
    assert (ours["n_gt"] == raw["Total_GTcontours"]).all() and ours["n_gt"].iloc[0] == 586
    assert (ours["n_pred"] == raw["Total_Assess_contours"]).all() and ours["n_pred"].iloc[0] == 13
    np.testing.assert_allclose(ours["iou"], raw["IoU_Score_Assess_GT"], rtol=0, atol=1e-9)
    assert int(ours["matched"].sum()) == 13
    with pytest.warns(MetricWarning, match="no ring percentages"):   # no image: r is NaN
        summary = summarise(ours).iloc[0]
    assert summary["MF-A"] == 13 and round(summary["mean IoU"], 4) == 0.9570


def test_s60_label_and_published_definitions_differ_by_the_outline(s60):
    """The label-based default finds the same 13 pairs (as labels); its IoUs are smaller by
    at most 8.5e-4 (mean 4.2e-4), its areas by the one-pixel outline (1.4-1.9 %)."""
    gt, qa, _ = s60
    published = evaluate(gt, qa, definition="published")
    labels = evaluate(gt, qa, match="pred_centroid")
    pairs = published[published["matched"]]
    by_label = labels.set_index("gt_id").loc[pairs["gt_label"]]
    assert by_label["pred_id"].tolist() == pairs["pred_label"].tolist()
    assert int(labels["matched"].sum()) == 13
    gap = pairs["iou"].to_numpy() - by_label["iou"].to_numpy()
    assert 0 < gap.min() and gap.max() == pytest.approx(8.51e-4, abs=1e-6)
    assert gap.mean() == pytest.approx(4.2e-4, abs=5e-5)
    growth = pairs["gt_area"].to_numpy() / by_label["gt_area"].to_numpy() - 1
    assert 0.013 < growth.min() and growth.max() < 0.020


def test_s11_ground_truth_contours_equal_the_published_totals(sample_dir):
    """S11's QA mask is not public: its csv's ground-truth side (489 contours, Fibre_GT in
    order) is what can be recomputed."""
    raw = pd.read_csv(sample_dir / "S11_qa_vs_groundtruth_per_fibre.csv")
    fibres = published_contours(read_array(sample_dir / "S11_groundtruth_mask.tiff"))
    assert len(fibres) == 489 and set(raw["Total_GTcontours"]) == {489}
    assert raw["Fibre_GT"].tolist() == list(range(489))
    assert len({f.label for f in fibres}) == 489    # one contour per label here
