"""Standard instance-segmentation metrics: one-to-one matching at IoU thresholds, with
TP/FP/FN, precision, recall, F1, AP and PQ (``stardist.matching``'s definitions and numbers).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.imaging import label_values
from ._regions import _check_labels

#: Default IoU thresholds of :func:`instance_metrics`: 0.50, 0.55, ..., 0.95.
DEFAULT_IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))

INSTANCE_COLUMNS = ["thresh", "tp", "fp", "fn", "precision", "recall", "f1", "AP", "PQ",
                    "mean_matched_score", "mean_true_score", "n_true", "n_pred"]


def _safe_divide(x, y) -> float:
    return float(x) / float(y) if y else 0.0


def _instance_row(thresh, tp, fp, fn, n_true, n_pred, sum_matched_score) -> dict:
    """Row of :data:`INSTANCE_COLUMNS` with the formulas of ``stardist.matching``."""
    return {
        "thresh": float(thresh), "tp": int(tp), "fp": int(fp), "fn": int(fn),
        "precision": _safe_divide(tp, tp + fp), "recall": _safe_divide(tp, tp + fn),
        "f1": _safe_divide(2 * tp, 2 * tp + fp + fn), "AP": _safe_divide(tp, tp + fp + fn),
        "PQ": _safe_divide(sum_matched_score, tp + fp / 2 + fn / 2),
        "mean_matched_score": _safe_divide(sum_matched_score, tp),
        "mean_true_score": _safe_divide(sum_matched_score, n_true),
        "n_true": int(n_true), "n_pred": int(n_pred),
    }


def label_overlap(gt_labels: np.ndarray, pred_labels: np.ndarray,
                  chunk_rows: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of every (GT label, predicted label) pair, background included.

    The contingency table ``stardist.matching.label_overlap`` computes, in plain numpy
    (``np.bincount`` over row chunks, so a 185-megapixel section needs a few hundred MB and
    no numba compilation in each new process).

    Parameters
    ----------
    gt_labels, pred_labels : ndarray, shape (H, W), non-negative integers
        Instance masks, 0 = background; labels need not be contiguous.
    chunk_rows : int
        Rows counted at a time (memory bound).

    Returns
    -------
    overlap : ndarray, shape (n_gt + 1, n_pred + 1), int64
        ``overlap[i, j]`` = pixels labelled ``gt_ids[i]`` in GT and ``pred_ids[j]`` in the
        prediction; row and column 0 are the background.
    gt_ids, pred_ids : ndarray
        The labels of the rows and columns (``[0, sorted labels present]``).

    Examples
    --------
    >>> gt = np.array([[1, 1, 0], [2, 2, 2]]); pred = np.array([[5, 0, 0], [5, 9, 9]])
    >>> overlap, gt_ids, pred_ids = label_overlap(gt, pred)
    >>> overlap.tolist(), gt_ids.tolist(), pred_ids.tolist()
    ([[1, 0, 0], [1, 1, 0], [0, 1, 2]], [0, 1, 2], [0, 5, 9])
    """
    gt_ids, pred_ids = _label_ids(gt_labels, pred_labels, chunk_rows)
    n_cols = len(pred_ids)
    overlap = np.zeros(len(gt_ids) * n_cols, np.int64)
    for start in range(0, gt_labels.shape[0], chunk_rows):
        rows = np.searchsorted(gt_ids, gt_labels[start:start + chunk_rows].ravel())
        cols = np.searchsorted(pred_ids, pred_labels[start:start + chunk_rows].ravel())
        overlap += np.bincount(rows * n_cols + cols, minlength=overlap.size)
    return overlap.reshape(len(gt_ids), n_cols), gt_ids, pred_ids


def _label_ids(gt_labels: np.ndarray, pred_labels: np.ndarray, chunk_rows: int):
    """Both masks' labels present, background (0) first; the masks must have one shape."""
    if gt_labels.shape != pred_labels.shape:
        raise ValueError(f"gt_labels {gt_labels.shape} and pred_labels {pred_labels.shape} "
                         "have different shapes")
    return (np.union1d([0], _present_labels(gt_labels, chunk_rows)),
            np.union1d([0], _present_labels(pred_labels, chunk_rows)))


def _present_labels(labels: np.ndarray, chunk_rows: int) -> np.ndarray:
    """Sorted distinct values of ``labels`` (row chunks: bounded memory)."""
    found = [label_values(labels[start:start + chunk_rows])
             for start in range(0, max(labels.shape[0], 1), chunk_rows)]
    return np.unique(np.concatenate(found)) if found else np.zeros(0, labels.dtype)


