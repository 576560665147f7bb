"""Appearance of a section: the :class:`Appearance` (look) and the noise-free membrane and
mitochondrial-mass signals drawn from a label image (membrane lines, per-fibre mass,
granular texture, rims, freezing-artefact holes, folds, illumination gradient)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import segmentation

from .geometry import smooth_noise


@dataclass
class Appearance:
    """How one section looks. Lengths are fractions of the mean fibre diameter ``d``.

    The defaults (:meth:`typical`) are calibrated on the LEFT half of the one real NCL-SM
    image with ground truth at hand (the paper's overview figure, panel A; the measured
    targets are :data:`nclsm_utils.report.calibration.REAL_TARGETS`): a thin red membrane line
    straddling each annotated fibre edge (peak just outside it, ~2 px wide at 16 px
    fibres), near-black endomysium, perimysium and background, per-fibre mitochondrial mass
    spanning ~3.7x between the 5th and 95th percentile fibre (fibre-type mosaic) with a
    granular texture (within-fibre s.d. ~0.3 x the mean). :meth:`draw` randomises every
    parameter over wide ranges around those values (domain randomisation), so that models
    trained on synthetic sections cannot rely on one look.

    Every drawn look also holds fibres a model must not learn to skip: fibres whose
    mitochondrial mass is near background (``dark_fraction``, drawn from 0 to 15 %, alone
    and in groups of neighbours, as fibres with mitochondrial dysfunction in disease
    muscle) and fibres with a weak membrane but normal mass (``weak_fraction``, 0-6 %).
    The calibrated look has neither (the real panel's fibres span the mosaic above).
    """

    membrane_sigma: float = 0.035    # Gaussian half-width of the membrane line (x d)
    membrane_offset: float = 0.01    # line centre outside the annotated edge (x d)
    membrane_cv: float = 0.25        # spread of per-fibre membrane strength
    membrane_dropout: float = 0.3    # depth of smooth dropouts along the membranes (0..1)
    interior_red: float = 0.06       # R inside fibres (x membrane peak)
    gap_red: float = 0.05            # R in interstitial tissue (x membrane peak)
    debris: float = 1.0              # faint debris blobs in interstitial tissue (x gap level)
    type_one_fraction: float = 0.35  # oxidative (bright) fibres
    type_one_ratio: float = 1.6      # their mass / the others'
    mass_sigma: float = 0.22         # log-normal spread of per-fibre mass within a type
    grain_scale: float = 0.015       # granule size (x d)
    grain_amplitude: float = 0.35    # granular texture (relative s.d.)
    rim_fraction: float = 0.15       # fibres with a brighter subsarcolemmal rim
    rim_gain: float = 0.6
    gap_mass: float = 0.05           # G in interstitial tissue (x a dim fibre's mass)
    gradient: float = 0.15           # s.d. of the log illumination field
    blur: float = 0.02               # PSF sigma (x d; at least 0.5 px)
    photons: float = 150.0           # photon count at signal 1
    read_noise: float = 3.0          # counts
    stretch_high: float = 99.7       # upper percentile of the 8-bit contrast stretch
    gamma: tuple = (1.0, 1.0)        # display gamma of (R, G)
    coarsen: float = 1.0             # > 1: shrink by this factor and enlarge back (coarser)
    jpeg_quality: int = 0            # > 0: lossy JPEG round trip at this quality
    dark_fraction: float = 0.0       # fibres with near-background mass (share of fibres)
    dark_level: float = 0.08         # their mass (x a dim fibre's mass; the gap's is gap_mass)
    dark_grouped: float = 0.5        # share of the dark fibres that come in groups of neighbours
    weak_fraction: float = 0.0       # fibres with a weak membrane (normal mass)
    weak_gain: float = 0.3           # their membrane strength (x a normal fibre's)

    @classmethod
    def typical(cls) -> "Appearance":
        """The calibrated central look (no randomisation)."""
        return cls()

    @classmethod
    def draw(cls, rng: np.random.Generator, spread: float = 1.0) -> "Appearance":
        """A random look from wide ranges around the calibrated values.

        ``spread`` (0..1) scales every draw's distance from the typical look: 1 uses the full
        ranges (the U-Net's pretraining set), smaller values keep sections closer to the
        real calibration (the benchmark's default data); coarsening and JPEG are drawn with
        probability x ``spread``.
        """
        u = rng.uniform
        typical = cls.typical()

        def near(name, value, log=False):
            centre = getattr(typical, name)
            if log:
                return float(np.exp(np.log(centre) + spread * (np.log(value) - np.log(centre))))
            return float(centre + spread * (value - centre))

        def log_uniform(low, high):
            return float(np.exp(u(np.log(low), np.log(high))))

        return cls(
            membrane_sigma=near("membrane_sigma", log_uniform(0.015, 0.06), log=True),
            membrane_offset=near("membrane_offset", u(-0.01, 0.03)),
            membrane_cv=near("membrane_cv", u(0.1, 0.35)),
            membrane_dropout=near("membrane_dropout", u(0.0, 0.5)),
            interior_red=near("interior_red", u(0.01, 0.12)),
            gap_red=near("gap_red", u(0.0, 0.08)),
            debris=near("debris", u(0.0, 2.5)),
            type_one_fraction=near("type_one_fraction", u(0.15, 0.6)),
            type_one_ratio=near("type_one_ratio", u(1.2, 2.2)),
            mass_sigma=near("mass_sigma", u(0.1, 0.4)),
            grain_scale=near("grain_scale", u(0.005, 0.035)),
            grain_amplitude=near("grain_amplitude", u(0.1, 0.6)),
            rim_fraction=near("rim_fraction", u(0.0, 0.5)),
            rim_gain=near("rim_gain", u(0.2, 1.2)),
            gap_mass=near("gap_mass", u(0.0, 0.1)),
            gradient=near("gradient", u(0.0, 0.4)),
            blur=near("blur", log_uniform(0.008, 0.05), log=True),
            photons=near("photons", log_uniform(60, 800), log=True),
            read_noise=near("read_noise", u(0.5, 4.0)),
            stretch_high=near("stretch_high", u(98.5, 99.95)),
            gamma=(1.0 + spread * (u(0.6, 1.5) - 1.0), 1.0 + spread * (u(0.6, 1.5) - 1.0)),
            coarsen=u(1.5, 2.5) if rng.random() < 0.25 * spread else 1.0,
            jpeg_quality=int(rng.integers(35, 90)) if rng.random() < 0.25 * spread else 0,
            # not scaled by spread: every data set holds such fibres, from none to 15 %
            dark_fraction=u(0.0, 0.15) if rng.random() < 0.85 else 0.0,
            dark_level=u(0.0, 0.2),
            dark_grouped=u(0.0, 1.0),
            weak_fraction=u(0.0, 0.06),
            weak_gain=u(0.15, 0.5))


# ----------------------------------------------------------------------------- rendering
def _fibre_tables(labels: np.ndarray, look: Appearance, rng: np.random.Generator) -> dict:
    """Per-fibre mass level, membrane strength and rim flag (arrays indexed by label), and the
    dark fibres (``dark``, bool) whose mass is set near background."""
    n = int(labels.max())
    type_one = rng.random(n + 1) < look.type_one_fraction
    level = np.exp(rng.normal(0.0, look.mass_sigma, n + 1)) * np.where(type_one,
                                                                       look.type_one_ratio, 1.0)
    level = (0.5 * level).astype(np.float32)
    strength = np.exp(rng.normal(0.0, look.membrane_cv, n + 1)).astype(np.float32)
    rim = rng.random(n + 1) < look.rim_fraction
    dark = np.zeros(n + 1, bool)
    if look.dark_fraction > 0 and n:
        dark = dark_fibres(labels, look.dark_fraction, look.dark_grouped, rng)
        level[dark] = np.float32(0.5 * look.dark_level)
        rim &= ~dark
    if look.weak_fraction > 0 and n:
        weak = np.zeros(n + 1, bool)
        weak[1:] = rng.random(n) < look.weak_fraction
        strength[weak] *= np.float32(look.weak_gain)
    return {"level": level, "strength": strength, "rim": rim, "dark": dark}


def dark_fibres(labels: np.ndarray, fraction: float, grouped: float,
                rng: np.random.Generator) -> np.ndarray:
    """Choose ``fraction`` of the fibres of ``labels``; ``grouped`` of them in groups of 2-6
    nearest neighbours (by bounding-box centre), the rest one by one. Bool array by label.

    >>> labels = np.arange(1, 101).reshape(10, 10)
    >>> chosen = dark_fibres(labels, 0.1, 1.0, np.random.default_rng(0))
    >>> int(chosen.sum()), bool(chosen[0])
    (10, False)
    """
    n = int(labels.max())
    chosen = np.zeros(n + 1, bool)
    target = int(round(fraction * n))
    if target == 0:
        return chosen
    boxes = ndimage.find_objects(labels)
    present = np.array([i + 1 for i, b in enumerate(boxes) if b is not None])
    centres = np.array([[(b[0].start + b[0].stop) / 2, (b[1].start + b[1].stop) / 2]
                        for b in boxes if b is not None])
    target = min(target, present.size)
    in_groups = int(round(grouped * target))
    while chosen.sum() < in_groups:
        seed = rng.integers(present.size)
        size = int(rng.integers(2, 7))
        order = np.argsort(np.hypot(*(centres - centres[seed]).T))
        for k in order[:size]:
            if chosen.sum() < in_groups:
                chosen[present[k]] = True
    left = present[~chosen[present]]
    alone = target - int(chosen.sum())
    if alone > 0:
        chosen[rng.choice(left, alone, replace=False)] = True
    return chosen


def _coarse_field(shape, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth zero-mean unit-s.d. field of length scale ``scale`` px, built on a coarse grid
    (cheap for any image size), float32 ``shape``."""
    import cv2

    step = max(1.0, scale / 4.0)
    small = (max(2, int(np.ceil(shape[0] / step)) + 1), max(2, int(np.ceil(shape[1] / step)) + 1))
    coarse = smooth_noise(small, 4.0 if min(small) > 8 else 1.0, rng)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _noise_field(shape, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth unit noise of length ``scale`` px: filtered directly when short, built on a
    coarse grid when long (a 70 px Gaussian over a full-size window would dominate the
    rendering time)."""
    if scale <= 8:
        return smooth_noise(shape, max(1.0, scale), rng)
    return _coarse_field(shape, scale, rng)


def _render_window(labels: np.ndarray, d: float, look: Appearance, tables: dict,
                   rng: np.random.Generator, fam: np.ndarray, fr: np.ndarray | None,
                   tissue: np.ndarray | None, illumination: np.ndarray):
    """Membrane and mass signals of one window (see :func:`render_signals`)."""
    inside = labels > 0
    edge = segmentation.find_boundaries(labels, mode="inner") & inside
    if edge.any():
        dist, (ri, ci) = ndimage.distance_transform_edt(~edge, return_indices=True)
        dist = dist.astype(np.float32)
        nearest = labels[ri, ci]
        del ri, ci
    else:
        dist = np.full(labels.shape, np.float32(1e6))
        nearest = labels
    if tissue is None:
        tissue = inside | (dist < 0.15 * d)
    interstitial = tissue & ~inside
    signed = np.where(inside, -dist, dist) - np.float32(0.5 + look.membrane_offset * d)
    width = max(0.5, look.membrane_sigma * d)
    membrane = np.exp(-(signed ** 2) / np.float32(2 * width ** 2)).astype(np.float32)
    del signed
    membrane *= tables["strength"][nearest]
    if look.membrane_dropout > 0:
        dropout = np.clip(_noise_field(labels.shape, 0.2 * d, rng), 0, None)
        membrane *= 1.0 - look.membrane_dropout * np.clip(0.7 * dropout, 0, 1)
    debris = np.clip(_noise_field(labels.shape, 0.06 * d, rng), 0, None) ** 2
    membrane += look.interior_red * inside * tables["strength"][labels]
    membrane += look.gap_red * interstitial * (1.0 + look.debris * debris)
    # mass: fibre-type mosaic, granular texture, bright rims in some fibres
    level = tables["level"][labels]
    grain = ndimage.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32),
                                    max(0.5, look.grain_scale * d))
    grain /= grain.std() + 1e-6
    mass = np.where(inside, level * np.clip(1.0 + look.grain_amplitude * grain, 0.05, None), 0)
    del grain
    if look.rim_fraction > 0:
        rim = tables["rim"][labels] & inside
        mass = np.where(rim, mass * (1.0 + look.rim_gain * np.exp(-dist / max(1.0, 0.07 * d))),
                        mass)
    mass = mass + look.gap_mass * 0.5 * interstitial * (1.0 + look.debris * debris)
    if fam.size:
        in_fam = np.isin(labels, fam)
        if in_fam.any():
            spot_radius = max(1.5, 0.07 * d)
            centres = (rng.random(labels.shape) < 0.35 / (np.pi * spot_radius ** 2)) & in_fam
            holes = ndimage.distance_transform_edt(~centres) < spot_radius * rng.uniform(0.7, 1.3)
            mass = np.where(holes & in_fam, 0.12 * mass, mass)
            membrane = np.where(holes & in_fam, membrane + 0.3 * look.gap_red, membrane)
    if fr is not None and fr.any():
        shift = tuple((rng.normal(0, 0.25, 2) * d).astype(int) + 2)
        # two layers of tissue on top of each other: both signals add up
        membrane = np.where(fr, membrane + np.roll(membrane, shift, axis=(0, 1)), membrane)
        mass = np.where(fr, mass + np.roll(mass, shift, axis=(0, 1)) + 0.1, mass)
    return ((membrane * illumination).astype(np.float32),
            (mass * illumination).astype(np.float32))


def render_signals(labels: np.ndarray, fibre_diameter: float, look: Appearance,
                   rng: np.random.Generator, fam_labels=(), fr: np.ndarray | None = None,
                   tissue: np.ndarray | None = None, tile: int = 2048):
    """Noise-free membrane and mass signals (float32, ~0..2) of a fibre label image.

    Parameters
    ----------
    labels : (H, W) int
        Fibres (0 = gaps, interstitial space and background).
    fibre_diameter : float
        Mean fibre diameter in pixels: every length of ``look`` is relative to it.
    look : Appearance
    fam_labels : iterable of int
        Fibres drawn with freezing-artefact holes (leopard spots) in the mass channel.
    fr : (H, W) bool, optional
        Folded regions: a second, shifted copy of the membrane mesh is drawn there.
    tissue : (H, W) bool, optional
        Tissue (interstitial space inside it carries faint signal and debris); default:
        pixels within 0.15 fibre diameters of a fibre.
    tile : int
        Images larger than ``tile`` x ``tile`` are rendered in overlapping windows (every
        step is local), so a full-size IF section (~12k x 15k px) fits in a few GB.

    Returns
    -------
    membrane, mass : (H, W) float32
    """
    labels = np.asarray(labels)
    d = float(fibre_diameter)
    tables = _fibre_tables(labels, look, rng)
    fam = np.asarray(list(fam_labels), dtype=np.int64)
    shape = labels.shape
    illumination = np.exp(look.gradient * _coarse_field(shape, max(shape) / 2.5, rng))
    illumination = illumination.astype(np.float32)
    window_seed = int(rng.integers(2 ** 31))
    if max(shape) <= tile:
        return _render_window(labels, d, look, tables, rng, fam, fr, tissue, illumination)
    halo = int(0.6 * d) + 16
    membrane = np.empty(shape, np.float32)
    mass = np.empty(shape, np.float32)
    for i, r in enumerate(range(0, shape[0], tile)):
        for j, c in enumerate(range(0, shape[1], tile)):
            r0, c0 = max(r - halo, 0), max(c - halo, 0)
            r1, c1 = min(r + tile + halo, shape[0]), min(c + tile + halo, shape[1])
            window = (slice(r0, r1), slice(c0, c1))
            m, g = _render_window(labels[window], d, look, tables,
                                  np.random.default_rng([window_seed, i, j]), fam,
                                  None if fr is None else fr[window],
                                  None if tissue is None else tissue[window],
                                  illumination[window])
            core = (slice(r - r0, r - r0 + min(tile, shape[0] - r)),
                    slice(c - c0, c - c0 + min(tile, shape[1] - c)))
            out = (slice(r, r + tile), slice(c, c + tile))
            membrane[out], mass[out] = m[core], g[core]
    return membrane, mass
