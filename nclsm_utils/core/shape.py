"""The published NCL-SM NTM shape features and the NTM rule (at any pixel size).

Re-exported by :mod:`nclsm_utils.metrics.morphology` (see its docstring for the
definitions). It lives in ``core`` because the synthetic generator labels its
non-transverse fibres with the same rule (:func:`ntm_rule` with a ``scale``).
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

log = logging.getLogger(__package__)

#: Labels with this many pixels or fewer are skipped, as in the published NTM script.
MIN_AREA = 25
#: Padding (pixels) of the fibre mask before Canny edge detection, as published.
ELLIPSE_PAD = 10
#: Canny hysteresis thresholds of the published script.
CANNY_THRESHOLDS = (100, 200)
#: Contours with fewer points than this give ellipse axes (0, 0).
MIN_CONTOUR_POINTS = 10

#: Columns of :func:`shape_features`, in order (``label`` = the published ``Fibre_ID``).
SHAPE_COLUMNS = (
    "label",
    "Fiber_on_Border",
    "Fiber_Area",
    "Fiber_Perimeter",
    "Convexity",
    "Fiber_Width_Ellipse",
    "Fiber_Length_Ellipse",
    "Aspect_Ratio_Ellipse",
    "lengthsquared_by_Area_Ellipse",
    "Fiber_Width_Bbox",
    "Fiber_Length_Bbox",
    "Aspect_Ratio_Bbox",
    "lengthsquared_by_area_Bbox",
    "Fiber_Perimeter_by_Rectangular_Perimeter",
)
_SHAPE_DTYPES = {
    "label": "int64", "Fiber_on_Border": "bool", "Fiber_Area": "int64",
    "Fiber_Perimeter": "int64", "Convexity": "float64", "Fiber_Width_Ellipse": "int64",
    "Fiber_Length_Ellipse": "int64", "Aspect_Ratio_Ellipse": "float64",
    "lengthsquared_by_Area_Ellipse": "float64", "Fiber_Width_Bbox": "int64",
    "Fiber_Length_Bbox": "int64", "Aspect_Ratio_Bbox": "float64",
    "lengthsquared_by_area_Bbox": "float64",
    "Fiber_Perimeter_by_Rectangular_Perimeter": "float64",
}

#: Thresholds of the published NTM rule.
NTM_THRESHOLDS = {
    "area_min": 210, "area_max": 27000, "convexity_max": 1.19, "l2a_bbox_max": 3.10,
    "ellipse_aspect_max": 2.2, "l2a_bbox_elongated": 1.8,
}
#: Median equivalent fibre diameter (pixels) of the real IF section S11 (361.9 px), the size
#: at which the synthetic IF sections are drawn: ``scale = section px / this`` converts
#: the rule's pixel thresholds (see :func:`ntm_thresholds`).
NTM_REFERENCE_DIAMETER = 360.0
#: Columns :func:`ntm_rule` needs.
NTM_COLUMNS = ("Fiber_Area", "Convexity", "lengthsquared_by_area_Bbox", "Fiber_on_Border",
               "Aspect_Ratio_Ellipse")


# ---------------------------------------------------------------------------- validation
def check_labels(labels) -> np.ndarray:
    """Validate a label mask for the feature functions.

    Parameters
    ----------
    labels : array_like, shape (H, W)
        Instance mask, integer dtype (or bool: one fibre), 0 = background.

    Returns
    -------
    ndarray, shape (H, W)
        The same array (bool converted to uint8).

    Raises
    ------
    ValueError
        When the mask is not 2-D, not of an integer dtype, or has negative labels.
        Use :func:`nclsm_utils.dataset.as_labels` to convert integral float masks.

    Examples
    --------
    >>> check_labels(np.zeros((2, 3), dtype=np.uint16)).shape
    (2, 3)
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2-D label mask (H, W), got an array of shape "
                         f"{labels.shape} ({labels.ndim}-D)")
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"expected an integer label mask, got dtype {labels.dtype}; "
                         "convert it with nclsm_utils.dataset.as_labels")
    if np.issubdtype(labels.dtype, np.signedinteger) and labels.size and labels.min() < 0:
        raise ValueError("label mask has negative values; labels must be >= 0 (0 = background)")
    return labels


