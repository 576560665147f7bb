"""The NCL-SM paper's metrics: per-fibre centroid matching, IoU and AiB/AoB ring percentages
(:func:`evaluate`), the one-row summary of Tables II and III (:func:`summarise`) and the
per-fibre csv files (ours and the published notebook's).

Definitions (the NCL-SM README's account of the published notebook), per ground-truth (GT)
fibre, i.e. each non-zero label of ``gt_labels``:

* **filled region** -- the label's pixels with its holes filled. A hole is a background
  component (8-connected, as OpenCV's contour tracing treats the pixels outside a fibre)
  not reaching the image border; other fibres inside a hole belong to the region.
* **centroid** -- ``(floor(mean row), floor(mean column))`` of the filled region's pixels
  (exact integers; the published ``int(m10 / m00)`` of the contour polygon's moments
  truncates the same way and differs by a fraction of a pixel).
* **match** -- the predicted fibre whose filled region contains the centroid; when several
  do, the lowest label (the published code visits labels in ascending order). None:
  not detected, ``pred_id`` 0.
* **IoU** -- intersection over union of the two filled regions (0 when not detected).
* **rings**, square element of side ``2k + 1`` (``k`` = ``half_width``: 2 IMC, 6 IF):
  AiB = region minus its erosion, AoB = dilation minus region. Pixels outside the image
  count as region for the erosion (``cv2.erode``'s default; ``scipy.ndimage`` needs
  ``border_value=1``), so a fibre cut by the image edge has no inner ring along the cut;
  the dilation treats them as background and AoB is clipped to the image.
* **positive pixels** -- membrane-positive: R above the 85th percentile of the section's R
  channel; mass-positive: G above the 75th percentile of its G (``np.percentile``, linear).
* ``membrane_included`` = 100 |AiB & membrane+| / |AiB|, ``mass_missed`` =
  100 |AoB & mass+| / |AoB|, in percent; NaN when the ring is empty.

Every label is one fibre. The published code differs in three ways, which
``definition="published"`` follows (:mod:`nclsm_utils.metrics._contours`): it matches the
other way round (the *assessed* centroid inside the *GT* contour; also
``match="pred_centroid"``); it fills the contour traced on the background pixels around a
fibre, so regions gain a one-pixel outer band (a 10 x 10 fibre becomes 140 pixels); and it
overwrites the outermost image rows/columns with the highest label before tracing.
"""
from __future__ import annotations

import logging
import math
import numbers
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.dataset import HALF_WIDTH
from ..core.io import DataError
from ._contours import contour_centroid, filled_crop, published_contours, strictly_inside
from ._regions import (
    LabelBoxes, _check_labels, _counts, _dilate, _erode, _fast_dtype, _percentile_from_counts,
    fill_holes, label_boxes,
)

log = logging.getLogger(__name__)

#: Percentile of the section's R channel above which a pixel is membrane-positive.
MEMBRANE_PERCENTILE = 85
#: Percentile of the section's G channel above which a pixel is mass-positive.
MASS_PERCENTILE = 75
#: IoU thresholds of the A% columns (strictly greater than).
A_THRESHOLDS = (0.80, 0.90, 0.95)

#: Matching rules of :func:`evaluate` (the first is the README's and the default).
MATCH_RULES = ("gt_centroid", "pred_centroid")

#: Fibre definitions of :func:`evaluate`: ``"labels"`` (default: one fibre per label, its
#: filled pixels) and ``"published"`` (the published notebook's OpenCV contours, so that
#: indices and IoUs equal its per-fibre csvs).
DEFINITIONS = ("labels", "published")
#: Extra columns of :func:`evaluate` with ``definition="published"``: the label value of
#: each contour (0 when not detected).
PUBLISHED_LABEL_COLUMNS = ["gt_label", "pred_label"]

#: Columns of the per-fibre table of :func:`evaluate`, in order.
PER_FIBRE_COLUMNS = [
    "gt_id", "pred_id", "matched", "iou", "gt_area", "pred_area", "centroid_row",
    "centroid_col", "gt_membrane_included", "gt_mass_missed", "pred_membrane_included",
    "pred_mass_missed", "n_gt", "n_pred",
]
_PER_FIBRE_DTYPES = {
    "gt_id": "int64", "pred_id": "int64", "matched": "bool", "iou": "float64",
    "gt_area": "int64", "pred_area": "int64", "centroid_row": "int64", "centroid_col": "int64",
    "gt_membrane_included": "float64", "gt_mass_missed": "float64",
    "pred_membrane_included": "float64", "pred_mass_missed": "float64",
    "n_gt": "int64", "n_pred": "int64",
}


