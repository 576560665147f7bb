"""The one real NCL-SM image with ground truth at hand: panels A and B of the paper's figure.

``../shared/ncl-sm-sample/annotation_process_figure.png`` (the NCL-SM paper's overview
figure) shows one real section twice: panel A is the RGB image (R = membrane marker,
G = mitochondrial-mass marker, B = 0) and panel B its instance mask drawn in flat colours
from a small palette (about 490 myofibres about 16 px across). This module cuts both panels
out, turns panel B into an instance mask (one label per connected region of one palette
colour; anti-aliased edge pixels join their neighbour) and registers it onto panel A
(panel B is 4 px narrower: a small scale and shift found by maximising the membrane signal
of panel A on the mask's fibre borders).

The LEFT half of the panels (``x < LEFT_HALF_X``) is for calibration, tuning and
benchmarks; the right half is held out as an independent check of transfer, so
:func:`half_of` selects objects by the half their centroid lies in, and nothing in this
project tunes on or reports the right half.

Example
-------
>>> from nclsm_utils.core.realpanel import load_panel, FIGURE  # doctest: +SKIP
>>> panel = load_panel(FIGURE)                           # doctest: +SKIP
>>> panel.image.shape, int(panel.labels.max())           # doctest: +SKIP
((364, 479, 3), 503)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .io import DataError

log = logging.getLogger(__name__)

#: The figure, relative to the project root (``../shared`` beside the checkout).
FIGURE = Path(__file__).resolve().parents[2].parent / "shared" / "ncl-sm-sample" / \
    "annotation_process_figure.png"
#: Panel boxes in the figure: (row0, row1, col0, col1), found from the white page margins.
PANEL_A_BOX = (9, 373, 10, 489)
PANEL_B_BOX = (9, 373, 503, 978)
#: Panel x below which calibration, tuning and benchmarks may look (the right half is held out).
LEFT_HALF_X = 240
#: The panel letter ("A", "B") covers the bottom-left corner: objects there are not scored.
LETTER_BOX = (322, 364, 0, 58)
#: Pixels per fibre across in the figure (the README's "about 16 px").
NOMINAL_DIAMETER = 16.0


@dataclass
class RealPanel:
    """Panel A's image, panel B's registered instance mask, and the registration found."""

    image: np.ndarray        # (H, W, 3) uint8, B channel forced to 0
    labels: np.ndarray       # (H, W) int32 instance mask on the image's pixel grid
    scale: tuple[float, float]
    shift: tuple[int, int]
    path: Path

    @property
    def median_diameter(self) -> float:
        """Median equivalent diameter (pixels) of the fibres of the whole mask."""
        return median_diameter(self.labels)


def median_diameter(labels: np.ndarray) -> float:
    """Median equivalent diameter ``2 sqrt(area / pi)`` of the labels of an instance mask.

    >>> lab = np.zeros((20, 20), int); lab[2:6, 2:6] = 1; lab[10:14, 10:14] = 2
    >>> round(median_diameter(lab), 3)
    4.514
    """
    areas = np.bincount(np.asarray(labels).ravel())[1:]
    areas = areas[areas > 0]
    if areas.size == 0:
        return float("nan")
    return float(np.median(2 * np.sqrt(areas / np.pi)))


def read_figure(path=FIGURE) -> np.ndarray:
    """The figure as ``(H, W, 3)`` uint8; :class:`DataError` naming the file when unusable."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: the NCL-SM overview figure is missing; expected "
                        "../shared/ncl-sm-sample/annotation_process_figure.png beside the "
                        "project (or pass its path)")
    figure = np.asarray(iio.imread(path))
    if figure.ndim != 3 or figure.shape[0] < PANEL_A_BOX[1] or figure.shape[1] < PANEL_B_BOX[3]:
        raise DataError(f"{path}: expected the 1480 x 757 RGB(A) overview figure, got an array "
                        f"of shape {figure.shape}")
    return figure[..., :3].astype(np.uint8)


def _crop(figure: np.ndarray, box) -> np.ndarray:
    r0, r1, c0, c1 = box
    return figure[r0:r1, c0:c1]