def _indexer(ids: np.ndarray):
    """A function mapping label values (all in the sorted ``ids``) to their index in ``ids``:
    a lookup table when the largest id is small enough, else a binary search."""
    if len(ids) and ids.dtype.kind in "ui" and int(ids[0]) >= 0 \
            and int(ids[-1]) <= max(1 << 24, 64 * len(ids)):
        table = np.zeros(int(ids[-1]) + 1, np.intp)
        table[ids] = np.arange(len(ids))
        return lambda values: table[values]
    return lambda values: np.searchsorted(ids, values)


def overlap_pairs(gt_labels: np.ndarray, pred_labels: np.ndarray, chunk_rows: int = 1024):
    """The non-zero entries of :func:`label_overlap`'s table, without the table.

    Memory grows with the number of overlapping (GT, predicted) pairs, not with
    ``n_gt x n_pred``: a prediction of hundreds of thousands of specks (an untrained
    network) costs no more than a good one.

    Returns
    -------
    dict
        ``gt_ids``, ``pred_ids`` (sorted labels present, background excluded), ``gt_area``,
        ``pred_area`` (pixels per label), and per overlapping pair ``gt`` and ``pred`` (indices
        into the id arrays), ``overlap`` (pixels) and ``iou``.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0], [2, 2, 2]]); pred = np.array([[5, 0, 0], [5, 9, 9]])
    >>> p = overlap_pairs(gt, pred)
    >>> p["gt"].tolist(), p["pred"].tolist(), p["overlap"].tolist(), [round(float(v), 2) for v in p["iou"]]
    ([0, 1, 1], [0, 0, 1], [1, 1, 2], [0.33, 0.25, 0.67])
    """
    gt_ids, pred_ids = _label_ids(gt_labels, pred_labels, chunk_rows)
    n_cols = len(pred_ids)
    gt_area = np.zeros(len(gt_ids), np.int64)
    pred_area = np.zeros(n_cols, np.int64)
    codes, counts = [], []
    gt_index, pred_index = _indexer(gt_ids), _indexer(pred_ids)
    # a dense table of pair counts when it is small (a few MB), else sparse codes per chunk
    dense = np.zeros(len(gt_ids) * n_cols, np.int64) if len(gt_ids) * n_cols <= 1 << 22 \
        else None
    for start in range(0, gt_labels.shape[0], chunk_rows):
        rows = gt_index(gt_labels[start:start + chunk_rows].ravel())
        cols = pred_index(pred_labels[start:start + chunk_rows].ravel())
        gt_area += np.bincount(rows, minlength=len(gt_ids))
        pred_area += np.bincount(cols, minlength=n_cols)
        both = (rows > 0) & (cols > 0)
        pair = rows[both].astype(np.int64) * n_cols + cols[both]
        if dense is not None:
            dense += np.bincount(pair, minlength=dense.size)
            continue
        code, count = np.unique(pair, return_counts=True)
        codes.append(code)
        counts.append(count)
    if dense is not None:
        code = np.flatnonzero(dense)
        overlap = dense[code]
    else:
        code = np.concatenate(codes) if codes else np.zeros(0, np.int64)
        count = np.concatenate(counts) if counts else np.zeros(0, np.int64)
        code, inverse = np.unique(code, return_inverse=True)
        overlap = np.bincount(inverse.ravel(), weights=count,
                              minlength=len(code)).astype(np.int64)
    gt_index, pred_index = code // n_cols, code % n_cols
    union = gt_area[gt_index] + pred_area[pred_index] - overlap
    return {"gt_ids": gt_ids[1:], "pred_ids": pred_ids[1:], "gt_area": gt_area[1:],
            "pred_area": pred_area[1:], "gt": gt_index - 1, "pred": pred_index - 1,
            "overlap": overlap, "iou": (overlap / union).astype(np.float32)}


