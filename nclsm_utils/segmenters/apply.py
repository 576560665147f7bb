"""Segment any RGB image with a method trained on a dataset's train split (``nclsm predict``).

Three steps, each usable alone::

    image = read_rgb_image("my_section.tif")          # (H, W, 3) uint8, R membrane, G mass
    diameter = estimate_fibre_diameter(image)         # pixels, from the membrane channel
    labels = predict_image("unet", image, modality="IF", fibre_diameter=diameter,
                           data="data/synthetic", workdir="data")

The method is built and fitted exactly as ``nclsm segment`` does (``get_segmenter`` then
``fit(dataset.sections(split="train"))``): a cached model under ``<workdir>/models/`` is
loaded, a missing one is trained. The image is resized so that fibres of ``fibre_diameter``
pixels become the method's working size (``params.target_diameter``, ~36 px), predicted in
tiles and the labels are resized back to the input's size.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.io import DataError, MicroscopeImage, read_microscope

log = logging.getLogger(__name__)

#: Smallest accepted image side (pixels).
MIN_SIDE = 16
#: Percentiles of the per-channel stretch of images that are not uint8.
STRETCH_PERCENTILES = (0.1, 99.9)
#: Largest working-scale image (pixels) :func:`predict_image` accepts: a wrong
#: ``fibre_diameter`` (e.g. in micrometres instead of pixels) must not enlarge an image 50x.
MAX_WORKING_PIXELS = 400_000_000

#: Fraction of the mean membrane width added to the regions' median diameter by
#: :func:`estimate_fibre_diameter` (a fibre's annotated outline reaches into its membrane).
#: Calibrated on synthetic sections (seeds 0-3, tiny and default presets) in several looks
#: (bright membranes and endomysium, thin membrane lines with dark gaps between fibres,
#: ``find_boundaries`` of the label masks, the renderer's own looks): 0.5 centred all of
#: them within a few percent.
MEMBRANE_SHARE = 0.5

GREY_MESSAGE = ("a grey image has no membrane and mass channels; give an RGB image with "
                "R = membrane marker and G = mitochondrial-mass marker")


# ---------------------------------------------------------------------------- input
CHANNEL_FLAGS = "--membrane-channel and --mass-channel"


def stretch_to_uint8(channel: np.ndarray, low: float = STRETCH_PERCENTILES[0],
                     high: float = STRETCH_PERCENTILES[1]) -> np.ndarray:
    """Linear stretch of one channel's ``low``..``high`` percentiles to 0..255 (uint8).

    A constant channel becomes 0.

    >>> stretch_to_uint8(np.array([[0, 1000], [2000, 4000]], np.uint16), 0, 100)
    array([[  0,  64],
           [128, 255]], dtype=uint8)
    """
    data = channel.astype(np.float64)
    lo, hi = np.percentile(data, [low, high])
    if not hi > lo:
        return np.zeros(channel.shape, np.uint8)
    return np.round(np.clip((data - lo) * (255.0 / (hi - lo)), 0, 255)).astype(np.uint8)


def as_rgb_uint8(array: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Convert a pixel array to ``(H, W, 3)`` uint8 RGB (R membrane, G mass); see
    :func:`read_rgb_image` for the rules. ``name`` prefixes the error messages.

    >>> as_rgb_uint8(np.zeros((16, 16, 2), np.uint8)).shape
    (16, 16, 3)
    """
    array = np.asarray(array)
    grey = array.ndim == 2 or (array.ndim == 3 and (
        array.shape[-1] == 1 or (array.shape[0] == 1 and array.shape[-1] not in (2, 3, 4))))
    if grey:                                         # (H, W), (H, W, 1) or (1, H, W)
        raise DataError(f"{name}: {GREY_MESSAGE}")
    if array.ndim != 3:
        raise DataError(f"{name}: expected an RGB image (H, W, 3), got an array of shape "
                        f"{array.shape}; save one 2-D RGB image (R = membrane marker, G = "
                        "mitochondrial-mass marker)")
    if array.shape[-1] not in (2, 3, 4) and array.shape[0] in (2, 3, 4):
        array = np.moveaxis(array, 0, -1)           # channels first (C, H, W)
    channels = array.shape[-1]
    if channels not in (2, 3, 4):
        raise DataError(f"{name}: expected an RGB image (H, W, 3) (or RGBA, or 2 channels), got "
                        f"shape {array.shape}")
    if min(array.shape[:2]) < MIN_SIDE:
        raise DataError(f"{name}: the image is too small ({array.shape[0]} x {array.shape[1]} "
                        f"pixels, shape {array.shape}); give an image at least {MIN_SIDE} "
                        "pixels high and wide holding several fibres")
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer)
                                   or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{name}: unsupported pixel type {array.dtype}; expected uint8 or "
                        "uint16 RGB")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DataError(f"{name}: the image contains NaN or infinite values")
    if channels == 4:
        array = array[..., :3]                       # RGBA: drop alpha
    if array.dtype != np.uint8:
        array = np.stack([stretch_to_uint8(array[..., c]) for c in range(array.shape[-1])],
                         axis=-1)
    if channels == 2:
        array = np.concatenate([array, np.zeros(array.shape[:2] + (1,), np.uint8)], axis=-1)
    return np.ascontiguousarray(array)


