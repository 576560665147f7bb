"""Membrane-guided post-processing of detected fibres: the toolkit's own steps, run only by
the named variant ``stardist+refine`` (never by the plain ``stardist`` row).

A network that places one object per fibre but draws its outline poorly (StarDist's
star-convex polygons come out round, too small and off the fibre's centre on CPU-trained
models) can leave the outline to the image: the membrane marker draws every fibre's border.
Every step works on the normalised working image of :mod:`.base` (channel 0 membrane,
1 mitochondrial mass, about 0-1; fibres ``target_diameter`` px across) and is a plain
function, arrays in and arrays out. ``stardist+refine`` runs them in this order
(:meth:`.stardist_seg.StarDistRefineSegmenter.postprocessing`; its parameters were chosen
on the tuning sets, see docs/decisions.md):

1. :func:`refine_to_membrane` keeps each detection as a *seed* and redraws its outline:

   a. *fibre interior*: smoothed membrane below the image's own Otsu level over tissue
      (a fixed level suits one image's membrane contrast, not another's); tissue is
      smoothed mass above :data:`GAP_LEVEL` or any pixel a closed membrane outline
      encloses (:func:`enclosed_by_membrane`), so a fibre without mass keeps its interior;
   b. *seeds*: each object's pixels in the interior eroded by ``erosion`` px, its largest
      piece only (a polygon crossing a membrane keeps the part in its own fibre; slivers
      vanish); with ``keep_seedless``, a detection with no interior under it (a fibre
      without mass whose outline is broken) keeps its own pixels as its seed; with
      ``fill_area`` > 0, a seedless piece of the eroded interior of at least ``fill_area`` px
      is a fibre the detector missed and becomes a seed of its own;
   c. *watershed* of the smoothed membrane from the seeds over the interior within
      ``distance`` px of the object (:func:`skimage.segmentation.watershed`);
   d. *gaps out*: pixels with smoothed mass below ``relative_mass`` times their seed's
      median mass go (dark gaps, the blurred halo; relative, so a dark fibre keeps its own);
   e. *duplicates merged*: neighbours sharing at least ``merge_length`` px of border with
      mean membrane below ``merge_membrane`` lie in one fibre (:func:`merge_split_fibres`);
   f. *to the membrane's ridge* (``ridge`` > 0; ``stardist+refine`` passes 0 and grows to
      the mass edge in step 2 instead): a last watershed over tissue within ``ridge`` px.

2. :func:`grow_and_trim`: :func:`grow_to_mass_edge` grows each object into the pixels
   around it with at least ``fraction`` (``edge_mass``, 0.5) of its median mass (the mass
   fills a fibre up to its annotated edge, while steps c-d stop at the membrane's inner
   side and a fixed ``ridge`` fits only membranes of the width it assumes);
   :func:`trim_beyond_ridge` then takes back growth past the membrane's ridge into gaps
   that carry mass (blurred or compressed sections).
3. :func:`split_on_faint_membrane` divides an object placed over two fibres whose shared
   membrane is much fainter than the rest (a network misses such a border).
4. :func:`separate_touching` opens a gap of ``width`` px on each side where two objects
   meet: the annotation leaves the endomysium between neighbours unlabelled.

The segmenter then removes objects under ``min_size`` px. :func:`drop_background_objects`
(objects with low membrane + mass signal and no membrane outline) runs between steps 3 and 4
only when ``background_level`` is above 0; it is off by default because it also dropped
true dark fibres whose outline is broken.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .base import _sequential

#: mass level (normalised mass channel, smoothed) below which a pixel is a gap, not tissue
GAP_LEVEL = 0.05
#: membrane level above which a pixel is tissue (membrane) whatever its mass (last step)
TISSUE_MEMBRANE_LEVEL = 0.2


def _smoothed(image: np.ndarray, channel: int, sigma: float) -> np.ndarray:
    """One channel of the working image, float32, Gaussian-smoothed with ``sigma`` px."""
    return ndimage.gaussian_filter(np.asarray(image[..., channel], np.float32), sigma)


def _largest_piece(labels: np.ndarray) -> np.ndarray:
    """Keep each label's largest 4-connected piece."""
    out = np.zeros_like(labels)
    for label, box in enumerate(ndimage.find_objects(labels), 1):
        if box is None:
            continue
        mask = labels[box] == label
        pieces, n = ndimage.label(mask)
        if n > 1:
            sizes = np.bincount(pieces.ravel())
            sizes[0] = 0
            mask = pieces == sizes.argmax()
        out[box][mask] = label
    return out


