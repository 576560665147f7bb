"""Label geometry of a synthetic section: packed fibres (sparse, rounded, obliquely cut),
tissue fragments and edges, perimysium, folded regions, the NTM/FAM classes and the QA
duplicate annotation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage import draw, measure, segmentation

from .config import ModalityParams, SynthConfig


def smooth_noise(shape, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to zero mean and unit standard deviation."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    std = field_.std()
    return (field_ - field_.mean()) / (std if std > 0 else 1.0)


def pack_seeds(shape, mean_diameter: float, size_cv: float, rng: np.random.Generator,
               packing: float = 0.92, small_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Dart-throwing of discs with log-normal radii.

    ``small_fraction`` of the candidate discs get a radius of 0.3-0.5 x the drawn one: they
    land in the spaces left between large discs, as the very small fibres that sit between
    large ones in human muscle (regenerating fibres, atrophic fibres).

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
    if small_fraction > 0:
        small = rng.random(n_try) < small_fraction
        radii[small] *= rng.uniform(0.3, 0.5, int(small.sum()))
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
               roughness: float = 1.0, small_fraction: float = 0.0) -> np.ndarray:
    """Space-filling fibre tessellation: compact watershed from packed discs on smooth noise.

    Returns an int32 label image ``shape`` with labels 1..N covering every pixel.
    """
    centres, radii = pack_seeds(shape, mean_diameter, size_cv, rng, small_fraction=small_fraction)
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
    small_fraction: float = 0.0  # share of very small fibres (0.3-0.5 x) between large ones
    min_area: float = 0.15   # smallest annotated fibre (x the mean fibre's area)


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
        rounding=rng.uniform(0.0, 0.12),
        small_fraction=rng.uniform(0.0, 0.12),
        # the real S11 mask's smallest fibres are 0.3 x its median diameter (0.09 x its area)
        min_area=0.08)


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
    base = tessellate(shape, d, draw_.size_cv, rng, small_fraction=draw_.small_fraction)
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
    # drop slivers below min_area of a mean fibre area (cut fragments; NCL-SM outlines fibres)
    min_area = draw_.min_area * np.pi * (d / 2) ** 2
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