def select_channels(image: MicroscopeImage, membrane_channel=None, mass_channel=None
                    ) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 RGB a segmenter takes (R membrane, G mass, B 0) from a
    microscope image's channels.

    Parameters
    ----------
    image : MicroscopeImage
        From :func:`nclsm_utils.core.io.read_microscope`.
    membrane_channel, mass_channel : int or str, optional
        Index or channel name (from the file's metadata) of the membrane marker (e.g.
        laminin, dystrophin) and of the mitochondrial-mass marker. Without a mass channel
        G is 0. Without both, an image of up to three channels is read as R = membrane,
        G = mass (the rules of :func:`as_rgb_uint8`); more channels are refused.

    Raises
    ------
    DataError
        More than three channels and no channel flags (the one line names the flags and
        the channels); an unknown channel; the rules of :func:`as_rgb_uint8`.

    Examples
    --------
    >>> from pathlib import Path
    >>> channels = np.zeros((20, 20, 4), np.uint8)
    >>> channels[..., 3] = 200
    >>> image = MicroscopeImage(Path("s.tif"), channels, ("laminin", "DAPI", "MHC", "COX"), 0.5)
    >>> rgb = select_channels(image, membrane_channel="COX", mass_channel=1)
    >>> rgb.shape, int(rgb[0, 0, 0]), int(rgb[0, 0, 1])
    ((20, 20, 3), 200, 0)
    """
    channels = image.channels
    name = str(image.path)
    if membrane_channel is None and mass_channel is None:
        if channels.shape[-1] > 3:
            listed = ", ".join(f"{i} = {n}" for i, n in enumerate(image.channel_names))
            raise DataError(f"{name}: {channels.shape[-1]} channels ({listed}; shape "
                            f"{channels.shape}); choose the membrane and the mitochondrial-mass "
                            f"channel with {CHANNEL_FLAGS} (an index or a channel name)")
        return as_rgb_uint8(channels, name)
    if membrane_channel is None:
        raise DataError(f"{name}: --mass-channel was given without --membrane-channel; give "
                        "the membrane marker's channel too (an index or a channel name)")
    membrane = channels[..., image.channel_index(membrane_channel)]
    mass = channels[..., image.channel_index(mass_channel)] if mass_channel is not None \
        else np.zeros_like(membrane)
    return as_rgb_uint8(np.stack([membrane, mass], axis=-1), name)


def read_rgb_image(path, membrane_channel=None, mass_channel=None) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB: R = membrane marker, G =
    mitochondrial-mass marker, B ignored.

    Files are read by :func:`nclsm_utils.core.io.read_microscope` (TIFF and OME-TIFF with
    their axes, PNG/JPEG of any size, vendor formats through bioio) and the channels chosen
    by :func:`select_channels`.

    Conversions
        - ``(H, W, 3)`` uint8: as is.
        - RGBA (PNG, or a TIFF whose extra sample is alpha): the alpha channel is dropped.
        - ``(H, W, 2)``: the two channels become R and G; B = 0.
        - channels first, ``(C, H, W)``, in a file without axis metadata when only the first
          axis is short: transposed to channels last.
        - more than three channels: ``membrane_channel`` (and ``mass_channel``) required.
        - uint16 (and any other integer or float type): each channel is stretched linearly
          from its 0.1 to its 99.9 percentile to 0..255 (:func:`stretch_to_uint8`), so a
          few saturated pixels do not compress the rest; a constant channel becomes 0.

    Parameters
    ----------
    path : path-like
    membrane_channel, mass_channel : int or str, optional
        See :func:`select_channels`.

    Returns
    -------
    (H, W, 3) uint8 ndarray

    Raises
    ------
    DataError
        Naming the file and the fix: missing or unreadable file; a grey ``(H, W)`` image
        (no membrane and mass channels); any other shape (e.g. 4-D stacks); more than three
        channels without channel flags; sides under 16 pixels; NaN values.

    Examples
    --------
    >>> import tempfile, tifffile
    >>> path = Path(tempfile.mkdtemp()) / "rgba.tif"
    >>> tifffile.imwrite(path, np.full((20, 20, 4), 7, np.uint8))
    >>> image = read_rgb_image(path)
    >>> image.shape, image.dtype, int(image[0, 0, 0])
    ((20, 20, 3), dtype('uint8'), 7)
    """
    return select_channels(read_microscope(path), membrane_channel, mass_channel)


