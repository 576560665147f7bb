"""Interactive exploration of sections, predictions and per-fibre metrics (ipywidgets).

Researchers explore before they trust a number: :class:`Explorer` is a one-cell JupyterLab
app that shows a section's image (R membrane, G mitochondrial mass) with the ground-truth
contours in white and each method's predicted contours coloured by the IoU of the fibre
they match, two methods side by side on the same region, a selected fibre's AiB/AoB rings
next to its per-fibre metrics row, and live A% and matched / missed / extra counts at an
IoU threshold chosen with a slider::

    from nclsm_utils.explore import Explorer
    app = Explorer(data="../data", workdir="../data")
    app                                   # the last expression of a cell displays it

It only reads what the pipeline cached: predictions in
``<workdir>/predictions/<method>/<modality>_<id>.tiff`` and per-fibre tables in
``<workdir>/results/<method>/<modality>_<id>.csv`` (a missing table is computed with
:func:`nclsm_utils.metrics.evaluate`; missing predictions give a message and a button that
runs the method with :func:`nclsm_utils.segmenters.run.run_method`).

Big sections
    Full-size IF sections are about 10k x 15k pixels. Nothing is rendered at full
    resolution: a view is the zoom/pan region cropped first, then downsampled to at most
    ``max_side`` pixels (the image by area averaging, label images by striding, which keeps
    labels exact). Views are cached by ``(section, layer, max_side, region)`` in a bounded
    LRU (:class:`ViewCache`), so switching back to a section or method already seen is
    instant. The full-resolution arrays of one section at a time are kept (for zooming and
    the fibre rings) and dropped when another section is read; the fibre panels use small
    cached crops (those of the first fibres of the list are kept while the arrays are in
    memory), label bounding boxes and positive-pixel thresholds are kept per section, so a
    section seen before is shown again without reading its files. The first visit of a
    full-size section reads its files (seconds; see ``benchmarks/bench_explore.py``).

The pure functions (arrays in, arrays out) are the testable core: :func:`view_sampling`,
:func:`downsample_image`, :func:`downsample_labels`, :func:`label_boundaries`,
:func:`overlay`, :func:`fibre_rings`, :func:`fibre_panel`, :func:`threshold_counts`,
:func:`worst_fibres`, :func:`png_bytes`.

Example
-------
>>> table = pd.DataFrame({"gt_id": [1, 2, 3], "pred_id": [7, 8, 0],
...                       "matched": [True, True, False], "iou": [0.85, 0.97, 0.0]})
>>> counts = threshold_counts(table, n_pred=3, iou_threshold=0.9)
>>> counts["matched"], counts["missed"], counts["extra"], counts["A%"]
(1, 2, 2, 50.0)
"""
from __future__ import annotations

import base64
import html
import logging
import math
import os
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics
from .dataset import Dataset, Section, find_ncl_sm
from .io import DataError, read_array

try:
    import cv2
except ImportError:  # pragma: no cover - OpenCV is a declared dependency
    cv2 = None

log = logging.getLogger(__name__)

#: Longest side (pixels) of a rendered view; views are shown at their natural size.
DEFAULT_MAX_SIDE = 640
#: IoU colour map of the predicted contours and its range (IoU below vmin gets vmin's colour).
DEFAULT_CMAP = "cool"
IOU_RANGE = (0.5, 1.0)
#: Overlay colours (RGB).
GT_COLOUR = (255, 255, 255)
MISSED_COLOUR = (40, 90, 255)      # tint of GT fibres not matched (at the threshold)
EXTRA_COLOUR = (255, 150, 0)       # contour and tint of predictions matched by no GT fibre
SELECTED_COLOUR = (255, 255, 0)    # the selected fibre
AIB_COLOUR = (255, 230, 0)         # inner ring (AiB)
AOB_COLOUR = (0, 150, 255)         # outer ring (AoB)
#: Methods always offered (they can be run from the app when not cached).
BUILTIN_METHODS = ("mitocyto", "cellpose", "stardist", "unet")
NO_METHOD = "(none)"
#: Per-fibre columns shown for the selected fibre.
FIBRE_COLUMNS = ["gt_id", "pred_id", "matched", "iou", "gt_area", "pred_area",
                 "gt_membrane_included", "gt_mass_missed", "pred_membrane_included",
                 "pred_mass_missed"]


# ============================================================================ geometry
@dataclass(frozen=True)
class Region:
    """A half-open full-resolution window ``[row0, row1) x [col0, col1)``."""

    row0: int
    row1: int
    col0: int
    col1: int

    @classmethod
    def full(cls, shape) -> "Region":
        return cls(0, int(shape[0]), 0, int(shape[1]))

    @property
    def height(self) -> int:
        return self.row1 - self.row0

    @property
    def width(self) -> int:
        return self.col1 - self.col0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.row0, self.row1), slice(self.col0, self.col1)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.row0, self.row1, self.col0, self.col1)


def zoom_region(shape, zoom: float = 1.0, centre=(0.5, 0.5)) -> Region:
    """The window shown at ``zoom`` (1 = whole section) centred at ``centre`` (fractions).

    The window keeps the section's aspect ratio, has sides ``shape / zoom`` (at least one
    pixel) and is shifted to stay inside the section.

    >>> zoom_region((1000, 2000), zoom=4, centre=(0.0, 0.5))
    Region(row0=0, row1=250, col0=750, col1=1250)
    """
    height, width = int(shape[0]), int(shape[1])
    zoom = max(float(zoom), 1.0)
    h = max(1, min(height, int(round(height / zoom))))
    w = max(1, min(width, int(round(width / zoom))))
    r0 = int(round(float(centre[0]) * height - h / 2))
    c0 = int(round(float(centre[1]) * width - w / 2))
    r0 = min(max(r0, 0), height - h)
    c0 = min(max(c0, 0), width - w)
    return Region(r0, r0 + h, c0, c0 + w)