def matched_pairs(pairs: dict, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one-to-one matched (GT, predicted) pairs of :func:`overlap_pairs` at ``thresh``.

    Only objects with a pair of IoU >= ``thresh`` can be matched; at thresholds above 0.5
    such pairs are disjoint and are the matching. Otherwise the optimal assignment of
    :func:`match_counts` runs on the objects those pairs involve.

    Returns
    -------
    gt, pred : int arrays
        Indices into ``pairs["gt_ids"]`` and ``pairs["pred_ids"]`` of each matched pair.
    iou : float32 array
        Their IoU.

    >>> gt = np.zeros((10, 10), np.uint16); gt[:4, :4] = 1; gt[6:, 6:] = 2
    >>> pred = np.zeros_like(gt); pred[:4, :4] = 5; pred[6:, 6:8] = 6
    >>> [a.tolist() for a in matched_pairs(overlap_pairs(gt, pred), 0.5)]
    [[0, 1], [0, 1], [1.0, 0.5]]
    """
    keep = pairs["iou"] >= thresh
    g, p, iou = pairs["gt"][keep], pairs["pred"][keep], pairs["iou"][keep]
    if len(np.unique(g)) == len(g) and len(np.unique(p)) == len(p):
        return g, p, iou
    rows, cols = np.unique(g), np.unique(p)
    among = np.isin(pairs["gt"], rows) & np.isin(pairs["pred"], cols)
    scores = np.zeros((len(rows), len(cols)), np.float32)
    scores[np.searchsorted(rows, pairs["gt"][among]),
           np.searchsorted(cols, pairs["pred"][among])] = pairs["iou"][among]
    true_ind, pred_ind = _assignment(scores, thresh)
    matched = scores[true_ind, pred_ind]
    ok = matched >= thresh
    return rows[true_ind[ok]], cols[pred_ind[ok]], matched[ok]


def match_pairs(pairs: dict, thresh: float) -> tuple[int, int, int, float]:
    """TP, FP, FN and the summed IoU of the TPs from :func:`overlap_pairs` at ``thresh``
    (the pairs of :func:`matched_pairs`).

    >>> gt = np.zeros((10, 10), np.uint16); gt[:4, :4] = 1; gt[6:, 6:] = 2
    >>> pred = np.zeros_like(gt); pred[:4, :4] = 5
    >>> match_pairs(overlap_pairs(gt, pred), 0.5)
    (1, 0, 1, 1.0)
    """
    n_true, n_pred = len(pairs["gt_ids"]), len(pairs["pred_ids"])
    _, _, iou = matched_pairs(pairs, thresh)
    tp = len(iou)
    return tp, n_pred - tp, n_true - tp, float(np.sum(iou, dtype=np.float32))


def iou_matrix(overlap: np.ndarray) -> np.ndarray:
    """IoU of every (GT, predicted) object pair from :func:`label_overlap`'s table.

    ``overlap / (pred pixels + GT pixels - overlap)`` as float32, background row and column
    dropped: shape ``(n_gt, n_pred)``; stardist's ``intersection_over_union`` to the bit.
    """
    overlap = np.asarray(overlap)
    union = overlap.sum(axis=0, keepdims=True) + overlap.sum(axis=1, keepdims=True) - overlap
    scores = np.zeros(overlap.shape, np.float32)
    np.divide(overlap, union, out=scores, where=union > 0, casting="unsafe")
    return scores[1:, 1:]


def match_counts(scores: np.ndarray, thresh: float) -> tuple[int, int, int, float]:
    """One-to-one matching of GT and predicted objects at an IoU threshold.

    The optimal assignment of ``stardist.matching.matching``: maximise the number of pairs with
    IoU >= ``thresh``, IoU as tie-breaker (``scipy.optimize.linear_sum_assignment``).

    Parameters
    ----------
    scores : ndarray, shape (n_gt, n_pred)
        :func:`iou_matrix`.
    thresh : float

    Returns
    -------
    tp, fp, fn : int
    sum_matched_score : float
        Sum of the matched pairs' IoU.
    """
    n_true, n_pred = scores.shape
    if min(n_true, n_pred) == 0:
        return 0, n_pred, n_true, 0.0
    true_ind, pred_ind = _assignment(scores, thresh)
    matched = scores[true_ind, pred_ind]
    ok = matched >= thresh
    tp = int(np.count_nonzero(ok))
    return tp, n_pred - tp, n_true - tp, float(np.sum(matched[ok]))


def _assignment(scores: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """stardist's optimal assignment: most pairs with IoU >= ``thresh``, IoU as tie-breaker."""
    from scipy.optimize import linear_sum_assignment

    n_matched = min(scores.shape)
    if n_matched == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    costs = -(scores >= thresh).astype(float) - scores / (2 * n_matched)
    return linear_sum_assignment(costs)


def instance_metrics(gt_labels: np.ndarray, pred_labels: np.ndarray,
                     thresholds=DEFAULT_IOU_THRESHOLDS) -> pd.DataFrame:
    """Standard instance-segmentation metrics per IoU threshold (``stardist.matching``'s).

    A GT and a predicted object match one-to-one (optimal assignment) when their IoU
    >= the threshold (stardist's convention; the paper's A% uses a strict >). Same numbers as
    ``stardist.matching.matching(gt, pred, thresholds)`` (tested), computed with
    :func:`overlap_pairs` and :func:`match_pairs` (memory grows with the overlapping pairs,
    not with the number of GT times predicted objects).

    Parameters
    ----------
    gt_labels, pred_labels : ndarray, shape (H, W), integer
        Instance masks, 0 = background.
    thresholds : sequence of float
        IoU thresholds; default 0.50, 0.55, ..., 0.95.

    Returns
    -------
    DataFrame
        One row per threshold, columns :data:`INSTANCE_COLUMNS`: ``tp``, ``fp``, ``fn``;
        ``precision`` TP/(TP+FP); ``recall`` TP/(TP+FN); ``f1``; ``AP`` = TP/(TP+FP+FN)
        (stardist's "accuracy", the AP of the cell-segmentation literature); ``PQ``
        panoptic quality; ``mean_matched_score`` mean IoU of the TPs; ``mean_true_score``
        sum of TP IoUs / GT objects; ``n_true``, ``n_pred``. Ratios with a zero
        denominator are 0 (stardist's convention).

    Examples
    --------
    >>> gt = np.zeros((10, 10), np.uint16); gt[:4, :4] = 1; gt[6:, 6:] = 2
    >>> pred = np.zeros_like(gt); pred[:4, :4] = 5
    >>> instance_metrics(gt, pred, [0.5])[["tp", "fp", "fn", "AP"]].to_dict("records")
    [{'tp': 1, 'fp': 0, 'fn': 1, 'AP': 0.5}]
    """
    gt = _check_labels(gt_labels, "gt_labels")
    pred = _check_labels(pred_labels, "pred_labels")
    if gt.shape != pred.shape:
        raise ValueError(f"gt_labels {gt.shape} and pred_labels {pred.shape} have different shapes")
    thresholds = [float(t) for t in np.atleast_1d(np.asarray(thresholds, float))]
    if not thresholds or any(not 0 <= t <= 1 for t in thresholds):
        raise ValueError(f"thresholds must be IoU values in [0, 1], got {thresholds}")
    pairs = overlap_pairs(gt, pred)
    n_true, n_pred = len(pairs["gt_ids"]), len(pairs["pred_ids"])
    rows = []
    for thresh in thresholds:
        tp, fp, fn, sum_matched_score = match_pairs(pairs, thresh)
        rows.append(_instance_row(thresh, tp, fp, fn, n_true, n_pred, sum_matched_score))
    return pd.DataFrame(rows, columns=INSTANCE_COLUMNS)


def aggregate_instance_metrics(tables) -> pd.DataFrame:
    """Pool per-section :func:`instance_metrics` tables: sum TP/FP/FN, recompute the ratios.

    Equal to ``stardist.matching.matching_dataset(..., by_image=False)`` on the same
    sections, but from tables, so sections never need to be in memory together.

    Parameters
    ----------
    tables : iterable of DataFrame
        Outputs of :func:`instance_metrics` with the same thresholds.

    Returns
    -------
    DataFrame
        One row per threshold, columns :data:`INSTANCE_COLUMNS`.
    """
    tables = list(tables)
    if not tables:
        return pd.DataFrame(columns=INSTANCE_COLUMNS)
    pooled = pd.concat(tables, ignore_index=True)
    pooled["sum_matched"] = pooled["mean_matched_score"] * pooled["tp"]
    rows = []
    for thresh, group in pooled.groupby("thresh", sort=True):
        rows.append(_instance_row(thresh, group["tp"].sum(), group["fp"].sum(),
                                  group["fn"].sum(), group["n_true"].sum(),
                                  group["n_pred"].sum(), group["sum_matched"].sum()))
    return pd.DataFrame(rows, columns=INSTANCE_COLUMNS)


def instance_metrics_dataset(pairs, thresholds=DEFAULT_IOU_THRESHOLDS) -> pd.DataFrame:
    """Pooled :func:`instance_metrics` over ``(gt_labels, pred_labels)`` pairs (an iterable;
    a generator keeps one section in memory at a time)."""
    return aggregate_instance_metrics(instance_metrics(gt, pred, thresholds) for gt, pred in pairs)
