"""Parametric synthetic NCL-SM: packed myofibres, their classes and IMC/IF-like images.

No machine learning: hand-designed geometry and textures give pixel-perfect
labels (in the spirit of SYNTA), and a simple physical imaging model (optical
blur, photon shot noise, read noise) gives realistic pixel statistics.

Geometry
    Seeds with log-normal radii are packed by dart throwing; a compact
    watershed on smooth noise grows them into polygonal fibres with irregular
    borders; thin gaps separate neighbours (endomysium); a smooth random
    tissue mask cuts the section into fragments with empty space between.
    Patches of obliquely cut (elongated) fibres are pasted in.
Classes (as NCL-SM defines them)
    non-transverse (NTM): elongated, cut by the image border, too small or too
    large, or of low solidity (cut by the tissue edge); freezing artefact
    (FAM): a few percent of the rest, rendered with leopard-spot holes;
    folded regions (FR): blobs of doubled, mesh-like membrane where no fibre
    is annotated (as in the real dataset's overview figure).
QA
    A duplicate annotation of about 5 % of the fibres whose borders move by a
    smooth random displacement (human-vs-human IoU about 0.95).
Images
    R = membrane marker (bright at fibre borders and gaps), G = granular
    mitochondrial-mass texture with per-fibre (fibre type) intensity, B = 0;
    blurred by a Gaussian PSF, photon-counted (Poisson) with Gaussian read
    noise into a raw uint16 image, then contrast-stretched 5-95 % to uint8.

Example
-------
>>> from nclsm_utils.synth import SynthConfig, generate_section
>>> sec = generate_section("P02", "IMC", SynthConfig.preset("tiny"), seed=0)
>>> sec["image"].shape, sec["image"].dtype
((192, 192, 3), dtype('uint8'))
>>> int(sec["myofibres"].max()) > 10
True
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import draw, measure, segmentation

from .io import write_text, write_tiff

log = logging.getLogger(__name__)

#: Role -> folder name written by the generator (the three documented NCL-SM names included).
SYNTH_FOLDERS = {
    "image": "Images",
    "image_raw": "Images_Raw",
    "myofibres": "Mask_All_Myofibres",
    "analysable": "Mask_All_AM",
    "am_vs_nam": "Mask_AM_vs_NAM",
    "ntm": "Mask_NTM",
    "fam": "Mask_FAM",
    "fr": "Mask_FR",
    "qa": "Mask_QA",
}
#: Values of the AM-vs-NAM class mask.
AM_CLASS, NAM_CLASS = 1, 2

DEFAULT_IMC_IDS = ["C01", "C04", "P01", "P02", "P04", "P06", "P07", "P09"]
DEFAULT_IF_IDS = ["S11", "S14", "S25", "S36", "S47", "S60"]


@dataclass
class ModalityParams:
    """Imaging and geometry parameters of one modality (lengths in pixels)."""

    shape: tuple[int, int]
    fibre_diameter: float          # mean fibre diameter
    size_cv: float = 0.28          # log-normal sigma of fibre radii
    gap: int = 1                   # pixels removed on each side of a fibre border
    membrane_width: float = 1.0    # Gaussian width of the membrane signal inside a fibre
    psf_sigma: float = 0.8         # optical blur
    photons: float = 40.0          # expected photon count at signal 1.0
    read_noise: float = 2.0        # Gaussian read noise (counts)
    offset: float = 10.0           # camera/detector offset (counts)


@dataclass
class SynthConfig:
    """Size and class proportions of a synthetic NCL-SM dataset."""

    n_imc: int = 8
    n_if: int = 6
    imc: ModalityParams = field(default_factory=lambda: ModalityParams(
        shape=(384, 384), fibre_diameter=34.0, gap=1, membrane_width=1.0, psf_sigma=0.8,
        photons=40.0, read_noise=2.0))
    if_: ModalityParams = field(default_factory=lambda: ModalityParams(
        shape=(640, 640), fibre_diameter=72.0, gap=2, membrane_width=1.6, psf_sigma=1.3,
        photons=250.0, read_noise=4.0))
    tissue_coverage: float = 0.78      # fraction of the section covered by tissue
    oblique_fraction: float = 0.08     # fraction of the area holding obliquely cut fibres
    oblique_stretch: tuple[float, float] = (2.0, 3.2)
    fam_fraction: float = 0.05         # fraction of transverse fibres with freezing artefact
    fr_probability: float = 0.8        # chance a section has folded regions
    qa_fraction: float = 0.05          # fraction of fibres annotated twice
    qa_amplitude: float = 0.035        # boundary displacement std, relative to fibre radius
    imc_ids: list[str] = field(default_factory=lambda: list(DEFAULT_IMC_IDS))
    if_ids: list[str] = field(default_factory=lambda: list(DEFAULT_IF_IDS))
    splits: dict | None = None         # written as nclsm_splits.yaml when given
    #: domain randomisation: every section draws its geometry extras (fibre size, gaps,
    #: perimysium, sparseness, rounding) and its :class:`Appearance` from wide ranges
    randomise: bool = True
    #: how far a section's look may stray from the calibrated one (see Appearance.draw)
    look_spread: float = 0.6

    @classmethod
    def preset(cls, name: str = "default") -> "SynthConfig":
        """``default`` (the report's data), ``tiny`` (tests and quick runs; not randomised) or
        ``pretrain`` (U-Net pre-training)."""
        if name == "default":
            return cls()
        if name == "tiny":
            # the calibrated look and fixed geometry: small, stable fixtures for tests
            config = cls(n_imc=2, n_if=2, imc_ids=["P01", "P02"], if_ids=["S10", "S11"],
                         randomise=False)
            config.imc = replace(config.imc, shape=(192, 192))
            config.if_ = replace(config.if_, shape=(256, 256), fibre_diameter=48.0)
            return config
        if name == "pretrain":
            return cls(n_imc=12, n_if=8, imc_ids=[f"X{i:02d}" for i in range(1, 13)],
                       if_ids=[f"Y{i:02d}" for i in range(1, 9)],
                       splits={"test": [], "validation": []}, look_spread=1.0)
        raise ValueError(f"unknown synthetic preset {name!r}; use default, tiny or pretrain")

    def params(self, modality: str) -> ModalityParams:
        if modality == "IMC":
            return self.imc
        if modality == "IF":
            return self.if_
        raise ValueError(f"modality must be IMC or IF, got {modality!r}")

    def section_ids(self) -> list[tuple[str, str]]:
        ids = [("IMC", s) for s in _extend_ids(self.imc_ids, self.n_imc, "Q")]
        ids += [("IF", s) for s in _extend_ids(self.if_ids, self.n_if, "T")]
        return ids

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def _extend_ids(ids: list[str], n: int, prefix: str) -> list[str]:
    out = list(ids[:n])
    i = 1
    while len(out) < n:
        candidate = f"{prefix}{i:02d}"
        if candidate not in out:
            out.append(candidate)
        i += 1
    return out


# ----------------------------------------------------------------------------- geometry
def smooth_noise(shape, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit standard deviation."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    std = field_.std()
    return (field_ - field_.mean()) / (std if std > 0 else 1.0)


def pack_seeds(shape, mean_diameter: float, size_cv: float, rng: np.random.Generator,
               packing: float = 0.92) -> tuple[np.ndarray, np.ndarray]:
    """Dart-throwing of discs with log-normal radii.

    Returns
    -------
    centres : (N, 2) float array of (row, col); radii : (N,) float array (pixels).
    """
    height, width = shape
    radius = mean_diameter / 2.0
    expected = int(height * width / (np.pi * radius ** 2) * 1.6) + 8
    n_try = expected * 8
    candidates = rng.uniform((0, 0), (height, width), size=(n_try, 2))
    radii = radius * np.exp(rng.normal(-size_cv ** 2 / 2, size_cv, n_try))
    centres = np.empty((expected * 2, 2))
    kept_radii = np.empty(expected * 2)
    n = 0
    for point, r in zip(candidates, radii):
        if n:
            distance = np.hypot(*(centres[:n] - point).T)
            if np.any(distance < packing * (kept_radii[:n] + r)):
                continue
        centres[n], kept_radii[n] = point, r
        n += 1
        if n == len(centres):
            break
    return centres[:n], kept_radii[:n]


def tessellate(shape, mean_diameter: float, size_cv: float, rng: np.random.Generator,
               roughness: float = 1.0) -> np.ndarray:
    """Space-filling fibre tessellation: compact watershed from packed discs on smooth noise.

    Returns an int32 label image ``shape`` with labels 1..N covering every pixel.
    """
    centres, radii = pack_seeds(shape, mean_diameter, size_cv, rng)
    markers = np.zeros(shape, np.int32)
    for index, ((row, col), r) in enumerate(zip(centres, radii), start=1):
        rr, cc = draw.disk((row, col), max(1.0, 0.45 * r), shape=shape)
        markers[rr, cc] = index
    elevation = roughness * smooth_noise(shape, max(1.5, mean_diameter / 8), rng)
    return segmentation.watershed(elevation, markers, compactness=2.0 / mean_diameter).astype(np.int32)


def stretched_tessellation(shape, mean_diameter: float, size_cv: float, stretch: float,
                           angle_deg: float, rng: np.random.Generator) -> np.ndarray:
    """Tessellation of fibres elongated by ``stretch`` along direction ``angle_deg`` (obliquely cut)."""
    side = int(np.ceil(np.hypot(*shape))) + 4
    narrow = tessellate((side, int(np.ceil(side / stretch))),
                        mean_diameter / np.sqrt(stretch), size_cv, rng)
    wide = ndimage.zoom(narrow, (1.0, side / narrow.shape[1]), order=0)[:, :side]
    rotated = ndimage.rotate(wide, angle_deg, order=0, reshape=False, mode="constant")
    top = (side - shape[0]) // 2
    left = (side - shape[1]) // 2
    return rotated[top:top + shape[0], left:left + shape[1]]


def blob_mask(shape, fraction: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random region covering about ``fraction`` of the image (bool)."""
    if fraction <= 0:
        return np.zeros(shape, bool)
    if fraction >= 1:
        return np.ones(shape, bool)
    noise = smooth_noise(shape, sigma, rng)
    return noise > np.quantile(noise, 1.0 - fraction)


def tissue_mask(shape, coverage: float, rng: np.random.Generator,
                edge_margin: float = 0.08) -> np.ndarray:
    """Tissue fragments: smooth noise, pushed down near the image edges, thresholded to ``coverage``.

    Most of the section edge is empty slide, as in real biopsies, with tissue reaching the
    image border in places.
    """
    noise = smooth_noise(shape, max(shape) / 7, rng)
    rows = np.minimum(np.arange(shape[0]), np.arange(shape[0])[::-1])[:, None]
    cols = np.minimum(np.arange(shape[1]), np.arange(shape[1])[None, ::-1])
    edge = np.minimum(rows, cols) / (edge_margin * max(shape))
    noise = noise - 2.0 * np.exp(-edge)
    return noise > np.quantile(noise, 1.0 - coverage)


def carve_gaps(labels: np.ndarray, gap: int) -> np.ndarray:
    """Remove ``gap`` pixels from each side of every border between labels (and to background)."""
    labels = labels.copy()
    for _ in range(gap):
        labels[segmentation.find_boundaries(labels, mode="inner")] = 0
    return labels


def folded_regions(shape, tissue: np.ndarray, mean_diameter: float, rng: np.random.Generator,
                   probability: float) -> np.ndarray:
    """Zero to two irregular folded-tissue blobs inside the tissue (bool mask)."""
    mask = np.zeros(shape, bool)
    if rng.random() > probability:
        return mask
    rows, cols = np.nonzero(tissue)
    if len(rows) == 0:
        return mask
    wobble = smooth_noise(shape, mean_diameter / 2, rng)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for _ in range(rng.integers(1, 3)):
        pick = rng.integers(len(rows))
        semi = mean_diameter * rng.uniform(1.0, 2.2, size=2)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - rows[pick], xx - cols[pick]
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / semi[0]
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / semi[1]
        mask |= (u ** 2 + v ** 2) < 1.0 + 0.35 * wobble
    return mask & tissue


def fraction_per_label(mask: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fraction of each label's pixels inside ``mask`` (array indexed by label; 0 where absent)."""
    total = np.bincount(labels.ravel())
    inside = np.bincount(labels.ravel(), weights=mask.ravel().astype(float), minlength=len(total))
    fraction = np.divide(inside, total, out=np.zeros(len(total)), where=total > 0)
    fraction[0] = 0.0
    return fraction


def perimysium(shape, mean_diameter: float, fraction: float,
               rng: np.random.Generator) -> np.ndarray:
    """Curved bands of connective tissue between fascicles: a level-set band of smooth noise
    covering about ``fraction`` of the image (bool)."""
    if fraction <= 0:
        return np.zeros(shape, bool)
    noise = np.abs(smooth_noise(shape, rng.uniform(2.5, 5.0) * mean_diameter, rng))
    return noise < np.quantile(noise, fraction)


@dataclass
class GeometryDraw:
    """The geometry of one section (drawn by :func:`draw_geometry`)."""

    fibre_diameter: float
    size_cv: float
    tissue_coverage: float
    gap: int                 # pixels carved on each side of a fibre border
    perimysium: float        # fraction of the image in perimysium bands
    sparse: float            # fraction of fibres removed (isolated fibres, wide spaces)
    rounding: float          # opening radius that rounds fibre corners (x diameter)


def draw_geometry(params: ModalityParams, config: SynthConfig,
                  rng: np.random.Generator) -> GeometryDraw:
    """The config's geometry, or (``config.randomise``) one drawn around it.

    Ranges cover the real S11 mask's packing (41 % fibre, gaps between neighbours of
    0.09-0.3 fibre diameters, diameters 110-750 px around a median of 360 px) and the real
    panel's dense fascicles with wide black perimysium.
    """
    if not config.randomise:
        return GeometryDraw(params.fibre_diameter, params.size_cv, config.tissue_coverage,
                            params.gap, 0.0, 0.0, 0.0)
    d = params.fibre_diameter * float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    return GeometryDraw(
        fibre_diameter=d, size_cv=rng.uniform(0.2, 0.55),
        tissue_coverage=rng.uniform(0.6, 0.97),
        gap=max(1, int(round(rng.uniform(0.01, 0.06) * d))),
        perimysium=rng.uniform(0.0, 0.08),
        sparse=rng.uniform(0.1, 0.5) if rng.random() < 0.2 else 0.0,
        rounding=rng.uniform(0.0, 0.12))


def fibre_geometry(shape, params: ModalityParams, config: SynthConfig,
                   rng: np.random.Generator) -> dict:
    """Tissue, tessellation (membrane layout), annotated fibres and folded regions of a section.

    Returns
    -------
    dict with ``tissue`` (bool), ``membrane_labels`` (int32 fibres inside tissue, used to
    draw membranes, folded regions included), ``labels`` (int32 annotated fibres, 1..N,
    gaps carved, folded-region fibres removed), ``fr`` (bool), ``oblique`` (bool per label,
    index = label), ``draw`` (the :class:`GeometryDraw`).
    """
    draw_ = draw_geometry(params, config, rng)
    d = draw_.fibre_diameter
    tissue = tissue_mask(shape, draw_.tissue_coverage, rng)
    tissue = ndimage.binary_opening(tissue, iterations=max(1, int(d / 8)))
    base = tessellate(shape, d, draw_.size_cv, rng)
    oblique_region = blob_mask(shape, config.oblique_fraction, max(shape) / 9, rng)
    stretch = rng.uniform(*config.oblique_stretch)
    oblique = stretched_tessellation(shape, d, draw_.size_cv, stretch, rng.uniform(0, 180), rng)
    combined = np.where(oblique_region, oblique + base.max() + 1, base)
    combined[(oblique_region) & (oblique == 0)] = 0
    combined[~tissue] = 0
    if draw_.perimysium > 0:
        band = perimysium(shape, d, draw_.perimysium, rng)
        combined[band] = 0
    # split pieces cut apart by region borders into their own labels
    combined = measure.label(combined, background=0, connectivity=1).astype(np.int32)
    membrane_labels = carve_gaps(combined, draw_.gap)
    radius = int(round(draw_.rounding * d))
    if radius >= 1:
        opened = ndimage.binary_opening(membrane_labels > 0, structure=_disk(radius))
        membrane_labels = measure.label(np.where(opened, membrane_labels, 0), background=0,
                                        connectivity=1).astype(np.int32)
    if draw_.sparse > 0 and membrane_labels.max():
        gone = np.flatnonzero(rng.random(membrane_labels.max() + 1) < draw_.sparse)
        membrane_labels[np.isin(membrane_labels, gone[gone > 0])] = 0
    is_oblique = np.zeros(membrane_labels.max() + 1, bool)
    if membrane_labels.max():
        is_oblique = fraction_per_label(oblique_region, membrane_labels) > 0.5
    fr = folded_regions(shape, tissue, d, rng, config.fr_probability)
    labels = membrane_labels.copy()
    if fr.any() and labels.max():
        drop = np.flatnonzero(fraction_per_label(fr, labels) > 0.15)
        labels[np.isin(labels, drop)] = 0
        labels[fr] = 0
    # drop slivers below 15 % of a mean fibre area (cut fragments; NCL-SM outlines fibres)
    min_area = 0.15 * np.pi * (d / 2) ** 2
    areas = np.bincount(labels.ravel())
    labels[areas[labels] < min_area] = 0
    labels, forward, _ = segmentation.relabel_sequential(labels)
    new_oblique = np.zeros(labels.max() + 1, bool)
    new_oblique[forward.out_values] = is_oblique[forward.in_values]
    new_oblique[0] = False
    return {"tissue": tissue, "membrane_labels": membrane_labels, "labels": labels.astype(np.int32),
            "fr": fr, "oblique": new_oblique, "draw": draw_}


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (yy ** 2 + xx ** 2) <= radius ** 2 + 0.5


def classify_fibres(labels: np.ndarray, oblique: np.ndarray, config: SynthConfig,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Non-transverse and freezing-artefact flags per label (bool arrays indexed by label).

    NTM: touches the image border, obliquely cut (elongated), area below 30 % or above 300 % of
    the section's median, or solidity below 0.75 (cut by the tissue edge).
    FAM: a random ``fam_fraction`` of the remaining (transverse) fibres.
    """
    n = int(labels.max())
    ntm = np.zeros(n + 1, bool)
    fam = np.zeros(n + 1, bool)
    if n == 0:
        return ntm, fam
    props = measure.regionprops(labels)
    areas = np.array([p.area for p in props], float)
    median = np.median(areas)
    height, width = labels.shape
    for p, area in zip(props, areas):
        r0, c0, r1, c1 = p.bbox
        on_border = r0 == 0 or c0 == 0 or r1 == height or c1 == width
        elongated = p.axis_minor_length > 0 and p.axis_major_length / p.axis_minor_length > 1.7
        ntm[p.label] = (on_border or (oblique[p.label] and elongated) or area < 0.3 * median
                        or area > 3.0 * median or p.solidity < 0.75)
    candidates = np.flatnonzero(~ntm[1:]) + 1
    n_fam = int(round(config.fam_fraction * len(candidates)))
    if n_fam:
        fam[rng.choice(candidates, n_fam, replace=False)] = True
    return ntm, fam


def qa_annotation(labels: np.ndarray, fraction: float, amplitude: float,
                  rng: np.random.Generator, exclude: np.ndarray | None = None) -> np.ndarray:
    """A duplicate annotation of ``fraction`` of the fibres with human-like border variation.

    Each chosen fibre's border moves by a smooth random displacement with standard deviation
    ``amplitude`` x the fibre's equivalent radius (pixels). Returns a label image (1..M).
    """
    qa = np.zeros_like(labels, dtype=np.int32)
    ids = np.arange(1, labels.max() + 1)
    if exclude is not None:
        ids = ids[~exclude[ids]]
    if len(ids) == 0:
        return qa
    n = max(1, int(round(fraction * labels.max())))
    chosen = np.sort(rng.choice(ids, min(n, len(ids)), replace=False))
    slices = ndimage.find_objects(labels)
    next_label = 1
    for label in chosen:
        sl = slices[label - 1]
        pad = 6
        r0, r1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, labels.shape[0])
        c0, c1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, labels.shape[1])
        inside = labels[r0:r1, c0:c1] == label
        radius = np.sqrt(inside.sum() / np.pi)
        signed = np.where(inside, ndimage.distance_transform_edt(inside) - 0.5,
                          0.5 - ndimage.distance_transform_edt(~inside))
        noise = smooth_noise(inside.shape, max(2.0, radius / 3), rng) * amplitude * radius
        new = ndimage.binary_fill_holes(signed + noise > 0)
        pieces, count = ndimage.label(new)
        if count > 1:
            new = pieces == (np.argmax(np.bincount(pieces.ravel())[1:]) + 1)
        target = qa[r0:r1, c0:c1]
        target[new & (target == 0)] = next_label
        next_label += 1
    return qa


# ----------------------------------------------------------------------------- appearance
@dataclass
class Appearance:
    """How one section looks. Lengths are fractions of the mean fibre diameter ``d``.

    The defaults (:meth:`typical`) are calibrated on the LEFT half of the one real NCL-SM
    image with ground truth at hand (the paper's overview figure, panel A; the measured
    targets are :data:`nclsm_utils.calibration.REAL_TARGETS`): a thin red membrane line
    straddling each annotated fibre edge (peak just outside it, ~2 px wide at 16 px
    fibres), near-black endomysium, perimysium and background, per-fibre mitochondrial mass
    spanning ~3.7x between the 5th and 95th percentile fibre (fibre-type mosaic) with a
    granular texture (within-fibre s.d. ~0.3 x the mean). :meth:`draw` randomises every
    parameter over wide ranges around those values (domain randomisation), so that models
    trained on synthetic sections cannot rely on one look.
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
            jpeg_quality=int(rng.integers(35, 90)) if rng.random() < 0.25 * spread else 0)


# ----------------------------------------------------------------------------- rendering
def _fibre_tables(n: int, look: Appearance, rng: np.random.Generator) -> dict:
    """Per-fibre mass level, membrane strength and rim flag (arrays indexed by label)."""
    type_one = rng.random(n + 1) < look.type_one_fraction
    level = np.exp(rng.normal(0.0, look.mass_sigma, n + 1)) * np.where(type_one,
                                                                       look.type_one_ratio, 1.0)
    level = (0.5 * level).astype(np.float32)
    strength = np.exp(rng.normal(0.0, look.membrane_cv, n + 1)).astype(np.float32)
    rim = rng.random(n + 1) < look.rim_fraction
    return {"level": level, "strength": strength, "rim": rim}


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
    tables = _fibre_tables(int(labels.max()), look, rng)
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


# ----------------------------------------------------------------------------- sections
def generate_section(section_id: str, modality: str, config: SynthConfig | None = None,
                     seed: int = 0, index: int = 0) -> dict[str, np.ndarray]:
    """Generate every role of one synthetic section.

    Returns
    -------
    dict role -> array: ``image`` (H, W, 3) uint8, ``image_raw`` (H, W, 2) uint16 and the masks
    ``myofibres``, ``analysable``, ``ntm``, ``fam``, ``qa`` (uint16 instance masks; the class
    masks keep the myofibre ids), ``am_vs_nam`` (uint8: 1 analysable, 2 not), ``fr`` (uint8 0/1).
    """
    config = config or SynthConfig()
    params = config.params(modality)
    rng = np.random.default_rng([seed, index, 1 if modality == "IMC" else 2])
    geometry = fibre_geometry(params.shape, params, config, rng)
    labels = geometry["labels"]
    ntm, fam = classify_fibres(labels, geometry["oblique"], config, rng)
    analysable = ~ntm & ~fam
    analysable[0] = False
    look = Appearance.draw(rng, config.look_spread) if config.randomise else Appearance.typical()
    raw = render_raw(geometry["membrane_labels"], geometry["draw"].fibre_diameter, look, rng,
                     fam_labels=_membrane_ids_of(geometry, np.flatnonzero(fam)),
                     fr=geometry["fr"], tissue=geometry["tissue"])
    qa = qa_annotation(labels, config.qa_fraction, config.qa_amplitude, rng, exclude=ntm)

    def keep(flags):
        return np.where(flags[labels], labels, 0).astype(np.uint16)

    am_vs_nam = np.where(labels > 0, np.where(analysable[labels], AM_CLASS, NAM_CLASS), 0)
    return {
        "image": compose_rgb(raw, look),
        "image_raw": raw,
        "myofibres": labels.astype(np.uint16),
        "analysable": keep(analysable),
        "am_vs_nam": am_vs_nam.astype(np.uint8),
        "ntm": keep(ntm),
        "fam": keep(fam),
        "fr": geometry["fr"].astype(np.uint8),
        "qa": qa.astype(np.uint16),
    }


def _membrane_ids_of(geometry: dict, fibre_ids: np.ndarray) -> np.ndarray:
    """Ids in the membrane tessellation of the given annotated fibres (for texture drawing)."""
    if fibre_ids.size == 0:
        return fibre_ids
    labels, membrane = geometry["labels"], geometry["membrane_labels"]
    inside = np.isin(labels, fibre_ids)
    return np.unique(membrane[inside & (membrane > 0)])


def write_section(out, modality: str, section_id: str, config: SynthConfig | None = None,
                  seed: int = 0, index: int = 0) -> dict:
    """Generate one section (:func:`generate_section`) and write its role TIFFs under ``out``.

    Returns ``{"modality", "section", "myofibres"}`` (the fibre count) for the manifest. The
    files depend only on the arguments, so sections can be written in any order or process.
    """
    roles = generate_section(section_id, modality, config, seed=seed, index=index)
    for role, array in roles.items():
        write_tiff(Path(out) / modality / SYNTH_FOLDERS[role] / f"{section_id}.tiff", array)
    return {"modality": modality, "section": section_id,
            "myofibres": int(len(np.unique(roles["myofibres"])) - 1)}


def renderer_fingerprint() -> str:
    """A hash of this module's source: a dataset written by another renderer is regenerated."""
    import hashlib

    return hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]


def default_workers() -> int:
    """Local processes for :func:`write_dataset`: the CPU cores this process may use, at
    most 4 (1 on a single core)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _write_in_processes(out: Path, items, config, seed: int, workers: int, bar):
    """Sections written by ``workers`` spawned processes, in the config's order; None when
    processes cannot be started here (e.g. a script without a ``__main__`` guard), and the
    caller writes them in this process instead."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(items)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(write_section, str(out.resolve()), modality, section_id,
                                   config, seed, index)
                       for index, (modality, section_id) in enumerate(items)]
            sections = []
            for future in futures:
                sections.append(future.result())
                bar.update(1)
        return sections
    except (BrokenProcessPool, RuntimeError, OSError) as error:
        log.warning("synthetic NCL-SM: cannot write sections in %d processes (%s); writing "
                    "them in this process", workers, " ".join(str(error).split())[:200])
        return None


