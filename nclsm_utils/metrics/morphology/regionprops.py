"""Standard per-fibre morphology (regionprops-style) and method-vs-ground-truth comparison.

Part of :mod:`nclsm_utils.metrics.morphology` (see its docstring); import from there.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .shape import (_compact_labels, _convex_hull_row_spans, _diamond_hull_points, _empty_frame,
                    check_labels, crofton_perimeter_4)

#: Columns of :func:`fibre_morphology`, in order.
MORPHOLOGY_COLUMNS = (
    "label", "area", "perimeter", "circularity", "solidity", "eccentricity",
    "major_axis_length", "minor_axis_length", "feret_diameter_max", "feret_diameter_min",
    "shape_index",
)
#: Columns of :func:`compare_morphology`, in order.
COMPARE_COLUMNS = (
    "feature", "n_method", "n_gt", "median_method", "median_gt", "U", "p_value",
    "rank_biserial", "cles",
)


# ---------------------------------------------------------------------------- morphology
def _feret_diameters(rows: np.ndarray, first: np.ndarray, last: np.ndarray) -> tuple[float, float]:
    """Maximum and minimum Feret diameter (pixels) of a convex region given by row spans.

    The maximum equals skimage's ``feret_diameter_max``: its points (the 0.5
    iso-contour of the convex image) are the pixels' edge midpoints that face the
    background, whose convex hull is the hull of the row-extreme pixels' diamond
    points used here. The minimum is the smallest caliper width over the edges
    of that hull (rotating calipers).
    """
    keep = last >= first
    rows, first, last = rows[keep], first[keep], last[keep]
    if rows.size == 0:
        return 0.0, 0.0
    vertices = _diamond_hull_points(rows, first, last).astype(np.float64) / 2.0
    diff = vertices[:, None, :] - vertices[None, :, :]
    feret_max = float(np.sqrt((diff ** 2).sum(-1).max()))
    edges = np.roll(vertices, -1, axis=0) - vertices                 # (V, 2)
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    valid = lengths > 0
    rel = vertices[None, :, :] - vertices[valid][:, None, :]         # (E, V, 2)
    cross = np.abs(edges[valid][:, None, 0] * rel[..., 1] - edges[valid][:, None, 1] * rel[..., 0])
    widths = cross.max(axis=1) / lengths[valid]
    return feret_max, float(widths.min())


def fibre_morphology(labels, pixel_size: float = 1.0, min_area: int = 0) -> pd.DataFrame:
    """Standard per-fibre morphology, for comparing segmentation methods.

    Values are skimage's regionprops definitions (identical to
    :func:`skimage.measure.regionprops_table`, tested), computed per fibre crop through
    ``regionprops_table(..., extra_properties=...)`` with faster exact
    implementations of the costly ones (perimeter, convex hull, moments): a full IF
    section takes seconds instead of tens of seconds.

    Parameters
    ----------
    labels : ndarray, shape (H, W), integer dtype
        Instance mask, 0 = background.
    pixel_size : float, optional
        Side of a pixel in physical units (e.g. micrometres); lengths are scaled by
        it and areas by its square. Default 1 (pixels).
    min_area : int, optional
        Labels with this many pixels or fewer are skipped (default 0: keep all).

    Returns
    -------
    DataFrame
        One row per label (sorted), columns :data:`MORPHOLOGY_COLUMNS`: ``label``,
        ``area`` (units^2), ``perimeter`` (units; skimage's 4-neighbourhood
        perimeter, :func:`crofton_perimeter_4`), ``circularity`` (``4 pi area / perimeter^2``, NaN for zero
        perimeter), ``solidity`` (area / convex hull area), ``eccentricity``,
        ``major_axis_length``, ``minor_axis_length`` (units; of the moments
        ellipse), ``feret_diameter_max`` (units; as skimage), ``feret_diameter_min``
        (units; minimum caliper width of the same hull) and ``shape_index``
        (``perimeter / (2 sqrt(pi area))``, 1 for a disc). Dimensionless
        columns do not depend on ``pixel_size``.

    Examples
    --------
    >>> labels = np.zeros((50, 50), dtype=np.uint16)
    >>> labels[10:20, 10:40] = 1
    >>> row = fibre_morphology(labels, pixel_size=0.5).iloc[0]
    >>> float(row["area"]), float(row["solidity"]), round(float(row["feret_diameter_min"]), 1)
    (75.0, 1.0, 5.0)
    """
    from skimage.measure import regionprops_table

    labels = check_labels(labels)
    if pixel_size is None or not np.isfinite(pixel_size) or pixel_size <= 0:
        raise ValueError(f"pixel_size must be a positive number, got {pixel_size!r}")
    if labels.size == 0 or not labels.any():
        return _empty_frame(MORPHOLOGY_COLUMNS, {"label": "int64"})
    compact, values = _compact_labels(labels)
    props = pd.DataFrame(regionprops_table(
        compact, properties=("label", "area"), extra_properties=(_region_extras,)))
    if values is not None:
        props["label"] = values[props["label"].to_numpy()]
    props = props[props["area"] > min_area].reset_index(drop=True)
    if props.empty:
        return _empty_frame(MORPHOLOGY_COLUMNS, {"label": "int64"})
    extra = {name: props[f"_region_extras-{i}"].astype(float) for i, name in enumerate(_EXTRAS)}
    area = props["area"].astype(float)
    perimeter = extra["perimeter"]
    out = pd.DataFrame({"label": props["label"].astype("int64")})
    out["area"] = area * pixel_size ** 2
    out["perimeter"] = perimeter * pixel_size
    out["circularity"] = (4 * np.pi * area / perimeter ** 2).where(perimeter > 0)
    out["solidity"] = area / extra["hull_area"]
    out["eccentricity"] = extra["eccentricity"]
    out["major_axis_length"] = extra["major_axis_length"] * pixel_size
    out["minor_axis_length"] = extra["minor_axis_length"] * pixel_size
    out["feret_diameter_max"] = extra["feret_diameter_max"] * pixel_size
    out["feret_diameter_min"] = extra["feret_diameter_min"] * pixel_size
    out["shape_index"] = perimeter / (2 * np.sqrt(np.pi * area))
    return out[list(MORPHOLOGY_COLUMNS)]


_EXTRAS = ("perimeter", "hull_area", "feret_diameter_max", "feret_diameter_min", "eccentricity",
           "major_axis_length", "minor_axis_length")


def _moment_axes(mask: np.ndarray) -> tuple[float, float, float]:
    """Eccentricity and major/minor axis length (pixels) of the moments ellipse.

    The same definitions as skimage's regionprops (eigenvalues of the inertia
    tensor, population moments; axis = 4 sqrt(eigenvalue)). The second moments
    are exact integer sums (no BLAS: skimage's ``moments_central`` goes through
    ``tensordot``, which dominates the run time and oversubscribes cores on
    large crops).
    """
    rows, cols = np.nonzero(mask)
    n = int(rows.size)
    if n == 0:
        return 0.0, 0.0, 0.0
    rows = rows.astype(np.int64)
    cols = cols.astype(np.int64)
    s_r, s_c = int(rows.sum()), int(cols.sum())
    s_rr, s_cc, s_rc = int((rows * rows).sum()), int((cols * cols).sum()), int((rows * cols).sum())
    n2 = n * n                                  # Python ints: exact, no overflow
    var_r = (n * s_rr - s_r * s_r) / n2
    var_c = (n * s_cc - s_c * s_c) / n2
    cov = (n * s_rc - s_r * s_c) / n2
    half_sum, half_diff = (var_r + var_c) / 2, (var_r - var_c) / 2
    root = math.hypot(half_diff, cov)
    big, small = max(half_sum + root, 0.0), max(half_sum - root, 0.0)
    eccentricity = math.sqrt(1 - small / big) if big > 0 else 0.0
    return eccentricity, 4 * math.sqrt(big), 4 * math.sqrt(small)


def _region_extras(regionmask: np.ndarray) -> np.ndarray:
    """regionprops extra property: the :data:`_EXTRAS` of one region, in that order."""
    rows, first, last = _convex_hull_row_spans(regionmask)
    hull_area = float(np.clip(last - first + 1, 0, None).sum())
    feret_max, feret_min = _feret_diameters(rows, first, last)
    eccentricity, major, minor = _moment_axes(regionmask)
    return np.array([crofton_perimeter_4(regionmask), hull_area, feret_max, feret_min,
                     eccentricity, major, minor])


def compare_morphology(method_table: pd.DataFrame, gt_table: pd.DataFrame,
                       features=None) -> pd.DataFrame:
    """Compare per-fibre feature distributions of a method with the ground truth.

    For each feature: the medians, the two-sided Mann-Whitney U test
    (:func:`scipy.stats.mannwhitneyu`, method sample first), the rank-biserial
    correlation ``r = 1 - 2 U_min / (n1 n2)`` (Wendt's formula with the smaller of
    the two U statistics: 0 = identical distributions, 1 = complete separation)
    and the common-language effect size ``CLES = U / (n1 n2)``, the probability that
    a random method fibre has the larger value (ties count half); 0.5 = no effect.
    ``r == |2 CLES - 1|``.

    Parameters
    ----------
    method_table, gt_table : DataFrame
        Per-fibre tables (e.g. :func:`fibre_morphology`), one row per fibre.
    features : list of str, optional
        Columns to compare; default the numeric columns the two tables share,
        ``label`` excluded.

    Returns
    -------
    DataFrame
        One row per feature, columns :data:`COMPARE_COLUMNS`: ``feature``, ``n_method``,
        ``n_gt`` (non-NaN values used), ``median_method``, ``median_gt``, ``U`` (the
        method sample's statistic), ``p_value``, ``rank_biserial``, ``cles``. Statistics
        are NaN where a side has no values (an empty table gives NaN rows, no error).

    Raises
    ------
    KeyError
        When a requested feature is in neither table.

    Examples
    --------
    >>> a = pd.DataFrame({"label": [1, 2, 3], "area": [1.0, 2.0, 3.0]})
    >>> b = pd.DataFrame({"label": [1, 2, 3], "area": [4.0, 5.0, 6.0]})
    >>> row = compare_morphology(a, b).iloc[0]
    >>> row["feature"], float(row["U"]), float(row["rank_biserial"]), float(row["cles"])
    ('area', 0.0, 1.0, 0.0)
    """
    from scipy.stats import mannwhitneyu

    if features is None:
        shared = [c for c in method_table.columns if c in gt_table.columns and c != "label"]
        features = [c for c in shared
                    if pd.api.types.is_numeric_dtype(method_table[c])
                    and pd.api.types.is_numeric_dtype(gt_table[c])
                    and not pd.api.types.is_bool_dtype(method_table[c])]
        if not features and (method_table.empty or gt_table.empty):
            # an empty table built without columns or dtypes: compare what it would have
            features = shared or [c for c in MORPHOLOGY_COLUMNS if c != "label"]
    else:
        features = list(features)
        missing = [f for f in features if f not in method_table.columns and f not in gt_table.columns]
        if missing:
            raise KeyError(f"feature(s) {missing} in neither table")
    rows = []
    for feature in features:
        x = _finite_values(method_table, feature)
        y = _finite_values(gt_table, feature)
        n1, n2 = len(x), len(y)
        row = {"feature": feature, "n_method": n1, "n_gt": n2,
               "median_method": float(np.median(x)) if n1 else math.nan,
               "median_gt": float(np.median(y)) if n2 else math.nan,
               "U": math.nan, "p_value": math.nan, "rank_biserial": math.nan, "cles": math.nan}
        if n1 and n2:
            test = mannwhitneyu(x, y, alternative="two-sided")
            u = float(test.statistic)
            pairs = n1 * n2
            row.update(U=u, p_value=float(test.pvalue),
                       rank_biserial=1.0 - 2.0 * min(u, pairs - u) / pairs, cles=u / pairs)
        rows.append(row)
    if not rows:
        return _empty_frame(COMPARE_COLUMNS, {"feature": "object", "n_method": "int64",
                                              "n_gt": "int64"})
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


def _finite_values(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table.columns:
        return np.zeros(0)
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
    return values[np.isfinite(values)]
