"""Uncertainty of the summary metrics: bootstrap intervals and paired comparisons of methods.

Every number of Tables II and III is a statistic of a few hundred fibres from a few sections.
This module says how much it would move with other fibres of the same kind, and which
differences between two methods are larger than that.

Resampling (fibres of one section are not independent, and sections differ, so every
resampling is *stratified by section*: each resample keeps each section's share)

* paper metrics (mean IoU, A%, r_AoB, r_AiB) of a per-fibre table
  (:func:`nclsm_utils.metrics.evaluate`): the **matched fibres are resampled with
  replacement within each section** (:func:`paper_metric_intervals`); MF-A is a count and
  gets no interval;
* instance metrics (AP, F1, PQ): a section is cut into a fixed grid of tiles
  (:func:`tile_counts`); a ground-truth fibre's TP or FN is counted in the tile of its
  centroid, a false positive in the tile of the predicted fibre's centroid; **tiles are
  resampled within sections** and the pooled ratios recomputed (:func:`instance_intervals`);
* paired comparisons (:func:`pairwise_comparisons`): ground-truth fibres that **both**
  methods matched; the per-fibre differences are resampled within sections, with the
  Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`) and Holm's adjustment across
  all pairs and metrics (:func:`holm`).

Intervals are 95 % percentile intervals of :func:`scipy.stats.bootstrap` (2,000 resamples,
seeded: the same input gives the same bounds; a constant statistic gives a zero-width
interval). The point value is always the statistic of the data itself, as in the tables.

Example
-------
>>> import pandas as pd
>>> table = pd.DataFrame({"section": ["a"] * 4 + ["b"] * 4, "matched": True,
...                       "iou": [0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8]})
>>> low, high = paper_metric_intervals(table)["mean IoU"]
>>> round(low, 3), round(high, 3)     # each section's fibres are constant: no spread
(0.85, 0.85)
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from . import A_THRESHOLDS, a_column

#: Confidence level, bootstrap resamples and seed of every interval.
CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0
#: Tiles per side of a section for the instance metrics' resampling.
TILES = 4
#: The instance metrics with intervals: (column, statistic, IoU threshold).
INSTANCE_CI = (("AP@0.5", "AP", 0.5), ("AP@0.75", "AP", 0.75), ("F1@0.5", "f1", 0.5),
               ("PQ", "PQ", 0.5))
#: Per-fibre comparisons of :func:`pairwise_comparisons`: name -> how a fibre's value is
#: computed from its row (higher IoU is better; the two agreements are absolute errors in
#: percentage points, lower is better).
PAIRED_METRICS = ("IoU", "membrane error", "mass error")


def ci_columns(metric: str) -> tuple[str, str]:
    """Names of a metric's interval columns.

    >>> ci_columns("mean IoU")
    ('mean IoU CI low', 'mean IoU CI high')
    """
    return f"{metric} CI low", f"{metric} CI high"


# ---------------------------------------------------------------------------- the bootstrap
def stratified_interval(strata: Sequence[np.ndarray], statistic: Callable[[np.ndarray], np.ndarray],
                        confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                        seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` with resampling within strata.

    Parameters
    ----------
    strata : sequence of 1-D int arrays
        Row indices of each stratum (e.g. the matched fibres of each section). Strata are
        resampled independently with replacement, each keeping its size
        (:func:`scipy.stats.bootstrap` with one sample per stratum); a stratum of one row
        is the same in every resample and is kept as it is.
    statistic : callable
        ``statistic(indices)`` with ``indices`` of shape ``(batch, n)`` (the rows of one
        resample per line) returns ``(batch,)`` values.

    Returns
    -------
    (low, high) : floats; NaN when there are no rows or the statistic is NaN in a resample
    (e.g. a correlation of constant values).

    Examples
    --------
    >>> values = np.array([1.0, 2.0, 3.0, 4.0])
    >>> low, high = stratified_interval([np.arange(4)], lambda i: values[i].mean(axis=-1))
    >>> bool(1.0 <= low < 2.5 < high <= 4.0)
    True
    """
    strata = [np.asarray(s, dtype=np.intp).ravel() for s in strata]
    strata = [s for s in strata if s.size]
    if not strata:
        return math.nan, math.nan
    varying = [s for s in strata if s.size >= 2]
    fixed = np.concatenate([s for s in strata if s.size < 2] or [np.empty(0, np.intp)])
    if not varying:
        value = float(np.asarray(statistic(fixed[None, :])).ravel()[0])
        return value, value

    def resampled(*samples, axis=-1):
        samples = [np.atleast_2d(np.asarray(s)) for s in samples]
        batch = samples[0].shape[0]
        parts = samples + ([np.broadcast_to(fixed, (batch, fixed.size))] if fixed.size else [])
        return np.asarray(statistic(np.concatenate(parts, axis=-1)), dtype=float)

    with warnings.catch_warnings():   # scipy's note on degenerate data is about BCa only
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(tuple(varying), resampled, vectorized=True, paired=False,
                                 confidence_level=confidence, n_resamples=int(n_resamples),
                                 method="percentile", rng=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return low, high


def _strata(sections: np.ndarray) -> list[np.ndarray]:
    """Row indices grouped by section label, in order of first appearance."""
    codes, _ = pd.factorize(pd.Series(sections).astype(str))
    return [np.flatnonzero(codes == k) for k in range(codes.max() + 1)] if len(codes) else []


def _pearson_rows(x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Pearson r of ``x[rows]`` vs ``y[rows]`` along the last axis (NaN without variance)."""
    a, b = x[rows], y[rows]
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(axis=-1) / denominator, np.nan)


# ---------------------------------------------------------------------------- paper metrics
def paper_metric_intervals(per_fibre, thresholds=A_THRESHOLDS, confidence: float = CONFIDENCE,
                           n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict:
    """Bootstrap intervals of the paper metrics of per-fibre tables.

    Parameters
    ----------
    per_fibre : DataFrame or list of DataFrame
        :func:`nclsm_utils.metrics.evaluate` tables (columns ``matched``, ``iou`` and, for
        the correlations, ``gt_/pred_mass_missed`` and ``gt_/pred_membrane_included``); a
        ``section`` column (or one table per section) defines the strata.
    thresholds : tuple of float
        The A% thresholds.

    Returns
    -------
    dict
        metric name (``mean IoU``, ``A%(IoU>t)``, ``r_AoB``, ``r_AiB``) -> ``(low, high)``:
        matched fibres resampled within sections (see the module docstring).
    """
    tables = [per_fibre] if isinstance(per_fibre, pd.DataFrame) else list(per_fibre)
    parts = []
    for k, table in enumerate(tables):
        table = table[table["matched"].astype(bool)]
        section = table["section"].astype(str) if "section" in table else pd.Series(
            f"table{k}", index=table.index)
        parts.append(table.assign(_stratum=f"{k}:" + section))
    matched = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["iou", "_stratum"])
    strata = _strata(matched["_stratum"].to_numpy())
    iou = matched["iou"].to_numpy(float)

    def kwargs():
        return {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}

    out = {"mean IoU": stratified_interval(strata, lambda r: iou[r].mean(axis=-1), **kwargs())}
    for t in thresholds:
        out[a_column(t)] = stratified_interval(
            strata, lambda r, t=t: 100.0 * (iou[r] > t).mean(axis=-1), **kwargs())
    for name, gt, pred in (("r_AoB", "gt_mass_missed", "pred_mass_missed"),
                           ("r_AiB", "gt_membrane_included", "pred_membrane_included")):
        if gt not in matched or pred not in matched:
            out[name] = (math.nan, math.nan)
            continue
        x, y = matched[gt].to_numpy(float), matched[pred].to_numpy(float)
        keep = np.isfinite(x) & np.isfinite(y)
        rows = [s[keep[s]] for s in strata]
        out[name] = stratified_interval(rows, lambda r, x=x, y=y: _pearson_rows(x, y, r),
                                        **kwargs())
    return out


# ---------------------------------------------------------------------------- instance metrics
def tile_counts(gt_labels: np.ndarray, pred_labels: np.ndarray, thresholds=(0.5, 0.75),
                tiles: int = TILES) -> pd.DataFrame:
    """TP, FP, FN and the summed IoU of the TPs per tile of a ``tiles x tiles`` grid.

    The one-to-one matching is :func:`stardist.matching.matching`'s, computed from the
    overlapping pairs as :func:`nclsm_utils.metrics.instance_metrics` computes it (so the
    tiles add up to its counts). A
    ground-truth fibre (TP or FN) counts in the tile of its centroid, a false positive in
    the tile of its own centroid.

    Returns
    -------
    DataFrame
        Columns ``tile``, ``thresh``, ``tp``, ``fp``, ``fn``, ``sum_iou``; one row per tile
        and threshold (tiles without any object included, with zeros).

    Examples
    --------
    >>> gt = np.zeros((8, 8), int); gt[:3, :3] = 1; gt[5:, 5:] = 2
    >>> pred = np.zeros((8, 8), int); pred[:3, :3] = 7
    >>> counts = tile_counts(gt, pred, thresholds=(0.5,), tiles=2)
    >>> counts[["tile", "tp", "fp", "fn"]].to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
    [{'tile': 0, 'tp': 1, 'fp': 0, 'fn': 0}, {'tile': 1, 'tp': 0, 'fp': 0, 'fn': 0},
     {'tile': 2, 'tp': 0, 'fp': 0, 'fn': 0}, {'tile': 3, 'tp': 0, 'fp': 0, 'fn': 1}]
    """
    from .instance import matched_pairs, overlap_pairs

    gt = np.asarray(gt_labels)
    pred = np.asarray(pred_labels)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"gt_labels {gt.shape} and pred_labels {pred.shape} must be 2-D label "
                         "images of the same shape")
    if tiles < 1:
        raise ValueError(f"tiles must be >= 1, got {tiles}")
    pairs = overlap_pairs(gt, pred)
    n_tiles = tiles * tiles
    gt_tile = _centroid_tiles(gt, pairs["gt_ids"], pairs["gt_area"], tiles)
    pred_tile = _centroid_tiles(pred, pairs["pred_ids"], pairs["pred_area"], tiles)
    gt_all = np.bincount(gt_tile, minlength=n_tiles)
    pred_all = np.bincount(pred_tile, minlength=n_tiles)
    rows = []
    for thresh in thresholds:
        g, p, iou = matched_pairs(pairs, float(thresh))
        tp = np.bincount(gt_tile[g], minlength=n_tiles)
        sum_iou = np.zeros(n_tiles, float)
        for t, score in zip(gt_tile[g].tolist(), iou.tolist()):  # pair order, as summed before
            sum_iou[t] += score
        rows.append(pd.DataFrame({"tile": np.arange(n_tiles), "thresh": float(thresh),
                                  "tp": tp.astype(int), "fp": (pred_all - np.bincount(
                                      pred_tile[p], minlength=n_tiles)).astype(int),
                                  "fn": (gt_all - tp).astype(int), "sum_iou": sum_iou}))
    return pd.concat(rows, ignore_index=True)


def _centroid_tiles(labels: np.ndarray, ids: np.ndarray, areas: np.ndarray, tiles: int,
                    chunk_rows: int = 1024) -> np.ndarray:
    """Tile (row-major in a ``tiles x tiles`` grid) of each label's centroid, for ``ids``
    (sorted, present) with their pixel ``areas``; coordinate sums in row chunks."""
    height, width = labels.shape
    if not len(ids):
        return np.zeros(0, np.intp)
    from .instance import _indexer

    to_index = _indexer(ids)
    sum_r = np.zeros(len(ids), float)
    sum_c = np.zeros(len(ids), float)
    columns = np.arange(width, dtype=float)
    for start in range(0, height, chunk_rows):
        block = labels[start:start + chunk_rows]
        inside = block > 0
        index = to_index(block[inside])
        r, c = np.nonzero(inside)
        sum_r += np.bincount(index, weights=(r + start).astype(float), minlength=len(ids))
        sum_c += np.bincount(index, weights=columns[c], minlength=len(ids))
    centre_r, centre_c = sum_r / areas, sum_c / areas
    row = np.minimum((centre_r * tiles / height).astype(int), tiles - 1)
    col = np.minimum((centre_c * tiles / width).astype(int), tiles - 1)
    return (row * tiles + col).astype(np.intp)


def _instance_value(name: str, tp, fp, fn, sum_iou):
    with np.errstate(invalid="ignore", divide="ignore"):
        if name == "AP":
            return np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        if name == "f1":
            return np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        if name == "PQ":  # segmentation quality x recognition quality
            return np.where(tp + fp / 2 + fn / 2 > 0, sum_iou / (tp + fp / 2 + fn / 2), np.nan)
    raise ValueError(f"unknown instance metric {name!r}")


def instance_intervals(tiles_per_section, metrics=INSTANCE_CI, confidence: float = CONFIDENCE,
                       n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict:
    """Bootstrap intervals of pooled AP, F1 and PQ from per-tile counts.

    Parameters
    ----------
    tiles_per_section : list of DataFrame
        One :func:`tile_counts` table per section (the strata).
    metrics : sequence of (column, statistic, threshold)
        Statistic ``AP``, ``f1`` or ``PQ`` at an IoU threshold of the tables.

    Returns
    -------
    dict
        column -> ``(low, high)``: tiles resampled within sections, TP/FP/FN pooled per
        resample (see the module docstring).
    """
    tables = [t for t in tiles_per_section if t is not None and len(t)]
    out = {}
    for column, name, thresh in metrics:
        parts = [t[np.isclose(t["thresh"].astype(float), thresh)] for t in tables]
        parts = [p for p in parts if len(p)]
        if not parts:
            out[column] = (math.nan, math.nan)
            continue
        counts = pd.concat(parts, ignore_index=True)
        strata, start = [], 0
        for p in parts:
            strata.append(np.arange(start, start + len(p)))
            start += len(p)
        tp, fp, fn, si = (counts[c].to_numpy(float) for c in ("tp", "fp", "fn", "sum_iou"))

        def statistic(rows, name=name, tp=tp, fp=fp, fn=fn, si=si):
            return _instance_value(name, tp[rows].sum(-1), fp[rows].sum(-1), fn[rows].sum(-1),
                                   si[rows].sum(-1))

        out[column] = stratified_interval(strata, statistic, confidence, n_resamples, seed)
    return out


# ---------------------------------------------------------------------------- paired comparisons
def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of p-values (family-wise error); NaN stays NaN.

    >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not ok.size:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def _paired_values(table: pd.DataFrame, metric: str, suffix: str = "") -> np.ndarray:
    """A per-fibre value of ``metric`` from the columns ending in ``suffix``."""
    def column(name):
        return table[name + suffix].to_numpy(float)

    if metric == "IoU":
        return column("iou")
    if metric == "membrane error":
        return np.abs(column("pred_membrane_included") - column("gt_membrane_included"))
    if metric == "mass error":
        return np.abs(column("pred_mass_missed") - column("gt_mass_missed"))
    raise ValueError(f"unknown paired metric {metric!r}; one of {PAIRED_METRICS}")


PAIRWISE_COLUMNS = ["method_a", "method_b", "metric", "better", "n fibres", "mean a", "mean b",
                    "difference", "CI low", "CI high", "wilcoxon p", "holm p",
                    "distinguishable"]


def pairwise_comparisons(per_fibre: dict, metrics=PAIRED_METRICS, alpha: float = 0.05,
                         confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                         seed: int = SEED) -> pd.DataFrame:
    """Every pair of methods on the ground-truth fibres both matched.

    Parameters
    ----------
    per_fibre : dict
        method label -> per-fibre table (:func:`nclsm_utils.metrics.evaluate` rows with
        ``section`` and ``gt_id`` columns; the fibres of all sections scored).
    metrics : sequence of str
        ``IoU`` (higher is better), ``membrane error`` and ``mass error`` (the absolute
        difference of the predicted and ground-truth membrane-included / mass-missed
        percentages of a fibre; lower is better).
    alpha : float
        Level of ``distinguishable``.

    Returns
    -------
    DataFrame
        Columns :data:`PAIRWISE_COLUMNS`: ``difference`` = mean(a) - mean(b) over the fibres
        both matched with its bootstrap interval (fibres resampled within sections),
        ``wilcoxon p`` (two-sided signed-rank test of the paired values), ``holm p``
        (adjusted over all rows), ``better`` (the method with the better mean) and
        ``distinguishable`` (``holm p < alpha`` and the interval excludes 0).
    """
    labels = list(per_fibre)
    rows = []
    for a, b in itertools.combinations(labels, 2):
        ta, tb = per_fibre[a], per_fibre[b]
        keys = ["section", "gt_id"] if "section" in ta and "section" in tb else ["gt_id"]
        both = ta[ta["matched"].astype(bool)].merge(tb[tb["matched"].astype(bool)], on=keys,
                                                    suffixes=("_a", "_b"))
        for metric in metrics:
            try:
                va = _paired_values(both, metric, "_a")
                vb = _paired_values(both, metric, "_b")
            except KeyError:
                continue
            keep = np.isfinite(va) & np.isfinite(vb)
            va, vb = va[keep], vb[keep]
            sections = both["section"].astype(str).to_numpy()[keep] if "section" in both else \
                np.zeros(keep.sum(), str)
            diff = va - vb
            row = {"method_a": a, "method_b": b, "metric": metric, "n fibres": int(diff.size),
                   "mean a": float(va.mean()) if diff.size else math.nan,
                   "mean b": float(vb.mean()) if diff.size else math.nan,
                   "difference": float(diff.mean()) if diff.size else math.nan}
            low, high = stratified_interval(_strata(sections), lambda r: diff[r].mean(axis=-1),
                                            confidence, n_resamples, seed)
            p = math.nan
            if diff.size and np.any(diff != 0):
                p = float(stats.wilcoxon(va, vb, zero_method="wilcox").pvalue)
            higher_better = metric == "IoU"
            better = ""
            if diff.size and row["difference"] != 0:
                better = a if (row["difference"] > 0) == higher_better else b
            row.update({"CI low": low, "CI high": high, "wilcoxon p": p, "better": better})
            rows.append(row)
    table = pd.DataFrame(rows, columns=[c for c in PAIRWISE_COLUMNS if c not in
                                        ("holm p", "distinguishable")])
    table["holm p"] = holm(table["wilcoxon p"].to_numpy(float)) if len(table) else []
    excludes_zero = (table["CI low"] > 0) | (table["CI high"] < 0)
    table["distinguishable"] = (table["holm p"] < alpha) & excludes_zero
    return table[PAIRWISE_COLUMNS]
