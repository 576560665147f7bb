"""Acquisition of a rendered section: optical blur, photon and read noise (raw counts),
contrast stretch, gamma, coarsening and JPEG compression to RGB, and :func:`render_image`
(label image -> raw and RGB through the whole chain)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .appearance import Appearance, render_signals
from .config import SynthConfig
from .geometry import carve_gaps, tessellate  # noqa: F401  (render_image's doctest)


def acquire(signal: np.ndarray, blur_px: float, photons: float, read_noise: float,
            rng: np.random.Generator, offset: float = 10.0) -> np.ndarray:
    """Optical blur, Poisson photon counts and Gaussian read noise -> raw uint16 counts."""
    blurred = ndimage.gaussian_filter(signal, blur_px)
    counts = rng.poisson(np.clip(blurred, 0, None) * photons).astype(np.float32)
    del blurred
    counts += rng.normal(offset, read_noise, signal.shape).astype(np.float32)
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16)


def _percentiles(channel: np.ndarray, qs) -> np.ndarray:
    """Percentiles of a channel (a regular subsample of at most ~16 M pixels for big ones)."""
    step = int(np.ceil(np.sqrt(channel.size / 16e6))) if channel.size > 16e6 else 1
    return np.percentile(channel[::step, ::step], qs)


def stretch_to_uint8(channel: np.ndarray, low: float = 5.0, high: float = 95.0,
                     gamma: float = 1.0) -> np.ndarray:
    """Contrast stretch of percentiles ``low``..``high`` to 0..255 (uint8), then ``gamma``."""
    lo, hi = _percentiles(channel, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    scaled = np.clip((channel.astype(np.float32) - lo) * (1.0 / (hi - lo)), 0, 1)
    if gamma != 1.0:
        scaled **= np.float32(gamma)
    return np.round(scaled * 255.0).astype(np.uint8)


def compose_rgb(raw: np.ndarray, look: Appearance | None = None) -> np.ndarray:
    """``(H, W, 2)`` raw (membrane, mass) -> ``(H, W, 3)`` uint8 RGB (R membrane, G mass, B 0).

    Each channel is contrast-stretched from its 5th to its ``look.stretch_high`` percentile
    (NCL-SM's images are stretched 5-95 %), with the look's display gamma, optional
    coarsening (shrink and enlarge back) and lossy JPEG compression.
    """
    import cv2

    look = look or Appearance.typical()
    rgb = np.zeros(raw.shape[:2] + (3,), np.uint8)
    for c in range(2):
        rgb[..., c] = stretch_to_uint8(raw[..., c], 5.0, look.stretch_high, look.gamma[c])
    if look.coarsen > 1.0:
        height, width = raw.shape[:2]
        small = (max(1, int(round(width / look.coarsen))), max(1, int(round(height / look.coarsen))))
        shrunk = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA)
        rgb = cv2.resize(shrunk, (width, height), interpolation=cv2.INTER_LINEAR)
        rgb[..., 2] = 0
    if look.jpeg_quality > 0:
        ok, encoded = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY,
                                                           int(look.jpeg_quality)])
        if ok:
            rgb = np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1])
            rgb[..., 2] = 0
    return rgb


def render_raw(labels: np.ndarray, fibre_diameter: float, look: Appearance,
               rng: np.random.Generator, fam_labels=(), fr=None, tissue=None) -> np.ndarray:
    """Signals of :func:`render_signals` through :func:`acquire` -> raw ``(H, W, 2)`` uint16."""
    membrane, mass = render_signals(labels, fibre_diameter, look, rng, fam_labels, fr, tissue)
    blur_px = max(0.5, look.blur * fibre_diameter)
    raw = np.empty(labels.shape + (2,), np.uint16)
    raw[..., 0] = acquire(membrane, blur_px, look.photons, look.read_noise, rng)
    del membrane
    raw[..., 1] = acquire(mass, blur_px, look.photons, look.read_noise, rng)
    return raw


def render_image(labels: np.ndarray, modality: str = "IF", seed: int = 0, fam_labels=(),
                 fr: np.ndarray | None = None, tissue: np.ndarray | None = None,
                 config: SynthConfig | None = None, fibre_diameter: float | None = None,
                 look: Appearance | str = "typical") -> tuple[np.ndarray, np.ndarray]:
    """Render raw and RGB images for a given instance mask (synthetic or real).

    Parameters
    ----------
    labels : (H, W) int
        Instance mask, e.g. the real S11 ground truth (12272 x 15129 px is rendered in
        windows, in about 2 GB).
    modality : {"IMC", "IF"}
        Kept for the signature; the look is the same calibrated one for both.
    fibre_diameter : float, optional
        Mean fibre diameter in pixels; default: the median equivalent diameter of the labels.
    look : Appearance, "typical" or "random"
        ``typical`` (default) is the look calibrated on the real panel; ``random`` draws one
        from the domain-randomisation ranges with ``seed``.

    Returns
    -------
    raw : (H, W, 2) uint16, rgb : (H, W, 3) uint8

    Example
    -------
    >>> lab = tessellate((96, 96), 24.0, 0.2, np.random.default_rng(0))
    >>> raw, rgb = render_image(carve_gaps(lab, 1), "IMC", seed=0)
    >>> rgb.shape, raw.dtype
    ((96, 96, 3), dtype('uint16'))
    """
    config = config or SynthConfig()
    config.params(modality)   # validates the modality
    labels = np.asarray(labels)
    if fibre_diameter is None:
        areas = np.bincount(labels.ravel())[1:]
        areas = areas[areas > 0]
        fibre_diameter = float(2 * np.sqrt(np.median(areas) / np.pi)) if areas.size else 40.0
    rng = np.random.default_rng(seed)
    if isinstance(look, str):
        if look not in ("typical", "random"):
            raise ValueError(f"look must be an Appearance, 'typical' or 'random', got {look!r}")
        look = Appearance.draw(rng) if look == "random" else Appearance.typical()
    raw = render_raw(labels, fibre_diameter, look, rng, fam_labels, fr, tissue)
    return raw, compose_rgb(raw, look)