# ---------------------------------------------------------------------------- fibre size
def _membrane_mask(membrane: np.ndarray) -> np.ndarray:
    """Membrane pixels: Otsu threshold of the lightly smoothed, percentile-scaled channel."""
    from skimage.filters import threshold_otsu

    data = membrane.astype(np.float32)
    lo, hi = np.percentile(data, [0.5, 99.5])
    if not hi > lo:
        return np.zeros(data.shape, bool)
    data = np.clip((data - lo) / (hi - lo), 0, 1)
    smooth = ndimage.gaussian_filter(data, 1.0)
    mask = smooth > threshold_otsu(smooth)
    # isolated specks (noise, texture) are no membrane; the membrane network is connected
    specks, _ = ndimage.label(mask)
    small = np.bincount(specks.ravel()) < 16
    small[0] = False
    mask[small[specks]] = False
    return mask


def _component_diameters(regions: np.ndarray) -> np.ndarray:
    """Equivalent diameters of the compact connected components of ``regions``.

    A component is kept when it has an inscribed radius of at least 2 px and its area is at
    most 4x the area of its largest inscribed disc (fibres are compact; the thin dark gaps
    between fibres and the empty slide around the tissue are not).
    """
    labels, n = ndimage.label(regions)
    if n == 0:
        return np.zeros(0)
    index = np.arange(1, n + 1)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
    radius = np.asarray(ndimage.maximum(ndimage.distance_transform_edt(regions), labels, index),
                        np.float64)
    compact = areas <= 4.0 * np.pi * np.maximum(radius, 1e-6) ** 2
    keep = (radius >= 2.0) & compact
    return 2.0 * np.sqrt(areas[keep] / np.pi)


def _membrane_thickness(mask: np.ndarray) -> float:
    """Mean width of the membrane mask: its area over the length of its skeleton."""
    from skimage.morphology import skeletonize

    length = int(skeletonize(mask).sum())
    return float(mask.sum()) / length if length else 0.0