def a_column(threshold: float) -> str:
    """Name of the A% column for an IoU threshold, e.g. ``'A%(IoU>0.80)'``."""
    return f"A%(IoU>{threshold:.2f})"


#: Columns of the one-row summary of :func:`summarise`, in order.
SUMMARY_COLUMNS = ["MF-A", "r_AoB", "r_AiB", "mean IoU", *(a_column(t) for t in A_THRESHOLDS),
                   "GT fibres", "detected %", "unmatched predictions"]

#: Columns of the published notebook's per-fibre csv.
PUBLISHED_COLUMNS = [
    "Fibre_GT", "Fibre_Assess", "Total_GTcontours", "Total_Assess_contours",
    "IoU_Score_Assess_GT", "GT_proportion_membrane_included", "GT_proportion_mito_mass_missed",
    "Assess_proportion_membrane_included", "Assess_proportion_mito_mass_missed",
]


class MetricWarning(UserWarning):
    """A summary statistic could not be computed (too few matched fibres, no variance)."""


# ---------------------------------------------------------------------------- inputs
def modality_half_width(modality: str) -> int:
    """Ring half-width ``k`` (pixels) of a modality: 2 for IMC, 6 for IF.

    >>> modality_half_width("IF")
    6
    """
    try:
        return HALF_WIDTH[modality]
    except (KeyError, TypeError):
        raise ValueError(f"unknown modality {modality!r}; expected one of "
                         f"{', '.join(HALF_WIDTH)}") from None


def _check_half_width(half_width) -> int:
    if isinstance(half_width, (bool, np.bool_)) or not isinstance(half_width, numbers.Integral):
        raise ValueError(f"half_width must be a positive integer (2 for IMC, 6 for IF), got "
                         f"{half_width!r}")
    if half_width < 1:
        raise ValueError(f"half_width must be >= 1 pixel (2 for IMC, 6 for IF), got {half_width}")
    return int(half_width)


def _check_image(image, shape) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an RGB array (H, W, 3) with R = membrane and G = mass "
                         f"marker, got shape {image.shape}")
    if image.shape[:2] != tuple(shape):
        raise ValueError(f"image is {image.shape[:2]} but the masks are {tuple(shape)}; they "
                         "must have the same height and width")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"image must have an integer or float dtype, got {image.dtype}")
    return image


# ---------------------------------------------------------------------------- thresholds
def positive_thresholds(image: np.ndarray) -> tuple[float, float]:
    """Section-wide thresholds of membrane- and mass-positive pixels.

    Parameters
    ----------
    image : ndarray, shape (H, W, 3)
        RGB section image: R membrane marker, G mitochondrial-mass marker.

    Returns
    -------
    (float, float)
        ``np.percentile(R, 85)`` and ``np.percentile(G, 75)`` (exactly); a pixel is
        positive when strictly above its threshold.

    Examples
    --------
    >>> image = np.zeros((4, 5, 3), np.uint8); image[..., 0] = np.arange(20).reshape(4, 5)
    >>> positive_thresholds(image) == (np.percentile(image[..., 0], 85), 0.0)
    True
    """
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError("cannot take percentiles of an empty image")
    bins = _fast_dtype(image)
    result = []
    for channel, q in ((0, MEMBRANE_PERCENTILE), (1, MASS_PERCENTILE)):
        if bins is None:
            result.append(float(np.percentile(image[..., channel], q)))
        else:
            result.append(_percentile_from_counts(_counts(image, channel, bins), q, image.dtype))
    return tuple(result)


# ---------------------------------------------------------------------------- filled regions and rings
@dataclass(frozen=True)
class _Fibre:
    """One fibre's filled region on a crop whose top-left pixel is ``(row0, col0)``."""

    row0: int
    col0: int
    filled: np.ndarray  # bool (h, w)
    area: int
    centroid: tuple[int, int]

    @property
    def slices(self) -> tuple[slice, slice]:
        h, w = self.filled.shape
        return slice(self.row0, self.row0 + h), slice(self.col0, self.col0 + w)

    def contains(self, row: int, col: int) -> bool:
        r, c = row - self.row0, col - self.col0
        h, w = self.filled.shape
        return 0 <= r < h and 0 <= c < w and bool(self.filled[r, c])