#: Above this maximum label, labels are compacted before find_objects (which makes a
#: list as long as the maximum label).
_MAX_DIRECT_LABEL = 1 << 24


def _compact_labels(labels: np.ndarray):
    """Return ``(compact, values)``: consecutive labels and ``values[k]`` = original label k.

    ``values`` is None (and ``compact`` is ``labels``) unless the maximum label
    exceeds :data:`_MAX_DIRECT_LABEL`.
    """
    if labels.size == 0 or int(labels.max()) <= _MAX_DIRECT_LABEL:
        return labels, None
    values = np.unique(labels)
    if values[0] != 0:
        values = np.concatenate([[0], values])
    compact = np.searchsorted(values, labels).astype(np.int64)
    return compact, values


def _fibre_crops(labels: np.ndarray, min_area: int):
    """Yield ``(label, mask, (y0, x0), slices)`` for every label with area > ``min_area``.

    ``mask`` is the boolean bounding-box crop of the fibre, ``(y0, x0)`` its origin.
    """
    if labels.size == 0 or not labels.any():
        return
    compact, values = _compact_labels(labels)
    for index, slices in enumerate(ndi.find_objects(compact)):
        if slices is None:
            continue
        mask = compact[slices] == index + 1
        if np.count_nonzero(mask) <= min_area:
            continue
        label = index + 1 if values is None else int(values[index + 1])
        yield label, mask, (slices[0].start, slices[1].start), slices