def mask_from_colours(panel: np.ndarray, min_count: int = 30, tolerance: float = 12.0,
                      min_area: int = 20, background_level: int = 60,
                      dark_level: int = 0) -> np.ndarray:
    """Instance mask of a flat-colour label rendering (one label per connected colour region).

    Colours with at least ``min_count`` pixels form the palette (black = background); each
    pixel within ``tolerance`` (RGB distance) of a palette colour takes it; connected
    regions (4-connectivity) of one colour become labels, those below ``min_area`` pixels
    are dropped (anti-aliasing fragments), and the labels then grow by up to 1.5 px into
    remaining non-black pixels (the anti-aliased edges). Palette colours whose R + G + B is
    at most ``dark_level`` count as background too (panel F draws its labels over a dimmed
    image).

    Returns
    -------
    (H, W) int32, labels 1..N
    """
    from skimage.segmentation import expand_labels, relabel_sequential

    pixels = panel.reshape(-1, 3).astype(np.int32)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    palette = colours[counts >= min_count]
    nearest = np.zeros(len(pixels), np.int32)
    best = np.full(len(pixels), np.inf)
    for k, colour in enumerate(palette):   # one palette colour at a time: bounded memory
        d = ((pixels - colour) ** 2).sum(1)
        closer = d < best
        best[closer], nearest[closer] = d[closer], k
    is_black = palette.sum(1) <= dark_level
    assigned = (np.sqrt(best) < tolerance) & ~is_black[nearest]
    nearest = nearest.reshape(panel.shape[:2])
    assigned = assigned.reshape(panel.shape[:2])
    labels = np.zeros(panel.shape[:2], np.int32)
    n = 0
    for k in np.flatnonzero(~is_black):
        pieces, count = ndimage.label(assigned & (nearest == k))
        labels[pieces > 0] = pieces[pieces > 0] + n
        n += count
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    labels[small[labels]] = 0
    labels = relabel_sequential(labels)[0]
    foreground = panel.astype(np.int32).sum(-1) > background_level
    return (expand_labels(labels, 1.5) * foreground).astype(np.int32)


def register_mask(labels: np.ndarray, membrane: np.ndarray,
                  scales=np.linspace(0.985, 1.025, 17), max_shift: int = 6):
    """Scale and shift that put ``labels``' fibre borders on the bright ``membrane`` pixels.

    For every candidate scale (same along both axes) the border map is resampled onto the
    membrane image's grid and the best integer shift within ``max_shift`` is found by
    cross-correlation (FFT); the (scale, shift) with the highest mean membrane signal on the
    borders wins.

    Returns
    -------
    registered labels (int32, ``membrane.shape``), (scale_y, scale_x), (shift_y, shift_x)
    """
    from skimage.segmentation import find_boundaries

    border = find_boundaries(labels, mode="inner").astype(np.float32)
    scale, dy, dx = _best_transform(border, membrane, scales, max_shift)
    registered = warp(labels, scale, (dy, dx), membrane.shape, order=0)
    return registered.astype(np.int32), (scale, scale), (dy, dx)


def _best_transform(moving: np.ndarray, reference: np.ndarray, scales, max_shift: int):
    """(scale, dy, dx) maximising the cross-correlation of the scaled, shifted ``moving``
    with ``reference`` minus its mean (per unit of ``moving``'s sum)."""
    from scipy.signal import fftconvolve

    target = reference.astype(np.float32) - float(reference.mean())
    best = None
    for scale in scales:
        warped = ndimage.affine_transform(moving, [1 / scale, 1 / scale],
                                          output_shape=reference.shape, order=1)
        corr = fftconvolve(target, warped[::-1, ::-1], mode="same")
        cy, cx = reference.shape[0] // 2, reference.shape[1] // 2
        window = corr[cy - max_shift:cy + max_shift + 1, cx - max_shift:cx + max_shift + 1]
        dy, dx = np.unravel_index(int(np.argmax(window)), window.shape)
        score = float(window[dy, dx]) / max(float(np.abs(warped).sum()), 1.0)
        if best is None or score > best[0]:
            best = (score, float(scale), int(dy - max_shift), int(dx - max_shift))
    return best[1], best[2], best[3]


def warp(array: np.ndarray, scale: float, shift, shape, order: int = 0) -> np.ndarray:
    """``array`` scaled by ``scale`` and shifted by ``shift`` (dy, dx) onto a grid of ``shape``
    (output pixel o reads input pixel (o - shift) / scale; ``order`` 0 for masks)."""
    dy, dx = shift
    return ndimage.affine_transform(array, [1 / scale, 1 / scale],
                                    offset=[-dy / scale, -dx / scale], output_shape=tuple(shape),
                                    order=order)


