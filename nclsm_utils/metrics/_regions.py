"""Pixel-level helpers of the metrics: label-image checks and bounding boxes, hole filling,
square erosion/dilation and exact channel percentiles.

Every OpenCV call of :mod:`nclsm_utils.metrics` is here, each with its scipy/numpy fallback
(``cv2 = None``); the metric definitions are in :mod:`nclsm_utils.metrics.paper`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..core.imaging import (_counts, _fast_dtype,  # noqa: F401 - the metrics' percentiles
                            _percentile_from_counts, channel_percentile)

try:  # OpenCV is a declared dependency; scipy gives the same results, slower
    import cv2
except ImportError:  # pragma: no cover - exercised through the scipy fallbacks in tests
    cv2 = None


# ---------------------------------------------------------------------------- inputs
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


# ---------------------------------------------------------------------------- percentiles








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


def _square_filter(mask: np.ndarray, half_width: int, erode: bool) -> np.ndarray:
    """Erosion (``erode=True``) or dilation by a (2k+1)^2 square of a bool mask.

    Pixels outside the array count as the value the filter leaves unchanged:
    foreground for the erosion, background for the dilation. OpenCV when
    available (``cv2`` is looked up at call time), else scipy's min/max filter.
    """
    size = 2 * half_width + 1
    border = 1 if erode else 0
    if cv2 is None:
        scipy_filter = ndimage.minimum_filter if erode else ndimage.maximum_filter
        return scipy_filter(mask.view(np.uint8), size, mode="constant", cval=border).view(bool)
    kernel = np.ones((size, size), np.uint8)
    cv2_filter = cv2.erode if erode else cv2.dilate
    return cv2_filter(mask.view(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT,
                      borderValue=border).view(bool)


def _erode(mask: np.ndarray, half_width: int) -> np.ndarray:
    """Erosion by a (2k+1)^2 square; pixels outside the array count as foreground."""
    return _square_filter(mask, half_width, erode=True)


def _dilate(mask: np.ndarray, half_width: int) -> np.ndarray:
    """Dilation by a (2k+1)^2 square; pixels outside the array count as background."""
    return _square_filter(mask, half_width, erode=False)
