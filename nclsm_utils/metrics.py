"""Paper metrics (match, IoU, AiB/AoB rings, r_AoB, r_AiB, A%) and standard instance metrics.

The NCL-SM paper (Khan et al., arXiv 2311.15113) compares an *assessed*
segmentation (a method's prediction or a QA duplicate annotation) with the
ground truth fibre by fibre. :func:`evaluate` produces the per-fibre table,
:func:`summarise` the one-row summary of Tables II and III, and
:func:`instance_metrics` the usual AP/F1/PQ over IoU thresholds (``stardist.matching``'s
definitions and matching, with a numpy overlap table).

Definitions (the shared README's account of the published notebook)
--------------------------------------------------------------------
For each ground-truth (GT) fibre, i.e. each non-zero label of ``gt_labels``:

* **filled region** -- the label's pixels with its holes filled. A hole is a
  background component (8-connected, as OpenCV's contour tracing treats the
  pixels outside a fibre) that does not reach the image border; other fibres
  lying inside a hole are part of the filled region, as when the published
  code fills the fibre's outer contour.
* **centroid** -- ``(floor(mean row), floor(mean column))`` of the filled
  region's pixel coordinates (the area centroid on the pixel grid, exact
  integer arithmetic). The published code takes ``int(m10 / m00)`` of the
  OpenCV moments of the traced contour polygon: the same truncation, and a
  polygon centroid that differs from the pixel mean by a fraction of a pixel.
* **match** -- the predicted fibre whose filled region contains the centroid;
  when several do (a fibre inside another's hole) the lowest label wins
  ("the first such fibre", the published code visits labels in ascending
  order). None: not detected, ``pred_id`` 0.
* **IoU** -- intersection over union of the two filled regions (0 when not
  detected).
* **rings** with a square structuring element of side ``2k + 1`` (``k`` =
  ``half_width``: 2 for IMC, 6 for IF): AiB = region minus its erosion,
  AoB = dilation minus region. *Image border*: the erosion treats pixels
  outside the image as part of the region, as OpenCV's ``cv2.erode`` (used by
  the published code) does by default, so a fibre cut by the image edge has
  no inner ring along the cut; the dilation treats them as background and
  AoB is clipped to the image. (``scipy.ndimage.binary_erosion`` defaults to
  the opposite, ``border_value=0``; its equivalent here is ``border_value=1``.)
* **positive pixels** -- membrane-positive: R > the 85th percentile of the
  whole section's R channel; mass-positive: G > the 75th percentile of the
  whole section's G channel (``np.percentile``, linear method).
* ``membrane_included`` = 100 |AiB & membrane+| / |AiB| and ``mass_missed`` =
  100 |AoB & mass+| / |AoB|, in percent; NaN when the ring is empty.

Every label is one fibre (the published code would split a label with
several 8-connected parts into several contours).

Where the published code differs from these (README) definitions
----------------------------------------------------------------
* Match direction: its ``are_same_fibres(contours_GT[i], contours_Assess[j])``
  tests the *assessed* fibre's centroid inside the *GT* contour (the README
  states the reverse). ``evaluate(..., match="pred_centroid")`` follows the code.
* Region size: it traces each fibre's contour on the background pixels around
  the fibre (``RETR_CCOMP`` holes of the inverted mask) and fills that
  polygon, so its regions include a one-pixel outer band (a 10 x 10 fibre
  becomes 140 pixels). IoU and both rings shift accordingly; we use the
  label's own pixels, as the README defines them.
* Image border: it overwrites the outermost image rows/columns with the
  highest label before tracing, so fibres lose their border pixels.

Example
-------
>>> gt = np.zeros((20, 20), np.uint16); gt[2:12, 2:12] = 1
>>> pred = np.zeros_like(gt); pred[4:14, 2:12] = 7
>>> evaluate(gt, pred)[["gt_id", "pred_id", "matched", "iou"]]
   gt_id  pred_id  matched       iou
0      1        7     True  0.666667
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
from scipy import ndimage

from .dataset import HALF_WIDTH
from .io import DataError

try:  # OpenCV is a declared dependency; scipy gives the same results, slower
    import cv2
except ImportError:  # pragma: no cover - exercised through the scipy fallbacks in tests
    cv2 = None

log = logging.getLogger(__name__)

#: Percentile of the section's R channel above which a pixel is membrane-positive.
MEMBRANE_PERCENTILE = 85
#: Percentile of the section's G channel above which a pixel is mass-positive.
MASS_PERCENTILE = 75
#: IoU thresholds of the A% columns (strictly greater than).
A_THRESHOLDS = (0.80, 0.90, 0.95)
#: Default IoU thresholds of :func:`instance_metrics`: 0.50, 0.55, ..., 0.95.
DEFAULT_IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))

#: Matching rules of :func:`evaluate` (the first is the README's and the default).
MATCH_RULES = ("gt_centroid", "pred_centroid")

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


def _check_labels(labels, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be a 2-D label image (H, W), got shape {labels.shape}")
    if labels.dtype == bool:
        return labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be an integer label image (0 = background), got dtype "
                         f"{labels.dtype}; convert it with nclsm_utils.dataset.as_labels")
    if np.issubdtype(labels.dtype, np.signedinteger) and labels.size and labels.min() < 0:
        raise ValueError(f"{name} has negative labels; labels must be >= 0 (0 = background)")
    return labels


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
def _counts(image: np.ndarray, channel: int | None, bins: int,
            chunk_pixels: int = 1 << 22) -> np.ndarray:
    """Exact int64 histogram of an unsigned 8/16-bit channel, in row chunks of a few MB.

    ``image`` is (H, W) with ``channel=None`` or (H, W, C) with a channel index.
    OpenCV's calcHist is used when available (float32 counts, exact per chunk of
    < 2**24 pixels); otherwise numpy's bincount.
    """
    counts = np.zeros(bins, np.int64)
    rows = max(1, chunk_pixels // max(1, image.shape[1]))
    for start in range(0, image.shape[0], rows):
        block = image[start:start + rows]
        if cv2 is not None:
            if block.ndim == 2 or not block.flags.c_contiguous:
                block = np.ascontiguousarray(block if channel is None else block[..., channel])
                index = 0
            else:
                index = channel
            hist = cv2.calcHist([block], [index], None, [bins], [0, bins])
            counts += hist.ravel().astype(np.int64)
        else:
            values = block if channel is None else block[..., channel]
            counts += np.bincount(values.ravel(), minlength=bins)[:bins]
    return counts


def _percentile_from_counts(counts: np.ndarray, q: float, dtype) -> float:
    """numpy's linear-method percentile of the values whose histogram is ``counts``."""
    n = int(counts.sum())
    cumulative = np.cumsum(counts)
    # numpy's linear method: virtual index (n - 1) * q / 100, then a lerp of its neighbours
    virtual = np.float64(n - 1) * np.true_divide(q, 100)
    below = int(np.floor(virtual))
    above = min(below + 1, n - 1)
    lo, hi = np.searchsorted(cumulative, [below, above], side="right").astype(dtype)
    gamma = float(virtual - below) if virtual < n - 1 else 0.0
    # np.quantile of (lo, hi) at gamma performs numpy's own lerp with weight gamma exactly
    return float(np.quantile(np.array([lo, hi], dtype=dtype), gamma))