def _seed_unclaimed_pieces(seeds: np.ndarray, core: np.ndarray, min_area: float,
                           top: int) -> np.ndarray:
    """``seeds`` plus every 4-connected piece of ``core`` that holds no seed and has at least
    ``min_area`` px, labelled ``top + 1``, ``top + 2``, ..."""
    pieces, n = ndimage.label(core)
    if n == 0:
        return seeds
    claimed = np.bincount(pieces[seeds > 0], minlength=n + 1) > 0
    new = ~claimed & (np.bincount(pieces.ravel(), minlength=n + 1) >= min_area)
    new[0] = False
    if not new.any():
        return seeds
    lut = np.zeros(n + 1, seeds.dtype)
    lut[new] = np.arange(1, int(new.sum()) + 1) + top
    added = lut[pieces]
    return np.where(added > 0, added, seeds)


def _seed_detections_without_interior(seeds: np.ndarray, labels: np.ndarray,
                                      membrane: np.ndarray, level: float,
                                      erosion: int) -> np.ndarray:
    """``seeds`` plus a seed for each detection of ``labels`` left without one: its own
    pixels below the membrane ``level``, ``erosion`` px inside its outline.

    A fibre without mitochondrial mass whose membrane outline is broken is neither tissue by
    mass nor enclosed, so it has no interior; the network's detection of it stands in. No
    test of the membrane around it is made: dark fibres in groups share faint, broken
    membranes, and asking for an outline lost them (docs/decisions.md).
    """
    missing = np.setdiff1d(np.unique(labels[labels > 0]), np.unique(seeds[seeds > 0]))
    if missing.size == 0:
        return seeds
    inside = np.isin(labels, missing) & (membrane < level)
    if erosion > 0:
        size = 2 * int(erosion) + 1
        inside &= ((ndimage.minimum_filter(labels, size) == labels)
                   & (ndimage.maximum_filter(labels, size) == labels))
    return np.where((seeds == 0) & inside, labels, seeds)


def _label_medians(values: np.ndarray, labels: np.ndarray, top: int) -> np.ndarray:
    """Median of ``values`` over each label of ``labels``, indexed by label (0..``top``;
    0 where a label has no pixels)."""
    index = np.unique(labels[labels > 0])
    median = np.zeros(top + 1, np.float32)
    if index.size:
        median[index] = ndimage.median(values, labels, index)
    return median


