"""Calibration statistics: the same numbers measured on a real and on a synthetic section.

The synthetic NCL-SM (:mod:`nclsm_utils.synth`) is calibrated against the LEFT half of the
one real NCL-SM image with ground truth at hand (:mod:`nclsm_utils.core.realpanel`). Both are
measured by :func:`image_statistics` at the same pixel scale (a synthetic section is first
shrunk so its median fibre diameter equals the real one, :func:`at_diameter`), so the
numbers are comparable:

* channel levels (8-bit) of fibre interiors, the membrane line, near interstitial space and
  far background;
* the membrane profile: mean R at signed distances from the annotated fibre edge;
* the fibre-type mosaic: per-fibre mean G relative to the median fibre (5th..95th pct);
* texture: within-fibre G s.d. / mean, and the G autocorrelation length inside fibres;
* packing: fibre fraction, gap width between neighbours (medial axis of the non-fibre
  space near fibres) relative to the fibre diameter.

:data:`REAL_TARGETS` records the real values (measured by :func:`image_statistics` on
``realpanel.load_panel()``'s left half; a test re-measures them).

Example
-------
>>> import numpy as np
>>> lab = np.zeros((64, 64), int); lab[8:28, 8:28] = 1; lab[34:56, 30:52] = 2
>>> rgb = np.zeros((64, 64, 3), np.uint8); rgb[..., 1][lab > 0] = 100
>>> stats = image_statistics(rgb, lab)
>>> stats["G_interior_mean"], stats["fibre_fraction"]
(100.0, 0.216)
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

#: Signed distances from the annotated edge (x fibre diameter; negative = inside the fibre).
PROFILE_STEPS = (-0.18, -0.12, -0.06, 0.0, 0.06, 0.12, 0.18, 0.3, 0.5)

#: The real panel's left half (x < 240 px, ``realpanel.load_panel()``, fibres 16.7 px across),
#: measured by :func:`image_statistics`; ``tests/test_calibration.py`` re-measures them.
REAL_TARGETS = {
    "source": "NCL-SM overview figure, panel A/B, left half (x < 240 px); "
              "nclsm_utils.report.calibration.image_statistics",
    "diameter_px": 16.487,
    "fibres": 266.0,
    "fibre_fraction": 0.655,
    "R_interior_mean": 8.026,
    "R_near_gap_mean": 16.425,
    "R_background_mean": 3.333,
    "R_profile_-0.18": 10.999,
    "R_profile_-0.12": 19.343,
    "R_profile_-0.06": 72.193,
    "R_profile_+0.00": 93.709,
    "R_profile_+0.06": 100.029,
    "R_profile_+0.12": 42.19,
    "R_profile_+0.18": 26.369,
    "R_profile_+0.30": 10.645,
    "R_profile_+0.50": 3.925,
    "G_interior_mean": 73.393,
    "G_near_gap_mean": 16.613,
    "G_background_mean": 3.153,
    "G_profile_-0.18": 87.981,
    "G_profile_-0.12": 92.875,
    "G_profile_-0.06": 79.127,
    "G_profile_+0.00": 60.963,
    "G_profile_+0.06": 40.535,
    "G_profile_+0.12": 23.401,
    "G_profile_+0.18": 22.579,
    "G_profile_+0.30": 15.008,
    "G_profile_+0.50": 5.179,
    "G_fibre_mean_p5_rel": 0.514,
    "G_fibre_mean_p25_rel": 0.806,
    "G_fibre_mean_p75_rel": 1.292,
    "G_fibre_mean_p95_rel": 1.926,
    "G_within_fibre_cv": 0.297,
    "G_texture_length_rel": 0.117,
    "R_interior_over_membrane": 0.08,
    "gap_width_rel_median": 0.121,
}


def _profile_bins(diameter: float):
    return [(s, s * diameter) for s in PROFILE_STEPS]


def image_statistics(image: np.ndarray, labels: np.ndarray,
                     diameter: float | None = None) -> dict:
    """Calibration statistics of an RGB image and its instance mask (see the module doc).

    Parameters
    ----------
    image : (H, W, 3) uint8
        R = membrane, G = mitochondrial mass.
    labels : (H, W) int
        The fibres' instance mask on the same grid.
    diameter : float, optional
        Median fibre diameter (px); default: from ``labels``.

    Returns
    -------
    dict of floats (rounded to 3 decimals).
    """
    labels = np.asarray(labels)
    image = np.asarray(image)
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    red = image[..., 0].astype(np.float64)
    green = image[..., 1].astype(np.float64)
    inside = labels > 0
    ids = np.unique(labels[inside])
    if diameter is None:
        areas = np.bincount(labels.ravel())[ids]
        diameter = float(np.median(2 * np.sqrt(areas / np.pi))) if ids.size else 1.0
    depth = ndimage.distance_transform_edt(inside)
    away = ndimage.distance_transform_edt(~inside)
    signed = np.where(inside, 0.5 - depth, away - 0.5)       # 0 on the annotated edge
    interior = depth > 0.2 * diameter
    near = (~inside) & (away <= 0.5 * diameter) & (away > 0.15 * diameter)
    far = away > 1.0 * diameter
    stats: dict[str, float] = {"diameter_px": diameter, "fibres": float(ids.size),
                               "fibre_fraction": float(inside.mean())}
    for name, channel in (("R", red), ("G", green)):
        for region, mask in (("interior", interior), ("near_gap", near), ("background", far)):
            stats[f"{name}_{region}_mean"] = float(channel[mask].mean()) if mask.any() else np.nan
        for step, dist in _profile_bins(diameter):
            ring = np.abs(signed - dist) <= max(0.5, 0.03 * diameter)
            stats[f"{name}_profile_{step:+.2f}"] = float(channel[ring].mean()) if ring.any() \
                else np.nan
    if ids.size:
        means = ndimage.mean(green, labels, ids)
        sds = ndimage.standard_deviation(green, labels, ids)
        median = np.median(means)
        for q in (5, 25, 75, 95):
            stats[f"G_fibre_mean_p{q}_rel"] = float(np.percentile(means, q) / max(median, 1e-9))
        stats["G_within_fibre_cv"] = float(np.median(sds / np.maximum(means, 1e-9)))
        stats["G_texture_length_rel"] = texture_length(green, interior, labels) / diameter
    membrane_peak = max(stats["R_profile_+0.00"], stats["R_profile_+0.06"], 1e-9)
    stats["R_interior_over_membrane"] = stats["R_interior_mean"] / membrane_peak
    stats["gap_width_rel_median"] = gap_width(labels, diameter) / diameter
    return {k: round(float(v), 3) for k, v in stats.items()}


def texture_length(channel: np.ndarray, mask: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Lag (px) at which the autocorrelation of ``channel`` inside ``mask`` falls below 1/e.

    Computed with FFTs on the masked channel minus each label's mean (``labels`` given) or
    the mask's mean (normalised by the mask's own
    autocorrelation), along rows and columns, averaged.
    """
    if not mask.any():
        return float("nan")
    if labels is None:
        values = np.where(mask, channel - channel[mask].mean(), 0.0)
    else:   # remove each fibre's own mean: texture, not the fibre-type mosaic
        means = ndimage.mean(channel, labels, np.arange(int(labels.max()) + 1))
        values = np.where(mask, channel - np.nan_to_num(means)[labels], 0.0)
    spectrum = np.fft.rfft2(values)
    weights = np.fft.rfft2(mask.astype(float))
    corr = np.fft.irfft2(np.abs(spectrum) ** 2, s=values.shape)
    norm = np.fft.irfft2(np.abs(weights) ** 2, s=values.shape)
    corr = corr / np.maximum(norm, 1.0)
    corr /= corr[0, 0] if corr[0, 0] > 0 else 1.0
    lengths = []
    for profile in (corr[0, :values.shape[1] // 4], corr[:values.shape[0] // 4, 0]):
        below = np.flatnonzero(profile < np.exp(-1))
        if below.size == 0:
            lengths.append(float(len(profile)))
            continue
        i = int(below[0])
        # linear interpolation between lag i-1 and i
        a, b = profile[i - 1], profile[i]
        lengths.append(i - 1 + (a - np.exp(-1)) / max(a - b, 1e-9))
    return float(np.mean(lengths))


def gap_width(labels: np.ndarray, diameter: float) -> float:
    """Median width (px) of the non-fibre space between neighbouring fibres.

    Twice the distance to the nearest fibre on the medial axis of the non-fibre space, where
    that width is below half a fibre diameter (gaps between neighbours, not open spaces).
    """
    from skimage.morphology import skeletonize

    outside = np.asarray(labels) == 0
    if not outside.any() or outside.all():
        return float("nan")
    dist = ndimage.distance_transform_edt(outside)
    axis = skeletonize(outside) & (dist < 0.25 * diameter)
    return float(np.median(2 * dist[axis])) if axis.any() else float("nan")


def at_diameter(image: np.ndarray, labels: np.ndarray, diameter: float):
    """Shrink (or enlarge) an image and its mask so the median fibre diameter is ``diameter``.

    The factor is ``diameter`` over the labels' median equivalent diameter. Image: area
    averaging when shrinking, bilinear when enlarging (per channel, float32, rounded back to
    uint8); labels: nearest neighbour at pixel centres (no new labels; fibres may vanish).

    Returns
    -------
    image : (h, w, C) uint8, labels : (h, w) of ``labels``' dtype

    Raises
    ------
    ValueError
        When ``labels`` has no fibre or ``diameter`` is not a positive number.
    """
    import cv2

    labels = np.asarray(labels)
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    if areas.size == 0:
        raise ValueError("the label image has no fibres; cannot shrink it to a fibre diameter")
    if not (np.isfinite(float(diameter)) and diameter > 0):
        raise ValueError(f"diameter must be a positive number of pixels, got {diameter}")
    factor = float(diameter) / float(np.median(2 * np.sqrt(areas / np.pi)))
    height, width = (max(1, int(round(s * factor))) for s in labels.shape)
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    image = np.asarray(image)
    channels = image[..., None] if image.ndim == 2 else image
    small = np.stack([cv2.resize(np.ascontiguousarray(channels[..., c], np.float32),
                                 (width, height), interpolation=interpolation)
                      for c in range(channels.shape[-1])], axis=-1)
    small = np.clip(np.round(small), 0, 255).astype(np.uint8).reshape(
        (height, width) + image.shape[2:])
    rows = np.minimum((np.arange(height) + 0.5) * labels.shape[0] / height,
                      labels.shape[0] - 1).astype(np.intp)
    cols = np.minimum((np.arange(width) + 0.5) * labels.shape[1] / width,
                      labels.shape[1] - 1).astype(np.intp)
    return small, labels[rows[:, None], cols[None, :]]


def compare(real: dict, synthetic: list[dict]) -> pd.DataFrame:
    """Real value, synthetic median and 10th-90th percentile range per statistic.

    ``synthetic`` holds one :func:`image_statistics` dict per synthetic section. The column
    ``within`` says whether the real value lies inside the synthetic 10-90 % range (what
    domain randomisation aims for: the real look is one of the synthetic looks).
    """
    frame = pd.DataFrame(synthetic)
    rows = []
    for key, value in real.items():
        if key not in frame or not isinstance(value, (int, float)):
            continue
        column = frame[key].dropna()
        lo, mid, hi = (np.percentile(column, [10, 50, 90]) if len(column) else (np.nan,) * 3)
        rows.append({"statistic": key, "real": value, "synthetic_median": round(mid, 3),
                     "synthetic_p10": round(lo, 3), "synthetic_p90": round(hi, 3),
                     "within": bool(lo <= value <= hi)})
    return pd.DataFrame(rows)
