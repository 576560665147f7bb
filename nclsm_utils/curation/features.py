"""Per-fibre curation features: NTM shape features and FAM mass-channel features.

Also the small mask helpers that the features and the classifiers share (fibre diameter,
class-mask flags, overlap fractions, masked smoothing, input checks).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

#: Fallback fibre diameters (pixels) when no myofibre mask gives one: the segmenters' one table
from ..core.imaging import DEFAULT_DIAMETER, label_areas, label_values  # noqa: E402,F401 - DEFAULT_DIAMETER re-exported


# ============================================================================ helpers
def fibre_diameter(labels: np.ndarray, modality: str | None = None) -> float:
    """Median equivalent diameter (pixels) of the labels of an instance mask.

    Falls back to :data:`DEFAULT_DIAMETER` of ``modality`` (or 34 px) for an empty mask.

    >>> labels = np.zeros((50, 50), np.uint8); labels[:10, :10] = 1; labels[20:30, 20:30] = 2
    >>> round(fibre_diameter(labels), 2)
    11.28
    """
    areas = np.bincount(np.asarray(labels).ravel())[1:] if np.asarray(labels).size else []
    areas = np.asarray(areas)
    areas = areas[areas > 0]
    if areas.size == 0:
        return float(DEFAULT_DIAMETER.get(modality, 34.0))
    return float(2.0 * np.sqrt(np.median(areas) / np.pi))


def class_flags(labels: np.ndarray, class_mask: np.ndarray, overlap: float = 0.5) -> pd.Series:
    """Whether each fibre of ``labels`` belongs to a class mask (area fraction > ``overlap``).

    Works whether the class mask keeps the myofibre ids (synthetic data) or has its own
    ids or is binary (any non-zero pixel counts).

    Returns
    -------
    Series of bool indexed by label (sorted, labels present only).
    """
    labels = np.asarray(labels)
    ids = label_values(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return pd.Series([], dtype=bool, index=pd.Index([], dtype="int64", name="label"))
    fraction = _fraction_inside(labels, np.asarray(class_mask) > 0, ids)
    return pd.Series(fraction > overlap, index=pd.Index(ids.astype(np.int64), name="label"))


def _fraction_inside(labels: np.ndarray, region: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Fraction of each label's area inside ``region`` (bool), for the labels ``ids``."""
    ids = np.asarray(ids, np.int64)
    if ids.size == 0:
        return np.zeros(0)
    if int(labels.max()) > 50_000_000:  # huge sparse label values: look ids up instead
        total = pd.Series(labels.ravel()).value_counts()
        inside = pd.Series(labels[region]).value_counts()
        return (inside.reindex(ids, fill_value=0).to_numpy(np.float64)
                / np.maximum(total.reindex(ids, fill_value=0).to_numpy(np.float64), 1))
    total = label_areas(labels)
    inside = label_areas(labels, np.asarray(region, bool), minlength=total.size)
    return inside[ids] / np.maximum(total[ids], 1)