def view_sampling(region: Region, max_side: int = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """``(step, up)``: take every ``step``-th pixel, then repeat each ``up`` times.

    ``step`` brings the region's longer side to at most ``max_side``; a region of at most
    half of ``max_side`` (a strong zoom, a small section) is enlarged by the integer
    ``up = max_side // side`` instead, so pixels stay square and sharp. One of the two is
    always 1 and the view's longer side is between ``max_side / 2`` and ``max_side``.

    >>> view_sampling(Region(0, 10000, 0, 15000), 1024)
    (15, 1)
    >>> view_sampling(Region(0, 100, 0, 120), 640)
    (1, 5)
    """
    longest = max(region.height, region.width, 1)
    step = max(1, int(math.ceil(longest / float(max_side))))
    up = max(1, int(max_side) // longest) if step == 1 else 1
    return step, up


def _enlarge(array: np.ndarray, up: int) -> np.ndarray:
    if up <= 1:
        return array
    return np.repeat(np.repeat(array, up, axis=0), up, axis=1)


def downsample_labels(labels: np.ndarray, region: Region | None = None,
                      max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Crop a label image to ``region`` then sample it (every ``step``-th pixel; exact labels).

    Returns an array of shape ``(ceil(h / step) * up, ceil(w / step) * up)`` (see
    :func:`view_sampling`); no full-resolution copy is made.

    >>> labels = np.arange(16).reshape(4, 4)
    >>> downsample_labels(labels, max_side=2).tolist()
    [[0, 2], [8, 10]]
    """
    labels = np.asarray(labels)
    region = region or Region.full(labels.shape)
    step, up = view_sampling(region, max_side)
    view = np.array(labels[region.row0:region.row1:step, region.col0:region.col1:step])
    return _enlarge(view, up)


def downsample_image(image: np.ndarray, region: Region | None = None,
                     max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Crop an RGB image to ``region`` then shrink it by area averaging (uint8 out).

    The result has the same shape as :func:`downsample_labels` of the same region, so
    contours drawn from the labels sit on the image.
    """
    image = np.asarray(image)
    region = region or Region.full(image.shape)
    step, up = view_sampling(region, max_side)
    crop = image[region.row0:region.row1, region.col0:region.col1, :3]
    out_h = -(-region.height // step)
    out_w = -(-region.width // step)
    if step == 1:
        view = np.array(crop, dtype=np.uint8)
    elif cv2 is not None:
        source = crop if crop.dtype == np.uint8 else crop.astype(np.float32)
        if not source.flags.c_contiguous and source.strides[1] != source.itemsize * 3:
            source = np.ascontiguousarray(source)
        try:
            view = cv2.resize(source, (out_w, out_h), interpolation=cv2.INTER_AREA)
        except cv2.error:  # pragma: no cover - unusual strides
            view = cv2.resize(np.ascontiguousarray(source), (out_w, out_h),
                              interpolation=cv2.INTER_AREA)
        view = np.clip(view, 0, 255).astype(np.uint8)
    else:  # pragma: no cover - without OpenCV: strided sampling
        view = np.array(crop[::step, ::step], dtype=np.uint8)
    return _enlarge(view, up)


def view_to_full(region: Region, step: int, up: int, row: float, col: float) -> tuple[int, int]:
    """Full-resolution pixel under view pixel ``(row, col)``."""
    return (int(region.row0 + (int(row) // up) * step),
            int(region.col0 + (int(col) // up) * step))


# ============================================================================ overlay
def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels of each non-zero label that touch another label or the background (4-neighbours).

    >>> labels = np.zeros((5, 5), int); labels[1:4, 1:4] = 3
    >>> int(label_boundaries(labels).sum())
    8
    """
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, bool)
    if labels.size == 0:
        return edge
    vertical = labels[1:, :] != labels[:-1, :]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge & (labels > 0)


def colour_lut(cmap: str = DEFAULT_CMAP, n: int = 256) -> np.ndarray:
    """``(n, 3)`` uint8 RGB table of a matplotlib colour map."""
    from matplotlib import colormaps

    rgba = colormaps[cmap](np.linspace(0.0, 1.0, n))
    return (rgba[:, :3] * 255 + 0.5).astype(np.uint8)


def _blend(rgb: np.ndarray, mask: np.ndarray, colour, alpha: float) -> None:
    """In place: ``rgb = (1 - alpha) rgb + alpha colour`` where ``mask``."""
    if not mask.any():
        return
    if cv2 is not None:
        solid = np.empty_like(rgb)
        solid[:] = colour
        tinted = cv2.addWeighted(rgb, 1.0 - alpha, solid, alpha, 0.0)
    else:  # pragma: no cover - without OpenCV
        weight = int(round(alpha * 256))
        tinted = ((rgb.astype(np.uint16) * (256 - weight)
                   + np.asarray(colour, np.uint16) * weight) >> 8).astype(np.uint8)
    np.copyto(rgb, tinted, where=mask[..., None])


def _members(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``np.isin(labels, ids) & (labels > 0)``, through a lookup table when labels are small."""
    ids = np.asarray(ids, np.int64)
    if not ids.size or not labels.size:
        return np.zeros(labels.shape, bool)
    top = int(labels.max())
    if top < 1 << 24:
        lookup = np.zeros(top + 1, bool)
        lookup[ids[(ids > 0) & (ids <= top)]] = True
        return lookup[labels]
    return np.isin(labels, ids) & (labels > 0)


def matched_at(table: pd.DataFrame, iou_threshold: float | None) -> pd.Series:
    """Boolean Series: GT fibres matched at an IoU threshold (``matched`` and ``iou > t``).

    A threshold of 0 or None is the paper's centroid match alone (the ``matched`` column).
    """
    if table is None or not len(table):
        return pd.Series([], dtype=bool)
    matched = table["matched"].astype(bool)
    if iou_threshold is not None and iou_threshold > 0:
        matched = matched & (table["iou"].to_numpy(float) > float(iou_threshold))
    return matched


def threshold_counts(per_fibre: pd.DataFrame, n_pred: int | None = None,
                     iou_threshold: float = 0.8) -> dict:
    """Matched / missed / extra counts and A% of one per-fibre table at an IoU threshold.

    Parameters
    ----------
    per_fibre : DataFrame
        A table of :func:`nclsm_utils.metrics.evaluate` (one section).
    n_pred : int, optional
        Number of predicted fibres; default the table's ``n_pred`` column (0 when the
        table is empty).
    iou_threshold : float
        t. A GT fibre is *matched at t* when the paper's centroid rule matched it and its
        IoU > t (strictly, as the A% columns); t = 0 is the centroid match alone.

    Returns
    -------
    dict
        ``threshold``; ``gt`` (GT fibres); ``matched`` (GT fibres matched at t); ``missed``
        (``gt - matched``); ``extra`` (predicted fibres matched by no GT fibre at t);
        ``A%`` = 100 x matched at t / matched by the centroid rule, exactly the
        ``A%(IoU>t)`` of :func:`nclsm_utils.metrics.summarise` (NaN when nothing is
        matched); ``MF-A`` (matched by the centroid rule); ``n_pred``.

    Examples
    --------
    >>> table = pd.DataFrame({"gt_id": [1, 2], "pred_id": [5, 5], "matched": [True, True],
    ...                       "iou": [0.95, 0.5], "n_pred": 4})
    >>> threshold_counts(table, iou_threshold=0.8)["extra"]
    3
    >>> threshold_counts(table, iou_threshold=0.0)["extra"]
    3
    """
    table = per_fibre if per_fibre is not None else pd.DataFrame(columns=["matched", "iou"])
    n_gt = int(len(table))
    if n_pred is None:
        n_pred = int(table["n_pred"].iloc[0]) if n_gt and "n_pred" in table else 0
    centroid = table["matched"].astype(bool) if n_gt else pd.Series([], dtype=bool)
    n_centroid = int(centroid.sum())
    at = matched_at(table, iou_threshold)
    n_at = int(at.sum())
    # the A% of summarise: IoU > t among the matched fibres (for t = 0 as well)
    iou = table.loc[centroid, "iou"].to_numpy(float) if n_gt else np.zeros(0)
    above = int(np.count_nonzero(iou > float(iou_threshold or 0.0)))
    matched_pred = table.loc[at, "pred_id"].nunique() if n_at else 0
    return {
        "threshold": float(iou_threshold or 0.0),
        "gt": n_gt,
        "matched": n_at,
        "missed": n_gt - n_at,
        "extra": int(n_pred) - int(matched_pred),
        "A%": 100.0 * above / n_centroid if n_centroid else math.nan,
        "MF-A": n_centroid,
        "n_pred": int(n_pred),
    }


def worst_fibres(per_fibre: pd.DataFrame) -> list[int]:
    """GT fibre ids from the worst to the best: unmatched first, then by ascending IoU."""
    if per_fibre is None or not len(per_fibre):
        return []
    order = per_fibre.assign(_key=np.where(per_fibre["matched"].astype(bool),
                                           per_fibre["iou"].to_numpy(float), -1.0))
    order = order.sort_values(["_key", "gt_id"], kind="stable")
    return [int(v) for v in order["gt_id"]]


def _pred_iou(table: pd.DataFrame, iou_threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(pred ids, best IoU) of the predicted fibres matched at the threshold."""
    at = matched_at(table, iou_threshold).to_numpy()
    if not at.any():
        return np.zeros(0, np.int64), np.zeros(0)
    pred = table["pred_id"].to_numpy(np.int64)[at]
    iou = table["iou"].to_numpy(float)[at]
    order = np.lexsort((-iou, pred))          # by pred id, best IoU first
    pred, iou = pred[order], iou[order]
    first = np.ones(pred.size, bool)
    first[1:] = pred[1:] != pred[:-1]
    return pred[first], iou[first]


def overlay(image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None = None,
            per_fibre: pd.DataFrame | None = None, iou_threshold: float | None = None,
            selected: int | None = None, cmap: str = DEFAULT_CMAP, iou_range=IOU_RANGE,
            show_gt: bool = True, show_pred: bool = True, dim: float = 0.7,
            lut: np.ndarray | None = None) -> np.ndarray:
    """Image view with GT contours (white) and predicted contours coloured by IoU.

    Parameters
    ----------
    image : (h, w, 3) uint8
        A view of the section image (:func:`downsample_image`).
    gt, pred : (h, w) label views of the same region (:func:`downsample_labels`); either may
        be None.
    per_fibre : DataFrame, optional
        The method's per-fibre table; without it predicted contours are drawn in the
        colour map's top colour and nothing is highlighted.
    iou_threshold : float, optional
        Fibres count as matched at this threshold (see :func:`matched_at`): GT fibres not
        matched at it are tinted blue (*missed*) and predicted fibres matched by no GT
        fibre at it are tinted orange (*extra*). Predicted contours take the colour of the
        IoU of their (centroid-rule) match on ``cmap`` over ``iou_range``, whatever the
        threshold; predictions matched by no GT fibre at all have orange contours.
    selected : int, optional
        A GT fibre id outlined in yellow, two pixels wide.
    dim : float
        Factor on the image brightness so the contours stand out.

    Returns
    -------
    (h, w, 3) uint8
    """
    rgb = np.array(image[..., :3], dtype=np.uint8, copy=True)
    if dim != 1:
        rgb = cv2.convertScaleAbs(rgb, alpha=float(dim)) if cv2 is not None \
            else (rgb.astype(np.float32) * dim).astype(np.uint8)
    has_table = per_fibre is not None and len(per_fibre) > 0
    lut = colour_lut(cmap) if lut is None else lut
    show_pred = show_pred and pred is not None
    show_gt = show_gt and gt is not None
    # tints: the threshold's missed GT fibres and extra predictions
    if has_table and show_gt:
        at = matched_at(per_fibre, iou_threshold)
        missed = per_fibre.loc[~at.to_numpy(), "gt_id"].to_numpy(np.int64)
        if missed.size:
            _blend(rgb, _members(gt, missed), MISSED_COLOUR, 0.4)
    if has_table and show_pred:
        kept, _ = _pred_iou(per_fibre, iou_threshold)
        _blend(rgb, (pred > 0) & ~_members(pred, kept), EXTRA_COLOUR, 0.3)
    # contours: GT below, predictions on top (coloured by the IoU of their centroid match)
    if show_gt:
        rgb[label_boundaries(gt)] = GT_COLOUR
    if show_pred:
        edge = label_boundaries(pred)
        if has_table:
            ids, ious = _pred_iou(per_fibre, None)
            values = pred[edge].astype(np.int64)
            colours = np.empty((values.size, 3), np.uint8)
            colours[:] = EXTRA_COLOUR
            if ids.size:
                index = np.minimum(np.searchsorted(ids, values), ids.size - 1)
                known = ids[index] == values
                lo, hi = iou_range
                scaled = np.clip((ious[index[known]] - lo) / max(hi - lo, 1e-9), 0, 1)
                colours[known] = lut[np.round(scaled * (len(lut) - 1)).astype(np.intp)]
            rgb[edge] = colours
        else:
            rgb[edge] = lut[-1]
    if gt is not None and selected:
        mask = gt == selected
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size:
            from scipy import ndimage

            cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(axis=0))
            r0, r1 = max(rows[0] - 2, 0), rows[-1] + 3
            c0, c1 = max(cols[0] - 2, 0), cols[-1] + 3
            crop = mask[r0:r1, c0:c1]
            edge = ndimage.binary_dilation(label_boundaries(crop.view(np.uint8)), iterations=1)
            rgb[r0:r1, c0:c1][edge] = SELECTED_COLOUR
    return rgb


# ============================================================================ fibre rings
@dataclass
class FibreRings:
    """One fibre's filled region and AiB/AoB rings, exactly as :mod:`nclsm_utils.metrics`.

    The crop is the fibre's bounding box padded by the half-width k and clipped to the
    image, as in :func:`nclsm_utils.metrics.evaluate`; ``inner`` (AiB) is the region minus
    its erosion and ``outer`` (AoB) the dilation minus the region, by a ``(2k+1)`` square
    (:func:`nclsm_utils.metrics.ring_masks`).
    """

    label: int
    region: Region
    half_width: int
    filled: np.ndarray
    inner: np.ndarray
    outer: np.ndarray
    inner_positive: np.ndarray | None = None
    outer_positive: np.ndarray | None = None

    @property
    def membrane_included(self) -> float:
        """100 x membrane-positive AiB pixels / AiB pixels (NaN without an image)."""
        if self.inner_positive is None:
            return math.nan
        total = int(self.inner.sum())
        return (int(self.inner_positive.sum()) / total) * 100 if total else math.nan

    @property
    def mass_missed(self) -> float:
        """100 x mass-positive AoB pixels / AoB pixels (NaN without an image)."""
        if self.outer_positive is None:
            return math.nan
        total = int(self.outer.sum())
        return (int(self.outer_positive.sum()) / total) * 100 if total else math.nan


def fibre_box(labels: np.ndarray, label: int) -> tuple[int, int, int, int] | None:
    """Bounding box ``(row0, row1, col0, col1)`` of one label (None when absent)."""
    rows = np.flatnonzero((labels == label).any(axis=1))
    if not rows.size:
        return None
    cols = np.flatnonzero((labels[rows[0]:rows[-1] + 1] == label).any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def fibre_rings(labels: np.ndarray, label: int, half_width: int, image: np.ndarray | None = None,
                thresholds: tuple[float, float] | None = None,
                box: tuple[int, int, int, int] | None = None) -> FibreRings | None:
    """AiB/AoB rings of fibre ``label`` of a label image (None when the label is absent).

    Parameters
    ----------
    labels : (H, W) int
        Full-resolution labels (GT or prediction).
    half_width : int
        k (2 for IMC, 6 for IF).
    image : (H, W, 3), optional
        Section image; with it the ring pixels above the section-wide membrane / mass
        thresholds are returned, and the percentages equal the per-fibre table's.
    thresholds : (float, float), optional
        :func:`nclsm_utils.metrics.positive_thresholds` of the image (computed when None).
    box : tuple, optional
        The label's bounding box (from :func:`nclsm_utils.metrics.label_boxes`), saving a
        scan of the label image.
    """
    labels = np.asarray(labels)
    if box is None:
        box = fibre_box(labels, label)
        if box is None:
            return None
    height, width = labels.shape
    r0, r1, c0, c1 = box
    r0, c0 = max(r0 - half_width, 0), max(c0 - half_width, 0)
    r1, c1 = min(r1 + half_width, height), min(c1 + half_width, width)
    filled = metrics.fill_holes(labels[r0:r1, c0:c1] == label)
    inner, outer = _ring_masks(filled, half_width)
    rings = FibreRings(int(label), Region(r0, r1, c0, c1), int(half_width), filled, inner, outer)
    if image is not None:
        if thresholds is None:
            thresholds = metrics.positive_thresholds(image)
        crop = image[r0:r1, c0:c1]
        rings.inner_positive = inner & (crop[..., 0] > thresholds[0])
        rings.outer_positive = outer & (crop[..., 1] > thresholds[1])
    return rings


def _ring_masks(filled: np.ndarray, half_width: int):
    """(AiB, AoB) of a filled region with the ring definition of :mod:`nclsm_utils.metrics`."""
    rings = getattr(metrics, "ring_masks", None) or getattr(metrics, "ring_counts")
    return rings(filled, half_width)


def _paint_rings(rgb: np.ndarray, rings: FibreRings, window: Region) -> None:
    """Draw AiB / AoB of ``rings`` into ``rgb`` (a crop of ``window``): positive pixels solid,
    the others half transparent."""
    r0, c0 = rings.region.row0 - window.row0, rings.region.col0 - window.col0
    h, w = rings.filled.shape
    target = rgb[r0:r0 + h, c0:c0 + w]
    for ring, positive, colour in ((rings.inner, rings.inner_positive, AIB_COLOUR),
                                   (rings.outer, rings.outer_positive, AOB_COLOUR)):
        if positive is None:
            _blend(target, ring, colour, 0.7)
        else:
            _blend(target, ring & ~positive, colour, 0.45)
            target[positive] = colour


def fibre_window(rings: FibreRings, shape, margin: float = 0.35) -> Region:
    """A square-ish window around a fibre's ring crop with some context, inside the image."""
    region = rings.region
    pad = int(max(2 * rings.half_width, margin * max(region.height, region.width)))
    return Region(max(region.row0 - pad, 0), min(region.row1 + pad, shape[0]),
                  max(region.col0 - pad, 0), min(region.col1 + pad, shape[1]))


def fibre_panel(image: np.ndarray, window: Region, rings: FibreRings | None,
                outlines=(), size: int = 240) -> np.ndarray:
    """One fibre's picture: the image crop ``window`` with the rings and outlines, enlarged.

    Parameters
    ----------
    image : (H, W, 3) uint8
        Full-resolution section image.
    window : Region
        The crop shown (:func:`fibre_window`).
    rings : FibreRings or None
        Rings to paint (AiB yellow, AoB blue; membrane- / mass-positive pixels solid).
    outlines : iterable of (mask crop (bool, window-sized), RGB colour)
        Outlines drawn on top (e.g. the GT fibre in white, the prediction in its colour).
    size : int
        Longer side of the result (nearest-neighbour enlargement by an integer factor).
    """
    rgb = np.array(image[window.row0:window.row1, window.col0:window.col1, :3], np.uint8)
    rgb = (rgb.astype(np.float32) * 0.6).astype(np.uint8)
    if rings is not None:
        _paint_rings(rgb, rings, window)
    for mask, colour in outlines:
        rgb[label_boundaries(np.asarray(mask).view(np.uint8) if mask.dtype == bool else mask)] \
            = colour
    up = max(1, size // max(rgb.shape[:2]))
    return _enlarge(rgb, up)


# ============================================================================ encoding
def png_bytes(rgb: np.ndarray, level: int = 1) -> bytes:
    """Encode an RGB uint8 array as PNG bytes (fast, low compression)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if cv2 is not None:
        ok, buffer = cv2.imencode(".png", rgb[..., ::-1] if rgb.ndim == 3 else rgb,
                                  [cv2.IMWRITE_PNG_COMPRESSION, int(level),
                                   cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
        if ok:
            return buffer.tobytes()
    import io

    from PIL import Image  # pragma: no cover - without OpenCV

    stream = io.BytesIO()
    Image.fromarray(rgb).save(stream, format="PNG", compress_level=int(level))
    return stream.getvalue()


def colorbar_png(cmap: str = DEFAULT_CMAP, iou_range=IOU_RANGE, height: float = 3.2) -> bytes:
    """A small vertical colour bar of the IoU colours (PNG bytes), with the extra colour."""
    import io

    from matplotlib import colormaps, colors
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colorbar import ColorbarBase
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.1, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0.08, 0.12, 0.25, 0.8])
    ColorbarBase(ax, cmap=colormaps[cmap], norm=colors.Normalize(*iou_range),
                 orientation="vertical")
    ax.set_title("IoU", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.text(0.05, 0.02, "orange: extra", fontsize=6, color=np.array(EXTRA_COLOUR) / 255)
    stream = io.BytesIO()
    fig.savefig(stream, format="png")
    return stream.getvalue()


# ============================================================================ data access
class ViewCache:
    """A least-recently-used cache of arrays bounded by their total size in bytes."""

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key):
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        return None

    def put(self, key, value):
        size = int(getattr(value, "nbytes", 0))
        if key in self._items:
            self.bytes -= int(getattr(self._items.pop(key), "nbytes", 0))
        self._items[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self.bytes -= int(getattr(old, "nbytes", 0))
        return value

    def __contains__(self, key) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


class MissingPrediction(DataError):
    """A method has no cached prediction for a section."""


@dataclass
class SectionView:
    """Views of one section over one region: image, GT labels and a method's labels."""

    section: str
    region: Region
    step: int
    up: int
    image: np.ndarray
    gt: np.ndarray
    pred: np.ndarray | None = None
    method: str | None = None


def method_label(method: str) -> str:
    """Result-folder name of a method (``external:<folder>`` -> ``external-<folder name>``)."""
    if method.startswith("external:"):
        return "external-" + Path(method.split(":", 1)[1]).expanduser().resolve().name
    return method


def _open_dataset(data) -> Dataset:
    if isinstance(data, Dataset):
        return data
    path = Path(data).expanduser()
    root = find_ncl_sm(path)
    if root is None and (path / "synthetic").is_dir():
        root = find_ncl_sm(path / "synthetic")
    return Dataset(root if root is not None else path)


class ExploreData:
    """Cached access to a dataset's views, predictions and per-fibre tables.

    Parameters
    ----------
    data : Dataset or path-like
        The dataset (a folder holding NCL-SM, or ``data/`` holding ``synthetic/``).
    workdir : path-like, optional
        Where the pipeline cached ``predictions/`` and ``results/`` (default: the
        pipeline's :func:`nclsm_utils.pipeline.default_workdir`).
    max_side : int
        Longest side of a view.
    cache_mb : float
        Bound of the view cache.
    """

    def __init__(self, data, workdir=None, max_side: int = DEFAULT_MAX_SIDE,
                 cache_mb: float = 512):
        self.dataset = _open_dataset(data)
        if workdir is None:
            from .pipeline import default_workdir

            workdir = default_workdir(self.dataset.root)
        self.workdir = Path(workdir)
        self.max_side = int(max_side)
        self.views = ViewCache(int(cache_mb * 2**20))
        self.crops = ViewCache(int(cache_mb * 2**20) // 4)
        self._small: dict = {}
        self._tables: dict = {}
        self._full_key: str | None = None
        self._full: dict = {}

    # -- methods and files -----------------------------------------------------------
    def cached_methods(self) -> list[str]:
        """Method folders under ``<workdir>/predictions`` and ``<workdir>/results``."""
        found = set()
        for sub in ("predictions", "results"):
            folder = self.workdir / sub
            if folder.is_dir():
                found.update(p.name for p in folder.iterdir()
                             if p.is_dir() and not p.name.startswith("."))
        return sorted(found)

    def methods(self, extra=()) -> list[str]:
        """Cached methods first, then the built-in ones and ``extra`` not cached."""
        cached = self.cached_methods()
        rest = [m for m in (*extra, *BUILTIN_METHODS) if m not in cached]
        return list(dict.fromkeys([*cached, *rest]))

    def pick_methods(self, methods, n: int = 2) -> list[str]:
        """The first ``n`` of ``methods`` that have cached predictions (or results); when
        none has, ``methods[:1]`` (the app then offers to run it)."""
        if isinstance(methods, str):
            methods = [m.strip() for m in methods.split(",") if m.strip()]
        methods = [m for m in (methods or []) if m]
        cached = set(self.cached_methods())
        have = [m for m in methods if method_label(m) in cached or m.startswith("external:")]
        return (have or methods[:1])[:n]

    def prediction_path(self, method: str, section: Section) -> Path:
        """The cached prediction of ``method`` for ``section``; raises MissingPrediction."""
        if method.startswith("external:"):
            from .segmenters.external import ExternalMasks

            try:
                return ExternalMasks(folder=method.split(":", 1)[1]).find_mask(section)
            except DataError as error:
                raise MissingPrediction(str(error)) from error
        path = self.workdir / "predictions" / method / f"{section.modality}_{section.id}.tiff"
        if not path.is_file():
            if not (self.workdir / "predictions" / method).is_dir():
                hint = (f"{method} has no cached predictions in {self.workdir / 'predictions'}")
            else:
                hint = f"no cached prediction of {method} for {section.key} (expected {path})"
            if method.startswith("external-"):
                hint += "; open external masks as method 'external:<folder>'"
            raise MissingPrediction(hint)
        return path

    def table_path(self, method: str, section: Section) -> Path:
        return self.workdir / "results" / method_label(method) / \
            f"{section.modality}_{section.id}.csv"

    def _stamp(self, path: Path):
        stat = path.stat()
        return (str(path), stat.st_mtime_ns, stat.st_size)

    # -- full-resolution arrays (one section at a time) --------------------------------
    def layer_stamp(self, section: Section, layer: str):
        """What a cached array of a layer depends on: the prediction file's path, mtime and
        size for ``pred:<method>`` (a re-run invalidates it), None for image and GT."""
        if layer.startswith("pred:"):
            return self._stamp(self.prediction_path(layer[5:], section))
        return None

    def is_loaded(self, section: Section, layer: str) -> bool:
        """Whether the full-resolution array of a layer is in memory (no file read needed)."""
        if self._full_key != section.key or layer not in self._full:
            return False
        try:
            return self._full[layer][0] == self.layer_stamp(section, layer)
        except DataError:
            return False

    def full(self, section: Section, layer: str) -> np.ndarray:
        """Full-resolution ``image``, ``gt`` or ``pred:<method>`` of one section.

        Only the arrays of one section are kept; asking for another section drops them.
        """
        if self._full_key != section.key:
            self._full.clear()
            self._full_key = section.key
        stamp = self.layer_stamp(section, layer)
        cached = self._full.get(layer)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if layer == "image":
            array = section.image()
        elif layer == "gt":
            array = section.mask("myofibres")
        elif layer.startswith("pred:"):
            from .dataset import as_labels

            path = Path(stamp[0])
            array = as_labels(read_array(path), path)
            expected = tuple(section.shape())
            if array.shape != expected:
                raise DataError(f"{path}: prediction has shape {array.shape}, the section "
                                f"{section.key} {expected}")
        else:
            raise KeyError(f"unknown layer {layer!r}; use image, gt or pred:<method>")
        self._full[layer] = (stamp, array)
        return array

    def shape(self, section: Section) -> tuple[int, int]:
        key = ("shape", section.key)
        if key not in self._small:
            self._small[key] = tuple(section.shape())
        return self._small[key]

    def boxes(self, section: Section, layer: str) -> metrics.LabelBoxes:
        """Label bounding boxes of a layer (computed once, kept after the section is left)."""
        key = ("boxes", section.key, layer, self.layer_stamp(section, layer))
        if key not in self._small:
            self._small[key] = metrics.label_boxes(self.full(section, layer))
        return self._small[key]

    def box(self, section: Section, layer: str, label: int):
        """Bounding box ``(row0, row1, col0, col1)`` of one label of a layer (None if absent)."""
        boxes = self.boxes(section, layer)
        index = int(np.searchsorted(boxes.ids, label))
        if index >= len(boxes.ids) or boxes.ids[index] != label:
            return None
        return (int(boxes.row0[index]), int(boxes.row1[index]), int(boxes.col0[index]),
                int(boxes.col1[index]))

    def thresholds(self, section: Section) -> tuple[float, float]:
        """Membrane / mass positive thresholds of the section image (kept per section)."""
        key = ("thresholds", section.key)
        if key not in self._small:
            self._small[key] = metrics.positive_thresholds(self.full(section, "image"))
        return self._small[key]

    def crop(self, section: Section, layer: str, window: Region) -> np.ndarray:
        """A full-resolution crop of a layer, cached (fibre panels of a section left earlier
        need no re-read of its files)."""
        key = (section.key, layer, self.layer_stamp(section, layer), window.as_tuple())
        array = self.crops.get(key)
        if array is None:
            array = self.crops.put(key, np.array(self.full(section, layer)[window.slices]))
        return array

    # -- views --------------------------------------------------------------------------
    def view(self, section: Section, layer: str, region: Region | None = None,
             max_side: int | None = None) -> np.ndarray:
        """A cached view (crop, then downsample) of a layer."""
        max_side = int(max_side or self.max_side)
        region = region or Region.full(self.shape(section))
        key = (section.key, layer, self.layer_stamp(section, layer), max_side, region.as_tuple())
        view = self.views.get(key)
        if view is None:
            full = self.full(section, layer)
            if layer == "image":
                view = downsample_image(full, region, max_side)
            else:
                view = downsample_labels(full, region, max_side)
            self.views.put(key, view)
        return view

    def section_view(self, section: Section, method: str | None = None,
                     region: Region | None = None, max_side: int | None = None) -> SectionView:
        """Image, GT and (when ``method`` is given) predicted views of one region."""
        max_side = int(max_side or self.max_side)
        region = region or Region.full(self.shape(section))
        step, up = view_sampling(region, max_side)
        pred = self.view(section, f"pred:{method}", region, max_side) if method else None
        return SectionView(section.key, region, step, up,
                           self.view(section, "image", region, max_side),
                           self.view(section, "gt", region, max_side), pred, method)

    # -- tables --------------------------------------------------------------------------
    def table(self, section: Section, method: str) -> pd.DataFrame:
        """The per-fibre table of ``method`` on ``section``.

        Read from ``<workdir>/results/<method>/<modality>_<id>.csv``; when that file is
        missing but the prediction is cached, it is computed with
        :func:`nclsm_utils.metrics.evaluate` (kept in memory, not written).
        """
        path = self.table_path(method, section)
        if path.is_file():
            key = ("csv", section.key, method, self._stamp(path))
            if key not in self._tables:
                table = metrics.read_per_fibre_table(path)
                self._tables[key] = table
            return self._tables[key]
        pred_path = self.prediction_path(method, section)
        key = ("evaluated", section.key, method, self._stamp(pred_path))
        if key not in self._tables:
            log.info("no per-fibre table %s: evaluating the cached prediction", path)
            image = self.full(section, "image") if section.has("image") else None
            table = metrics.evaluate(self.full(section, "gt"), self.full(section, f"pred:{method}"),
                                     image, half_width=section.half_width)
            self._tables[key] = table
        return self._tables[key]

    def n_pred(self, section: Section, method: str, table: pd.DataFrame | None = None) -> int:
        """Number of predicted fibres (from the table; counted on the labels when empty)."""
        if table is not None and len(table) and "n_pred" in table:
            return int(table["n_pred"].iloc[0])
        return int(len(self.boxes(section, f"pred:{method}")))


# ============================================================================ the app
def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    if not math.isfinite(number):
        return "–"
    return f"{number:.{digits}g}" if abs(number) < 1 else f"{number:.{max(digits - 2, 1)}f}" \
        if number < 1000 else f"{number:.0f}"


def _html_table(header, rows) -> str:
    head = "".join(f"<th style='padding:2px 8px;text-align:right'>{html.escape(str(h))}</th>"
                   for h in header)
    body = "".join("<tr>" + "".join(f"<td style='padding:2px 8px;text-align:right'>{c}</td>"
                                    for c in row) + "</tr>" for row in rows)
    return f"<table style='border-collapse:collapse;font-size:90%'><tr>{head}</tr>{body}</table>"


@dataclass
class PanelState:
    """What one method panel shows (after a refresh)."""

    method: str | None = None
    message: str = ""
    missing: bool = False
    can_run: bool = False
    counts: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    table: pd.DataFrame | None = None
    png: bytes = b""
    rgb: np.ndarray | None = None
    pred: np.ndarray | None = None


class Explorer:
    """The ipywidgets explorer: sections, two methods side by side, fibres and thresholds.

    Parameters
    ----------
    data : path-like or Dataset
        Dataset folder (NCL-SM or the synthetic default; ``data/`` holding ``synthetic/``
        works too). Can be changed in the app.
    workdir : path-like, optional
        Where ``predictions/`` and ``results/`` are cached (default as the pipeline).
    methods : str or list of str, optional
        Methods shown in panels A and B (default: the first cached method, nothing in B).
    section : str, optional
        Section id to open (default: the first section with a cached prediction of A).
    max_side : int
        Longest side of a rendered view (pixels).
    iou_threshold : float
        Initial IoU threshold of the counts.
    runner : callable, optional
        Called as ``runner(method, dataset, sections=[id], workdir=..., progress=False)``
        by the *Run* button (default :func:`nclsm_utils.segmenters.run.run_method`).

    Attributes
    ----------
    data_path, modality, section, method_a, method_b, zoom, centre_row, centre_col,
    threshold, fibre, fibre_order, show_gt, show_pred : ipywidgets controls
        Setting their ``value`` updates the app (as a user would).
    image_a, image_b : ipywidgets.Image
        The rendered panels (PNG).
    counts, fibre_info, message : ipywidgets.HTML
    fibre_image : ipywidgets.Image
    run_a, run_b : ipywidgets.Button
        Visible when a panel's method has no cached prediction and can be run.
    timings : dict
        Seconds taken by the last refresh (``refresh``) and fibre update (``fibre``).
    """

    def __init__(self, data="data", workdir=None, methods=None, section=None,
                 max_side: int = DEFAULT_MAX_SIDE, iou_threshold: float = 0.8,
                 cmap: str = DEFAULT_CMAP, runner=None, cache_mb: float = 512):
        import ipywidgets as w

        self._w = w
        self.max_side = int(max_side)
        self.cmap = cmap
        self.lut = colour_lut(cmap)
        self.runner = runner
        self.store: ExploreData | None = None
        self._workdir_arg = workdir
        self._cache_mb = cache_mb
        self._hold = 0
        self.timings: dict[str, float] = {}
        self.panels = {"a": PanelState(), "b": PanelState()}
        self.fibre_rows: dict[str, dict] = {}
        self._fibre_cache: OrderedDict = OrderedDict()
        self._summaries: dict = {}
        self._prefetched: set = set()
        self._fibre_signature: tuple = (None, None)
        self.errors: list[str] = []
        if isinstance(methods, str):
            methods = [m.strip() for m in methods.split(",") if m.strip()]
        self._extra_methods = [m for m in (methods or []) if m]

        layout = w.Layout
        self.data_path = w.Text(value=str(getattr(data, "root", data)), description="data",
                                layout=layout(width="420px"))
        self.workdir_path = w.Text(value="" if workdir is None else str(workdir),
                                   description="workdir", placeholder="default: as the pipeline",
                                   layout=layout(width="420px"))
        self.open_button = w.Button(description="Open", layout=layout(width="70px"))
        self.modality = w.Dropdown(description="modality", layout=layout(width="180px"))
        self.section = w.Dropdown(description="section", layout=layout(width="220px"))
        self.method_a = w.Dropdown(description="method A", layout=layout(width="260px"))
        self.method_b = w.Dropdown(description="method B", layout=layout(width="260px"))
        self.zoom = w.FloatLogSlider(value=1.0, base=2, min=0, max=6, step=0.25,
                                     description="zoom", readout_format=".2g",
                                     continuous_update=False)
        self.centre_row = w.FloatSlider(value=0.5, min=0, max=1, step=0.01, description="pan ↕",
                                        continuous_update=False)
        self.centre_col = w.FloatSlider(value=0.5, min=0, max=1, step=0.01, description="pan ↔",
                                        continuous_update=False)
        self.show_gt = w.Checkbox(value=True, description="GT contours", indent=False,
                                  layout=layout(width="120px"))
        self.show_pred = w.Checkbox(value=True, description="predictions", indent=False,
                                    layout=layout(width="120px"))
        self.threshold = w.FloatSlider(value=float(iou_threshold), min=0.0, max=0.99, step=0.01,
                                       description="IoU >", readout_format=".2f",
                                       continuous_update=True)
        self.fibre_order = w.ToggleButtons(options=["worst first", "by id"],
                                           value="worst first", description="fibres",
                                           style={"button_width": "90px"})
        self.fibre = w.Dropdown(description="fibre", options=[], layout=layout(width="330px"))
        self.zoom_to_fibre = w.Button(description="zoom to fibre", layout=layout(width="120px"))
        self.message = w.HTML()
        self.title_a, self.title_b = w.HTML(), w.HTML()
        self.image_a = w.Image(format="png")
        self.image_b = w.Image(format="png")
        self.colorbar = w.Image(value=colorbar_png(cmap), format="png",
                                layout=layout(width="90px"))
        self.run_a = w.Button(description="Run", button_style="warning",
                              layout=layout(display="none", width="auto"))
        self.run_b = w.Button(description="Run", button_style="warning",
                              layout=layout(display="none", width="auto"))
        self.counts = w.HTML()
        self.fibre_image = w.Image(format="png")
        self.fibre_info = w.HTML()
        for image in (self.image_a, self.image_b, self.fibre_image):
            image.add_class("nclsm-explore-px")
        # views are shown at their natural size; enlarged pixels stay square and sharp
        self.style = w.HTML("<style>.nclsm-explore-px{image-rendering:pixelated;}</style>")
        self.box_b = w.VBox([self.title_b, self.image_b, self.run_b])
        self.widget = w.VBox([
            self.style,
            w.HBox([self.data_path, self.workdir_path, self.open_button]),
            w.HBox([self.modality, self.section, self.method_a, self.method_b]),
            w.HBox([self.show_gt, self.show_pred]),
            w.HBox([self.zoom, self.centre_row, self.centre_col]),
            self.threshold,
            self.message,
            w.HBox([w.VBox([self.title_a, self.image_a, self.run_a]), self.box_b,
                    self.colorbar], layout=layout(flex_flow="row wrap")),
            self.counts,
            w.HBox([self.fibre_order, self.fibre, self.zoom_to_fibre]),
            self.fibre_image,
            self.fibre_info,
        ])

        self.open_button.on_click(lambda _: self.open(self.data_path.value,
                                                      workdir=self.workdir_path.value or None))
        self.modality.observe(self._on_modality, "value")
        for control in (self.section, self.method_a, self.method_b, self.zoom, self.centre_row,
                        self.centre_col, self.show_gt, self.show_pred):
            control.observe(self._on_view_change, "value")
        self.threshold.observe(self._on_threshold, "value")
        self.fibre.observe(self._on_fibre, "value")
        self.fibre_order.observe(lambda _: self._update_fibre_options(), "value")
        self.zoom_to_fibre.on_click(lambda _: self.focus_fibre())
        self.run_a.on_click(lambda _: self.run_missing("a"))
        self.run_b.on_click(lambda _: self.run_missing("b"))

        self.open(data, methods=self._extra_methods, section=section)

    # -- display --------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        note = ("NCL-SM explorer (ipywidgets): live in JupyterLab; a static page shows the "
                "snapshot saved with Explorer.snapshot().")
        bundle["text/plain"] = note
        bundle["text/html"] = f"<p><i>{html.escape(note)}</i></p>"
        return bundle

    # -- helpers -----------------------------------------------------------------------
    class _Held:
        def __init__(self, app):
            self.app = app

        def __enter__(self):
            self.app._hold += 1

        def __exit__(self, *exc):
            self.app._hold -= 1

    def hold(self):
        """Context manager: change several controls, refresh once afterwards yourself."""
        return Explorer._Held(self)

    def _set_message(self, lines) -> None:
        self.errors = [line for line in lines if line]
        if not self.errors:
            self.message.value = ""
            return
        items = "".join(f"<li>{line}</li>" for line in self.errors)
        self.message.value = (f"<div style='background:#fff3cd;border:1px solid #e0c36c;"
                              f"padding:4px 10px;border-radius:4px'><ul style='margin:2px 0'>"
                              f"{items}</ul></div>")

    @property
    def current_section(self) -> Section | None:
        if self.store is None or not self.section.value:
            return None
        return self.store.dataset.section(self.section.value)

    @property
    def methods_shown(self) -> list[str]:
        return [m for m in (self.method_a.value, self.method_b.value) if m and m != NO_METHOD]

    def region(self) -> Region | None:
        section = self.current_section
        if section is None:
            return None
        return zoom_region(self.store.shape(section), self.zoom.value,
                           (self.centre_row.value, self.centre_col.value))

    @property
    def state(self) -> dict:
        """A plain summary of what the app shows (for tests and notebooks)."""
        region = self.region()
        return {
            "data": str(self.store.dataset.root) if self.store else None,
            "workdir": str(self.store.workdir) if self.store else None,
            "modality": self.modality.value, "section": self.section.value,
            "methods": [self.method_a.value, self.method_b.value],
            "region": region.as_tuple() if region else None,
            "zoom": self.zoom.value, "threshold": self.threshold.value,
            "fibre": self.fibre.value,
            "counts": {p.method: dict(p.counts) for p in self.panels.values()
                       if p.method and p.counts},
            "messages": list(self.errors),
            "missing": {p.method: p.missing for p in self.panels.values() if p.method},
        }

    # -- loading -----------------------------------------------------------------------
    def open(self, data, methods=None, section=None, workdir=None) -> None:
        """Open a dataset folder (the *Open* button reads the data and workdir boxes)."""
        if isinstance(methods, str):
            methods = [m.strip() for m in methods.split(",") if m.strip()]
        workdir = workdir if workdir not in (None, "") else self._workdir_arg
        try:
            store = ExploreData(data, workdir, self.max_side, self._cache_mb)
        except (DataError, OSError) as error:
            self.store = None
            self._set_message([f"Cannot open the dataset: {html.escape(str(error))}"])
            with self.hold():
                self.modality.options, self.section.options = [], []
                self.method_a.options, self.method_b.options = [], []
            for image in (self.image_a, self.image_b, self.fibre_image):
                image.value = b""
            self.counts.value = self.fibre_info.value = ""
            return
        self.store = store
        self._workdir_arg = store.workdir
        self.data_path.value = str(store.dataset.root)
        self.workdir_path.value = str(store.workdir)
        all_methods = store.methods(extra=[*self._extra_methods, *(methods or [])])
        cached = store.cached_methods()
        wanted = store.pick_methods(methods) if methods else []
        first = wanted[0] if wanted else (cached[0] if cached else all_methods[0])
        second = wanted[1] if len(wanted) > 1 else NO_METHOD
        notes = []
        try:
            chosen = self._initial_section(store, first, section)
        except DataError as error:
            notes.append(html.escape(str(error)))
            chosen = self._initial_section(store, first, None)
        with self.hold():
            self.method_a.options = all_methods
            self.method_b.options = [NO_METHOD, *all_methods]
            self.method_a.value = first
            self.method_b.value = second
            self.modality.options = store.dataset.modalities
            modality = chosen.modality if chosen else store.dataset.modalities[0]
            self.modality.value = modality
            self._set_section_options(modality)
            if chosen is not None:
                self.section.value = chosen.key
            self.zoom.value, self.centre_row.value, self.centre_col.value = 1.0, 0.5, 0.5
        self.refresh(keep_fibre=False)
        if notes:
            self._set_message([*notes, *self.errors])

    def _initial_section(self, store: ExploreData, method: str, section) -> Section | None:
        sections = store.dataset.sections()
        if not sections:
            return None
        if section is not None:
            return store.dataset.section(str(section))
        for candidate in sections:
            try:
                store.prediction_path(method, candidate)
                return candidate
            except DataError:
                continue
        tests = [s for s in sections if s.split == "test"]
        return (tests or sections)[0]

    def _set_section_options(self, modality: str) -> None:
        sections = self.store.dataset.sections(modality=modality) if self.store else []
        options = [(f"{s.id} ({s.split})", s.key) for s in sections]
        current = self.section.value
        self.section.options = options
        if current in [key for _, key in options]:
            self.section.value = current
        elif options:
            self.section.value = options[0][1]

    # -- observers -----------------------------------------------------------------------
    def _on_modality(self, change) -> None:
        if self._hold or self.store is None:
            return
        with self.hold():
            self._set_section_options(change["new"])
        self.refresh()

    def _on_view_change(self, change) -> None:
        if self._hold:
            return
        if change["owner"] is self.section:
            with self.hold():
                self.zoom.value, self.centre_row.value, self.centre_col.value = 1.0, 0.5, 0.5
        self.refresh(keep_fibre=change["owner"] is not self.section)

    def _on_threshold(self, change) -> None:
        if self._hold:
            return
        self.refresh(keep_fibre=True, fibre_panel=False)

    def _on_fibre(self, change) -> None:
        if self._hold:
            return
        self.refresh(keep_fibre=True)

    # -- rendering ------------------------------------------------------------------------
    def refresh(self, keep_fibre: bool = True, fibre_panel: bool = True) -> None:
        """Recompute the panels, counts and fibre view from the controls."""
        start = time.perf_counter()
        section = self.current_section
        if section is None:
            if self.store is not None:
                self._set_message([f"{html.escape(str(self.store.dataset.root))}: no sections"])
            return
        messages = []
        try:
            region = self.region()
            base = self.store.section_view(section, None, region)
        except Exception as error:  # noqa: BLE001 - shown, never raised into the notebook
            log.exception("explorer: cannot show %s", section.key)
            self._set_message([f"Cannot read section {section.key}: "
                               f"{html.escape(_one_line(error))}"])
            for image in (self.image_a, self.image_b, self.fibre_image):
                image.value = b""
            return
        if not base.gt.any() and not self._gt_has_fibres(section):
            messages.append(f"The ground truth of {section.key} has no fibres: nothing to "
                            "match; the image and predictions are shown as they are.")
        for name, dropdown in (("a", self.method_a), ("b", self.method_b)):
            method = dropdown.value if dropdown.value not in (None, NO_METHOD) else None
            self.panels[name] = self._load_panel(section, method, base)
            if self.panels[name].message:
                messages.append(self.panels[name].message)
        self._update_fibre_options(keep=keep_fibre)
        for panel in self.panels.values():
            self._draw_panel(panel, base)
        self.box_b.layout.display = None if self.panels["b"].method else "none"
        for name, image, title, button in (("a", self.image_a, self.title_a, self.run_a),
                                           ("b", self.image_b, self.title_b, self.run_b)):
            panel = self.panels[name]
            image.value = panel.png
            if panel.rgb is not None:
                image.layout.width = f"{panel.rgb.shape[1]}px"
            title.value = f"<b>{html.escape(panel.method or '')}</b> on {section.key}" \
                if panel.method else ""
            button.layout.display = None if panel.can_run else "none"
            button.description = f"Run {panel.method} on {section.id}" if panel.can_run else "Run"
        self.counts.value = self._counts_html(section)
        self._set_message(messages)
        self.timings["refresh"] = time.perf_counter() - start
        if fibre_panel:
            self._render_fibre(section)
            self._prefetch_fibres(section)

    def _gt_has_fibres(self, section: Section) -> bool:
        for panel in self.panels.values():
            if panel.table is not None and len(panel.table):
                return True
        return bool(len(self.store.boxes(section, "gt")))

    def _load_panel(self, section: Section, method: str | None, base: SectionView) -> PanelState:
        panel = PanelState(method=method)
        if method is None:
            return panel
        pred = table = None
        try:
            pred = self.store.view(section, f"pred:{method}", base.region)
            table = self.store.table(section, method)
        except MissingPrediction as error:
            panel.missing = True
            panel.can_run = not method.startswith("external")
            panel.message = (f"<b>{html.escape(method)}</b>: {html.escape(str(error))}."
                             + (" Use the <i>Run</i> button below its panel to compute it."
                                if panel.can_run else ""))
        except Exception as error:  # noqa: BLE001 - shown, never raised into the notebook
            log.exception("explorer: %s on %s", method, section.key)
            panel.message = (f"<b>{html.escape(method)}</b> on {section.key}: "
                             f"{html.escape(_one_line(error))}")
        if table is not None:
            panel.table = table
            n_pred = self.store.n_pred(section, method, table)
            panel.counts = threshold_counts(table, n_pred, self.threshold.value)
            if n_pred == 0:
                panel.message = (f"<b>{html.escape(method)}</b> predicted no fibres on "
                                 f"{section.key}: every ground-truth fibre is missed.")
            panel.summary = self._summary(section, method, table)
        panel.pred = pred
        return panel

    def _draw_panel(self, panel: PanelState, base: SectionView) -> None:
        if panel.method is None:
            return
        panel.rgb = overlay(base.image, base.gt, panel.pred, panel.table, self.threshold.value,
                            selected=self.fibre.value or None, cmap=self.cmap,
                            show_gt=self.show_gt.value, show_pred=self.show_pred.value,
                            lut=self.lut)
        panel.png = png_bytes(panel.rgb)

    def _summary(self, section: Section, method: str, table: pd.DataFrame) -> dict:
        """metrics.summarise of a table (cached while the table object is)."""
        if not len(table):
            return {}
        key = (section.key, method)
        cached = self._summaries.get(key)
        if cached is None or cached[0] is not table:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cached = (table, metrics.summarise(table).iloc[0].to_dict())
            self._summaries[key] = cached
        return cached[1]

    def _counts_html(self, section: Section) -> str:
        t = self.threshold.value
        rows = []
        for panel in self.panels.values():
            if not panel.method:
                continue
            c, s = panel.counts, panel.summary
            if not c:
                rows.append([html.escape(panel.method), *["–"] * 8])
                continue
            rows.append([f"<b>{html.escape(panel.method)}</b>", c["gt"], c["n_pred"],
                         c["matched"], c["missed"], c["extra"], _fmt(c["A%"], 4),
                         c["MF-A"], _fmt(s.get("mean IoU"))])
        header = ["method", "GT fibres", "predicted", f"matched (IoU>{t:.2f})", "missed",
                  "extra", f"A%(IoU>{t:.2f})", "MF-A (centroid)", "mean IoU"]
        legend = ("<div style='font-size:85%;color:#555'>GT contours white; predicted contours "
                  f"coloured by the IoU of their matched fibre ({html.escape(self.cmap)}, "
                  f"{IOU_RANGE[0]}–{IOU_RANGE[1]}); blue tint: GT fibres missed at the "
                  "threshold; orange tint: extra predictions at the threshold (orange contour: matched by "
                  "no GT fibre at all); yellow: the selected fibre. "
                  "A% = 100 × matched with IoU &gt; t / matched (the paper's A%).</div>")
        return _html_table(header, rows) + legend if rows else ""

    def _update_fibre_options(self, keep: bool = True) -> None:
        table = next((p.table for p in self.panels.values() if p.table is not None), None)
        signature = (self.section.value, id(table), self.fibre_order.value)
        if keep and table is not None and signature == self._fibre_signature[0] \
                and self._fibre_signature[1] is table:
            return
        self._fibre_signature = (signature, table)
        if table is not None and len(table):
            ids = worst_fibres(table) if self.fibre_order.value == "worst first" \
                else sorted(int(v) for v in table["gt_id"])
            iou = dict(zip(table["gt_id"].astype(int), table["iou"].astype(float)))
            matched = dict(zip(table["gt_id"].astype(int), table["matched"].astype(bool)))
            options = [(f"#{i}  IoU {iou[i]:.3f}" if matched[i] else f"#{i}  not matched", i)
                       for i in ids]
        else:
            section = self.current_section
            ids = []
            if section is not None:
                try:
                    ids = [int(v) for v in self.store.boxes(section, "gt").ids]
                except Exception:  # noqa: BLE001
                    ids = []
            options = [(f"#{i}", i) for i in ids]
        current = self.fibre.value if keep else None
        values = [v for _, v in options]
        if current not in values:
            # default: the worst fibre that was matched (its rings can be compared)
            current = values[0] if values else None
            if table is not None and len(table) and self.fibre_order.value == "worst first":
                matched_ids = set(table.loc[table["matched"].astype(bool), "gt_id"].astype(int))
                current = next((v for v in values if v in matched_ids), current)
        with self.hold():
            self.fibre.options = options
            self.fibre.value = current

    def _fibre_key(self, section: Section, label) -> tuple:
        parts = [section.key, label]
        for panel in self.panels.values():
            if panel.method and panel.table is not None:
                try:
                    stamp = self.store._stamp(self.store.prediction_path(panel.method, section))
                except (DataError, OSError):
                    stamp = None
                parts.append((panel.method, stamp, id(panel.table)))
        return tuple(parts)

    def _render_fibre(self, section: Section) -> None:
        start = time.perf_counter()
        label = self.fibre.value
        self.fibre_rows = {}
        if not label:
            self.fibre_image.value = b""
            self.fibre_info.value = "<i>No fibre to show.</i>"
            return
        key = self._fibre_key(section, label)
        cached = self._fibre_cache.get(key)
        if cached is not None:
            self.fibre_image.value, self.fibre_info.value, rows = cached
            self.fibre_rows = dict(rows)
            self.timings["fibre"] = time.perf_counter() - start
            return
        try:
            store = self.store
            k = section.half_width
            plan = self._fibre_plan(section, label)
            if plan is None:
                self.fibre_info.value = f"<i>Fibre {label} is not in the ground truth.</i>"
                self.fibre_image.value = b""
                return
            window, matches = plan
            local = Region(0, window.height, 0, window.width)
            image = store.crop(section, "image", window)
            gt = store.crop(section, "gt", window)
            thresholds = store.thresholds(section)
            rings = fibre_rings(gt, label, k, image, thresholds,
                                box=_shift_box(store.box(section, "gt", label), window))
            crop_gt = gt == label
            gt_outlines, method_panels, titles, rows = [], [], ["GT"], []
            for method, (row, pred_id) in matches.items():
                self.fibre_rows[method] = row
                rows.append([f"<b>{html.escape(method)}</b>",
                             *[_fmt(row.get(c)) for c in FIBRE_COLUMNS]])
                if pred_id:
                    layer = f"pred:{method}"
                    pred = store.crop(section, layer, window)
                    other = fibre_rings(pred, pred_id, k, image, thresholds,
                                        box=_shift_box(store.box(section, layer, pred_id), window))
                    gt_outlines.append((pred == pred_id, self._iou_colour(float(row["iou"]))))
                    method_panels.append(fibre_panel(image, local, other, [(crop_gt, GT_COLOUR)]))
                else:
                    method_panels.append(fibre_panel(image, local, None, [(crop_gt, GT_COLOUR)]))
                titles.append(method + ("" if pred_id else " (not matched)"))
            panels = [fibre_panel(image, local, rings, gt_outlines), *method_panels]
            height = max(p.shape[0] for p in panels)
            gap = np.full((height, 6, 3), 255, np.uint8)
            padded = []
            for p in panels:
                if p.shape[0] < height:
                    p = np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)))
                padded.extend([p, gap])
            self.fibre_image.value = png_bytes(np.concatenate(padded[:-1], axis=1))
            gt_row = [f"ground truth (k = {k})", label, "", "", "", _fmt(int(rings.filled.sum())),
                      "", _fmt(rings.membrane_included), _fmt(rings.mass_missed), "", ""]
            caption = (f"<div style='font-size:85%;color:#555'>Panels: {' | '.join(titles)}. "
                       "Yellow: inner ring AiB, blue: outer ring AoB (square of side 2k+1); "
                       "solid pixels are membrane-positive (AiB) or mass-positive (AoB), so "
                       "membrane_included = solid / all yellow and mass_missed = solid / all "
                       "blue. The GT panel outlines the matched prediction (in its IoU colour), "
                       "a method's panel the GT fibre (white).</div>")
            header = ["", *FIBRE_COLUMNS]
            self.fibre_info.value = _html_table(header, [gt_row, *rows]) + caption
            self._fibre_cache[key] = (self.fibre_image.value, self.fibre_info.value,
                                      dict(self.fibre_rows))
            while len(self._fibre_cache) > 256:
                self._fibre_cache.popitem(last=False)
        except Exception as error:  # noqa: BLE001 - shown, never raised into the notebook
            log.exception("explorer: fibre %s of %s", label, section.key)
            self.fibre_image.value = b""
            self.fibre_info.value = f"<i>Cannot show fibre {label}: " \
                                    f"{html.escape(_one_line(error))}</i>"
        self.timings["fibre"] = time.perf_counter() - start

    def _fibre_plan(self, section: Section, label: int):
        """(window, {method: (per-fibre row, matched pred id or 0)}) of a GT fibre, or None.

        The window holds the GT fibre and every matched predicted fibre with their ring
        margins (k) and some context, so the rings computed on its crops equal the metrics'.
        """
        store = self.store
        k = section.half_width
        box = store.box(section, "gt", label)
        if box is None:
            return None
        boxes, matches = [box], {}
        for panel in self.panels.values():
            if not panel.method or panel.table is None:
                continue
            match = panel.table[panel.table["gt_id"] == label]
            if not len(match):
                continue
            row = match.iloc[0].to_dict()
            pred_id = int(row["pred_id"]) if row.get("matched") else 0
            if pred_id:
                pred_box = store.box(section, f"pred:{panel.method}", pred_id)
                if pred_box is None:
                    pred_id = 0
                else:
                    boxes.append(pred_box)
            matches[panel.method] = (row, pred_id)
        # the GT fibre with context (the same window whatever methods are shown, so cached
        # crops are reused), grown only when a matched prediction and its ring stick out
        height, width = store.shape(section)
        r0, r1, c0, c1 = box
        pad = int(max(2 * k, 0.35 * max(r1 - r0, c1 - c0)))
        r0, r1, c0, c1 = r0 - pad, r1 + pad, c0 - pad, c1 + pad
        for b in boxes[1:]:
            r0, r1 = min(r0, b[0] - k), max(r1, b[1] + k)
            c0, c1 = min(c0, b[2] - k), max(c1, b[3] + k)
        window = Region(max(r0, 0), min(r1, height), max(c0, 0), min(c1, width))
        return window, matches

    def _prefetch_fibres(self, section: Section, n: int = 8) -> None:
        """While a section's full-resolution arrays are in memory, keep the crops of the
        selected fibre and of the first ``n`` (and first ``n`` matched) fibres of the list,
        so their panels need no re-read after a section switch."""
        store = self.store
        layers = ["image", "gt"] + [f"pred:{p.method}" for p in self.panels.values()
                                    if p.method and p.table is not None]
        options = [v for _, v in self.fibre.options]
        table = next((p.table for p in self.panels.values() if p.table is not None), None)
        matched = set()
        if table is not None and len(table):
            matched = set(table.loc[table["matched"].astype(bool), "gt_id"].astype(int))
        # the selected fibre, the first of the list and the first matched ones (the default
        # selection when the section is shown again)
        labels = tuple(dict.fromkeys([self.fibre.value, *options[:n],
                                      *[v for v in options if v in matched][:n]]))
        labels = tuple(v for v in labels if v)
        key = (section.key, tuple(layers), labels)
        if key in self._prefetched:
            return
        try:
            if not all(store.is_loaded(section, layer) for layer in layers):
                return
            self._prefetched.add(key)
            for label in labels:
                plan = self._fibre_plan(section, label)
                if plan is None:
                    continue
                window, _ = plan
                for layer in layers:
                    store.crop(section, layer, window)
            store.thresholds(section)
        except Exception:  # noqa: BLE001 - an optimisation only
            log.debug("explorer: prefetch of %s failed", section.key, exc_info=True)

    def _iou_colour(self, iou: float):
        lo, hi = IOU_RANGE
        scaled = np.clip((iou - lo) / (hi - lo), 0, 1)
        return tuple(int(v) for v in self.lut[int(round(scaled * (len(self.lut) - 1)))])

    # -- actions --------------------------------------------------------------------------
    def select(self, section: str | None = None, method_a: str | None = None,
               method_b: str | None = None, fibre: int | None = None) -> None:
        """Show a section (``P02`` or ``IMC/P02``, any modality) and/or methods; one refresh.

        ``method_b=""`` or ``"(none)"`` hides panel B.
        """
        if self.store is None:
            return
        with self.hold():
            if section is not None:
                chosen = self.store.dataset.section(str(section))
                if self.modality.value != chosen.modality:
                    self.modality.value = chosen.modality
                    self._set_section_options(chosen.modality)
                if self.section.value != chosen.key:
                    self.section.value = chosen.key
                    self.zoom.value, self.centre_row.value, self.centre_col.value = 1.0, 0.5, 0.5
            for dropdown, method in ((self.method_a, method_a), (self.method_b, method_b)):
                if method is None:
                    continue
                method = method or NO_METHOD
                if method not in dropdown.options:
                    self._extra_methods.append(method)
                    options = self.store.methods(extra=self._extra_methods)
                    a, b = self.method_a.value, self.method_b.value
                    self.method_a.options = options
                    self.method_b.options = [NO_METHOD, *options]
                    self.method_a.value, self.method_b.value = a, b
                dropdown.value = method
        self.refresh(keep_fibre=section is None)
        if fibre is not None:
            self.fibre.value = int(fibre)

    def focus_fibre(self, label: int | None = None) -> None:
        """Zoom and pan onto a GT fibre (default: the selected one)."""
        section = self.current_section
        label = label if label is not None else self.fibre.value
        if section is None or not label:
            return
        box = self.store.box(section, "gt", int(label))
        if box is None:
            return
        height, width = self.store.shape(section)
        r0, r1, c0, c1 = box
        size = max((r1 - r0) / height, (c1 - c0) / width, 1e-6)
        zoom = float(np.clip(1.0 / (3 * size), 1.0, 2.0 ** self.zoom.max))
        with self.hold():
            self.zoom.value = zoom
            self.centre_row.value = round((r0 + r1) / 2 / height, 2)
            self.centre_col.value = round((c0 + c1) / 2 / width, 2)
            if self.fibre.value != label:
                self.fibre.value = label
        self.refresh()

    def run_missing(self, panel: str = "a") -> None:
        """Run a panel's method on the current section (the *Run* button)."""
        method = self.panels[panel].method
        section = self.current_section
        if not method or section is None:
            return
        runner = self.runner
        if runner is None:
            from .segmenters.run import run_method as runner
        self._set_message([f"Running {html.escape(method)} on {section.key} ..."])
        try:
            result = runner(method, self.store.dataset, sections=[section.id],
                            workdir=self.store.workdir, progress=False)
        except Exception as error:  # noqa: BLE001 - shown, never raised into the notebook
            log.exception("explorer: running %s", method)
            self._set_message([f"{html.escape(method)} could not run: "
                               f"{html.escape(_one_line(error))}"])
            return
        errors = getattr(result, "errors", {}) or {}
        options = self.store.methods(extra=self._extra_methods)
        with self.hold():
            a, b = self.method_a.value, self.method_b.value
            self.method_a.options = options
            self.method_b.options = [NO_METHOD, *options]
            self.method_a.value, self.method_b.value = a, b
        self.refresh(keep_fibre=False)
        if errors:
            self._set_message([*self.errors, *(f"{html.escape(method)} on {k}: "
                                               f"{html.escape(v)}" for k, v in errors.items())])

    # -- snapshot -------------------------------------------------------------------------
    def snapshot(self, path, html_path=None, dpi: int = 110) -> Path:
        """Save a static picture of the current view (PNG) and optionally an HTML page.

        The PNG shows the method panels with titles, the IoU colour bar and the selected
        fibre's rings; the HTML embeds the panels and the counts and fibre tables.
        """
        from matplotlib import colormaps, colors
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.cm import ScalarMappable
        from matplotlib.figure import Figure

        from .io import atomic_path, write_text

        path = Path(path)
        panels = [p for p in self.panels.values() if p.method and p.rgb is not None]
        section = self.section.value or ""
        fibre_rgb = None
        if self.fibre_image.value:
            fibre_rgb = _decode_png(self.fibre_image.value)
        n = max(len(panels), 1)
        rows = 2 if fibre_rgb is not None else 1
        width = 5.2 * n + 0.8
        fibre_height = 0.0
        if fibre_rgb is not None:
            aspect = fibre_rgb.shape[0] / max(fibre_rgb.shape[1], 1)
            fibre_height = float(np.clip(0.8 * width * aspect, 1.2, 3.6)) + 0.4
        fig = Figure(figsize=(width, 5.4 + fibre_height), dpi=dpi)
        FigureCanvasAgg(fig)
        grid = fig.add_gridspec(rows, n, height_ratios=[5.4, fibre_height] if rows == 2 else [1])
        for i, panel in enumerate(panels):
            ax = fig.add_subplot(grid[0, i])
            ax.imshow(panel.rgb, interpolation="nearest")
            c = panel.counts
            subtitle = (f"matched {c['matched']}  missed {c['missed']}  extra {c['extra']}  "
                        f"A% {_fmt(c['A%'], 4)}" if c else (panel.message and "no prediction"))
            ax.set_title(f"{panel.method} on {section}\nIoU > {self.threshold.value:.2f}: "
                         f"{subtitle}", fontsize=9)
            ax.set_axis_off()
        if not panels:
            ax = fig.add_subplot(grid[0, 0])
            ax.text(0.5, 0.5, "no method shown", ha="center", va="center")
            ax.set_axis_off()
        mappable = ScalarMappable(norm=colors.Normalize(*IOU_RANGE), cmap=colormaps[self.cmap])
        fig.colorbar(mappable, ax=fig.axes[:n], fraction=0.03, pad=0.02, label="IoU of match")
        if fibre_rgb is not None:
            ax = fig.add_subplot(grid[1, :])
            ax.imshow(fibre_rgb, interpolation="nearest")
            ax.set_title(f"fibre #{self.fibre.value}: AiB (yellow) / AoB (blue) rings, "
                         "GT and predicted outlines", fontsize=9)
            ax.set_axis_off()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
            os.chmod(tmp, 0o644)
        if html_path is not None:
            images = "".join(
                f"<figure style='display:inline-block;margin:4px'><img style='max-width:520px' "
                f"src='data:image/png;base64,{base64.b64encode(p.png).decode()}'/>"
                f"<figcaption>{html.escape(p.method)}</figcaption></figure>" for p in panels)
            fibre = (f"<img src='data:image/png;base64,"
                     f"{base64.b64encode(self.fibre_image.value).decode()}'/>"
                     if self.fibre_image.value else "")
            page = (f"<html><head><meta charset='utf-8'><title>NCL-SM explorer snapshot"
                    f"</title></head><body><h3>{html.escape(section)} at IoU &gt; "
                    f"{self.threshold.value:.2f}</h3>{self.message.value}{images}"
                    f"{self.counts.value}{fibre}{self.fibre_info.value}</body></html>")
            os.chmod(write_text(Path(html_path), page), 0o644)
        return path


def _shift_box(box, window: Region):
    """A full-resolution box in the coordinates of a crop of ``window``."""
    if box is None:
        return None
    return (box[0] - window.row0, box[1] - window.row0, box[2] - window.col0,
            box[3] - window.col0)


def _decode_png(data: bytes) -> np.ndarray:
    if cv2 is not None:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return array[..., ::-1]
    import io

    from PIL import Image  # pragma: no cover

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, DataError):
        return text
    return f"{type(error).__name__}: {text}"