def merge_split_fibres(labels: np.ndarray, membrane: np.ndarray, min_length: float,
                       max_membrane: float) -> np.ndarray:
    """Merge neighbours whose shared border is long and has no membrane on it.

    Two objects that touch along at least ``min_length`` border pixels
    (:func:`skimage.graph.rag_boundary`, 4-connectivity) with a mean ``membrane`` below
    ``max_membrane`` there are one fibre cut in two; every such group becomes the label of
    its smallest member (groups through :func:`scipy.sparse.csgraph.connected_components`).
    Labels are not made sequential.

    Examples
    --------
    >>> labels = np.zeros((6, 12), np.int32); labels[:, :4] = 1; labels[:, 4:8] = 2
    >>> labels[:, 8:] = 3
    >>> membrane = np.zeros((6, 12)); membrane[:, 7:9] = 1.0   # a membrane between 2 and 3
    >>> np.unique(merge_split_fibres(labels, membrane, 4, 0.15)).tolist()
    [1, 3]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from skimage.graph import rag_boundary

    n = int(labels.max()) + 1
    if n < 3:
        return labels
    rag = rag_boundary(labels, np.asarray(membrane, float), connectivity=1)
    pairs = [(a, b) for a, b, data in rag.edges(data=True)
             if a and b and data["count"] >= min_length and data["weight"] < max_membrane]
    if not pairs:
        return labels
    a, b = np.array(pairs).T
    graph = coo_matrix((np.ones(len(pairs)), (a, b)), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    first = np.full(n, n, np.int64)
    np.minimum.at(first, group, np.arange(n))
    return first[group][labels].astype(labels.dtype, copy=False)


def enclosed_by_membrane(membrane: np.ndarray, closing: int = 0) -> np.ndarray:
    """Pixels enclosed by a closed membrane outline (the holes of the membrane-positive mask,
    Otsu level of the smoothed membrane channel): the interior of every fibre, however little
    mitochondrial mass it holds.

    ``closing`` (px) also counts the pixels enclosed once breaks of up to about twice that
    length in the outline are bridged: the holes of the membrane mask dilated by a disk of
    that radius, dilated back by as much (not onto membrane). Membranes fade along parts of
    some fibres, whose interior would otherwise stay open.

    >>> membrane = np.zeros((20, 20), np.float32); membrane[1:19, 1:19] = 1.0
    >>> membrane[3:17, 3:17] = 0.0                    # a ring: its 14 x 14 inside is enclosed
    >>> int(enclosed_by_membrane(membrane).sum())
    196
    >>> membrane[9:11, 17:19] = 0.0      # a 2-px break: open; bridged (corners round off)
    >>> int(enclosed_by_membrane(membrane).sum()), int(enclosed_by_membrane(membrane, 2).sum())
    (0, 186)
    """
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk

    if np.ptp(membrane) == 0:
        return np.zeros(membrane.shape, bool)
    positive = membrane > threshold_otsu(membrane)
    enclosed = ndimage.binary_fill_holes(positive) & ~positive
    if closing > 0:
        # the holes of the thickened membrane, grown back by as much (not onto membrane)
        footprint = disk(int(closing))
        thick = ndimage.binary_dilation(positive, footprint)
        holes = ndimage.binary_fill_holes(thick) & ~thick
        enclosed |= ndimage.binary_dilation(holes, footprint) & ~positive
    return enclosed


def refine_to_membrane(labels: np.ndarray, image: np.ndarray, distance: float,
                       erosion: int = 3, relative_mass: float = 0.65,
                       merge_length: float = 18.0, merge_membrane: float = 0.15,
                       ridge: int = 2, fill_area: float = 0, closing: int = 0,
                       keep_seedless: bool = False) -> np.ndarray:
    """Redraw detected objects along the membrane (step 1 a-f of the module docstring).

    Parameters
    ----------
    labels : (h, w) integer ndarray
        Detected objects at the working scale (0 background), e.g. StarDist's polygons.
    image : (h, w, 2) float ndarray
        The normalised working image (channel 0 membrane, 1 mitochondrial mass; 0-1).
    distance : float
        How far (px) an object's outline may move beyond its detection; 0 returns
        ``labels`` unchanged.
    erosion : int
        Pixels by which the fibre interior is eroded before seeding (step b).
    relative_mass : float
        Pixels below this fraction of their object's median seed mass are dropped (step d).
    merge_length, merge_membrane : float
        Neighbours sharing at least ``merge_length`` px of border with a mean smoothed
        membrane below ``merge_membrane`` are merged (step e).
    ridge : int
        Last growth (px) over tissue to the membrane's ridge (step f).
    fill_area : float
        Pieces of the eroded interior (4-connected) without a seed and with at least this
        many px become objects of their own (step b, missed fibres); 0 adds none.
    closing : int
        Breaks in membrane outlines closed (:func:`enclosed_by_membrane`) before the
        enclosed pixels join the tissue (step a).
    keep_seedless : bool
        A detection left without a seed (no tissue under it: no mass, no closed outline)
        keeps its own pixels below the membrane level, eroded, as its seed (step b), instead
        of being dropped; and every detection's own pixels below the membrane level stay in
        reach of its seed, tissue or not, so that a fibre without mass is not shrunk to its
        seed.

    Returns
    -------
    (h, w) ndarray of ``labels``' dtype; objects keep their labels (merged ones the smallest
    of theirs), objects without a seed are gone, added objects take labels above
    ``labels.max()``.

    Examples
    --------
    Two fibres (columns 0-9 and 12-19) divided by a membrane (10-11), a gap at 20-23;
    fibre 1 was detected twice (labels 1, 3), fibre 2 once by a polygon that crosses the
    membrane:

    >>> image = np.zeros((24, 24, 2), np.float32); image[:, :20, 1] = 0.6
    >>> image[:, 10:12, 0] = 1.0
    >>> labels = np.zeros((24, 24), np.int32)
    >>> labels[2:10, 2:8] = 1; labels[14:22, 2:8] = 3; labels[4:20, 8:18] = 2
    >>> out = refine_to_membrane(labels, image, 12, erosion=1, merge_length=8)
    >>> np.unique(out).tolist(), np.unique(out[:, :10]).tolist(), bool(out[:, 21:].any())
    ([0, 1, 2], [1], False)

    Fibre 2 missed by the detector: without ``fill_area`` it is lost, with it it is found.

    >>> labels[labels == 2] = 0
    >>> np.unique(refine_to_membrane(labels, image, 12, erosion=1, merge_length=8)).tolist()
    [0, 1]
    >>> out = refine_to_membrane(labels, image, 12, erosion=1, merge_length=8, fill_area=50)
    >>> np.unique(out).tolist(), np.unique(out[:, 12:20]).tolist()
    ([0, 1, 4], [4])
    """
    if distance <= 0 or labels.max() == 0:
        return labels
    from skimage.filters import threshold_otsu
    from skimage.segmentation import expand_labels, watershed

    membrane = _smoothed(image, 0, 1.0)
    mass = _smoothed(image, 1, 2.0)
    tissue = (mass > GAP_LEVEL) | enclosed_by_membrane(membrane, closing)
    if not tissue.any():
        return labels
    membrane_level = threshold_otsu(membrane[tissue]) if np.ptp(membrane[tissue]) > 0 else 0.5
    interior = (membrane < membrane_level) & tissue
    core = ndimage.binary_erosion(interior, iterations=erosion) if erosion > 0 else interior
    seeds = _largest_piece(np.where(core, labels, 0))
    if keep_seedless:
        seeds = _seed_detections_without_interior(seeds, labels, membrane, membrane_level,
                                                  erosion)
    detected = labels
    if fill_area > 0:
        seeds = _seed_unclaimed_pieces(seeds, core, fill_area, int(labels.max()))
        detected = np.where(labels > 0, labels, seeds)
    region = ((expand_labels(detected, distance) > 0) & interior) | (seeds > 0)
    if keep_seedless:
        # a detection's own pixels below the membrane level stay in reach of its seed even
        # where they are not tissue: a fibre without mass is not shrunk to its seed
        region |= (labels > 0) & (membrane < membrane_level)
    out = watershed(membrane, seeds, mask=region)
    if not seeds.any():
        return np.zeros_like(labels)
    median = _label_medians(mass, seeds, int(out.max()))
    out[(mass < relative_mass * median[out]) & (seeds == 0)] = 0
    out = merge_split_fibres(out, membrane, merge_length, merge_membrane)
    if ridge > 0:
        reach = (expand_labels(out, ridge) > 0) & (tissue | (membrane > TISSUE_MEMBRANE_LEVEL))
        out = watershed(membrane, out, mask=reach | (out > 0))
    return out.astype(labels.dtype, copy=False)


def grow_to_mass_edge(labels: np.ndarray, image: np.ndarray, fraction: float = 0.5,
                      reach: int = 4) -> np.ndarray:
    """Grow each object to its fibre's mass edge (step 2 of the module docstring).

    The mitochondrial mass fills a fibre up to its annotated edge (the membrane lies on the
    edge), whereas a fixed growth to the membrane's ridge reaches that edge only where the
    membrane is as wide as it assumes: too small on sections with wide membranes, too large
    on others.

    Every object grows, by a watershed of the membrane (smoothed, Gaussian sigma 1 px) from
    all objects at once, into the pixels within ``reach`` px of it whose mitochondrial mass
    (channel 1, unsmoothed) is at least ``fraction`` of the object's median mass; neighbours
    that grow towards each other meet on the membrane's ridge. Objects never shrink.

    Parameters
    ----------
    labels : (h, w) integer ndarray
        Objects at the working scale (0 background), e.g. from :func:`refine_to_membrane`.
    image : (h, w, 2) float ndarray
        The normalised working image (channel 0 membrane, 1 mitochondrial mass; 0-1).
    fraction : float
        Share of the object's median mass a pixel needs to join it; 0 returns ``labels``.
    reach : int
        The farthest (px) an object grows.

    Returns
    -------
    (h, w) ndarray of ``labels``' dtype, the same labels.

    Examples
    --------
    A fibre of mass 0.6 (columns 0-11) detected short of its edge (columns 2-7), a gap of
    mass 0.1 beyond it: the object grows over the fibre's mass and stops at the gap.

    >>> image = np.zeros((6, 16, 2), np.float32); image[:, :12, 1] = 0.6
    >>> image[:, 12:, 1] = 0.1
    >>> labels = np.zeros((6, 16), np.int32); labels[:, 2:8] = 1
    >>> grow_to_mass_edge(labels, image, 0.5, reach=6)[0].tolist()
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    """
    if fraction <= 0 or reach <= 0 or labels.max() == 0:
        return labels
    from skimage.segmentation import expand_labels, watershed

    membrane = _smoothed(image, 0, 1.0)
    mass = np.asarray(image[..., 1], np.float32)
    median = _label_medians(mass, labels, int(labels.max()))
    near = expand_labels(labels, int(reach))
    grow = (near > 0) & (mass >= fraction * median[near])
    return watershed(membrane, labels, mask=grow | (labels > 0)).astype(labels.dtype, copy=False)


def trim_beyond_ridge(before: np.ndarray, grown: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Take back the growth of :func:`grow_to_mass_edge` that went past the membrane's ridge.

    Where the gaps carry mitochondrial mass (blurred or compressed sections) the growth to the
    mass edge does not stop at the fibre's edge: it runs over the membrane into the gap, up to
    its ``reach``. The membrane's ridge is the annotated edge, so a watershed of the membrane
    (smoothed, Gaussian sigma 1 px, as the growth's) floods from every object as it was
    before the growth and from the background left after it; the grown pixels the
    background's flood takes (beyond the ridge, seen from the object) are dropped, and each
    object keeps its largest 4-connected piece. Growth that stopped short of the ridge is
    kept (the background floods down from the ridge, not over it), and so is the border of
    two grown neighbours (no background lies between them). Where the growth crossed no
    ridge at all (a band of flat membrane, such as a tissue edge without one) the two floods
    meet halfway and the outer half goes (keeping such bands whole was worse on every
    tuning set; see docs/decisions.md).

    Parameters
    ----------
    before : (h, w) integer ndarray
        The objects before the growth (0 background).
    grown : (h, w) integer ndarray
        The same objects after :func:`grow_to_mass_edge` (``before``'s pixels and more).
    image : (h, w, 2) float ndarray
        The normalised working image (channel 0 membrane, 1 mitochondrial mass; 0-1).

    Returns
    -------
    (h, w) ndarray of ``grown``'s dtype: ``grown`` without the pixels beyond the ridge.

    Examples
    --------
    A fibre detected at columns 2-6, its membrane's ridge at column 10 (its annotated edge),
    a gap beyond whose mass let the object grow to column 13: the growth past the ridge is
    taken back.

    >>> image = np.zeros((5, 16, 2), np.float32)
    >>> image[:, :, 0] = [0, 0, 0, 0, 0, 0, 0, .1, .3, .6, 1, .6, .3, .1, 0, 0]
    >>> before = np.zeros((5, 16), np.int32); before[:, 2:7] = 1
    >>> grown = np.zeros((5, 16), np.int32); grown[:, 2:14] = 1
    >>> trim_beyond_ridge(before, grown, image)[2].tolist()
    [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    """
    if grown.max() == 0:
        return grown
    from skimage.segmentation import watershed

    n = int(grown.max())
    markers = np.asarray(before, np.int64).copy()
    markers[grown == 0] = n + 1
    flooded = watershed(_smoothed(image, 0, 1.0), markers)
    beyond = (grown > 0) & (before == 0) & (flooded == n + 1)
    if not beyond.any():
        return grown
    out = grown.copy()
    out[beyond] = 0
    return _largest_piece(out)


