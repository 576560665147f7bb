"""Pure view functions of the explorer: arrays and per-fibre tables in, views, PNGs and HTML out.

Geometry of a view (:class:`Region`, zoom, sampling), contour overlays coloured by IoU,
threshold counts, a fibre's AiB/AoB rings and panel, PNG encoding and the small HTML-table
formatting of the app. Nothing here reads files or holds state.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import metrics

try:
    import cv2
except ImportError:  # pragma: no cover - OpenCV is a declared dependency
    cv2 = None

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

    @staticmethod
    def _positive_percent(ring: np.ndarray, positive: np.ndarray | None) -> float:
        """100 x positive pixels / ring pixels; NaN without an image or for an empty ring."""
        if positive is None:
            return math.nan
        total = int(ring.sum())
        return (int(positive.sum()) / total) * 100 if total else math.nan

    @property
    def membrane_included(self) -> float:
        """100 x membrane-positive AiB pixels / AiB pixels (NaN without an image)."""
        return self._positive_percent(self.inner, self.inner_positive)

    @property
    def mass_missed(self) -> float:
        """100 x mass-positive AoB pixels / AoB pixels (NaN without an image)."""
        return self._positive_percent(self.outer, self.outer_positive)


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


# ============================================================================ html tables
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