def _fibre(labels: np.ndarray, label, box: tuple[int, int, int, int], pad: int,
           centroid: bool = True) -> _Fibre:
    """Filled region of ``label`` on its bounding box padded by ``pad`` (clipped to the image)."""
    height, width = labels.shape
    r0, r1, c0, c1 = box
    r0, c0 = max(r0 - pad, 0), max(c0 - pad, 0)
    r1, c1 = min(r1 + pad, height), min(c1 + pad, width)
    filled = fill_holes(labels[r0:r1, c0:c1] == label)
    if not centroid:
        return _Fibre(r0, c0, filled, int(np.count_nonzero(filled)), (-1, -1))
    per_row = filled.sum(axis=1, dtype=np.int64)
    per_col = filled.sum(axis=0, dtype=np.int64)
    area = int(per_row.sum())
    # floor of the mean pixel coordinate, in exact integer arithmetic
    row = r0 + int(np.dot(per_row, np.arange(r1 - r0, dtype=np.int64))) // area
    col = c0 + int(np.dot(per_col, np.arange(c1 - c0, dtype=np.int64))) // area
    return _Fibre(r0, c0, filled, area, (row, col))


def ring_masks(filled: np.ndarray, half_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Inner (AiB) and outer (AoB) rings of a filled region.

    Parameters
    ----------
    filled : ndarray of bool, shape (h, w)
        The region; the array is treated as the whole image (pixels outside it are
        part of the region for the erosion and background for the dilation).
    half_width : int
        k; the structuring element is a ``(2k+1) x (2k+1)`` square.

    Returns
    -------
    (inner, outer) : ndarrays of bool, shape (h, w)
        ``filled & ~erosion`` and ``dilation & ~filled``.

    Examples
    --------
    >>> square = np.zeros((20, 20), bool); square[5:15, 5:15] = True
    >>> inner, outer = ring_masks(square, 2)
    >>> int(inner.sum()), int(outer.sum())
    (64, 96)
    """
    filled = np.ascontiguousarray(filled, dtype=bool)
    # the erosion is inside and the dilation contains the region: the rings are differences
    inner = np.not_equal(filled, _erode(filled, half_width))
    outer = np.not_equal(_dilate(filled, half_width), filled)
    return inner, outer


def _percent(part: int, whole: int) -> float:
    # (part / whole) * 100 in this order, as the published code computes it
    return (part / whole) * 100 if whole else math.nan


def _ring_percentages(fibre: _Fibre, image: np.ndarray, thresholds, half_width: int):
    """(membrane_included %, mass_missed %) of a fibre whose crop is padded by half_width."""
    width = fibre.filled.shape[1]
    result = []
    for ring, channel in zip(ring_masks(fibre.filled, half_width), (0, 1)):
        rows, cols = np.divmod(np.flatnonzero(ring), width)
        values = image[rows + fibre.row0, cols + fibre.col0, channel]
        result.append(_percent(int(np.count_nonzero(values > thresholds[channel])), len(rows)))
    return tuple(result)


# ---------------------------------------------------------------------------- evaluate
def _empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=_PER_FIBRE_DTYPES[c]) for c in PER_FIBRE_COLUMNS})


def _box(boxes: LabelBoxes, i: int) -> tuple[int, int, int, int]:
    return int(boxes.row0[i]), int(boxes.row1[i]), int(boxes.col0[i]), int(boxes.col1[i])


def evaluate(gt_labels: np.ndarray, pred_labels: np.ndarray, image: np.ndarray | None = None,
             half_width: int | None = None, match: str | None = None,
             definition: str = "labels") -> pd.DataFrame:
    """Per-fibre paper metrics of a predicted (or QA) label image against the ground truth.

    Parameters
    ----------
    gt_labels, pred_labels : ndarray, shape (H, W), integer or bool
        Instance masks, 0 = background; labels need not be sequential.
    image : ndarray, shape (H, W, 3), optional
        The section's RGB image (R membrane, G mitochondrial mass; uint8 is fastest).
        Without it the percentage columns are NaN.
    half_width : int, optional
        Ring half-width k in pixels (:func:`modality_half_width`: 2 for IMC, 6 for IF);
        required with an image.
    match : {"gt_centroid", "pred_centroid"}, optional
        ``"gt_centroid"`` (the default with ``definition="labels"``, the README's rule): the
        lowest predicted label whose filled region contains the GT fibre's centroid.
        ``"pred_centroid"`` (the direction the published notebook's ``are_same_fibres``
        actually tests, and the only rule of ``definition="published"``): the lowest
        predicted label whose own centroid lies in the GT fibre's filled region.
    definition : {"labels", "published"}
        ``"labels"`` (default): one fibre per label, its pixels with holes filled (the
        module docstring's definitions). ``"published"``: fibres as the published
        notebook enumerates them (:func:`nclsm_utils.metrics._contours.published_contours`:
        OpenCV hole contours of each label value, ascending, after the image frame is set
        to the maximum label), the truncated polygon-moment centroid of each predicted
        contour, strictly inside the GT contour (``cv2.pointPolygonTest > 0``) to match,
        and IoU and rings on the contours drawn filled (the region plus the one-pixel
        outline it is traced along). ``gt_id``/``pred_id`` are then 1-based contour
        numbers (the csv's ``Fibre_GT + 1``/``Fibre_Assess + 1``, as
        :func:`read_per_fibre_csv` reads them), ``n_gt``/``n_pred`` the contour counts,
        ``centroid_row``/``centroid_col`` the GT contour's moment centroid, and two more
        columns, :data:`PUBLISHED_LABEL_COLUMNS`, give each contour's label value. Indices
        and IoUs equal the published csvs exactly (the real S60 QA pair: all 586 rows).

    Returns
    -------
    DataFrame
        One row per GT label (ascending), columns :data:`PER_FIBRE_COLUMNS`:
        ``gt_id``; ``pred_id`` (0 when not detected); ``matched``; ``iou`` (0 when not
        detected); ``gt_area``/``pred_area`` (filled areas, pixels; 0 when not detected);
        ``centroid_row``/``centroid_col`` (the GT fibre's centroid);
        ``gt_membrane_included``, ``gt_mass_missed``, ``pred_membrane_included``,
        ``pred_mass_missed`` (percent; NaN without an image, for an empty ring, and on the
        predicted side when not detected); ``n_gt``/``n_pred`` (labels in each mask).
        The definitions are in the module docstring.

    Raises
    ------
    ValueError
        Masks of different shapes, non-integer or negative masks, an image that is not
        (H, W, 3) of the masks' size, a half_width that is not a positive integer, an
        unknown match rule or definition, or ``match="gt_centroid"`` with
        ``definition="published"``.

    Examples
    --------
    >>> gt = np.zeros((30, 30), np.uint8); gt[5:15, 5:15] = 1; gt[20:25, 20:25] = 2
    >>> pred = np.zeros_like(gt); pred[5:15, 7:17] = 3
    >>> image = np.zeros((30, 30, 3), np.uint8); image[5:15, 5:15, 0] = 255
    >>> table = evaluate(gt, pred, image, half_width=2)
    >>> table[["gt_id", "pred_id", "iou", "gt_membrane_included"]].round(3).to_dict("list")
    {'gt_id': [1, 2], 'pred_id': [3, 0], 'iou': [0.667, 0.0], 'gt_membrane_included': [100.0, 0.0]}

    The published definition traces each fibre along the pixels around it, so its filled
    regions are one pixel larger all round, corners cut (140 pixels for the 10 x 10 square):

    >>> published = evaluate(gt, pred, definition="published")
    >>> published[["gt_id", "pred_id", "gt_label", "pred_label", "gt_area"]].to_dict("list")
    {'gt_id': [1, 2], 'pred_id': [1, 0], 'gt_label': [1, 2], 'pred_label': [3, 0], 'gt_area': [140, 45]}
    """
    gt = _check_labels(gt_labels, "gt_labels")
    pred = _check_labels(pred_labels, "pred_labels")
    if gt.shape != pred.shape:
        raise ValueError(f"gt_labels {gt.shape} and pred_labels {pred.shape} have different "
                         "shapes; both masks must come from the same section")
    if definition not in DEFINITIONS:
        raise ValueError(f"definition must be one of {', '.join(DEFINITIONS)}, got "
                         f"{definition!r}")
    if match is None:
        match = "pred_centroid" if definition == "published" else "gt_centroid"
    if match not in MATCH_RULES:
        raise ValueError(f"match must be one of {', '.join(MATCH_RULES)}, got {match!r}")
    if definition == "published" and match != "pred_centroid":
        raise ValueError("definition='published' matches as the published notebook does (the "
                         "predicted contour's centroid inside the GT contour); leave match out "
                         "or pass match='pred_centroid'")
    thresholds = None
    if image is not None:
        if half_width is None:
            raise ValueError("half_width is required with an image: 2 for IMC, 6 for IF "
                             "(see modality_half_width)")
        half_width = _check_half_width(half_width)
        image = _check_image(image, gt.shape)
    elif half_width is not None:
        half_width = _check_half_width(half_width)
    pad = half_width if image is not None else 0
    if definition == "published":
        return _evaluate_published(gt, pred, image, half_width, pad)

    gt_boxes = label_boxes(gt)
    pred_boxes = label_boxes(pred)
    if not len(gt_boxes):
        return _empty_table()
    if image is not None:
        thresholds = positive_thresholds(image)
        log.debug("positive thresholds: membrane R > %s, mass G > %s", *thresholds)

    pred_cache: dict[int, _Fibre] = {}

    def pred_fibre(i: int) -> _Fibre:
        if i not in pred_cache:
            pred_cache[i] = _fibre(pred, pred_boxes.ids[i], _box(pred_boxes, i), pad,
                                   centroid=match == "pred_centroid")
        return pred_cache[i]

    if match == "pred_centroid":
        pred_centroids = np.array([pred_fibre(i).centroid for i in range(len(pred_boxes))],
                                  np.int64).reshape(-1, 2)

    pred_rings: dict[int, tuple[float, float]] = {}
    pred_index = {int(v): i for i, v in enumerate(pred_boxes.ids)}
    rows = []
    for g in range(len(gt_boxes)):
        fibre = _fibre(gt, gt_boxes.ids[g], _box(gt_boxes, g), pad)
        if match == "gt_centroid":
            hit = _match(fibre.centroid, pred, pred_boxes, pred_index, pred_fibre)
        else:
            hit = _match_pred_centroid(fibre, pred_centroids)
        paired = None if hit is None else (hit, int(pred_boxes.ids[hit]), pred_fibre(hit))
        rows.append(_fibre_row(int(gt_boxes.ids[g]), fibre, fibre.centroid, paired, image,
                               thresholds, half_width, pred_rings))
    table = pd.DataFrame(rows)
    table["n_gt"] = len(gt_boxes)
    table["n_pred"] = len(pred_boxes)
    return table[PER_FIBRE_COLUMNS].astype(_PER_FIBRE_DTYPES)


def _evaluate_published(gt: np.ndarray, pred: np.ndarray, image, half_width, pad: int):
    """:func:`evaluate` with ``definition="published"`` (inputs already checked)."""
    gt_contours = published_contours(gt)
    pred_contours = published_contours(pred)
    dtypes = {**_PER_FIBRE_DTYPES, "gt_label": "int64", "pred_label": "int64"}
    columns = PER_FIBRE_COLUMNS + PUBLISHED_LABEL_COLUMNS
    if not gt_contours:
        return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in columns})
    thresholds = None
    if image is not None:
        thresholds = positive_thresholds(image)
        log.debug("positive thresholds: membrane R > %s, mass G > %s", *thresholds)

    def fibre(contour) -> _Fibre:
        row0, col0, filled = filled_crop(contour, pad, gt.shape)
        return _Fibre(row0, col0, filled, int(np.count_nonzero(filled)), (-1, -1))

    # the predicted contours' centroids (x, y); a zero-area contour never matches
    centroids = [contour_centroid(f.contour) for f in pred_contours]
    usable = np.array([c is not None for c in centroids], bool)
    if not usable.all():
        log.warning("%d predicted contour(s) of zero area are never matched",
                    int((~usable).sum()))
    points = np.array([c if c is not None else (-1, -1) for c in centroids],
                      np.int64).reshape(-1, 2)
    pred_cache: dict[int, _Fibre] = {}
    pred_rings: dict[int, tuple[float, float]] = {}
    rows = []
    for g, gt_contour in enumerate(gt_contours):
        row0, row1, col0, col1 = gt_contour.bounding_rect()
        # only a centroid inside the contour's bounding box can be strictly inside it
        candidates = np.flatnonzero(usable & (points[:, 0] >= col0) & (points[:, 0] < col1)
                                    & (points[:, 1] >= row0) & (points[:, 1] < row1))
        hit = next((int(j) for j in candidates
                    if strictly_inside(gt_contour.contour, tuple(points[j]))), None)
        this = fibre(gt_contour.contour)
        centroid = contour_centroid(gt_contour.contour) or (-1, -1)
        paired = None
        if hit is not None:
            if hit not in pred_cache:
                pred_cache[hit] = fibre(pred_contours[hit].contour)
            paired = (hit, hit + 1, pred_cache[hit])
        row = _fibre_row(g + 1, this, (centroid[1], centroid[0]), paired, image, thresholds,
                         half_width, pred_rings)
        row.update(gt_label=gt_contour.label,
                   pred_label=0 if hit is None else pred_contours[hit].label)
        rows.append(row)
    table = pd.DataFrame(rows)
    table["n_gt"] = len(gt_contours)
    table["n_pred"] = len(pred_contours)
    return table[columns].astype(dtypes)


def _fibre_row(gt_id: int, fibre: _Fibre, centroid, paired, image, thresholds, half_width: int,
               pred_rings: dict) -> dict:
    """One row of the per-fibre table: the GT fibre and, when ``paired`` is
    ``(key, pred_id, predicted fibre)``, its matched fibre (ring percentages of a predicted
    fibre are computed once per ``key`` and kept in ``pred_rings``)."""
    row = {"gt_id": gt_id, "pred_id": 0, "matched": False, "iou": 0.0, "gt_area": fibre.area,
           "pred_area": 0, "centroid_row": centroid[0], "centroid_col": centroid[1],
           "gt_membrane_included": math.nan, "gt_mass_missed": math.nan,
           "pred_membrane_included": math.nan, "pred_mass_missed": math.nan}
    if image is not None:
        row["gt_membrane_included"], row["gt_mass_missed"] = _ring_percentages(
            fibre, image, thresholds, half_width)
    if paired is not None:
        key, pred_id, other = paired
        row.update(pred_id=pred_id, matched=True, iou=_iou(fibre, other), pred_area=other.area)
        if image is not None:
            if key not in pred_rings:
                pred_rings[key] = _ring_percentages(other, image, thresholds, half_width)
            row["pred_membrane_included"], row["pred_mass_missed"] = pred_rings[key]
    return row


def _match(centroid, pred, pred_boxes: LabelBoxes, pred_index, pred_fibre):
    """Index (into pred_boxes) of the lowest predicted label whose filled region holds the centroid."""
    row, col = centroid
    direct = int(pred[row, col])
    inside = ((pred_boxes.row0 <= row) & (row < pred_boxes.row1)
              & (pred_boxes.col0 <= col) & (col < pred_boxes.col1))
    # only labels below the one under the centroid can win, and only through a hole
    if direct:
        inside &= pred_boxes.ids < direct
    for i in np.flatnonzero(inside):
        if pred_fibre(int(i)).contains(row, col):
            return int(i)
    return pred_index[direct] if direct else None


def _match_pred_centroid(fibre: _Fibre, centroids: np.ndarray):
    """Index of the lowest predicted label whose centroid lies in the GT fibre's filled region."""
    rows, cols = centroids[:, 0] - fibre.row0, centroids[:, 1] - fibre.col0
    h, w = fibre.filled.shape
    candidates = np.flatnonzero((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w))
    inside = candidates[fibre.filled[rows[candidates], cols[candidates]]]
    return int(inside[0]) if len(inside) else None


def _iou(a: _Fibre, b: _Fibre) -> float:
    (ar, ac), (br, bc) = a.slices, b.slices
    r0, r1 = max(ar.start, br.start), min(ar.stop, br.stop)
    c0, c1 = max(ac.start, bc.start), min(ac.stop, bc.stop)
    inter = 0
    if r0 < r1 and c0 < c1:
        inter = int(np.count_nonzero(
            a.filled[r0 - a.row0:r1 - a.row0, c0 - a.col0:c1 - a.col0]
            & b.filled[r0 - b.row0:r1 - b.row0, c0 - b.col0:c1 - b.col0]))
    return inter / (a.area + b.area - inter)


# ---------------------------------------------------------------------------- summary
def _pearson(x: np.ndarray, y: np.ndarray, name: str) -> float:
    """Pearson r of the finite pairs; NaN with a :class:`MetricWarning` when undefined."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < len(x):
        log.debug("%s: %d matched fibre(s) without a percentage left out", name, len(x) - ok.sum())
    if len(x) >= 2 and not ok.any():
        warnings.warn(f"{name} is undefined: the {len(x)} matched fibres have no ring "
                      "percentages (evaluated without an image?); reporting NaN",
                      MetricWarning, stacklevel=3)
        return math.nan
    x, y = x[ok], y[ok]
    if len(x) < 2:
        warnings.warn(f"{name} is undefined with {len(x)} matched fibre(s) with percentages "
                      "(at least 2 needed); reporting NaN", MetricWarning, stacklevel=3)
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = float(np.dot(dx, dx)), float(np.dot(dy, dy))
    if sxx == 0 or syy == 0:
        warnings.warn(f"{name} is undefined: the percentages of one side have no variance over "
                      f"the {len(x)} matched fibres; reporting NaN", MetricWarning, stacklevel=3)
        return math.nan
    return float(np.clip(np.dot(dx, dy) / math.sqrt(sxx * syy), -1.0, 1.0))


def _unmatched_predictions(table: pd.DataFrame) -> float:
    if "n_pred" not in table or not len(table):
        return math.nan
    n_pred = table["n_pred"].unique()
    if len(n_pred) != 1 or not np.isfinite(n_pred[0]):
        return math.nan
    matched = table.loc[table["matched"], "pred_id"].nunique()
    return float(n_pred[0] - matched)


def summarise(per_fibre, thresholds=A_THRESHOLDS) -> pd.DataFrame:
    """One-row paper summary of one or more per-fibre tables (Tables II and III).

    Parameters
    ----------
    per_fibre : DataFrame or list of DataFrames
        Outputs of :func:`evaluate` or :func:`read_per_fibre_csv`, one per section, or
        one concatenated table with a ``section`` column.
    thresholds : tuple of float
        IoU thresholds t of the A% columns.

    Returns
    -------
    DataFrame
        One row, columns :data:`SUMMARY_COLUMNS` (for other thresholds the A% names follow
        them): ``MF-A`` number of matched GT fibres; ``r_AoB`` Pearson r of GT vs predicted
        ``mass_missed`` over matched fibres; ``r_AiB`` the same for ``membrane_included``;
        ``mean IoU`` over matched fibres; ``A%(IoU>t)`` = 100 x matched with IoU > t /
        matched; ``GT fibres``; ``detected %`` = 100 x matched / GT fibres;
        ``unmatched predictions`` = predicted fibres matched by no GT fibre, summed over
        sections (NaN when the tables do not record ``n_pred``). r is NaN with a
        :class:`MetricWarning` for fewer than 2 matched fibres or no variance; the other
        ratios are NaN when nothing is matched.

    Examples
    --------
    >>> table = pd.DataFrame({"gt_id": [1, 2, 3], "pred_id": [4, 5, 0],
    ...                       "matched": [True, True, False], "iou": [0.85, 0.97, 0.0],
    ...                       "gt_mass_missed": [1.0, 3.0, 2.0], "pred_mass_missed": [2.0, 4.0, 0.0],
    ...                       "gt_membrane_included": [50.0, 60.0, 1.0],
    ...                       "pred_membrane_included": [40.0, 70.0, 0.0], "n_pred": 2})
    >>> summarise(table).iloc[0].round(3).to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'MF-A': 2.0, 'r_AoB': 1.0, 'r_AiB': 1.0, 'mean IoU': 0.91, 'A%(IoU>0.80)': 100.0,
     'A%(IoU>0.90)': 50.0, 'A%(IoU>0.95)': 50.0, 'GT fibres': 3.0, 'detected %': 66.667,
     'unmatched predictions': 0.0}
    """
    tables = [per_fibre] if isinstance(per_fibre, pd.DataFrame) else list(per_fibre)
    parts = []
    for table in tables:
        missing = {"matched", "iou"} - set(table.columns)
        if missing:
            raise ValueError(f"per-fibre table lacks column(s) {sorted(missing)}; expected the "
                             "output of evaluate() or read_per_fibre_csv()")
        if "section" in table and table["section"].nunique() > 1:
            parts.extend(group for _, group in table.groupby("section", sort=False))
        else:
            parts.append(table)
    unmatched = [_unmatched_predictions(t) for t in parts]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=["matched", "iou"])
    matched = table[table["matched"].astype(bool)]
    n_matched, n_gt = len(matched), len(table)
    iou = matched["iou"].to_numpy(float)

    def column(name):
        return matched[name].to_numpy(float) if name in matched else np.full(n_matched, np.nan)

    row = {
        "MF-A": n_matched,
        "r_AoB": _pearson(column("gt_mass_missed"), column("pred_mass_missed"), "r_AoB"),
        "r_AiB": _pearson(column("gt_membrane_included"), column("pred_membrane_included"),
                          "r_AiB"),
        "mean IoU": float(iou.mean()) if n_matched else math.nan,
    }
    for t in thresholds:
        row[a_column(t)] = 100.0 * np.count_nonzero(iou > t) / n_matched if n_matched else math.nan
    row["GT fibres"] = n_gt
    row["detected %"] = 100.0 * n_matched / n_gt if n_gt else math.nan
    row["unmatched predictions"] = float(sum(unmatched)) if unmatched else math.nan
    return pd.DataFrame([row])


# ---------------------------------------------------------------------------- csv files
def read_per_fibre_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read the published notebook's per-fibre QA csv into :func:`evaluate`'s columns.

    The published ``Fibre_GT``/``Fibre_Assess`` are 0-based contour indices; they become
    ``gt_id = Fibre_GT + 1`` and ``pred_id = Fibre_Assess + 1`` so that ``pred_id`` 0 keeps
    meaning "not detected" (``not_found`` rows). The published csv writes 0 for the
    assessed side of unmatched fibres; those become NaN. Areas and centroids are not in the
    file (-1); ``section`` is the file stem.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    DataFrame
        Columns :data:`PER_FIBRE_COLUMNS` plus ``section``.

    Raises
    ------
    DataError
        When the file lacks the published columns.
    """
    path = Path(path)
    raw = _read_csv(path)
    missing = [c for c in PUBLISHED_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: not a published per-fibre csv; missing column(s) "
                        f"{', '.join(missing)}")
    assess = raw["Fibre_Assess"].astype(str).str.strip()
    matched = assess != "not_found"
    try:
        pred_index = pd.to_numeric(assess.where(matched, "-1")).astype("int64")
    except ValueError as error:
        raise DataError(f"{path}: Fibre_Assess must hold integers or 'not_found' ({error})") \
            from error
    table = pd.DataFrame({
        "gt_id": raw["Fibre_GT"].astype("int64") + 1,
        "pred_id": pred_index + 1,
        "matched": matched.to_numpy(),
        "iou": raw["IoU_Score_Assess_GT"].astype(float).where(matched, 0.0),
        "gt_area": -1, "pred_area": -1, "centroid_row": -1, "centroid_col": -1,
        "gt_membrane_included": raw["GT_proportion_membrane_included"].astype(float),
        "gt_mass_missed": raw["GT_proportion_mito_mass_missed"].astype(float),
        "pred_membrane_included": raw["Assess_proportion_membrane_included"].astype(float)
        .where(matched),
        "pred_mass_missed": raw["Assess_proportion_mito_mass_missed"].astype(float)
        .where(matched),
        "n_gt": raw["Total_GTcontours"].astype("int64"),
        "n_pred": raw["Total_Assess_contours"].astype("int64"),
    })
    table = table[PER_FIBRE_COLUMNS].astype(_PER_FIBRE_DTYPES)
    table["section"] = path.stem
    return table


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a per-fibre csv")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the csv ({error})") from error


def read_per_fibre_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a per-fibre csv in either format: ours (:func:`evaluate`) or the published one.

    The format is detected from the header (``gt_id``/``matched`` vs ``Fibre_GT``).
    """
    path = Path(path)
    raw = _read_csv(path)
    if "Fibre_GT" in raw.columns:
        return read_per_fibre_csv(path)
    required = {"gt_id", "pred_id", "matched", "iou"}
    if not required <= set(raw.columns):
        raise DataError(f"{path}: not a per-fibre table; expected the columns of "
                        f"`nclsm evaluate` ({', '.join(sorted(required))}, ...) or of the "
                        "published notebook (Fibre_GT, Fibre_Assess, ...)")
    matched = raw["matched"]
    if matched.dtype != bool:
        matched = matched.astype(str).str.strip().str.lower().map(
            {"true": True, "false": False, "1": True, "0": False})
        if matched.isna().any():
            raise DataError(f"{path}: column 'matched' must hold True/False")
    raw["matched"] = matched.astype(bool)
    return raw