def grow_and_trim(labels: np.ndarray, image: np.ndarray, fraction: float = 0.5, reach: int = 4,
                  trim: bool = True) -> np.ndarray:
    """:func:`grow_to_mass_edge`, then (``trim``) :func:`trim_beyond_ridge` of that growth:
    one step of ``stardist+refine``'s chain."""
    grown = grow_to_mass_edge(labels, image, fraction, reach=reach)
    return trim_beyond_ridge(labels, grown, image) if trim else grown


def split_on_faint_membrane(labels: np.ndarray, image: np.ndarray, min_area: float,
                            contrast: float = 0.3) -> np.ndarray:
    """Split objects that hold a faint membrane line between two fibre interiors.

    A network can miss the border of two fibres whose shared membrane is much fainter than
    the rest (the continuity and contrast of a membrane vary along it): it places one object
    over both. Inside each object (at least ``2 * min_area`` px) the smoothed membrane
    (Gaussian, sigma 1 px) is thresholded at the object's own Otsu level, so a faint line
    counts as membrane there even when it lies below the image's level. When the pixels
    under that level, eroded by 1 px and at least 2 px from the object's edge, form two or
    more pieces of at least ``0.4 * min_area`` px, a watershed of the membrane from those
    pieces divides the object. The division is kept when every part has at least
    ``min_area`` px and the line between the parts stands out: its mean membrane lies at
    least ``contrast`` of the way from the object's interior (median over the pieces) to its
    outline (median over its 2 px rim). A single fibre has one interior piece, whatever its
    texture, and is left alone.

    Parameters
    ----------
    labels : (h, w) integer ndarray
        Objects at the working scale (0 background).
    image : (h, w, 2) float ndarray
        The normalised working image (channel 0 membrane, 1 mitochondrial mass; 0-1).
    min_area : float
        Smallest part (px) a division may leave, e.g. a small fraction of a fibre's area.
    contrast : float
        How far (0-1) from the interior's membrane level to the outline's the dividing line
        must reach; 0 returns ``labels`` unchanged.

    Returns
    -------
    (h, w) ndarray of ``labels``' dtype: each divided object keeps its label for its first
    part, the others get new labels above ``labels.max()`` (not sequential).

    Examples
    --------
    One object over two fibres inside a membrane outline of 0.9 (columns 2-18 and 21-36),
    divided by a membrane line (columns 19-20) a third as bright as the outline:

    >>> image = np.zeros((24, 40, 2), np.float32); image[..., 1] = 0.6
    >>> image[[1, 22], 1:38, 0] = 0.9; image[1:23, [1, 37], 0] = 0.9
    >>> image[2:22, 19:21, 0] = 0.3
    >>> labels = np.zeros((24, 40), np.int32); labels[1:23, 1:38] = 1
    >>> out = split_on_faint_membrane(labels, image, min_area=60)
    >>> [np.unique(part).tolist() for part in (out, out[4:20, 4:16], out[4:20, 23:35])]
    [[0, 1, 2], [1], [2]]

    Without the line the object stays whole:

    >>> image[2:22, 19:21, 0] = 0.0
    >>> np.unique(split_on_faint_membrane(labels, image, min_area=60)).tolist()
    [0, 1]
    """
    if contrast <= 0 or labels.max() == 0:
        return labels
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    membrane = _smoothed(image, 0, 1.0)
    out = labels.copy()
    next_label = int(labels.max()) + 1
    for label, box in enumerate(ndimage.find_objects(labels), 1):
        if box is None:
            continue
        mask = labels[box] == label
        if mask.sum() < 2 * min_area:
            continue
        local = membrane[box]
        if np.ptp(local[mask]) <= 0:
            continue
        inner = ndimage.binary_erosion(mask, iterations=2)
        core = ndimage.binary_erosion((local < threshold_otsu(local[mask])) & inner)
        pieces, n = ndimage.label(core)
        if n < 2:
            continue
        sizes = np.bincount(pieces.ravel())
        sizes[0] = 0
        big = np.flatnonzero(sizes >= 0.4 * min_area)
        if len(big) < 2:
            continue
        markers = np.zeros_like(pieces)
        kept = np.isin(pieces, big)
        markers[kept] = np.searchsorted(big, pieces[kept]) + 1
        parts = watershed(local, markers, mask=mask)
        if np.bincount(parts[mask])[1:].min() < min_area:
            continue
        # pixels inside the object whose 3 x 3 neighbourhood holds two parts: the dividing line
        line = inner & (ndimage.maximum_filter(parts, 3)
                        != ndimage.minimum_filter(np.where(mask, parts, parts.max() + 1), 3))
        rim = mask & ~inner
        interior, outline = np.median(local[core]), np.median(local[rim])
        if not line.any() or outline <= interior:
            continue
        if (local[line].mean() - interior) / (outline - interior) < contrast:
            continue
        target = out[box]
        for part in range(2, int(parts.max()) + 1):
            target[parts == part] = next_label
            next_label += 1
    return out