def _fast_dtype(array: np.ndarray) -> int | None:
    """Number of histogram bins for uint8/uint16 arrays, None for other dtypes."""
    return {np.dtype(np.uint8): 256, np.dtype(np.uint16): 65536}.get(array.dtype)


def channel_percentile(channel: np.ndarray, q: float) -> float:
    """``np.percentile(channel, q)`` (linear method), exactly, without sorting a copy for uint8/uint16.

    Parameters
    ----------
    channel : ndarray, shape (H, W)
        One image channel. uint8 and uint16 channels are histogrammed in row
        chunks (a few MB of memory for a 185-megapixel section); other dtypes
        fall back to :func:`numpy.percentile` (which copies the channel).
    q : float
        Percentile in [0, 100].

    Returns
    -------
    float
        The same value as ``np.percentile(channel, q)``, bit for bit.

    Examples
    --------
    >>> channel = np.arange(10, dtype=np.uint8).reshape(2, 5)
    >>> channel_percentile(channel, 85) == float(np.percentile(channel, 85))
    True
    """
    channel = np.asarray(channel)
    if channel.size == 0:
        raise ValueError("cannot take a percentile of an empty channel")
    bins = _fast_dtype(channel)
    if bins is None or channel.ndim != 2:
        return float(np.percentile(channel, q))
    return _percentile_from_counts(_counts(channel, None, bins), q, channel.dtype)


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