def load_panel(path=FIGURE) -> RealPanel:
    """Panel A (image) and panel B (instance mask registered onto A) of the overview figure."""
    from skimage.segmentation import relabel_sequential

    figure = read_figure(path)
    image = _crop(figure, PANEL_A_BOX).copy()
    image[..., 2] = 0
    image[0, :] = image[-1, :] = 0      # the panel's grey frame line
    image[:, 0] = image[:, -1] = 0
    colours = _crop(figure, PANEL_B_BOX)[1:-1, 1:-1]
    labels = mask_from_colours(colours)
    registered, scale, shift = register_mask(labels, image[..., 0].astype(np.float32))
    registered = relabel_sequential(registered)[0].astype(np.int32)
    log.info("real panel: %d fibres, scale %.3f, shift %s", registered.max(), scale[0], shift)
    return RealPanel(image=image, labels=registered, scale=scale, shift=shift, path=Path(path))


# ---------------------------------------------------------------------------- panels C-F
#: Panel boxes of the curation panels (row0, row1, col0, col1): C freezing artefacts, D
#: non-transverse fibres, E folded regions (overlays on the image), F analysable fibres.
PANEL_C_BOX = (9, 373, 992, 1467)
PANEL_D_BOX = (384, 746, 10, 489)
PANEL_E_BOX = (384, 746, 503, 978)
PANEL_F_BOX = (384, 746, 992, 1467)
#: Flat overlay colours (the most frequent bright colour of each panel).
FAM_COLOUR = (92, 214, 249)       # panel C, cyan
NTM_COLOUR = (203, 231, 225)      # panel D, light grey
FR_COLOUR = (233, 180, 109)       # panel E, orange
#: RGB distance within which a pixel takes an overlay colour (anti-aliased edges excluded).
OVERLAY_TOLERANCE = 40.0
#: A fibre of panel B belongs to a class when more than this fraction of it is covered.
CLASS_COVER = 0.5


@dataclass
class CurationLabels:
    """Panels C-F of the figure on panel B's fibres (labels of :attr:`RealPanel.labels`).

    ``fibres``: one row per panel-B label with ``fam`` (C), ``ntm`` (D), ``fr`` (E) and
    ``analysable`` (F) flags, the covered fractions (``*_cover``), the centroid and ``half``
    (``"left"``/``"right"``/``"letter"``: by :func:`half_of`'s rule); ``fr``: the folded-
    region mask; ``analysable``: panel F's instance mask, registered; ``shifts``: the
    registration of each panel onto panel A.
    """

    fibres: "object"          # pandas DataFrame
    fr: np.ndarray            # (H, W) bool
    analysable: np.ndarray    # (H, W) int32
    shifts: dict


def colour_mask(panel: np.ndarray, colour, tolerance: float = OVERLAY_TOLERANCE) -> np.ndarray:
    """Pixels of ``panel`` within ``tolerance`` (RGB distance) of ``colour``.

    >>> p = np.zeros((2, 2, 3), np.uint8); p[0, 0] = (92, 214, 249); p[1, 1] = (90, 210, 240)
    >>> colour_mask(p, (92, 214, 249)).tolist()
    [[True, False], [False, True]]
    """
    diff = panel[..., :3].astype(np.float32) - np.asarray(colour, np.float32)
    return np.sqrt((diff ** 2).sum(-1)) < tolerance


def register_overlay(panel: np.ndarray, overlay: np.ndarray, image: np.ndarray,
                     scales=np.linspace(0.985, 1.025, 17), max_shift: int = 6):
    """Scale and shift that put an overlay panel (the image with flat class colours) on
    panel A: the overlay panel's membrane channel, with the overlay pixels set to its
    median, is correlated with panel A's. Returns ``(scale, (dy, dx))``."""
    red = panel[..., 0].astype(np.float32)
    red = np.where(ndimage.binary_dilation(overlay, iterations=2), float(np.median(red)), red)
    red[[0, -1], :] = red[:, [0, -1]] = float(np.median(red))   # the panel's frame line
    scale, dy, dx = _best_transform(red - float(red.mean()), image[..., 0], scales, max_shift)
    return scale, (dy, dx)


