"""Who gets missed: recall of ground-truth fibres by the fibre's brightness and size.

A method that misses a kind of fibre (dark in the mitochondrial-mass channel, or small)
skews every per-fibre statistic computed on its output, and an overall recall hides it. Here
every ground-truth fibre gets two properties, each relative to the median fibre of its own
section (so IMC and IF sections, and bright and dim sections, pool on one scale):

* ``mass`` -- mean G (mitochondrial-mass marker) over the fibre's pixels / the section's
  median of those means;
* ``area`` -- pixel count / the section's median fibre area;

and is *detected* when a predicted object overlaps it with IoU >= 0.5 (at that threshold a
fibre has at most one such object, so this is the recall of the one-to-one matching of
AP@0.5 / F1@0.5). Fibres are then binned into deciles of each property (pooled over the
sections; the same edges for every method, since the ground truth is the same), and each
decile's recall gets a 95 % bootstrap interval with fibres resampled within sections
(:func:`nclsm_utils.metrics.uncertainty.stratified_interval`).

:func:`lowest_decile_gap` asks the question a study needs answered: is the darkest (or
smallest) tenth detected less often than the other nine tenths? The difference of recalls
gets an interval from the same resampling; "missed more" means the whole interval is below
zero.

Example
-------
>>> import numpy as np
>>> gt = np.zeros((8, 8), int); gt[:4, :4] = 1; gt[4:, 4:] = 2
>>> pred = np.zeros_like(gt); pred[:4, :4] = 7          # fibre 2 is missed
>>> image = np.zeros((8, 8, 3), np.uint8); image[..., 1] = 100; image[4:, 4:, 1] = 10
>>> fibre_detection(gt, pred, image)[["gt_id", "area", "mass", "detected"]].values.tolist()
[[1, 16, 100.0, True], [2, 16, 10.0, False]]
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .instance import overlap_pairs
from .uncertainty import CONFIDENCE, N_RESAMPLES, SEED, _strata, stratified_interval

#: IoU at which a ground-truth fibre counts as detected.
DETECTION_IOU = 0.5
#: The fibre properties recall is broken down by (columns ``rel_<name>``).
PROPERTIES = ("mass", "area")
#: Columns of :func:`recall_by_decile`.
DECILE_COLUMNS = ["method", "property", "decile", "low", "high", "fibres", "detected", "recall",
                  "recall CI low", "recall CI high"]


def fibre_detection(gt_labels: np.ndarray, pred_labels: np.ndarray,
                    image: np.ndarray | None = None, iou: float = DETECTION_IOU) -> pd.DataFrame:
    """One row per ground-truth fibre: its size, brightness and whether it was detected.

    Parameters
    ----------
    gt_labels, pred_labels : ndarray, shape (H, W)
        Instance masks (0 = background).
    image : ndarray, shape (H, W, C), optional
        The section's image; channel 1 (G) is the mitochondrial-mass marker. Without it
        ``mass`` is NaN.
    iou : float
        A fibre is detected when some predicted object has IoU >= ``iou`` with it.

    Returns
    -------
    DataFrame
        ``gt_id``, ``area`` (pixels), ``mass`` (mean G), ``best_iou`` (the highest IoU of any
        predicted object), ``detected``.
    """
    gt_labels = np.asarray(gt_labels)
    pred_labels = np.asarray(pred_labels)
    pairs = overlap_pairs(gt_labels, pred_labels)
    gt_ids = np.concatenate([[0], pairs["gt_ids"]])
    best = np.zeros(len(pairs["gt_ids"]), np.float32)
    np.maximum.at(best, pairs["gt"], pairs["iou"])
    area = pairs["gt_area"]
    mass = np.full(len(gt_ids) - 1, math.nan)
    if image is not None:
        image = np.asarray(image)
        if image.shape[:2] != gt_labels.shape:
            raise ValueError(f"image {image.shape} and gt_labels {gt_labels.shape} differ in size")
        green = image[..., 1] if image.ndim == 3 else image
        index = np.searchsorted(gt_ids, gt_labels.ravel())
        sums = np.bincount(index, weights=green.ravel().astype(np.float64),
                           minlength=len(gt_ids))[1:]
        mass = sums / np.maximum(area, 1)
    return pd.DataFrame({"gt_id": gt_ids[1:].astype(np.int64), "area": area.astype(np.int64),
                         "mass": mass, "best_iou": best.astype(np.float64),
                         "detected": best >= iou})


def relative_to_section(table: pd.DataFrame, columns=PROPERTIES) -> pd.DataFrame:
    """Add ``rel_<column>``: each fibre's value over its section's median (column ``section``).

    >>> t = pd.DataFrame({"section": ["a", "a", "a", "b"], "mass": [1.0, 2.0, 4.0, 8.0]})
    >>> relative_to_section(t, ["mass"])["rel_mass"].tolist()
    [0.5, 1.0, 2.0, 1.0]
    """
    out = table.copy()
    for column in columns:
        median = out.groupby("section")[column].transform("median")
        out[f"rel_{column}"] = out[column] / median.where(median > 0)
    return out


def decile_edges(values, bins: int = 10) -> np.ndarray:
    """Quantile edges of ``values``: each edge is a value of the data (``inverted_cdf``), and a
    bin holds the values above the edge before it up to its own edge (the first bin from the
    minimum). NaN is dropped; ties merge bins, so fewer bins may result.

    >>> decile_edges([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], bins=5).tolist()
    [1.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    >>> decile_edges([1, 1, 1, 5, 5, 5, 5, 5, 5, 5], bins=5).tolist()   # bins [1, 1] and (1, 5]
    [1.0, 1.0, 5.0]
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.zeros(0)
    ordered = np.sort(values)
    n = ordered.size
    # inverted_cdf quantile k / bins in integer arithmetic: the ceil(k n / bins)-th value
    edges = ordered[[max(-(-k * n // bins) - 1, 0) for k in range(bins + 1)]]
    # the first bin always exists (it may hold only the minimum's ties)
    return np.concatenate([edges[:1], np.unique(edges[1:])])


def _bins(values, edges: np.ndarray) -> np.ndarray:
    """Bin number (1-based) of each value for ``edges``; 0 for NaN."""
    values = np.asarray(values, dtype=float)
    inner = edges[1:-1]
    out = np.searchsorted(inner, values, side="left") + 1
    out[~np.isfinite(values)] = 0
    return out


def recall_interval(detected: np.ndarray, sections: np.ndarray, **bootstrap) -> tuple[float, float]:
    """95 % bootstrap interval of the share of ``detected`` fibres, resampled within sections.

    >>> recall_interval(np.array([True, True, False, True]), np.array(["a", "a", "b", "b"]))
    (0.5, 1.0)
    """
    detected = detected.astype(float)
    return stratified_interval(_strata(sections), lambda i: detected[i].mean(axis=-1),
                               **bootstrap)


def recall_by_decile(table: pd.DataFrame, prop: str = "mass", bins: int = 10,
                     confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                     seed: int = SEED) -> pd.DataFrame:
    """Recall of ground-truth fibres per decile of a relative fibre property, per method.

    Parameters
    ----------
    table : DataFrame
        Rows of :func:`fibre_detection` for several sections and methods, with columns
        ``method``, ``section``, ``detected`` and ``rel_<prop>`` (:func:`relative_to_section`).
    prop : ``"mass"`` or ``"area"``
    bins : int
        Number of quantile bins (deciles by default); the edges come from the ground-truth
        fibres (the rows of the first method), so every method is binned alike.

    Returns
    -------
    DataFrame with :data:`DECILE_COLUMNS`: ``low`` and ``high`` the bin's range of the relative
    property, ``fibres`` and ``detected`` counts, ``recall`` with its bootstrap interval.
    """
    column = f"rel_{prop}"
    if table.empty:
        return pd.DataFrame(columns=DECILE_COLUMNS)
    first = table[table["method"] == table["method"].iloc[0]]
    edges = decile_edges(first[column], bins)
    rows = []
    for method, group in table.groupby("method", sort=False):
        numbers = _bins(group[column].to_numpy(), edges)
        for k in range(1, len(edges)):
            chosen = group[numbers == k]
            detected = chosen["detected"].to_numpy(bool)
            low, high = recall_interval(detected, chosen["section"].to_numpy(),
                                         confidence=confidence, n_resamples=n_resamples,
                                         seed=seed)
            rows.append({"method": method, "property": prop, "decile": k,
                         "low": float(edges[k - 1]), "high": float(edges[k]),
                         "fibres": int(detected.size), "detected": int(detected.sum()),
                         "recall": float(detected.mean()) if detected.size else math.nan,
                         "recall CI low": low, "recall CI high": high})
    return pd.DataFrame(rows, columns=DECILE_COLUMNS)


def lowest_decile_gap(table: pd.DataFrame, prop: str = "mass", bins: int = 10,
                      confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                      seed: int = SEED) -> pd.DataFrame:
    """Per method: recall of the lowest decile of ``prop`` against the rest, with intervals.

    Returns
    -------
    DataFrame
        ``method``, ``property``, ``threshold`` (upper edge of the lowest decile, relative
        to the section's median fibre), ``recall`` (all fibres), ``lowest recall``,
        ``rest recall``, ``difference`` (lowest - rest) with ``difference CI low`` /
        ``difference CI high``, ``overall gap`` (lowest - all) and ``missed more``
        (the difference's interval lies below 0).
    """
    column = f"rel_{prop}"
    rows = []
    if table.empty:
        return pd.DataFrame(rows)
    first = table[table["method"] == table["method"].iloc[0]]
    edges = decile_edges(first[column], bins)
    threshold = float(edges[1]) if edges.size > 1 else math.nan
    for method, group in table.groupby("method", sort=False):
        group = group[np.isfinite(group[column].to_numpy(float))]
        detected = group["detected"].to_numpy(float)
        lowest = (_bins(group[column].to_numpy(), edges) == 1).astype(float)

        def difference(i, detected=detected, lowest=lowest):
            d, low = detected[i], lowest[i]
            n_low = low.sum(axis=-1)
            n_rest = (1 - low).sum(axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return (d * low).sum(axis=-1) / n_low - (d * (1 - low)).sum(axis=-1) / n_rest

        if lowest.sum() and (1 - lowest).sum():
            value = float(difference(np.arange(len(detected))[None, :])[0])
            low, high = stratified_interval(_strata(group["section"].to_numpy()), difference,
                                            confidence=confidence, n_resamples=n_resamples,
                                            seed=seed)
        else:
            value, low, high = math.nan, math.nan, math.nan
        overall = float(detected.mean()) if detected.size else math.nan
        lowest_recall = float(detected[lowest == 1].mean()) if lowest.sum() else math.nan
        rest = float(detected[lowest == 0].mean()) if (1 - lowest).sum() else math.nan
        rows.append({"method": method, "property": prop, "threshold": threshold,
                     "fibres": int(detected.size), "lowest fibres": int(lowest.sum()),
                     "recall": overall, "lowest recall": lowest_recall, "rest recall": rest,
                     "difference": value, "difference CI low": low,
                     "difference CI high": high, "overall gap": lowest_recall - overall,
                     "missed more": bool(high < 0) if np.isfinite(high) else False})
    return pd.DataFrame(rows)


def gap_sentence(row) -> str:
    """One sentence on a row of :func:`lowest_decile_gap`.

    >>> row = {"method": "unet", "property": "mass", "threshold": 0.41, "recall": 0.95,
    ...        "lowest recall": 0.6, "rest recall": 0.99, "difference": -0.39,
    ...        "difference CI low": -0.5, "difference CI high": -0.28, "missed more": True}
    >>> print(gap_sentence(row))  # doctest: +NORMALIZE_WHITESPACE
    unet misses the darkest tenth of fibres (mean mass under 0.41 x the section's median
    fibre) more than the rest: recall 0.60 against 0.99 (difference -0.39, 95 % interval
    -0.50 to -0.28).
    """
    what = {"mass": ("darkest", "mean mass"), "area": ("smallest", "area")}[row["property"]]
    head = (f"{row['method']} {{verb}} the {what[0]} tenth of fibres ({what[1]} under "
            f"{row['threshold']:.2f} x the section's median fibre)")
    if not np.isfinite(row["difference"]):
        return head.format(verb="has too few fibres to compare in") + "."
    verb = "misses" if row["missed more"] else "does not measurably miss"
    return (head.format(verb=verb) + " more than the rest"
            f": recall {row['lowest recall']:.2f} against {row['rest recall']:.2f} "
            f"(difference {row['difference']:.2f}, 95 % interval "
            f"{row['difference CI low']:.2f} to {row['difference CI high']:.2f}).")


def recall_report(table: pd.DataFrame, properties=PROPERTIES, **bootstrap):
    """:func:`recall_by_decile` and :func:`lowest_decile_gap` of every property, each as one
    table (rows of all properties and methods): ``(deciles, gaps)``."""
    deciles = [recall_by_decile(table, prop, **bootstrap) for prop in properties]
    gaps = [lowest_decile_gap(table, prop, **bootstrap) for prop in properties]
    return (pd.concat(deciles, ignore_index=True),
            pd.concat(gaps, ignore_index=True) if any(len(g) for g in gaps) else pd.DataFrame())