# ---------------------------------------------------------------------------- label geometry
@dataclass(frozen=True)
class LabelBoxes:
    """Bounding boxes of the labels of a label image (half-open ``[row0, row1) x [col0, col1)``).

    Attributes are 1-D arrays, one entry per label, sorted by ``ids``; ``area`` is the
    pixel count (holes not filled).
    """

    ids: np.ndarray
    row0: np.ndarray
    row1: np.ndarray
    col0: np.ndarray
    col1: np.ndarray
    area: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def label_boxes(labels: np.ndarray, chunk_rows: int = 512) -> LabelBoxes:
    """Bounding boxes and areas of all non-zero labels, from the label image's row runs.

    Works on any label values (no ``max(label)``-sized tables) and reads the image once,
    in row chunks: a 185-megapixel uint16 mask takes well under a second.

    Parameters
    ----------
    labels : ndarray, shape (H, W), integer
        Label image, 0 = background.
    chunk_rows : int
        Rows processed at a time (memory ~ ``chunk_rows * W`` bytes).

    Returns
    -------
    LabelBoxes

    Examples
    --------
    >>> boxes = label_boxes(np.array([[0, 5, 5], [2, 0, 5]]))
    >>> boxes.ids.tolist(), boxes.row0.tolist(), boxes.col1.tolist(), boxes.area.tolist()
    ([2, 5], [1, 0], [1, 3], [1, 3])
    """
    labels = np.asarray(labels)
    height, width = labels.shape
    values, rows, starts, stops = [], [], [], []
    change = np.empty((min(chunk_rows, height), width), bool)
    for r0 in range(0, height, chunk_rows):
        block = labels[r0:r0 + chunk_rows]
        n_rows = block.shape[0]
        edges = change[:n_rows]
        edges[:, 0] = True
        np.not_equal(block[:, 1:], block[:, :-1], out=edges[:, 1:])
        first = np.flatnonzero(edges)
        run_values = np.ravel(block)[first]
        last = np.empty_like(first)
        last[:-1] = first[1:]
        last[-1:] = n_rows * width
        keep = run_values != 0
        first, last, run_values = first[keep], last[keep], run_values[keep]
        values.append(run_values)
        rows.append(first // width + r0)
        starts.append(first % width)
        stops.append((last - 1) % width + 1)
    if not values or not sum(len(v) for v in values):
        empty = np.zeros(0, np.int64)
        return LabelBoxes(empty.astype(labels.dtype), empty, empty, empty, empty, empty)
    values = np.concatenate(values)
    rows, starts, stops = (np.concatenate(a).astype(np.int64) for a in (rows, starts, stops))
    ids, index = np.unique(values, return_inverse=True)
    n = len(ids)
    row0 = np.full(n, height, np.int64)
    row1 = np.zeros(n, np.int64)
    col0 = np.full(n, width, np.int64)
    col1 = np.zeros(n, np.int64)
    np.minimum.at(row0, index, rows)
    np.maximum.at(row1, index, rows + 1)
    np.minimum.at(col0, index, starts)
    np.maximum.at(col1, index, stops)
    area = np.zeros(n, np.int64)
    np.add.at(area, index, stops - starts)
    return LabelBoxes(ids, row0, row1, col0, col1, area)


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


def fill_holes(region: np.ndarray) -> np.ndarray:
    """Fill the holes of a binary region; holes are 8-connected background not reaching the border.

    Parameters
    ----------
    region : ndarray of bool, shape (h, w)

    Returns
    -------
    ndarray of bool, shape (h, w)

    Examples
    --------
    >>> ring = np.ones((5, 5), bool); ring[2, 2] = False
    >>> int(fill_holes(ring).sum())
    25
    """
    region = np.asarray(region, bool)
    h, w = region.shape
    if cv2 is None:
        return ndimage.binary_fill_holes(region, structure=np.ones((3, 3), bool))
    buffer = np.zeros((h + 2, w + 2), np.uint8)
    buffer[1:-1, 1:-1] = region
    cv2.floodFill(buffer, None, (0, 0), 2, flags=8)
    return buffer[1:-1, 1:-1] != 2


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


def _erode(mask: np.ndarray, half_width: int) -> np.ndarray:
    """Erosion by a (2k+1)^2 square; pixels outside the array count as foreground."""
    size = 2 * half_width + 1
    if cv2 is None:
        return ndimage.minimum_filter(mask.view(np.uint8), size, mode="constant", cval=1).view(bool)
    kernel = np.ones((size, size), np.uint8)
    return cv2.erode(mask.view(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT,
                     borderValue=1).view(bool)


def _dilate(mask: np.ndarray, half_width: int) -> np.ndarray:
    """Dilation by a (2k+1)^2 square; pixels outside the array count as background."""
    size = 2 * half_width + 1
    if cv2 is None:
        return ndimage.maximum_filter(mask.view(np.uint8), size, mode="constant", cval=0).view(bool)
    kernel = np.ones((size, size), np.uint8)
    return cv2.dilate(mask.view(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT,
                      borderValue=0).view(bool)


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
             half_width: int | None = None, match: str = "gt_centroid") -> pd.DataFrame:
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
    match : {"gt_centroid", "pred_centroid"}
        ``"gt_centroid"`` (default, the README's rule): the lowest predicted label whose
        filled region contains the GT fibre's centroid. ``"pred_centroid"`` (the direction
        the published notebook's ``are_same_fibres`` actually tests): the lowest predicted
        label whose own centroid lies in the GT fibre's filled region.

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
        (H, W, 3) of the masks' size, a half_width that is not a positive integer, or an
        unknown match rule.

    Examples
    --------
    >>> gt = np.zeros((30, 30), np.uint8); gt[5:15, 5:15] = 1; gt[20:25, 20:25] = 2
    >>> pred = np.zeros_like(gt); pred[5:15, 7:17] = 3
    >>> image = np.zeros((30, 30, 3), np.uint8); image[5:15, 5:15, 0] = 255
    >>> table = evaluate(gt, pred, image, half_width=2)
    >>> table[["gt_id", "pred_id", "iou", "gt_membrane_included"]].round(3).to_dict("list")
    {'gt_id': [1, 2], 'pred_id': [3, 0], 'iou': [0.667, 0.0], 'gt_membrane_included': [100.0, 0.0]}
    """
    gt = _check_labels(gt_labels, "gt_labels")
    pred = _check_labels(pred_labels, "pred_labels")
    if gt.shape != pred.shape:
        raise ValueError(f"gt_labels {gt.shape} and pred_labels {pred.shape} have different "
                         "shapes; both masks must come from the same section")
    if match not in MATCH_RULES:
        raise ValueError(f"match must be one of {', '.join(MATCH_RULES)}, got {match!r}")
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
        row = {"gt_id": int(gt_boxes.ids[g]), "pred_id": 0, "matched": False, "iou": 0.0,
               "gt_area": fibre.area, "pred_area": 0, "centroid_row": fibre.centroid[0],
               "centroid_col": fibre.centroid[1], "gt_membrane_included": math.nan,
               "gt_mass_missed": math.nan, "pred_membrane_included": math.nan,
               "pred_mass_missed": math.nan}
        if image is not None:
            row["gt_membrane_included"], row["gt_mass_missed"] = _ring_percentages(
                fibre, image, thresholds, half_width)
        if hit is not None:
            other = pred_fibre(hit)
            row.update(pred_id=int(pred_boxes.ids[hit]), matched=True,
                       iou=_iou(fibre, other), pred_area=other.area)
            if image is not None:
                if hit not in pred_rings:
                    pred_rings[hit] = _ring_percentages(other, image, thresholds, half_width)
                row["pred_membrane_included"], row["pred_mass_missed"] = pred_rings[hit]
        rows.append(row)
    table = pd.DataFrame(rows)
    table["n_gt"] = len(gt_boxes)
    table["n_pred"] = len(pred_boxes)
    return table[PER_FIBRE_COLUMNS].astype(_PER_FIBRE_DTYPES)


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


# ---------------------------------------------------------------------------- instance metrics
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
    if gt_labels.shape != pred_labels.shape:
        raise ValueError(f"gt_labels {gt_labels.shape} and pred_labels {pred_labels.shape} "
                         "have different shapes")
    gt_ids = np.union1d([0], _present_labels(gt_labels, chunk_rows))
    pred_ids = np.union1d([0], _present_labels(pred_labels, chunk_rows))
    n_cols = len(pred_ids)
    overlap = np.zeros(len(gt_ids) * n_cols, np.int64)
    for start in range(0, gt_labels.shape[0], chunk_rows):
        rows = np.searchsorted(gt_ids, gt_labels[start:start + chunk_rows].ravel())
        cols = np.searchsorted(pred_ids, pred_labels[start:start + chunk_rows].ravel())
        overlap += np.bincount(rows * n_cols + cols, minlength=overlap.size)
    return overlap.reshape(len(gt_ids), n_cols), gt_ids, pred_ids


def _present_labels(labels: np.ndarray, chunk_rows: int) -> np.ndarray:
    """Sorted distinct values of ``labels`` (row chunks: bounded memory)."""
    found = [np.unique(labels[start:start + chunk_rows])
             for start in range(0, max(labels.shape[0], 1), chunk_rows)]
    return np.unique(np.concatenate(found)) if found else np.zeros(0, labels.dtype)


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
    from scipy.optimize import linear_sum_assignment

    n_true, n_pred = scores.shape
    n_matched = min(n_true, n_pred)
    if n_matched == 0:
        return 0, n_pred, n_true, 0.0
    costs = -(scores >= thresh).astype(float) - scores / (2 * n_matched)
    true_ind, pred_ind = linear_sum_assignment(costs)
    matched = scores[true_ind, pred_ind]
    ok = matched >= thresh
    tp = int(np.count_nonzero(ok))
    return tp, n_pred - tp, n_true - tp, float(np.sum(matched[ok]))


def instance_metrics(gt_labels: np.ndarray, pred_labels: np.ndarray,
                     thresholds=DEFAULT_IOU_THRESHOLDS) -> pd.DataFrame:
    """Standard instance-segmentation metrics per IoU threshold (``stardist.matching``'s).

    A GT and a predicted object match one-to-one (optimal assignment) when their IoU
    >= the threshold (stardist's convention; the paper's A% uses a strict >). Same numbers as
    ``stardist.matching.matching(gt, pred, thresholds)`` (tested), computed with
    :func:`label_overlap`, :func:`iou_matrix` and :func:`match_counts`.

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
    scores = iou_matrix(label_overlap(gt, pred)[0])
    n_true, n_pred = scores.shape
    rows = []
    for thresh in thresholds:
        tp, fp, fn, sum_matched_score = match_counts(scores, thresh)
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
