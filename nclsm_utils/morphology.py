"""Per-fibre shape features of instance masks: the published NTM features and morphology.

Two families of per-fibre tables live here:

* :func:`shape_features` reproduces, value for value, the shape-feature csv of the
  published NCL-SM non-transverse-myofibre (NTM) script (columns ``Fiber_Area`` ...
  ``Fiber_Perimeter_by_Rectangular_Perimeter``), and :func:`ntm_rule` applies the
  published NTM rule to such a table.
* :func:`fibre_morphology` gives standard regionprops-style morphology (circularity,
  solidity, Feret diameters ...) in physical units, and :func:`compare_morphology`
  compares a method's fibres with the ground truth's feature by feature
  (medians, Mann-Whitney U, rank-biserial and common-language effect sizes).

Every function works per fibre on its bounding-box crop (found once with
:func:`scipy.ndimage.find_objects`), so a full 12k x 15k IF section with ~500 fibres
takes a few seconds and no full-resolution temporary copies are made.

Definitions that reproduce the published values exactly (checked against all 488
fibres of IF section S11 in the published csv):

* perimeter: foreground pixels with at least one 4-neighbour (up/down/left/right)
  in the background, the image outside counting as background (mahotas
  ``bwperim(mask, 4)`` on the padded mask);
* convex hull: the pixel count of :func:`skimage.morphology.convex_hull_image`
  (hull of the pixels' diamond-offset points, pixel centres on the hull's border
  included). It is computed here exactly, with integer arithmetic on a
  scan-line fill, 20-30x faster than skimage; ``cv2.convexHull`` + ``fillPoly``
  does *not* reproduce it;
* ellipse: Canny (100, 200) on the 10-pixel padded 0/255 mask, hole contours of
  ``cv2.findContours(RETR_CCOMP, CHAIN_APPROX_SIMPLE)``, the one with most points,
  ``cv2.fitEllipse`` on its points, axes in OpenCV's order truncated to int. The
  points are shifted back to the published code's coordinates (full image plus
  the 10-pixel pad) before fitting, so fitEllipse's floating-point arithmetic sees
  exactly the published numbers (on S11, crop coordinates give the same axes);
* bounding box: ``x_max - x_min`` and ``y_max - y_min`` (no +1).

Example
-------
>>> import numpy as np
>>> labels = np.zeros((40, 60), dtype=np.uint16)
>>> labels[5:25, 10:50] = 1                       # a 20 x 40 rectangle
>>> table = shape_features(labels)
>>> table[["label", "Fiber_Area", "Fiber_Perimeter", "Fiber_Width_Bbox", "Fiber_Length_Bbox"]].values.tolist()
[[1, 800, 116, 19, 39]]
>>> bool(ntm_rule(table).iloc[0])
True
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

log = logging.getLogger(__name__)

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
#: Columns :func:`ntm_rule` needs.
NTM_COLUMNS = ("Fiber_Area", "Convexity", "lengthsquared_by_area_Bbox", "Fiber_on_Border",
               "Aspect_Ratio_Ellipse")

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
    mask : ndarray of bool, shape (h, w)

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


def _convex_hull_row_spans(mask: np.ndarray):
    """Per-row column spans of skimage's convex hull image of ``mask``.

    Returns ``(rows, first, last)``: for each pixel row of the hull, the first and
    last column (inclusive) whose pixel centre lies inside or on the hull of the
    pixels' diamond points ``(r +- 1/2, c)``, ``(r, c +- 1/2)``. Computed in doubled
    integer coordinates, so it is exact.
    """
    import cv2

    occupied = np.flatnonzero(mask.any(axis=1))
    if occupied.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    sub = mask[occupied]
    left = sub.argmax(axis=1)
    right = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    y = 2 * occupied
    points = []
    for c in (2 * left, 2 * right):
        points += [np.stack([c - 1, y], 1), np.stack([c + 1, y], 1),
                   np.stack([c, y - 1], 1), np.stack([c, y + 1], 1)]
    points = np.concatenate(points).astype(np.int32)
    hull = cv2.convexHull(points).reshape(-1, 2).astype(np.int64)   # (x, y), doubled
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
    mask : ndarray of bool, shape (h, w)

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
    mask : ndarray of bool, shape (h, w)

    Returns
    -------
    ndarray of bool, shape (h, w)

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


def ntm_rule(features: pd.DataFrame) -> pd.Series:
    """The published non-transverse-myofibre (NTM) rule.

    A fibre is flagged when ``210 < Fiber_Area < 27000`` and ``Convexity < 1.19`` and
    ``lengthsquared_by_area_Bbox < 3.10`` and it is not on the border and not
    (``Aspect_Ratio_Ellipse > 2.2`` and ``lengthsquared_by_area_Bbox > 1.8``).

    Parameters
    ----------
    features : DataFrame
        A :func:`shape_features` table or the published csv (needs the columns
        :data:`NTM_COLUMNS`; ``Fiber_on_Border`` may be bool or ``"True"``/``"False"``).

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
    t = NTM_THRESHOLDS
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


# ---------------------------------------------------------------------------- morphology
def _feret_diameters(rows: np.ndarray, first: np.ndarray, last: np.ndarray) -> tuple[float, float]:
    """Maximum and minimum Feret diameter (pixels) of a convex region given by row spans.

    The maximum equals skimage's ``feret_diameter_max``: its points (the 0.5
    iso-contour of the convex image) are the pixels' edge midpoints that face the
    background, whose convex hull is the hull of the row-extreme pixels' diamond
    points used here. The minimum is the smallest caliper width over the edges
    of that hull (rotating calipers).
    """
    import cv2

    keep = last >= first
    rows, first, last = rows[keep], first[keep], last[keep]
    if rows.size == 0:
        return 0.0, 0.0
    y = 2 * rows
    points = []
    for c in (2 * first, 2 * last):
        points += [np.stack([c - 1, y], 1), np.stack([c + 1, y], 1),
                   np.stack([c, y - 1], 1), np.stack([c, y + 1], 1)]
    points = np.concatenate(points).astype(np.int32)
    vertices = cv2.convexHull(points).reshape(-1, 2).astype(np.float64) / 2.0
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