def estimate_fibre_diameter(image: np.ndarray, max_side: int = 2048) -> float:
    """Estimate the median fibre diameter (pixels) of a section from its membrane channel.

    The membrane channel (R) is scaled to its 0.5-99.5 percentiles, smoothed (Gaussian,
    sigma 1 px) and thresholded (Otsu); the connected regions between membranes that are
    compact (area <= 4x their largest inscribed disc, inscribed radius >= 2 px) are the
    fibre candidates. Their median equivalent diameter is taken twice, the second time
    only over candidates within 0.3-3x the first median (drops the empty slide, folds and
    speckle), and half the mean membrane width (mask area / skeleton length) is added back,
    as a fibre's annotated outline reaches into its membrane (:data:`MEMBRANE_SHARE`).
    Images with a side over ``max_side`` are first shrunk by an integer factor (area
    averaging) and the estimate is scaled back.

    Measured (``tests/test_predict.py``): 0.84-1.12 of the true median on default synthetic
    sections (calibrated and randomised looks), 0.93-1.09 on label masks drawn as
    boundaries, 1.02 on the real S11 outlines. Small images with few fibres or mostly folded
    tissue can be far off (0.45-1.41 on randomised 192-256 px sections of 10-17 fibres).

    Works for both looks of membrane images: bright membranes with bright endomysium
    between fibres, and thin membrane lines with dark gaps between fibres.

    Parameters
    ----------
    image : (H, W, C) or (H, W) array
        RGB image (channel 0 = membrane marker) or the membrane channel alone.
    max_side : int
        Larger images are analysed shrunk to at most this side (speed and memory).

    Returns
    -------
    float
        The median equivalent diameter ``2 * sqrt(area / pi)`` of the fibres, in pixels of
        ``image``.

    Raises
    ------
    DataError
        When fewer than 3 fibre-like regions are found (no membrane network, e.g. a blank
        image or a wrong channel order); give the diameter instead (``--fibre-diameter``).

    Examples
    --------
    >>> from skimage.segmentation import find_boundaries
    >>> labels = np.kron(np.arange(1, 37).reshape(6, 6), np.ones((40, 40), int))
    >>> rgb = np.zeros(labels.shape + (3,), np.uint8)
    >>> rgb[..., 0][find_boundaries(labels)] = 255
    >>> print(round(estimate_fibre_diameter(rgb)), round(2 * np.sqrt(40 * 40 / np.pi)))  # vs true
    44 45
    """
    membrane = np.asarray(image)
    membrane = membrane[..., 0] if membrane.ndim == 3 else membrane
    if membrane.ndim != 2:
        raise ValueError(f"expected an (H, W, C) image or an (H, W) channel, got {image.shape}")
    factor = max(1, math.ceil(max(membrane.shape) / max_side))
    if factor > 1:
        import cv2

        height, width = (s // factor for s in membrane.shape)
        membrane = cv2.resize(membrane[:height * factor, :width * factor].astype(np.float32),
                              (width, height), interpolation=cv2.INTER_AREA)
    mask = _membrane_mask(membrane)
    diameters = _component_diameters(~mask)
    if diameters.size:
        first = np.median(diameters)
        diameters = diameters[(diameters >= 0.3 * first) & (diameters <= 3.0 * first)]
    if diameters.size < 3:
        raise DataError("cannot estimate the fibre diameter: fewer than 3 fibre-like regions "
                        "enclosed by membrane in the R channel; check that R holds the "
                        "membrane marker, or give the diameter (--fibre-diameter PX)")
    estimate = float(np.median(diameters)) + MEMBRANE_SHARE * _membrane_thickness(mask)
    return estimate * factor


# ---------------------------------------------------------------------------- prediction
def _dataset(data):
    from ..core.dataset import Dataset, find_ncl_sm

    if data is None:
        data = find_ncl_sm("data") or Path("data") / "synthetic"
    return data if isinstance(data, Dataset) else Dataset(data)


def fit_for_prediction(segmenter, data=None):
    """Fit ``segmenter`` on ``data``'s train split (a cached model is loaded), once for any
    number of :func:`predict_image` calls. ``data`` as in :func:`predict_image`."""
    dataset = _dataset(data)
    validation = ({"validation": dataset.sections(split="validation")}
                  if getattr(segmenter, "uses_validation", False) else {})
    return segmenter.fit(dataset.sections(split="train"), **validation)


def fit_if_cached(segmenter, data=None, train: bool = False) -> bool:
    """Fit ``segmenter`` as :func:`fit_for_prediction` does when its model is cached (or
    ``train`` allows training it); return whether it was fitted. The benchmarks score the
    models ``make report`` trained and say which methods have none."""
    dataset = _dataset(data)
    if not train and not segmenter.has_cached_model(dataset.sections(split="train"),
                                                    dataset.sections(split="validation")):
        return False
    fit_for_prediction(segmenter, dataset)
    return True


def predict_image(method, image: np.ndarray, modality: str = "IMC",
                  fibre_diameter: float | None = None, data=None, workdir="data",
                  quick: bool = False) -> np.ndarray:
    """Segment an RGB image with ``method`` as trained on ``data``'s train split.

    Parameters
    ----------
    method : str or Segmenter
        ``mitocyto``, ``cellpose``, ``stardist``, ``unet``, ``unet2`` (``external:<folder>``
        holds masks, it cannot segment) or a constructed segmenter.
    image : (H, W, 3) uint8
        R = membrane marker, G = mitochondrial-mass marker (see :func:`read_rgb_image`).
    modality : {"IMC", "IF"}
        Selects the method's per-modality settings (mitocyto's thresholds).
    fibre_diameter : float, optional
        Median fibre diameter in pixels of ``image``; the image is scaled by
        ``params.target_diameter / fibre_diameter``. Default: :func:`estimate_fibre_diameter`.
    data : path-like or Dataset, optional
        NCL-SM-layout dataset whose train split fits the method (a cached model is loaded);
        a segmenter already fitted (:func:`fit_for_prediction`) is used as it is.
        Default: the NCL-SM found in ``data/`` (itself or ``data/NCL-SM``), else the synthetic
        ``data/synthetic`` (``nclsm predict`` also generates the latter when missing).
    workdir : path-like
        Where models are cached (``<workdir>/models/``), as for ``nclsm segment``.
    quick : bool
        Short training (smoke runs); a separate cached model.

    Returns
    -------
    (H, W) uint32 label image, 0 = background, fibres 1..N.

    Raises
    ------
    ValueError
        Unknown method (before any data is read), ``external:`` methods, a bad modality,
        a non-positive diameter or one that would enlarge the image beyond
        :data:`MAX_WORKING_PIXELS`.
    DataError
        Missing or empty dataset; no diameter estimate possible.
    SegmenterError
        The method cannot run (e.g. pretrained weights required but unavailable).

    Examples
    --------
    >>> from nclsm_utils.synth import SynthConfig, generate_section, write_dataset
    >>> root = write_dataset(tempfile.mkdtemp(), SynthConfig.preset("tiny"))  # doctest: +SKIP
    >>> image = generate_section("X", "IMC", SynthConfig.preset("tiny"))["image"]  # doctest: +SKIP
    >>> labels = predict_image("mitocyto", image, fibre_diameter=34, data=root,
    ...                        workdir=root)                                  # doctest: +SKIP
    """
    from .base import Segmenter, get_segmenter

    if modality not in ("IMC", "IF"):
        raise ValueError(f"modality must be IMC or IF, got {modality!r}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} "
                         f"{image.dtype}; convert it with as_rgb_uint8 or read_rgb_image")
    segmenter = method if isinstance(method, Segmenter) else \
        get_segmenter(str(method), workdir=workdir, quick=quick)
    if segmenter.name == "external":
        raise ValueError(f"{getattr(segmenter, 'label', method)}: external masks were made "
                         "by another tool and cannot segment a new image; choose a method "
                         "such as mitocyto or unet")
    if fibre_diameter is None:
        fibre_diameter = estimate_fibre_diameter(image)
        log.info("estimated fibre diameter: %.1f px", fibre_diameter)
    fibre_diameter = float(fibre_diameter)
    if not (math.isfinite(fibre_diameter) and fibre_diameter > 0):
        raise ValueError(f"the fibre diameter must be a positive number of pixels, got "
                         f"{fibre_diameter}")
    scale = float(segmenter.params.target_diameter) / fibre_diameter
    working = image.shape[0] * image.shape[1] * scale ** 2
    if working > MAX_WORKING_PIXELS:
        raise ValueError(f"a fibre diameter of {fibre_diameter:g} px would enlarge the "
                         f"{image.shape[0]} x {image.shape[1]} image {scale:.1f}x (to "
                         f"{working / 1e6:.0f} megapixels); give the diameter in pixels of "
                         "this image")
    if not segmenter.fitted:
        fit_for_prediction(segmenter, data)
    labels = segmenter.predict(image, modality=modality, fibre_diameter=fibre_diameter)
    return np.asarray(labels).astype(np.uint32, copy=False)