def write_dataset(out, config: SynthConfig | None = None, seed: int = 0, force: bool = False,
                  progress: bool = True, client=None, workers: int = 1) -> Path:
    """Write a synthetic NCL-SM dataset in the real layout (``IMC/`` and ``IF/`` role folders).

    Idempotent: when ``out`` already holds a dataset made with the same config, seed and
    renderer (:func:`renderer_fingerprint`) it is kept as is (``force=True`` regenerates). A
    manifest ``synth_manifest.json`` records the config, seed and per-section fibre counts.

    ``client``: a :class:`distributed.Client`; each section is then written by a task on its
    cluster (the workers must see ``out`` at the same path). The files are byte-identical to
    a run in this process.

    ``workers`` > 1 (without a client): sections are written by that many local processes
    (:class:`concurrent.futures.ProcessPoolExecutor`, spawned), again byte-identical.
    """
    from tqdm.auto import tqdm

    config = config or SynthConfig()
    out = Path(out)
    manifest_path = out / "synth_manifest.json"
    wanted = {"generator": "nclsm.synth", "version": 2, "renderer": renderer_fingerprint(),
              "seed": seed, "config": config.to_dict()}
    if manifest_path.is_file() and not force:
        existing = json.loads(manifest_path.read_text())
        if {k: existing.get(k) for k in wanted} == wanted:
            log.info("synthetic dataset in %s is up to date", out)
            return out
    if out.exists() and any(out.iterdir()):
        if not force and not manifest_path.is_file():
            raise FileExistsError(f"{out}: folder exists and is not a synthetic dataset; choose "
                                  "another --out or pass --force to overwrite")
        for modality in ("IMC", "IF"):
            shutil.rmtree(out / modality, ignore_errors=True)
    items = config.section_ids()
    bar = tqdm(total=len(items), desc="synthetic NCL-SM", disable=not progress)
    with bar:
        sections = None
        if client is None and int(workers) > 1 and len(items) > 1:
            sections = _write_in_processes(out, items, config, seed, int(workers), bar)
        if client is None:
            if sections is None:
                sections = []
                bar.reset()
                for index, (modality, section_id) in enumerate(items):
                    sections.append(write_section(out, modality, section_id, config, seed,
                                                  index))
                    bar.update(1)
        else:
            from distributed import as_completed

            futures = [client.submit(write_section, str(out.resolve()), modality, section_id,
                                     config, seed, index, pure=False)
                       for index, (modality, section_id) in enumerate(items)]
            for _ in as_completed(futures):
                bar.update(1)
            sections = client.gather(futures)  # in the config's order, as in this process
    if config.splits is not None:
        import yaml

        write_text(out / "nclsm_splits.yaml", yaml.safe_dump(config.splits))
    wanted["sections"] = sections
    write_text(manifest_path, json.dumps(wanted, indent=2))
    return out