def separate_touching(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """Open a gap between objects that touch: take ``width`` px off each side of a shared border.

    Annotated fibres never touch: the annotators draw each fibre inside its membrane and leave
    the endomysium between neighbours unlabelled (0 % of the border pixels of the real S11
    ground truth and of every synthetic section lie next to another fibre; 15 % on the real
    overview panel, an image downscaled for print). Objects grown to the membrane's ridge
    meet there instead (52 % of StarDist's border pixels on a synthetic section, 4 % of the
    U-Net's, which learns the gap), half a gap too large on each side. Each object's pixels
    4-adjacent to another object (``width`` 1), or within ``width - 1`` px of such pixels,
    become background; borders with the background are left alone, and each object keeps its
    largest 4-connected piece.

    Parameters
    ----------
    labels : (h, w) integer ndarray
        Instance labels, 0 background.
    width : int
        Pixels taken off each side of a shared border (0: none).

    Returns
    -------
    (h, w) ndarray of ``labels``' dtype.

    Examples
    --------
    Two objects sharing a border at columns 3 | 4; the object at columns 7-8 touches only
    the background.

    >>> labels = np.zeros((3, 10), np.int32)
    >>> labels[:, 0:4] = 1; labels[:, 4:6] = 2; labels[:, 7:9] = 3
    >>> separate_touching(labels)[1].tolist()
    [1, 1, 1, 0, 0, 2, 0, 3, 3, 0]
    """
    width = int(width)
    if width <= 0 or labels.max() == 0:
        return labels
    values = np.asarray(labels, np.int64)
    cross = ndimage.generate_binary_structure(2, 1)
    above = ndimage.grey_dilation(values, footprint=cross)
    below = ndimage.grey_erosion(np.where(values > 0, values, np.iinfo(np.int64).max),
                                 footprint=cross)
    shared = (values > 0) & ((above > values) | (below < values))
    if not shared.any():
        return labels
    if width > 1:
        shared = (values > 0) & (ndimage.distance_transform_edt(~shared) <= width - 1)
    out = labels.copy()
    out[shared] = 0
    return _largest_piece(out)


#: :func:`drop_background_objects` keeps an object, however dark, when at least this share of
#: the ring just outside it lies within 2 px of a membrane-positive pixel.
MEMBRANE_RING_SHARE = 0.5
#: Percentile of the working image's smoothed membrane channel above which a pixel is
#: membrane-positive (the paper's membrane rule).
MEMBRANE_PERCENTILE = 85


def membrane_ring_share(labels: np.ndarray, image: np.ndarray, ids=None, reach: int = 2) -> dict:
    """Per object: the share of the one-pixel ring just outside it that lies within ``reach``
    px of a membrane-positive pixel (smoothed R above its :data:`MEMBRANE_PERCENTILE`).

    A fibre is outlined by its membrane whatever its mitochondrial mass; an object in empty
    background or outside the section is not.

    Examples
    --------
    >>> image = np.zeros((12, 24, 2), np.float32)
    >>> image[1:11, 1:11, 0] = 1.0; image[3:9, 3:9, 0] = 0.0     # a membrane ring on the left
    >>> labels = np.zeros((12, 24), np.int32); labels[3:9, 3:9] = 1; labels[3:9, 15:21] = 2
    >>> {k: round(v, 2) for k, v in membrane_ring_share(labels, image).items()}
    {1: 1.0, 2: 0.0}
    """
    membrane = _smoothed(image, 0, 1.0)
    positive = membrane > np.percentile(membrane, MEMBRANE_PERCENTILE)
    boxes = ndimage.find_objects(labels)
    wanted = set(range(1, len(boxes) + 1)) if ids is None else {int(i) for i in ids}
    pad = reach + 2
    out = {}
    for label in sorted(wanted):
        box = boxes[label - 1] if label <= len(boxes) else None
        if box is None:
            continue
        rows = slice(max(box[0].start - pad, 0), box[0].stop + pad)
        cols = slice(max(box[1].start - pad, 0), box[1].stop + pad)
        mask = labels[rows, cols] == label
        ring = ndimage.binary_dilation(mask) & ~mask
        near = ndimage.maximum_filter(positive[rows, cols], size=2 * reach + 1)
        out[label] = float(near[ring].mean()) if ring.any() else 0.0
    return out


def drop_background_objects(labels: np.ndarray, image: np.ndarray, level: float) -> np.ndarray:
    """Drop objects that are empty background: low signal AND no membrane around them.

    The signal is the sum of the smoothed (Gaussian, sigma 2 px) normalised membrane and mass
    channels. An object whose mean signal is below ``level`` is dropped only when its border
    carries no membrane either (:func:`membrane_ring_share` below
    :data:`MEMBRANE_RING_SHARE`): a fibre with little mitochondrial mass is dark inside but
    outlined by its membrane and stays; a false object in a gap or outside the section has
    neither. Labels are made sequential.

    Examples
    --------
    >>> image = np.zeros((12, 36, 2), np.float32); image[:, :12, 1] = 0.6
    >>> image[1:11, 25:35, 0] = 1.0; image[3:9, 27:33, 0] = 0.0   # a dark fibre's membrane
    >>> labels = np.zeros((12, 36), np.int32)
    >>> labels[3:9, 3:9] = 1; labels[3:9, 15:21] = 2; labels[3:9, 27:33] = 3
    >>> out = drop_background_objects(labels, image, 0.2)
    >>> int(out[5, 5]), int(out[5, 18]), int(out[5, 30])   # bright kept, empty dropped, dark kept
    (1, 0, 2)
    """
    if level <= 0 or labels.max() == 0:
        return labels
    signal = _smoothed(image, 0, 2.0) + _smoothed(image, 1, 2.0)
    index = np.unique(labels[labels > 0])
    means = np.asarray(ndimage.mean(signal, labels, index))
    keep = np.zeros(int(labels.max()) + 1, bool)
    keep[index] = means >= level
    dark = index[means < level]
    if dark.size:
        share = membrane_ring_share(labels, image, dark)
        keep[[i for i in dark if share.get(int(i), 0.0) >= MEMBRANE_RING_SHARE]] = True
    return _sequential(np.where(keep[labels], labels, 0))