def _masked_smooth(values: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of ``values`` inside ``mask`` only (normalised convolution)."""
    if sigma <= 0:
        return values.astype(np.float32)
    weight = ndi.gaussian_filter(mask.astype(np.float32), sigma)
    smooth = ndi.gaussian_filter(np.where(mask, values, 0).astype(np.float32), sigma)
    return np.divide(smooth, weight, out=np.zeros_like(smooth), where=weight > 1e-3)


def _as_rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] < 2:
        raise ValueError(f"expected an RGB image (H, W, 3) (R membrane, G mass), got shape "
                         f"{image.shape}")
    return image


def _check_mask(labels, image=None) -> np.ndarray:
    from ..metrics.morphology import check_labels

    labels = check_labels(labels)
    if image is not None and tuple(image.shape[:2]) != tuple(labels.shape):
        raise ValueError(f"image {image.shape[:2]} and mask {labels.shape} have different "
                         "shapes; both must come from the same section")
    return labels


def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile`` without a float copy for uint8/uint16 (histogram based)."""
    from ..metrics import channel_percentile

    values = np.asarray(values)
    if values.size == 0:
        return math.nan
    return float(channel_percentile(values.reshape(1, -1) if values.ndim == 1 else values, q))


# ============================================================================ NTM features
def moment_axis_ratio(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Major / minor axis ratio of the ellipse with the same second moments, per label.

    (As ``skimage.measure.regionprops``' ``axis_major_length / axis_minor_length``;
    ``inf`` for a one-pixel-thick label.) Vectorised over labels with bincount.

    >>> labels = np.zeros((20, 40), np.uint8); labels[5:10, 5:35] = 1
    >>> np.round(moment_axis_ratio(labels, np.array([1])), 2)
    array([6.12])
    """
    ids = np.asarray(ids, np.int64)
    if ids.size == 0:
        return np.zeros(0)
    if labels.size > _LARGE_MASK:
        return _crop_measures(labels)["axis_ratio"].reindex(ids).to_numpy(np.float64)
    rows, cols = np.nonzero(labels)
    values = labels[rows, cols].astype(np.int64)
    n = int(values.max()) + 1
    count = np.bincount(values, minlength=n).astype(np.float64)
    rows = rows.astype(np.float64)
    cols = cols.astype(np.float64)
    safe = np.maximum(count, 1)
    mean_r = np.bincount(values, rows, n) / safe
    mean_c = np.bincount(values, cols, n) / safe
    dr = rows - mean_r[values]
    dc = cols - mean_c[values]
    mrr = np.bincount(values, dr * dr, n) / safe
    mcc = np.bincount(values, dc * dc, n) / safe
    mrc = np.bincount(values, dr * dc, n) / safe
    root = np.sqrt(((mrr - mcc) / 2) ** 2 + mrc ** 2)
    major = (mrr + mcc) / 2 + root
    minor = np.clip((mrr + mcc) / 2 - root, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.sqrt(major / minor)
    return ratio[ids]



#: Masks with more pixels than this (full-resolution IF sections) are measured fibre by
#: fibre on bounding-box crops instead of with whole-image index arrays.
_LARGE_MASK = 1 << 24


def _crop_measures(labels: np.ndarray) -> pd.DataFrame:
    """Area and :func:`moment_axis_ratio` of every label, each from its bounding-box crop
    (OpenCV moments): bounded memory and time on full-resolution sections."""
    import cv2

    from ..metrics.morphology import _compact_labels

    compact, values = _compact_labels(labels)
    rows = []
    for index, box in enumerate(ndi.find_objects(compact)):
        if box is None:
            continue
        label = index + 1 if values is None else int(values[index + 1])
        mask = (compact[box] == index + 1).astype(np.uint8)
        m = cv2.moments(mask, binaryImage=True)
        area = m["m00"]
        mrr, mcc, mrc = m["mu02"] / area, m["mu20"] / area, m["mu11"] / area
        root = math.sqrt(((mrr - mcc) / 2) ** 2 + mrc ** 2)
        major, minor = (mrr + mcc) / 2 + root, max((mrr + mcc) / 2 - root, 0.0)
        rows.append((label, int(area), math.sqrt(major / minor) if minor > 0 else math.inf))
    table = pd.DataFrame(rows, columns=["label", "area", "axis_ratio"])
    return table.set_index("label")


def _label_areas(labels: np.ndarray) -> pd.Series:
    """Pixel count per non-zero label present (index sorted)."""
    if labels.size and int(labels.max()) <= 50_000_000:
        counts = np.bincount(labels.ravel())
        ids = np.flatnonzero(counts)
        ids = ids[ids > 0]
        return pd.Series(counts[ids], index=ids.astype(np.int64))
    values, counts = np.unique(labels, return_counts=True)
    keep = values > 0
    return pd.Series(counts[keep], index=values[keep].astype(np.int64))


#: Published shape-feature columns of :func:`ntm_features` (pixel lengths and ratios).
NTM_SHAPE_COLUMNS = (
    "Fiber_on_Border", "Fiber_Area", "Fiber_Perimeter", "Convexity", "Fiber_Width_Ellipse",
    "Fiber_Length_Ellipse", "Aspect_Ratio_Ellipse", "lengthsquared_by_Area_Ellipse",
    "Fiber_Width_Bbox", "Fiber_Length_Bbox", "Aspect_Ratio_Bbox", "lengthsquared_by_area_Bbox",
    "Fiber_Perimeter_by_Rectangular_Perimeter",
)
#: Scale-free columns added to the published ones.
NTM_EXTRA_COLUMNS = ("relative_area", "solidity", "axis_ratio")
#: Features of the learned NTM classifier: scale-free only (ratios of the published features
#: and the added ones), so that a model trained on 34-72 px synthetic fibres means the same on
#: 16 px figure fibres or 360 px real IF fibres. The pixel-unit columns (area, perimeter,
#: axis and box lengths) stay in the table for the published rule.
NTM_FEATURES = (
    "Fiber_on_Border", "Convexity", "Aspect_Ratio_Ellipse", "lengthsquared_by_Area_Ellipse",
    "Aspect_Ratio_Bbox", "lengthsquared_by_area_Bbox", "Fiber_Perimeter_by_Rectangular_Perimeter",
) + NTM_EXTRA_COLUMNS


def ntm_features(labels: np.ndarray, scale: float = 1.0) -> pd.DataFrame:
    """Per-fibre NTM features: the published shape features plus scale-free ones.

    Parameters
    ----------
    labels : (H, W) integer instance mask.
    scale : float
        NCL-SM IF pixels to the mask's pixels, for the published rule's area thresholds
        (:func:`nclsm_utils.metrics.morphology.ntm_thresholds`); 1 = NCL-SM's own pixels.

    Returns
    -------
    DataFrame
        One row per non-zero label (sorted), column ``label``, the columns of
        :data:`NTM_SHAPE_COLUMNS` and :data:`NTM_EXTRA_COLUMNS` (``relative_area`` = area /
        the mask's median fibre area, ``solidity`` = 1 / Convexity), ``ntm_rule`` (the
        published rule at ``scale``) and ``skipped`` (True for labels of 25 pixels or fewer,
        which the published script skips; their features are NaN).

    >>> labels = np.zeros((40, 60), np.uint16); labels[5:25, 10:50] = 1; labels[30:33, 2:5] = 2
    >>> t = ntm_features(labels)
    >>> t[["label", "Fiber_Area", "skipped"]].values.tolist()
    [[1, 800.0, False], [2, nan, True]]
    """
    from ..metrics.morphology import ntm_rule, shape_features

    labels = _check_mask(labels)
    crops = _crop_measures(labels) if labels.size > _LARGE_MASK else None
    label_areas = _label_areas(labels) if crops is None else crops["area"]
    ids = label_areas.index.to_numpy(np.int64)
    table = pd.DataFrame({"label": ids})
    if ids.size == 0:
        for column in NTM_SHAPE_COLUMNS + NTM_EXTRA_COLUMNS:
            table[column] = pd.Series([], dtype="float64")
        table["ntm_rule"] = pd.Series([], dtype=bool)
        table["skipped"] = pd.Series([], dtype=bool)
        return table
    shapes = shape_features(labels)
    rule = ntm_rule(shapes, scale) if len(shapes) else pd.Series([], dtype=bool)
    shapes = shapes.assign(ntm_rule=rule.to_numpy(dtype=bool))
    shapes = shapes.astype({"Fiber_on_Border": "float64"})
    table = table.merge(shapes[["label", *NTM_SHAPE_COLUMNS, "ntm_rule"]], on="label", how="left")
    table["skipped"] = table["Fiber_Area"].isna()
    areas = label_areas.to_numpy(np.float64)
    median = float(np.median(areas)) if areas.size else 1.0
    table["relative_area"] = areas / max(median, 1.0)
    convexity = pd.to_numeric(table["Convexity"], errors="coerce")
    table["solidity"] = 1.0 / convexity.where(convexity > 0)
    table["axis_ratio"] = (moment_axis_ratio(labels, ids) if crops is None
                           else crops["axis_ratio"].reindex(ids).to_numpy(np.float64))
    # fibres the published script skips are too small to analyse: non-transverse for both
    table["ntm_rule"] = table["ntm_rule"].fillna(True).astype(bool)
    columns = NTM_SHAPE_COLUMNS + NTM_EXTRA_COLUMNS
    table = table.astype({c: "float64" for c in columns})
    return table[["label", *columns, "ntm_rule", "skipped"]]


# ============================================================================ FAM features
#: Columns of :func:`fam_features` (besides ``label``).
FAM_FEATURES = (
    "dark_frac_35", "dark_frac_50", "dark_frac_65", "q10_rel", "q25_rel", "q50_rel", "cv",
    "raw_cv", "skewness", "hole_count_density", "hole_mean_area_rel", "hole_area_frac",
    "largest_hole_frac", "brightness_rel", "membrane_inside_rel", "solidity", "relative_area",
    "on_border", "exposed_boundary_frac",
)


#: :func:`fam_features` measures a section whose fibres are at least twice this many pixels
#: across (NCL-SM's IF sections: 250-520 px) reduced by ``diameter // FAM_WORKING_DIAMETER``
#: (area averaging of the image, nearest label), so its fibres are 64-128 px across as in
#: the synthetic data the classifier is tuned on. Every feature is relative to the fibre's
#: own intensity, diameter or area, so it keeps its meaning, and a full-size IF section takes
#: seconds instead of minutes.
FAM_WORKING_DIAMETER = 64.0


def fam_features(image: np.ndarray, labels: np.ndarray,
                 diameter: float | None = None) -> pd.DataFrame:
    """Per-fibre freezing-artefact features of the mass (G) channel inside each fibre.

    Freezing artefacts show as dark, round holes ("leopard spots") in the
    mitochondrial-mass signal of a fibre. All intensity features are relative to the
    fibre's own intensity (its 75th percentile of the smoothed G channel), so dim
    (type II) and bright (type I) fibres are compared fairly; lengths scale with the
    fibre diameter.

    Parameters
    ----------
    image : (H, W, 3) RGB (R membrane, G mitochondrial mass).
    labels : (H, W) integer instance mask.
    diameter : float, optional
        Typical fibre diameter (pixels); default: :func:`fibre_diameter` of ``labels``.
        From twice :data:`FAM_WORKING_DIAMETER` up, the section is measured reduced by
        ``diameter // FAM_WORKING_DIAMETER``; a fibre the reduction loses gets NaN features.

    Returns
    -------
    DataFrame
        One row per non-zero label (sorted): ``label`` and :data:`FAM_FEATURES`:

        * ``dark_frac_35/50/65`` -- fraction of the fibre's interior (eroded by 6 % of the
          diameter) whose smoothed G is below 35/50/65 % of the fibre's reference;
        * ``q10_rel``, ``q25_rel``, ``q50_rel`` -- quantiles of smoothed G / reference;
        * ``cv``, ``raw_cv``, ``skewness`` -- texture statistics (smoothed and raw G);
        * ``hole_*`` -- holes from a local threshold (smoothed G below 60 % of its local
          mean at 15 % of the diameter): count per expected spot area, mean hole area
          relative to a spot of radius 7 % of the diameter, hole area fraction, largest
          hole / interior;
        * ``brightness_rel`` (reference / the section's median fibre G),
          ``membrane_inside_rel`` (mean interior R / the section's 85th R percentile);
        * ``solidity``, ``relative_area`` (area / median fibre area), ``on_border``
          (touches the image edge) and ``exposed_boundary_frac`` (fraction of a ring
          around the fibre that is neither another fibre nor membrane: a fibre cut by the
          tissue edge) -- partial-fibre cues.

        Fibres too small for a feature give NaN there (the classifiers impute).
    """
    from ..metrics.morphology import convex_hull_pixels

    image = _as_rgb(image)
    labels = _check_mask(labels, image)
    ids = label_values(labels)
    ids = ids[ids > 0].astype(np.int64)
    if ids.size == 0:
        return pd.DataFrame({"label": pd.Series([], dtype="int64"),
                             **{c: pd.Series([], dtype="float64") for c in FAM_FEATURES}})
    if diameter is None or not np.isfinite(diameter) or diameter <= 0:
        diameter = fibre_diameter(labels)
    step = int(diameter // FAM_WORKING_DIAMETER)
    if step >= 2:
        from ..core.imaging import rescale_image, resize_labels

        small = rescale_image(image[..., :3], 1.0 / step)
        table = fam_features(small, resize_labels(labels, small.shape[:2]), diameter / step)
        table = table.set_index("label").reindex(ids)
        return table.rename_axis("label").reset_index().astype(
            {"label": "int64", **{c: "float64" for c in FAM_FEATURES}})
    green = image[..., 1]
    red = image[..., 0]
    inside_all = labels > 0
    section_g = _percentile(green[inside_all], 50) if inside_all.any() else 1.0
    section_r85 = _percentile(red, 85) if red.size else 1.0
    areas_all = np.bincount(labels.ravel())
    median_area = float(np.median(areas_all[ids]))
    sigma = max(0.7, 0.03 * diameter)
    local_sigma = max(2.0, 0.15 * diameter)
    erode = max(1, int(round(0.06 * diameter)))
    ring = max(2, int(round(0.08 * diameter)))
    spot_area = math.pi * max(1.5, 0.07 * diameter) ** 2
    pad = int(math.ceil(max(3 * local_sigma, ring + 1))) + 1
    height, width = labels.shape
    rows = []
    slices_all = ndi.find_objects(labels if labels.max() < 2 ** 31 else labels.astype(np.int64))
    for label in ids:
        sl = slices_all[label - 1] if label - 1 < len(slices_all) else None
        row = {"label": int(label)}
        if sl is None:
            rows.append(row)
            continue
        r0, r1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, height)
        c0, c1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, width)
        crop = labels[r0:r1, c0:c1]
        mask = crop == label
        area = int(mask.sum())
        g = green[r0:r1, c0:c1].astype(np.float32)
        r = red[r0:r1, c0:c1].astype(np.float32)
        row["relative_area"] = area / max(median_area, 1.0)
        row["on_border"] = float(sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == height
                                 or sl[1].stop == width)
        hull = convex_hull_pixels(mask[sl[0].start - r0:sl[0].stop - r0,
                                       sl[1].start - c0:sl[1].stop - c0]) if area else 0
        row["solidity"] = area / hull if hull else np.nan
        # partial-fibre cue: ring pixels that are neither fibre nor membrane (empty slide)
        grown = ndi.binary_dilation(mask, iterations=ring)
        shell = grown & ~mask
        if shell.any():
            empty = (crop[shell] == 0) & (r[shell] < 0.5 * section_r85) \
                & (g[shell] < 0.25 * section_g)
            row["exposed_boundary_frac"] = float(empty.mean())
        interior = ndi.binary_erosion(mask, iterations=erode)
        if interior.sum() < 10:
            interior = mask
        if interior.sum() < 5:
            rows.append(row)
            continue
        smooth = _masked_smooth(g, mask, sigma)
        values = smooth[interior]
        raw = g[interior]
        reference = float(np.percentile(values, 75))
        reference = max(reference, 1e-3)
        row["dark_frac_35"] = float((values < 0.35 * reference).mean())
        row["dark_frac_50"] = float((values < 0.50 * reference).mean())
        row["dark_frac_65"] = float((values < 0.65 * reference).mean())
        q10, q25, q50 = np.percentile(values, [10, 25, 50])
        row["q10_rel"], row["q25_rel"], row["q50_rel"] = (q10 / reference, q25 / reference,
                                                          q50 / reference)
        mean = float(values.mean())
        row["cv"] = float(values.std() / mean) if mean > 0 else np.nan
        raw_mean = float(raw.mean())
        row["raw_cv"] = float(raw.std() / raw_mean) if raw_mean > 0 else np.nan
        std = float(values.std())
        row["skewness"] = float(((values - mean) ** 3).mean() / std ** 3) if std > 0 else 0.0
        local = _masked_smooth(g, mask, local_sigma)
        holes = interior & (smooth < 0.6 * np.maximum(local, 1e-3))
        n_interior = float(interior.sum())
        hole_labels, n_holes = ndi.label(holes)
        if n_holes:
            sizes = np.bincount(hole_labels.ravel())[1:]
            sizes = sizes[sizes >= max(2, 0.15 * spot_area)]
        else:
            sizes = np.array([])
        row["hole_count_density"] = len(sizes) / max(n_interior / spot_area, 1.0)
        row["hole_mean_area_rel"] = float(sizes.mean() / spot_area) if len(sizes) else 0.0
        row["hole_area_frac"] = float(sizes.sum() / n_interior)
        row["largest_hole_frac"] = float(sizes.max() / n_interior) if len(sizes) else 0.0
        row["brightness_rel"] = reference / max(section_g, 1e-3)
        row["membrane_inside_rel"] = float(r[interior].mean() / max(section_r85, 1e-3))
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in FAM_FEATURES:
        if column not in table:
            table[column] = np.nan
    table = table[["label", *FAM_FEATURES]]
    return table.astype({"label": "int64", **{c: "float64" for c in FAM_FEATURES}})