def _cover(labels: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Fraction of each label 1..max inside ``region``."""
    n = int(labels.max()) + 1
    total = np.bincount(labels.ravel(), minlength=n)
    inside = np.bincount(labels[region].ravel(), minlength=n)
    return (inside / np.maximum(total, 1))[1:]


def load_curation_labels(panel: RealPanel | None = None, path=FIGURE) -> CurationLabels:
    """Panels C (FAM), D (NTM), E (folded region) and F (analysable) on panel B's fibres.

    C, D and E are panel A's image with the class drawn in a flat colour: each is
    registered onto panel A (:func:`register_overlay`) and a panel-B fibre takes the class
    when more than :data:`CLASS_COVER` of it is covered. F is an instance mask in flat
    colours like B: read with :func:`mask_from_colours` and registered with
    :func:`register_mask`; a fibre is analysable when F covers more than half of it.
    """
    import pandas as pd

    panel = panel or load_panel(path)
    figure = read_figure(panel.path if path is FIGURE else path)
    labels = panel.labels
    shape = labels.shape
    flags, shifts = {}, {}
    fr = np.zeros(shape, bool)
    for name, box, colour in (("fam", PANEL_C_BOX, FAM_COLOUR), ("ntm", PANEL_D_BOX, NTM_COLOUR),
                              ("fr", PANEL_E_BOX, FR_COLOUR)):
        crop = _crop(figure, box)
        overlay = colour_mask(crop, colour)
        scale, shift = register_overlay(crop, overlay, panel.image)
        shifts[name] = (scale, shift)
        region = warp(overlay.astype(np.uint8), scale, shift, shape, order=0) > 0
        if name == "fr":
            fr = region
        flags[name] = _cover(labels, region)
    colours = _crop(figure, PANEL_F_BOX)[1:-1, 1:-1]
    f_labels = mask_from_colours(colours, dark_level=60)
    analysable, scale, shift = register_mask(f_labels, panel.image[..., 0].astype(np.float32))
    shifts["analysable"] = (scale[0], shift)
    flags["analysable"] = _cover(labels, analysable > 0)
    centres = centroids(labels)
    r0, r1, c0, c1 = LETTER_BOX
    in_letter = ((centres[:, 0] >= r0) & (centres[:, 0] < r1)
                 & (centres[:, 1] >= c0) & (centres[:, 1] < c1))
    half = np.where(in_letter, "letter", np.where(centres[:, 1] < LEFT_HALF_X, "left", "right"))
    fibres = pd.DataFrame({"label": np.arange(1, int(labels.max()) + 1), "row": centres[:, 0],
                           "col": centres[:, 1], "half": half})
    for name, cover in flags.items():
        fibres[f"{name}_cover"] = cover
        fibres[name] = cover > CLASS_COVER
    log.info("curation panels: %s", {k: v for k, v in shifts.items()})
    return CurationLabels(fibres=fibres, fr=fr, analysable=analysable.astype(np.int32),
                          shifts=shifts)


def centroids(labels: np.ndarray) -> np.ndarray:
    """``(N, 2)`` (row, col) centroids of labels 1..max (NaN for absent labels)."""
    n = int(labels.max())
    if n == 0:
        return np.zeros((0, 2))
    index = np.arange(1, n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):    # absent labels: NaN, said above
        centres = ndimage.center_of_mass(np.ones_like(labels), labels, index)
    return np.asarray(centres).reshape(n, 2)


def half_of(labels: np.ndarray, half: str = "left", x_split: float = LEFT_HALF_X,
            exclude_box=LETTER_BOX) -> np.ndarray:
    """Keep the objects whose centroid lies in one half of the panel (relabelled 1..N).

    ``half="left"``: centroid column ``< x_split``; ``"right"``: ``>= x_split``. Objects whose
    centroid is in ``exclude_box`` (row0, row1, col0, col1; the panel letter) are dropped.

    >>> lab = np.zeros((10, 10), int); lab[1:3, 1:3] = 1; lab[5:8, 6:9] = 2
    >>> int(half_of(lab, "left", x_split=5, exclude_box=None).max())
    1
    """
    if half not in ("left", "right"):
        raise ValueError(f"half must be 'left' or 'right', got {half!r}")
    from skimage.segmentation import relabel_sequential

    labels = np.asarray(labels)
    centres = centroids(labels)
    if centres.size == 0:
        return np.zeros_like(labels)
    cols = centres[:, 1]
    keep = cols < x_split if half == "left" else cols >= x_split
    if exclude_box is not None:
        r0, r1, c0, c1 = exclude_box
        inside = ((centres[:, 0] >= r0) & (centres[:, 0] < r1)
                  & (centres[:, 1] >= c0) & (centres[:, 1] < c1))
        keep &= ~inside
    keep &= ~np.isnan(cols)
    lookup = np.zeros(len(keep) + 1, labels.dtype)
    lookup[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    return relabel_sequential(lookup[labels])[0]