# ---------------------------------------------------------------------------- per-fibre pieces
def _perimeter_image(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a background 4-neighbour (outside = background), bool (h, w)."""
    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    core = padded[1:-1, 1:-1]
    interior = core & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return core & ~interior


#: skimage.measure.perimeter's weights of the 3x3 border-pattern codes.
_PERIMETER_WEIGHTS = np.zeros(50, dtype=np.float64)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + math.sqrt(2)) / 2


def crofton_perimeter_4(mask: np.ndarray) -> float:
    """skimage's ``measure.perimeter(mask, neighborhood=4)``, evaluated on border pixels only.

    The border pixels (:func:`perimeter_pixels`) are coded by their 3x3 border
    neighbourhood (centre 1, edge neighbours 2, corner neighbours 10) and the
    codes' histogram is weighted exactly as skimage does (1, sqrt 2, (1 + sqrt 2)/2),
    so the value is identical; skimage convolves the whole crop instead.

    Parameters
    ----------
    mask : ndarray of bool, shape (h, w)
        Binary region; pixels outside the array count as background.

    Returns
    -------
    float
        Perimeter length (pixels).

    Examples
    --------
    >>> crofton_perimeter_4(np.ones((3, 4), dtype=bool))
    10.0
    """
    border = _perimeter_image(mask)
    ys, xs = np.nonzero(border)
    padded = np.pad(border, 1).view(np.uint8)
    ys, xs = ys + 1, xs + 1
    code = (1 + 2 * (padded[ys - 1, xs] + padded[ys + 1, xs] + padded[ys, xs - 1] + padded[ys, xs + 1])
            + 10 * (padded[ys - 1, xs - 1] + padded[ys - 1, xs + 1] + padded[ys + 1, xs - 1]
                    + padded[ys + 1, xs + 1]))
    histogram = np.bincount(code, minlength=50)
    return float(histogram @ _PERIMETER_WEIGHTS)


def perimeter_pixels(mask: np.ndarray) -> int:
    """Count the 4-connected perimeter pixels of a binary mask.

    A foreground pixel is on the perimeter when at least one of its four
    neighbours (up, down, left, right) is background; pixels outside the array
    count as background. This is mahotas ``bwperim(mask, 4)`` on a padded mask,
    the published ``Fiber_Perimeter``.

    Parameters
    ----------
    mask : (h, w) bool ndarray
        The fibre (True) on its background (False).

    Returns
    -------
    int
        Number of perimeter pixels.

    Examples
    --------
    >>> perimeter_pixels(np.ones((3, 4), dtype=bool))   # all but the 2 centre pixels
    10
    """
    return int(np.count_nonzero(_perimeter_image(mask)))


def _diamond_hull_points(rows: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Convex hull vertices, int32 ``(x, y)`` in doubled coordinates, of the diamond points
    ``(r +- 1/2, c)``, ``(r, c +- 1/2)`` of the pixels ``(rows, left)`` and ``(rows, right)``.
    """
    import cv2

    y = 2 * rows
    points = []
    for c in (2 * left, 2 * right):
        points += [np.stack([c - 1, y], 1), np.stack([c + 1, y], 1),
                   np.stack([c, y - 1], 1), np.stack([c, y + 1], 1)]
    points = np.concatenate(points).astype(np.int32)
    return cv2.convexHull(points).reshape(-1, 2)


def _convex_hull_row_spans(mask: np.ndarray):
    """Per-row column spans of skimage's convex hull image of ``mask``.

    Returns ``(rows, first, last)``: for each pixel row of the hull, the first and
    last column (inclusive) whose pixel centre lies inside or on the hull of the
    pixels' diamond points ``(r +- 1/2, c)``, ``(r, c +- 1/2)``. Computed in doubled
    integer coordinates, so it is exact.
    """
    occupied = np.flatnonzero(mask.any(axis=1))
    if occupied.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    sub = mask[occupied]
    left = sub.argmax(axis=1)
    right = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    hull = _diamond_hull_points(occupied, left, right).astype(np.int64)   # (x, y), doubled
    x1, y1 = hull[:, 0], hull[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    slanted = y1 != y2
    x1, y1, x2, y2 = x1[slanted], y1[slanted], x2[slanted], y2[slanted]
    rows = np.arange(occupied[0], occupied[-1] + 1, dtype=np.int64)
    Y = 2 * rows[:, None]                                            # (R, 1)
    covers = (Y >= np.minimum(y1, y2)) & (Y <= np.maximum(y1, y2))   # (R, E)
    dy, dx = y2 - y1, x2 - x1
    sign = np.sign(dy)
    numerator = (x1 * dy + (Y - y1) * dx) * sign                     # x = numerator / den
    den2 = 2 * dy * sign                                             # > 0; /2 undoes doubling
    lo = -((-numerator) // den2)                                     # ceil(x / 2)
    hi = numerator // den2                                           # floor(x / 2)
    big = np.iinfo(np.int64).max
    first = np.where(covers, lo, big).min(axis=1)
    last = np.where(covers, hi, -big).max(axis=1)
    return rows, first, last


def convex_hull_pixels(mask: np.ndarray) -> int:
    """Pixel count of the convex hull image of a binary mask.

    Equal to ``np.count_nonzero(skimage.morphology.convex_hull_image(mask))``
    (offset coordinates, borders included), computed exactly and much faster.

    Parameters
    ----------
    mask : 2-D bool array
        Binary region, any height and width.

    Returns
    -------
    int
        Number of pixels whose centre lies in the hull (0 for an empty mask).

    Examples
    --------
    >>> m = np.zeros((5, 5), dtype=bool); m[0, 0] = m[4, 4] = m[0, 4] = True
    >>> convex_hull_pixels(m)
    15
    """
    rows, first, last = _convex_hull_row_spans(np.asarray(mask, dtype=bool))
    return int(np.clip(last - first + 1, 0, None).sum())


def convex_hull_mask(mask: np.ndarray) -> np.ndarray:
    """The convex hull image of a binary mask, as :func:`skimage.morphology.convex_hull_image`.

    Parameters
    ----------
    mask : array_like of bool
        2-D binary image (truthy = foreground).

    Returns
    -------
    ndarray of bool
        The hull image, the shape of ``mask``.

    Examples
    --------
    >>> m = np.zeros((3, 3), dtype=bool); m[0, 0] = m[2, 2] = m[0, 2] = True
    >>> convex_hull_mask(m).astype(int).tolist()
    [[1, 1, 1], [0, 1, 1], [0, 0, 1]]
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)
    rows, first, last = _convex_hull_row_spans(mask)
    for row, a, b in zip(rows, first, last):
        if b >= a:
            out[row, max(a, 0):b + 1] = True
    return out


def ellipse_axes(mask: np.ndarray, origin: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """Axes of the published NTM script's ellipse fit, truncated to integers.

    The mask (0/255) is padded by 10 pixels, Canny edges (100, 200) are traced with
    ``cv2.findContours(RETR_CCOMP, CHAIN_APPROX_SIMPLE)``, hole contours (those with
    a parent) are kept and ``cv2.fitEllipse`` is fitted to the one with most points.

    Parameters
    ----------
    mask : ndarray of bool, shape (h, w)
        The fibre's bounding-box crop.
    origin : (int, int)
        ``(y0, x0)`` of the crop in the full label image, pixels. The points are
        fitted where the published code had them (full image + 10-pixel pad), so
        the floating-point fit is the same as published, not just equal in theory.

    Returns
    -------
    (int, int)
        First and second axis length (pixels) in OpenCV's order, truncated; ``(0, 0)``
        when the biggest hole contour has fewer than 10 points (or there is none).

    Examples
    --------
    >>> yy, xx = np.mgrid[:60, :60]
    >>> disc = (yy - 30) ** 2 + (xx - 30) ** 2 <= 20 ** 2
    >>> [abs(a - 39) <= 2 for a in ellipse_axes(disc)]
    [True, True]
    """
    import cv2

    binary = np.pad(np.asarray(mask, dtype=np.uint8) * 255, ELLIPSE_PAD)
    edges = cv2.Canny(binary, *CANNY_THRESHOLDS)
    contours, hierarchy = cv2.findContours(edges, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return 0, 0
    holes = [c for i, c in enumerate(contours) if hierarchy[0][i][3] != -1]
    if not holes:
        return 0, 0
    biggest = holes[int(np.argmax([len(c) for c in holes]))]   # first of equal lengths
    if len(biggest) < MIN_CONTOUR_POINTS:
        return 0, 0
    shifted = biggest + np.array([origin[1], origin[0]], dtype=biggest.dtype)
    _, (first, second), _ = cv2.fitEllipse(shifted)
    return int(first), int(second)


def reduced_ratio(a: int, b: int) -> float:
    """``max(a, b) / min(a, b)`` as the published code computes it (via the GCD).

    Returns 0.0 when both are 0 and ``inf`` when only the smaller is 0 (the
    published code divides by zero there).

    Examples
    --------
    >>> reduced_ratio(140, 203)
    1.45
    >>> reduced_ratio(0, 0), reduced_ratio(0, 7)
    (0.0, inf)
    """
    length, width = max(int(a), int(b)), min(int(a), int(b))
    if length == 0:
        return 0.0
    if width == 0:
        return math.inf
    r = math.gcd(width, length)
    return (length // r) / (width // r)


def _fibre_shape(label: int, mask: np.ndarray, origin, on_border: bool) -> dict:
    area = int(np.count_nonzero(mask))
    perimeter = perimeter_pixels(mask)
    hull = convex_hull_pixels(mask)
    width_e, length_e = ellipse_axes(mask, origin)
    h, w = mask.shape
    width_b, length_b = min(w - 1, h - 1), max(w - 1, h - 1)
    rect = 2 * width_b + 2 * length_b
    return {
        "label": int(label),
        "Fiber_on_Border": bool(on_border),
        "Fiber_Area": area,
        "Fiber_Perimeter": perimeter,
        "Convexity": hull / area,
        "Fiber_Width_Ellipse": width_e,
        "Fiber_Length_Ellipse": length_e,
        "Aspect_Ratio_Ellipse": reduced_ratio(width_e, length_e),
        "lengthsquared_by_Area_Ellipse": length_e * length_e / area,
        "Fiber_Width_Bbox": width_b,
        "Fiber_Length_Bbox": length_b,
        "Aspect_Ratio_Bbox": reduced_ratio(width_b, length_b),
        "lengthsquared_by_area_Bbox": length_b * length_b / area,
        "Fiber_Perimeter_by_Rectangular_Perimeter": perimeter / rect if rect else math.nan,
    }


def _empty_frame(columns, dtypes=None) -> pd.DataFrame:
    dtypes = dtypes or {}
    return pd.DataFrame({c: pd.Series([], dtype=dtypes.get(c, "float64")) for c in columns})


# ---------------------------------------------------------------------------- public API
def shape_features(labels, min_area: int = MIN_AREA) -> pd.DataFrame:
    """Per-fibre shape features of the published NCL-SM NTM script.

    Parameters
    ----------
    labels : ndarray, shape (H, W), integer dtype
        Instance mask, 0 = background. Labels need not be consecutive.
    min_area : int, optional
        Labels with ``min_area`` pixels or fewer are skipped (published: 25).

    Returns
    -------
    DataFrame
        One row per kept label, sorted by label, columns :data:`SHAPE_COLUMNS`:
        ``label`` (the published ``Fibre_ID``), ``Fiber_on_Border`` (bool: a pixel on
        the outermost row/column), ``Fiber_Area`` (pixels), ``Fiber_Perimeter``
        (4-connected perimeter pixels), ``Convexity`` (convex hull pixels / area, >= 1),
        ``Fiber_Width_Ellipse``, ``Fiber_Length_Ellipse`` (pixels, int, OpenCV's
        order; 0 when no usable contour), ``Aspect_Ratio_Ellipse`` (larger / smaller,
        0.0 when the axes are 0), ``lengthsquared_by_Area_Ellipse``,
        ``Fiber_Width_Bbox``, ``Fiber_Length_Bbox`` (pixels: smaller and larger of
        ``x_max - x_min`` and ``y_max - y_min``), ``Aspect_Ratio_Bbox`` (``inf`` for a
        one-pixel-thick fibre), ``lengthsquared_by_area_Bbox`` and
        ``Fiber_Perimeter_by_Rectangular_Perimeter``. Empty (with these columns)
        when no label is kept.

    Raises
    ------
    ValueError
        When ``labels`` is not a 2-D integer mask.

    Examples
    --------
    >>> labels = np.zeros((30, 30), dtype=np.uint8)
    >>> labels[0:10, 0:10] = 3          # on the border
    >>> labels[15:20, 15:20] = 4        # 25 pixels: skipped
    >>> t = shape_features(labels)
    >>> t[["label", "Fiber_on_Border", "Fiber_Area", "Convexity"]].values.tolist()
    [[3, True, 100, 1.0]]
    """
    labels = check_labels(labels)
    height, width = labels.shape
    rows = []
    for label, mask, origin, slices in _fibre_crops(labels, min_area):
        on_border = (slices[0].start == 0 or slices[1].start == 0
                     or slices[0].stop == height or slices[1].stop == width)
        rows.append(_fibre_shape(label, mask, origin, on_border))
    log.debug("shape features of %d fibres", len(rows))
    if not rows:
        return _empty_frame(SHAPE_COLUMNS, _SHAPE_DTYPES)
    return pd.DataFrame(rows, columns=list(SHAPE_COLUMNS)).astype(_SHAPE_DTYPES)


def ntm_thresholds(scale: float = 1.0) -> dict:
    """The published NTM rule's thresholds at another pixel size.

    ``scale`` is the length of one NCL-SM IF pixel in the section's pixels (0.2 for
    synthetic IF sections drawn with 72-px fibres for NCL-SM's 360-px ones): the two area
    thresholds scale with ``scale ** 2``; the others are ratios and stay.

    >>> t = ntm_thresholds(0.2)
    >>> round(t["area_min"], 6), round(t["area_max"], 6), t["convexity_max"]
    (8.4, 1080.0, 1.19)
    """
    scale = float(scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    t = dict(NTM_THRESHOLDS)
    t["area_min"] = NTM_THRESHOLDS["area_min"] * scale ** 2
    t["area_max"] = NTM_THRESHOLDS["area_max"] * scale ** 2
    return t


def ntm_rule(features: pd.DataFrame, scale: float = 1.0) -> pd.Series:
    """The published non-transverse-myofibre (NTM) rule.

    A fibre is flagged when ``210 < Fiber_Area < 27000`` and ``Convexity < 1.19`` and
    ``lengthsquared_by_area_Bbox < 3.10`` and it is not on the border and not
    (``Aspect_Ratio_Ellipse > 2.2`` and ``lengthsquared_by_area_Bbox > 1.8``). In NCL-SM's
    IF half the NTM labels are this rule's output on the full-resolution masks.

    Parameters
    ----------
    features : DataFrame
        A :func:`shape_features` table or the published csv (needs the columns
        :data:`NTM_COLUMNS`; ``Fiber_on_Border`` may be bool or ``"True"``/``"False"``).
    scale : float
        NCL-SM IF pixels to the section's pixels (:func:`ntm_thresholds`); 1 (default) is
        the published rule on NCL-SM's own pixels.

    Returns
    -------
    Series of bool
        Same index as ``features``. Rows with a missing (NaN) value in any of the
        needed columns are **not** flagged.

    Raises
    ------
    KeyError
        When a needed column is missing.

    Examples
    --------
    >>> t = pd.DataFrame({"Fiber_Area": [5000, 100, 5000], "Convexity": [1.05, 1.0, float("nan")],
    ...                   "lengthsquared_by_area_Bbox": [1.3, 1.3, 1.3],
    ...                   "Fiber_on_Border": [False, False, False],
    ...                   "Aspect_Ratio_Ellipse": [1.2, 1.2, 1.2]})
    >>> ntm_rule(t).tolist()
    [True, False, False]
    """
    missing = [c for c in NTM_COLUMNS if c not in features.columns]
    if missing:
        raise KeyError(f"ntm_rule needs the column(s) {missing}; got {list(features.columns)}")
    area = pd.to_numeric(features["Fiber_Area"], errors="coerce")
    convexity = pd.to_numeric(features["Convexity"], errors="coerce")
    l2a = pd.to_numeric(features["lengthsquared_by_area_Bbox"], errors="coerce")
    aspect = pd.to_numeric(features["Aspect_Ratio_Ellipse"], errors="coerce")
    border = _as_bool(features["Fiber_on_Border"])
    t = ntm_thresholds(scale)
    known = area.notna() & convexity.notna() & l2a.notna() & aspect.notna() & border.notna()
    flagged = ((area > t["area_min"]) & (area < t["area_max"]) & (convexity < t["convexity_max"])
               & (l2a < t["l2a_bbox_max"]) & (border == False)  # noqa: E712 (NaN-safe)
               & ~((aspect > t["ellipse_aspect_max"]) & (l2a > t["l2a_bbox_elongated"])))
    result = (flagged & known).astype(bool)
    result.name = "NTM"
    return result


def _as_bool(column: pd.Series) -> pd.Series:
    """bool / 0-1 / 'True'-'False' strings -> object Series of True/False/NaN."""
    def convert(value):
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, str):
            lowered = value.strip().lower()
            return {"true": True, "false": False, "1": True, "0": False}.get(lowered, np.nan)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return np.nan
        return bool(value)

    return column.map(convert).astype(object)
