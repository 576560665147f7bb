"""Automatic curation: folded regions, non-transverse and freezing-artefact fibres, analysable.

The NCL-SM paper (Section VI) defines the curation workflow a researcher needs
after segmentation: (1) segment all myofibres, (2) segment folded regions (FR),
(3) classify non-transverse myofibres (NTM) from the instance mask, (4) classify
freezing-artefact myofibres (FAM) from the mask and the image, (5) remove 2-4
from 1 to get the *analysable* myofibres. This module does 2-5 automatically
and measures it.

Models (all scikit-learn, trained on the train split, seeded, cached)
--------------------------------------------------------------------
* **NTM, learned** -- a random forest on the published shape features of
  :func:`nclsm_utils.morphology.shape_features` plus two scale-free ones
  (fibre area relative to the section's median fibre area, solidity), labelled
  by the dataset's ``ntm`` mask. Compared with the published rule
  :func:`nclsm_utils.morphology.ntm_rule` (fixed pixel thresholds of the real IF
  sections).
* **FAM** -- a class-balanced random forest on per-fibre features of the mass
  (G) channel inside the fibre (:func:`fam_features`): dark-hole fractions relative
  to the fibre's own intensity, texture statistics, hole count and size from a
  local threshold, solidity and partial-fibre cues.
* **FR** -- a pixel classifier (:class:`FoldedRegionClassifier`) on multi-scale
  texture features of R and G (:func:`fr_pixel_features`: Gaussian smoothing,
  gradient magnitude, Laplacian of Gaussian, structure-tensor eigenvalues, local
  standard deviation, local membrane density), computed at a working scale where
  fibres are :data:`WORKING_DIAMETER` pixels across, trained on class-balanced
  pixel samples; its probability map is smoothed, thresholded, cleaned of small
  regions and hole-filled into a region mask.

Every learned piece lives in :class:`CurationModels`, trained by
:func:`train_models` and cached under ``<workdir>/models/curation-<hash>/``
(joblib; the hash covers the parameters and the training sections).

Curation and evaluation
-----------------------
:func:`curate` turns one section (ground-truth or predicted myofibres) into
masks: ``fr`` (region), ``fr_fibres``, ``ntm``, ``ntm_rule``, ``fam``,
``analysable`` and ``am_vs_nam``. Flags are exclusive in the workflow's order
(FR, then NTM, then FAM) in the masks; the per-fibre table of
:func:`classify_fibres` keeps every classifier's raw decision.
:func:`evaluate_curation` scores a whole split: per-class precision / recall /
F1, predicted vs ground-truth Table I counts, FR pixel IoU and the paper
metrics of the analysable mask against the analysable ground truth.

Example
-------
>>> from nclsm_utils.dataset import Dataset                       # doctest: +SKIP
>>> ds = Dataset("data/synthetic")                                 # doctest: +SKIP
>>> models = train_models(ds.sections(split="train"), workdir="data")   # doctest: +SKIP
>>> masks = curate(ds.section("P02"), models=models)               # doctest: +SKIP
>>> result = evaluate_curation(ds, "gt", workdir="data")           # doctest: +SKIP
>>> result["classes"].query("section == 'all'")                    # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from .io import DataError, read_array, write_csv, write_text, write_tiff

log = logging.getLogger(__name__)

#: Fibre diameter (pixels) of the working scale of the folded-region classifier.
WORKING_DIAMETER = 32.0
#: Working-scale tile side for folded-region features (bounds memory on full IF sections;
#: a multiple of any ``fr_stride``).
FR_TILE = 960
#: Fallback fibre diameters (pixels) when no myofibre mask gives one (synthetic defaults).
DEFAULT_DIAMETER = {"IMC": 34.0, "IF": 72.0}
#: Classes scored by :func:`evaluate_curation` (per-fibre table column -> ground-truth role).
CLASS_COLUMNS = {"ntm_rule": "ntm", "ntm": "ntm", "fam": "fam", "analysable": "analysable"}
#: Names of the classes in the evaluation tables.
CLASS_NAMES = {"ntm_rule": "NTM (rule)", "ntm": "NTM (learned)", "fam": "FAM",
               "analysable": "analysable"}
#: Masks returned by :func:`curate`.
CURATED_ROLES = ("myofibres", "fr", "fr_fibres", "ntm", "ntm_rule", "fam", "analysable",
                 "am_vs_nam")
#: Values of the AM-vs-NAM class mask (as in the dataset).
AM_CLASS, NAM_CLASS = 1, 2


class CurationError(RuntimeError):
    """Curation cannot run (e.g. no training data)."""


class NotTrainedError(CurationError):
    """A curation classifier was asked to predict before it was trained or loaded."""


# ============================================================================ parameters
@dataclasses.dataclass
class CurationParams:
    """Parameters of the curation models and post-processing (lengths relative to fibres).

    The defaults were chosen on the synthetic validation split (IMC P04, IF S25); see
    ``benchmarks/bench_curation.py``.
    """

    seed: int = 0
    n_jobs: int = 1                           # threads of the forests / gradient boosting
    # -- fibre classifiers (random forests, class-balanced)
    n_estimators: int = 300
    min_samples_leaf: int = 1
    ntm_threshold: float = 0.5
    fam_threshold: float = 0.5
    # -- folded regions
    fr_model: str = "hgb"                     # "hgb" gradient boosting | "rf" random forest
    fr_sigmas: tuple = (1.0, 2.0, 4.0, 8.0)   # working-scale pixels
    fr_context_sigmas: tuple = (8.0, 16.0)    # for local density / std / context
    fr_samples_per_class: int = 2000          # pixels per class and section
    fr_trees: int = 150                       # boosting iterations / forest size
    fr_stride: int = 2                        # predict every n-th working pixel, interpolate
    fr_smooth: float = 6.0                    # working-scale Gaussian sigma of the probability
    fr_threshold: float = 0.6
    fr_min_area: float = 1.0                  # in mean fibre areas
    fr_overlap: float = 0.5                   # fibre flagged FR above this area fraction in FR
    # -- class masks of a dataset: a fibre belongs to a class mask above this overlap
    class_overlap: float = 0.5

    def key(self) -> dict:
        return dataclasses.asdict(self)

    def quick(self) -> "CurationParams":
        """A copy with smaller models (60 trees / boosting iterations, 1500 pixels per class
        and section) for smoke runs and tests; the same code paths."""
        return dataclasses.replace(self, n_estimators=60, fr_trees=60, fr_samples_per_class=1500)


# ============================================================================ sections
class ArraySection:
    """In-memory section with the :class:`~nclsm_utils.dataset.Section` reading interface.

    Wraps the dict of :func:`nclsm_utils.synth.generate_section` (or any role -> array
    mapping) so that the curation functions take it like a dataset section.

    >>> from nclsm_utils.synth import SynthConfig, generate_section
    >>> sec = ArraySection(generate_section("P02", "IMC", SynthConfig.preset("tiny")), "IMC", "P02")
    >>> sec.image().shape, sec.has("fam")
    ((192, 192, 3), True)
    """

    def __init__(self, arrays: dict, modality: str = "IMC", id: str = "section",
                 split: str = "train"):
        self.arrays = dict(arrays)
        self.modality = modality
        self.id = id
        self.split = split

    @property
    def key(self) -> str:
        return f"{self.modality}/{self.id}"

    def has(self, role: str) -> bool:
        return role in self.arrays

    def image(self) -> np.ndarray:
        return self.arrays["image"]

    def mask(self, role: str = "myofibres") -> np.ndarray:
        if role not in self.arrays:
            raise DataError(f"section {self.key} has no {role!r} array")
        return np.asarray(self.arrays[role])

    def shape(self, role=None):
        return self.image().shape[:2]

    def __repr__(self) -> str:
        return f"ArraySection({self.key!r}, roles={sorted(self.arrays)})"


def _file_facts(section) -> list:
    files = getattr(section, "files", None)
    if not files:
        return [section.key]
    facts = [section.key]
    for role in sorted(files):
        path = Path(files[role])
        try:
            facts.append([role, path.stat().st_size])
        except OSError:
            facts.append([role, None])
    return facts


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
    ids = np.unique(labels)
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
    n = int(labels.max()) + 1
    total = np.bincount(labels.ravel(), minlength=n)
    inside = np.bincount(labels[region].ravel(), minlength=n)
    return inside[ids] / np.maximum(total[ids], 1)


def _masked_smooth(values: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of ``values`` inside ``mask`` only (normalised convolution)."""
    if sigma <= 0:
        return values.astype(np.float32)
    weight = ndi.gaussian_filter(mask.astype(np.float32), sigma)
    smooth = ndi.gaussian_filter(np.where(mask, values, 0).astype(np.float32), sigma)
    return np.divide(smooth, weight, out=np.zeros_like(smooth), where=weight > 1e-3)


def _threads(n: int):
    """Limit OpenMP/BLAS threads (gradient boosting oversubscribes shared cores otherwise)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=max(1, int(n)))


def _as_rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] < 2:
        raise ValueError(f"expected an RGB image (H, W, 3) (R membrane, G mass), got shape "
                         f"{image.shape}")
    return image


def _check_mask(labels, image=None) -> np.ndarray:
    from .morphology import check_labels

    labels = check_labels(labels)
    if image is not None and tuple(image.shape[:2]) != tuple(labels.shape):
        raise ValueError(f"image {image.shape[:2]} and mask {labels.shape} have different "
                         "shapes; both must come from the same section")
    return labels


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



#: Published shape-feature columns used by the learned NTM classifier.
NTM_SHAPE_COLUMNS = (
    "Fiber_on_Border", "Fiber_Area", "Fiber_Perimeter", "Convexity", "Fiber_Width_Ellipse",
    "Fiber_Length_Ellipse", "Aspect_Ratio_Ellipse", "lengthsquared_by_Area_Ellipse",
    "Fiber_Width_Bbox", "Fiber_Length_Bbox", "Aspect_Ratio_Bbox", "lengthsquared_by_area_Bbox",
    "Fiber_Perimeter_by_Rectangular_Perimeter",
)
#: Scale-free columns added to the published ones.
NTM_EXTRA_COLUMNS = ("relative_area", "solidity", "axis_ratio")
NTM_FEATURES = NTM_SHAPE_COLUMNS + NTM_EXTRA_COLUMNS


def ntm_features(labels: np.ndarray) -> pd.DataFrame:
    """Per-fibre NTM features: the published shape features plus scale-free ones.

    Parameters
    ----------
    labels : (H, W) integer instance mask.

    Returns
    -------
    DataFrame
        One row per non-zero label (sorted), column ``label``, the columns of
        :data:`NTM_FEATURES` (``relative_area`` = area / the mask's median fibre area,
        ``solidity`` = 1 / Convexity), ``ntm_rule`` (the published rule) and ``skipped``
        (True for labels of 25 pixels or fewer, which the published script skips; their
        features are NaN).

    >>> labels = np.zeros((40, 60), np.uint16); labels[5:25, 10:50] = 1; labels[30:33, 2:5] = 2
    >>> t = ntm_features(labels)
    >>> t[["label", "Fiber_Area", "skipped"]].values.tolist()
    [[1, 800.0, False], [2, nan, True]]
    """
    from .morphology import ntm_rule, shape_features

    labels = _check_mask(labels)
    ids = np.unique(labels)
    ids = ids[ids > 0].astype(np.int64)
    table = pd.DataFrame({"label": ids})
    if ids.size == 0:
        for column in NTM_FEATURES:
            table[column] = pd.Series([], dtype="float64")
        table["ntm_rule"] = pd.Series([], dtype=bool)
        table["skipped"] = pd.Series([], dtype=bool)
        return table
    shapes = shape_features(labels)
    rule = ntm_rule(shapes) if len(shapes) else pd.Series([], dtype=bool)
    shapes = shapes.assign(ntm_rule=rule.to_numpy(dtype=bool))
    shapes = shapes.astype({"Fiber_on_Border": "float64"})
    table = table.merge(shapes[["label", *NTM_SHAPE_COLUMNS, "ntm_rule"]], on="label", how="left")
    table["skipped"] = table["Fiber_Area"].isna()
    areas = np.bincount(labels.ravel())[ids]
    median = float(np.median(areas)) if areas.size else 1.0
    table["relative_area"] = areas / max(median, 1.0)
    convexity = pd.to_numeric(table["Convexity"], errors="coerce")
    table["solidity"] = 1.0 / convexity.where(convexity > 0)
    table["axis_ratio"] = moment_axis_ratio(labels, ids)
    # fibres the published script skips are too small to analyse: non-transverse for both
    table["ntm_rule"] = table["ntm_rule"].fillna(True).astype(bool)
    table = table.astype({c: "float64" for c in NTM_FEATURES})
    return table[["label", *NTM_FEATURES, "ntm_rule", "skipped"]]


# ============================================================================ FAM features
#: Columns of :func:`fam_features` (besides ``label``).
FAM_FEATURES = (
    "dark_frac_35", "dark_frac_50", "dark_frac_65", "q10_rel", "q25_rel", "q50_rel", "cv",
    "raw_cv", "skewness", "hole_count_density", "hole_mean_area_rel", "hole_area_frac",
    "largest_hole_frac", "brightness_rel", "membrane_inside_rel", "solidity", "relative_area",
    "on_border", "exposed_boundary_frac",
)


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
    from .morphology import convex_hull_pixels

    image = _as_rgb(image)
    labels = _check_mask(labels, image)
    ids = np.unique(labels)
    ids = ids[ids > 0].astype(np.int64)
    if ids.size == 0:
        return pd.DataFrame({"label": pd.Series([], dtype="int64"),
                             **{c: pd.Series([], dtype="float64") for c in FAM_FEATURES}})
    if diameter is None or not np.isfinite(diameter) or diameter <= 0:
        diameter = fibre_diameter(labels)
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


# ============================================================================ fibre classifier
class FibreClassifier:
    """A seeded, class-balanced scikit-learn classifier of fibres from a feature table.

    NaN features are imputed with the training medians; a training set with one class
    only gives a constant classifier. Predicting before :meth:`fit` raises
    :class:`NotTrainedError`.

    >>> clf = FibreClassifier("FAM", ["x"])
    >>> clf.predict(pd.DataFrame({"x": [1.0]}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nclsm_utils.curation.NotTrainedError: FAM classifier is not trained: train it with ...
    """

    def __init__(self, name: str, features, seed: int = 0, n_estimators: int = 300,
                 min_samples_leaf: int = 1, threshold: float = 0.5, n_jobs: int = 1):
        self.name = name
        self.n_jobs = int(n_jobs)
        self.features = list(features)
        self.seed = int(seed)
        self.n_estimators = int(n_estimators)
        self.min_samples_leaf = int(min_samples_leaf)
        self.threshold = float(threshold)
        self.model = None
        self.constant: float | None = None
        self.n_train = 0
        self.n_positive = 0

    @property
    def fitted(self) -> bool:
        return self.model is not None or self.constant is not None

    def _matrix(self, table: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.features if c not in table.columns]
        if missing:
            raise KeyError(f"{self.name} classifier needs feature column(s) {missing}")
        matrix = np.array(table[self.features].apply(pd.to_numeric, errors="coerce"),
                          dtype=np.float64)
        matrix[~np.isfinite(matrix)] = np.nan
        return matrix

    def fit(self, table: pd.DataFrame, target) -> "FibreClassifier":
        """Train on a feature table and a bool target (one per row)."""
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import make_pipeline

        y = np.asarray(target, dtype=bool)
        if len(y) != len(table):
            raise ValueError(f"{self.name}: {len(table)} feature rows but {len(y)} targets")
        self.n_train, self.n_positive = int(len(y)), int(y.sum())
        self.model, self.constant = None, None
        if len(y) == 0 or y.all() or not y.any():
            self.constant = float(y.mean()) if len(y) else 0.0
            log.warning("%s classifier: training set has one class only (%d fibres, %d "
                        "positive); it predicts a constant", self.name, len(y), int(y.sum()))
            return self
        forest = RandomForestClassifier(
            n_estimators=self.n_estimators, min_samples_leaf=self.min_samples_leaf,
            class_weight="balanced_subsample", random_state=self.seed, n_jobs=self.n_jobs)
        self.model = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                   forest)
        self.model.fit(self._matrix(table), y)
        return self

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """Probability of the positive class per row (float array)."""
        if not self.fitted:
            raise NotTrainedError(f"{self.name} classifier is not trained: train it with "
                                  "train_models() / CurationModels.fit() or load it with "
                                  "CurationModels.load()")
        if len(table) == 0:
            return np.zeros(0)
        if self.constant is not None:
            return np.full(len(table), self.constant)
        return self.model.predict_proba(self._matrix(table))[:, 1]

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        """Bool decision per row (probability >= ``threshold``)."""
        return self.predict_proba(table) >= self.threshold

    def importances(self) -> pd.Series:
        """Feature importances of the forest (empty for a constant classifier)."""
        if self.model is None:
            return pd.Series(dtype=float)
        forest = self.model[-1]
        return pd.Series(forest.feature_importances_, index=self.features).sort_values(
            ascending=False)


# ============================================================================ FR classifier
def _percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile`` without a float copy for uint8/uint16 (histogram based)."""
    from .metrics import channel_percentile

    values = np.asarray(values)
    if values.size == 0:
        return math.nan
    return float(channel_percentile(values.reshape(1, -1) if values.ndim == 1 else values, q))


def _normalise(channel: np.ndarray, low: float = 1.0, high: float = 99.5) -> np.ndarray:
    channel = channel.astype(np.float32)
    lo, hi = np.percentile(channel, [low, high]) if channel.size else (0.0, 1.0)
    return (channel - lo) / max(float(hi - lo), 1e-6)


def _resize_channel(channel: np.ndarray, shape) -> np.ndarray:
    """Resize one channel to ``shape`` (area averaging when shrinking), float32 out."""
    if channel.shape == tuple(shape):
        return channel.astype(np.float32)
    try:
        import cv2

        shrink = shape[0] < channel.shape[0]
        out = cv2.resize(np.ascontiguousarray(channel), (int(shape[1]), int(shape[0])),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return out.astype(np.float32)
    except ImportError:  # pragma: no cover - OpenCV is a declared dependency
        from skimage.transform import resize

        return resize(channel.astype(np.float32), shape, order=1,
                      anti_aliasing=shape[0] < channel.shape[0],
                      preserve_range=True).astype(np.float32)


def working_image(image: np.ndarray, diameter: float) -> tuple[np.ndarray, float]:
    """R and G of an RGB image resized to :data:`WORKING_DIAMETER` and percentile-normalised.

    The resize comes first (OpenCV area averaging on the stored dtype), so a full-size IF
    section is never copied as floats at full resolution.

    Returns ``(array (h, w, 2) float32, factor)`` with ``factor`` = working / full size.
    """
    image = _as_rgb(image)
    factor = WORKING_DIAMETER / max(float(diameter), 1.0)
    if abs(factor - 1.0) < 0.05:
        factor = 1.0
    shape = tuple(max(1, int(round(s * factor))) for s in image.shape[:2])
    channels = [_normalise(_resize_channel(image[..., c], shape)) for c in (0, 1)]
    return np.stack(channels, axis=-1), factor


def fr_feature_names(params: CurationParams | None = None) -> list[str]:
    """Names of the columns of :func:`fr_pixel_features`."""
    params = params or CurationParams()
    names = []
    for channel in ("R", "G"):
        for s in params.fr_sigmas:
            names += [f"{channel}_gauss_{s:g}", f"{channel}_gradmag_{s:g}",
                      f"{channel}_log_{s:g}", f"{channel}_st1_{s:g}", f"{channel}_st2_{s:g}"]
        for s in params.fr_context_sigmas:
            names += [f"{channel}_mean_{s:g}", f"{channel}_std_{s:g}"]
    for s in params.fr_context_sigmas:
        names += [f"membrane_density_{s:g}", f"ridge_density_{s:g}"]
    return names


def fr_thresholds(working: np.ndarray) -> tuple[float, float]:
    """Section-wide thresholds of :func:`fr_pixel_features`: R's 85th percentile (membrane
    positive) and the 85th percentile of the ridge response (-LoG of R at sigma 1)."""
    red = working[..., 0].astype(np.float32)
    if red.size == 0:
        return 0.0, 0.0
    ridge = -ndi.gaussian_laplace(red, 1.0)
    return float(np.percentile(red, 85)), max(float(np.percentile(ridge, 85)), 1e-6)


def fr_pixel_features(working: np.ndarray, params: CurationParams | None = None,
                      thresholds: tuple[float, float] | None = None) -> np.ndarray:
    """Multi-scale texture features per pixel of a working-scale (h, w, 2) image.

    For R (membrane) and G (mass), at each of ``params.fr_sigmas``: Gaussian smoothing,
    gradient magnitude, scale-normalised Laplacian of Gaussian and the two structure-tensor
    eigenvalues; at each context sigma: local mean and standard deviation. Plus the local
    density of membrane-positive pixels (R above its 85th percentile) and of membrane ridges
    (thin bright lines: negative LoG at sigma 1) at the context sigmas -- folded regions
    hold a doubled membrane mesh, about twice as dense.

    ``thresholds`` (:func:`fr_thresholds`) default to those of ``working`` itself; pass the
    whole section's when ``working`` is a tile.

    Returns
    -------
    (h, w, F) float32, F = ``len(fr_feature_names(params))``.
    """
    from skimage.feature import structure_tensor, structure_tensor_eigenvalues

    params = params or CurationParams()
    if thresholds is None:
        thresholds = fr_thresholds(working)
    features = []
    for c in range(2):
        channel = working[..., c].astype(np.float32)
        for s in params.fr_sigmas:
            features.append(ndi.gaussian_filter(channel, s))
            features.append(ndi.gaussian_gradient_magnitude(channel, s))
            features.append(ndi.gaussian_laplace(channel, s) * s * s)
            tensor = structure_tensor(channel, sigma=s, order="rc")
            eigen = structure_tensor_eigenvalues(tensor)
            features.extend([eigen[0], eigen[1]])
        for s in params.fr_context_sigmas:
            mean = ndi.gaussian_filter(channel, s)
            square = ndi.gaussian_filter(channel * channel, s)
            features.append(mean)
            features.append(np.sqrt(np.clip(square - mean * mean, 0, None)))
    red = working[..., 0].astype(np.float32)
    positive = (red > thresholds[0]).astype(np.float32)
    ridge = (-ndi.gaussian_laplace(red, 1.0) > thresholds[1]).astype(np.float32)
    for s in params.fr_context_sigmas:
        features.append(ndi.gaussian_filter(positive, s))
        features.append(ndi.gaussian_filter(ridge, s))
    return np.stack([f.astype(np.float32) for f in features], axis=-1)


def _resize_mask(mask: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D mask to ``shape`` (index mapping, no float copy)."""
    if mask.shape == tuple(shape):
        return mask
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0]).astype(np.intp),
                      mask.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1]).astype(np.intp),
                      mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def _downsample_mask(mask: np.ndarray, shape) -> np.ndarray:
    """Resize a bool mask to ``shape`` by area fraction > 0.5 (for training targets)."""
    if mask.shape == tuple(shape):
        return mask.astype(bool)
    return _resize_channel(mask.astype(np.uint8) * np.uint8(255), shape) > 127.5


class FoldedRegionClassifier:
    """Pixel classifier of folded regions (doubled, mesh-like membrane) -> region mask.

    Works at a working scale where fibres are :data:`WORKING_DIAMETER` pixels across;
    features from :func:`fr_pixel_features`; a random forest (``fr_model="rf"``) or
    histogram gradient boosting (``"hgb"``) on class-balanced pixel samples.
    """

    def __init__(self, params: CurationParams | None = None):
        self.params = params or CurationParams()
        self.model = None
        self.constant: float | None = None
        self.n_samples = 0

    @property
    def fitted(self) -> bool:
        return self.model is not None or self.constant is not None

    def _estimator(self):
        p = self.params
        if p.fr_model == "rf":
            from sklearn.ensemble import RandomForestClassifier

            return RandomForestClassifier(n_estimators=p.fr_trees, min_samples_leaf=5,
                                          max_features="sqrt", random_state=p.seed,
                                          n_jobs=p.n_jobs)
        if p.fr_model == "hgb":
            from sklearn.ensemble import HistGradientBoostingClassifier

            return HistGradientBoostingClassifier(max_iter=p.fr_trees, learning_rate=0.1,
                                                  max_leaf_nodes=31, early_stopping=False,
                                                  random_state=p.seed)
        if p.fr_model == "logreg":
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
        raise ValueError(f"fr_model must be 'rf', 'hgb' or 'logreg', got {p.fr_model!r}")

    def _tiles(self, working: np.ndarray):
        """Yield ``(r0, r1, c0, c1, features)``: features of working-image tiles (with margin)."""
        thresholds = fr_thresholds(working)
        height, width = working.shape[:2]
        margin = int(math.ceil(4 * max(self.params.fr_context_sigmas + self.params.fr_sigmas)))
        for r0 in range(0, height, FR_TILE):
            for c0 in range(0, width, FR_TILE):
                r1, c1 = min(r0 + FR_TILE, height), min(c0 + FR_TILE, width)
                pr0, pc0 = max(r0 - margin, 0), max(c0 - margin, 0)
                pr1, pc1 = min(r1 + margin, height), min(c1 + margin, width)
                feats = fr_pixel_features(working[pr0:pr1, pc0:pc1], self.params, thresholds)
                yield r0, r1, c0, c1, feats[r0 - pr0:r1 - pr0, c0 - pc0:c1 - pc0]

    def samples(self, image: np.ndarray, fr_mask: np.ndarray, diameter: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Class-balanced pixel samples ``(X, y)`` of one section (up to
        ``fr_samples_per_class`` folded and as many other pixels)."""
        working, _ = working_image(image, diameter)
        target = _downsample_mask(np.asarray(fr_mask) > 0, working.shape[:2])
        n = self.params.fr_samples_per_class
        n_features = len(fr_feature_names(self.params))
        chosen, values = [], []
        for value in (True, False):
            pool = np.flatnonzero(target.ravel() == value)
            if pool.size:
                pick = np.sort(rng.choice(pool, min(n, pool.size), replace=False))
                chosen.append(pick)
                values.append(np.full(pick.size, value))
        if not chosen:
            return np.zeros((0, n_features), np.float32), np.zeros(0, bool)
        index = np.concatenate(chosen)
        y = np.concatenate(values)
        rows, cols = np.divmod(index, working.shape[1])
        x = np.zeros((index.size, n_features), np.float32)
        for r0, r1, c0, c1, feats in self._tiles(working):
            inside = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
            x[inside] = feats[rows[inside] - r0, cols[inside] - c0]
        return x, y

    def fit(self, sections, diameters: dict | None = None) -> "FoldedRegionClassifier":
        """Train on sections with an ``fr`` mask (sections without one are skipped)."""
        rng = np.random.default_rng(self.params.seed)
        xs, ys = [], []
        for section in sections:
            if not section.has("fr"):
                log.warning("%s: no folded-region mask; not used to train the FR classifier",
                            section.key)
                continue
            diameter = (diameters or {}).get(section.key)
            if diameter is None:
                diameter = fibre_diameter(section.mask("myofibres"), section.modality) \
                    if section.has("myofibres") else DEFAULT_DIAMETER.get(section.modality, 34.0)
            x, y = self.samples(section.image(), section.mask("fr"), diameter, rng)
            xs.append(x)
            ys.append(y)
        x = np.concatenate(xs) if xs else np.zeros((0, len(fr_feature_names(self.params))))
        y = np.concatenate(ys) if ys else np.zeros(0, bool)
        return self.fit_samples(x, y)

    def fit_samples(self, x: np.ndarray, y: np.ndarray) -> "FoldedRegionClassifier":
        self.n_samples = int(len(y))
        self.model, self.constant = None, None
        if len(y) == 0 or y.all() or not y.any():
            self.constant = float(np.mean(y)) if len(y) else 0.0
            log.warning("FR classifier: training pixels of one class only (%d); it predicts a "
                        "constant", len(y))
            return self
        self.model = self._estimator()
        with _threads(self.params.n_jobs):
            self.model.fit(x, y)
        return self

    def predict_proba(self, image: np.ndarray, diameter: float) -> np.ndarray:
        """Folded-region probability at the working scale, ``(h, w)`` float32."""
        if not self.fitted:
            raise NotTrainedError("FR classifier is not trained: train it with train_models() "
                                  "/ CurationModels.fit() or load it with CurationModels.load()")
        working, _ = working_image(image, diameter)
        if self.constant is not None:
            return np.full(working.shape[:2], self.constant, np.float32)
        stride = max(1, int(self.params.fr_stride))
        height, width = working.shape[:2]
        proba = np.zeros(((height + stride - 1) // stride, (width + stride - 1) // stride),
                         np.float32)
        with _threads(self.params.n_jobs):
            for r0, r1, c0, c1, feats in self._tiles(working):
                # tiles start at multiples of FR_TILE (a multiple of the stride)
                grid = feats[::stride, ::stride]
                proba[r0 // stride:r0 // stride + grid.shape[0],
                      c0 // stride:c0 // stride + grid.shape[1]] = self.model.predict_proba(
                          grid.reshape(-1, grid.shape[-1]))[:, 1].reshape(grid.shape[:2])
        if stride > 1:
            from skimage.transform import resize

            proba = resize(proba, working.shape[:2], order=1, mode="edge").astype(np.float32)
        return proba

    def postprocess(self, proba: np.ndarray) -> np.ndarray:
        """Smooth, threshold, drop regions under ``fr_min_area`` fibres and fill holes."""
        p = self.params
        smooth = ndi.gaussian_filter(proba.astype(np.float32), p.fr_smooth) if p.fr_smooth > 0 \
            else proba
        mask = smooth > p.fr_threshold
        if mask.any():
            mask = ndi.binary_fill_holes(mask)
            regions, n = ndi.label(mask)
            min_area = p.fr_min_area * math.pi * (WORKING_DIAMETER / 2) ** 2
            sizes = np.bincount(regions.ravel())
            small = sizes < min_area
            small[0] = True
            mask = ~small[regions]
        return mask

    def predict(self, image: np.ndarray, diameter: float) -> np.ndarray:
        """Folded-region mask ``(H, W)`` bool at full resolution."""
        image = _as_rgb(image)
        mask = self.postprocess(self.predict_proba(image, diameter))
        return _resize_mask(mask, image.shape[:2])


# ============================================================================ models
MODEL_FILES = {"ntm": "ntm.joblib", "fam": "fam.joblib", "fr": "fr.joblib"}


def training_tables(section, overlap: float = 0.5) -> dict:
    """Per-fibre feature tables of a section's ground-truth myofibres with their targets.

    Returns ``{"ntm": DataFrame, "fam": DataFrame, "diameter": float}``; each table has a
    ``section`` column and, when the section has the class mask, a bool ``target`` column
    (a fibre is in the class when more than ``overlap`` of its area is in the mask).
    """
    labels = section.mask("myofibres")
    diameter = fibre_diameter(labels, section.modality)
    ntm_t = ntm_features(labels)
    fam_t = fam_features(section.image(), labels, diameter)
    for table, role in ((ntm_t, "ntm"), (fam_t, "fam")):
        table.insert(0, "section", section.key)
        if section.has(role):
            table["target"] = class_flags(labels, section.mask(role), overlap).to_numpy()
    return {"ntm": ntm_t, "fam": fam_t, "diameter": diameter}


def _concat(tables, columns) -> pd.DataFrame:
    if not tables:
        return pd.DataFrame({c: pd.Series([], dtype=bool if c == "target" else "float64")
                             for c in columns})
    return pd.concat(tables, ignore_index=True)


def cross_validate(tables: pd.DataFrame, kind: str = "fam", params: CurationParams | None = None,
                   n_splits: int = 5) -> pd.DataFrame:
    """Grouped (by section) cross-validation of the FAM or NTM fibre classifier.

    Parameters
    ----------
    tables : DataFrame
        Concatenated :func:`training_tables` tables of one kind (``section`` and ``target``
        columns), e.g. of the train and validation splits.
    kind : {"fam", "ntm"}
    n_splits : int
        Folds (at most the number of sections); sections are never split across folds.

    Returns
    -------
    DataFrame
        One row per fold and a pooled row (``fold == "all"``): ``sections``, ``positive``,
        ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``.
    """
    from sklearn.model_selection import GroupKFold

    params = params or CurationParams()
    if kind not in ("fam", "ntm"):
        raise ValueError(f"kind must be 'fam' or 'ntm', got {kind!r}")
    features = FAM_FEATURES if kind == "fam" else NTM_FEATURES
    threshold = params.fam_threshold if kind == "fam" else params.ntm_threshold
    groups = tables["section"].to_numpy()
    n_splits = min(n_splits, len(np.unique(groups)))
    if n_splits < 2:
        raise ValueError("cross-validation needs fibres from at least two sections")
    y = tables["target"].astype(bool).to_numpy()
    predicted = np.zeros(len(y), bool)
    rows = []
    for fold, (train, test) in enumerate(GroupKFold(n_splits=n_splits).split(tables, y, groups)):
        clf = FibreClassifier(kind.upper(), features, seed=params.seed,
                              n_estimators=params.n_estimators,
                              min_samples_leaf=params.min_samples_leaf, threshold=threshold,
                              n_jobs=params.n_jobs)
        clf.fit(tables.iloc[train], y[train])
        predicted[test] = clf.predict(tables.iloc[test])
        if kind == "ntm" and "skipped" in tables:
            predicted[test] |= tables["skipped"].iloc[test].astype(bool).to_numpy()
        tp = int((y[test] & predicted[test]).sum())
        fp = int((~y[test] & predicted[test]).sum())
        fn = int((y[test] & ~predicted[test]).sum())
        rows.append({"fold": str(fold), "sections": ", ".join(sorted(set(groups[test]))),
                     "positive": int(y[test].sum()), "tp": tp, "fp": fp, "fn": fn,
                     **dict(zip(("precision", "recall", "f1"), prf(tp, fp, fn)))})
    tp, fp, fn = (int((y & predicted).sum()), int((~y & predicted).sum()),
                  int((y & ~predicted).sum()))
    rows.append({"fold": "all", "sections": f"{len(np.unique(groups))} sections",
                 "positive": int(y.sum()), "tp": tp, "fp": fp, "fn": fn,
                 **dict(zip(("precision", "recall", "f1"), prf(tp, fp, fn)))})
    return pd.DataFrame(rows)


class CurationModels:
    """The three learned curation models (NTM, FAM, FR) with their parameters.

    >>> models = CurationModels()
    >>> models.fitted
    False
    """

    def __init__(self, params: CurationParams | None = None):
        self.params = params or CurationParams()
        p = self.params
        self.ntm = FibreClassifier("NTM", NTM_FEATURES, seed=p.seed, n_estimators=p.n_estimators,
                                   min_samples_leaf=p.min_samples_leaf, threshold=p.ntm_threshold,
                                   n_jobs=p.n_jobs)
        self.fam = FibreClassifier("FAM", FAM_FEATURES, seed=p.seed, n_estimators=p.n_estimators,
                                   min_samples_leaf=p.min_samples_leaf, threshold=p.fam_threshold,
                                   n_jobs=p.n_jobs)
        self.fr = FoldedRegionClassifier(p)
        self.train_ids: list[str] = []
        self.info: dict = {}
        self.path: Path | None = None

    @property
    def fitted(self) -> bool:
        return self.ntm.fitted and self.fam.fitted and self.fr.fitted

    def require_fitted(self) -> None:
        for name in ("ntm", "fam", "fr"):
            if not getattr(self, name).fitted:
                raise NotTrainedError(f"the {name.upper()} curation classifier is not trained: "
                                      "train with train_models() / CurationModels.fit() or load "
                                      "with CurationModels.load()")

    def fit(self, sections) -> "CurationModels":
        """Train all three models on ``sections`` (each needs ``image`` and ``myofibres``;
        ``ntm``, ``fam`` and ``fr`` masks label the targets)."""
        sections = list(sections)
        if not sections:
            raise CurationError("no training sections: the dataset's train split is empty")
        start = time.perf_counter()
        self.train_ids = sorted(s.key for s in sections)
        ntm_tables, fam_tables, diameters = [], [], {}
        for section in sections:
            tables = training_tables(section, self.params.class_overlap)
            diameters[section.key] = tables["diameter"]
            if "target" in tables["ntm"]:
                ntm_tables.append(tables["ntm"])
            else:
                log.warning("%s: no NTM mask; not used to train the NTM classifier", section.key)
            if "target" in tables["fam"]:
                fam_tables.append(tables["fam"])
            else:
                log.warning("%s: no FAM mask; not used to train the FAM classifier", section.key)
        ntm_all = _concat(ntm_tables, [*NTM_FEATURES, "target"])
        fam_all = _concat(fam_tables, [*FAM_FEATURES, "target"])
        self.ntm.fit(ntm_all, ntm_all["target"].astype(bool))
        self.fam.fit(fam_all, fam_all["target"].astype(bool))
        self.fr.fit(sections, diameters)
        self.info = {"train": self.train_ids, "ntm_fibres": self.ntm.n_train,
                     "ntm_positive": self.ntm.n_positive, "fam_fibres": self.fam.n_train,
                     "fam_positive": self.fam.n_positive, "fr_pixels": self.fr.n_samples,
                     "seconds": round(time.perf_counter() - start, 2)}
        log.info("curation models trained on %d sections in %.1f s", len(sections),
                 self.info["seconds"])
        return self

    # -- persistence -----------------------------------------------------------------------
    def save(self, folder) -> Path:
        """Write the models (joblib) and ``model.json`` into ``folder`` (atomically per file)."""
        import joblib

        from .io import atomic_path

        self.require_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, filename in MODEL_FILES.items():
            with atomic_path(folder / filename) as tmp:
                joblib.dump(getattr(self, name), tmp)
        import sklearn

        write_text(folder / "model.json", json.dumps({
            "name": "curation", "params": self.params.key(), "info": self.info,
            "sklearn": sklearn.__version__}, indent=2, default=str))
        self.path = folder
        return folder

    @classmethod
    def load(cls, folder) -> "CurationModels":
        """Read models written by :meth:`save`."""
        import joblib

        folder = Path(folder)
        marker = folder / "model.json"
        if not marker.is_file():
            raise DataError(f"{folder}: no curation models here (expected model.json and "
                            f"{', '.join(MODEL_FILES.values())}); train with train_models()")
        meta = json.loads(marker.read_text())
        params = _params_from_dict(meta.get("params", {}))
        models = cls(params)
        for name, filename in MODEL_FILES.items():
            path = folder / filename
            try:
                setattr(models, name, joblib.load(path))
            except Exception as error:  # joblib/pickle raise many types for bad files
                raise DataError(f"{path}: cannot load the {name.upper()} model ({error}); delete "
                                "the folder to retrain") from error
        models.info = meta.get("info", {})
        models.train_ids = list(models.info.get("train", []))
        models.path = folder
        return models


def _params_from_dict(values: dict) -> CurationParams:
    fields = {f.name for f in dataclasses.fields(CurationParams)}
    kept = {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in fields}
    return CurationParams(**kept)


def models_key(sections, params: CurationParams) -> str:
    """Hash of the parameters and the training sections (ids and file sizes)."""
    payload = {"params": params.key(), "train": sorted((_file_facts(s) for s in sections),
                                                       key=lambda f: f[0]), "version": 1}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def models_dir(workdir, sections, params: CurationParams | None = None) -> Path:
    """``<workdir>/models/curation-<hash>/`` for these training sections and parameters."""
    params = params or CurationParams()
    return Path(workdir) / "models" / f"curation-{models_key(list(sections), params)}"


def train_models(sections, workdir="data", params: CurationParams | None = None,
                 force: bool = False, cache: bool = True) -> CurationModels:
    """Train the curation models on ``sections`` (the train split), or load them from cache.

    Parameters
    ----------
    sections : iterable of Section (or :class:`ArraySection`)
    workdir : path-like
        Models are cached in ``<workdir>/models/curation-<hash>/``.
    params : CurationParams, optional
    force : bool
        Retrain even when a cached model exists.
    cache : bool
        Write (and read) the cache; False trains in memory only.
    """
    params = params or CurationParams()
    sections = list(sections)
    folder = models_dir(workdir, sections, params)
    if cache and not force and (folder / "model.json").is_file():
        try:
            models = CurationModels.load(folder)
            log.info("curation models loaded from %s", folder)
            return models
        except DataError as error:
            log.warning("%s; retraining", error)
    models = CurationModels(params).fit(sections)
    if cache:
        models.save(folder)
    return models


# ============================================================================ curation
def classify_fibres(section, myofibres: np.ndarray | None = None,
                    models: CurationModels | None = None, image: np.ndarray | None = None,
                    fr_mask: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Classify every fibre of a section's (ground-truth or predicted) myofibre mask.

    Parameters
    ----------
    section : Section or ArraySection
        Gives the image (and the ground-truth myofibres when ``myofibres`` is None).
    myofibres : (H, W) label image, optional
        Predicted myofibres; default: the section's ground truth.
    models : CurationModels
        Trained models (:func:`train_models`).
    image : (H, W, 3) array, optional
        The section image, when already read.
    fr_mask : (H, W) bool, optional
        A folded-region mask to use instead of predicting one.

    Returns
    -------
    table : DataFrame
        One row per fibre: ``label``, ``area``, ``fr_overlap`` (fraction in the predicted
        FR), ``fr``, ``ntm_rule``, ``ntm_proba``, ``ntm``, ``fam_proba``, ``fam`` (raw
        decisions of each classifier) and ``analysable`` (none of fr, ntm, fam).
    fr : (H, W) bool
        The folded-region mask.
    """
    if models is None:
        raise NotTrainedError("curation needs trained models: pass models=train_models(...)")
    models.require_fitted()
    image = _as_rgb(section.image() if image is None else image)
    labels = section.mask("myofibres") if myofibres is None else myofibres
    labels = _check_mask(labels, image)
    diameter = fibre_diameter(labels, getattr(section, "modality", None))
    if fr_mask is None:
        fr_mask = models.fr.predict(image, diameter)
    fr_mask = np.asarray(fr_mask) > 0
    ntm_t = ntm_features(labels)
    fam_t = fam_features(image, labels, diameter)
    ids = ntm_t["label"].to_numpy(np.int64)
    table = pd.DataFrame({"label": ids})
    table["area"] = np.bincount(labels.ravel())[ids] if ids.size else np.zeros(0, np.int64)
    table["fr_overlap"] = _fraction_inside(labels, fr_mask, ids) if ids.size else np.zeros(0)
    table["fr"] = table["fr_overlap"] > models.params.fr_overlap
    table["ntm_rule"] = ntm_t["ntm_rule"].to_numpy(bool)
    table["ntm_proba"] = models.ntm.predict_proba(ntm_t)
    table["ntm"] = (table["ntm_proba"] >= models.ntm.threshold) | ntm_t["skipped"].to_numpy(bool)
    table["fam_proba"] = models.fam.predict_proba(fam_t)
    table["fam"] = table["fam_proba"] >= models.fam.threshold
    table["analysable"] = ~(table["fr"] | table["ntm"] | table["fam"])
    return table, fr_mask


def masks_from_table(labels: np.ndarray, table: pd.DataFrame, fr_mask: np.ndarray,
                     ntm_column: str = "ntm") -> dict[str, np.ndarray]:
    """Curated masks from a per-fibre table (:func:`classify_fibres`).

    Class masks are exclusive in the workflow's order: a fibre in a folded region is only in
    ``fr_fibres``; an NTM fibre is not also FAM. ``ntm_rule`` shows the published rule's
    flags (outside folded regions). Instance masks keep the myofibre ids.

    ``analysable`` = myofibres minus ``fr_fibres``, ``ntm`` (``ntm_column``) and ``fam``.
    """
    labels = np.asarray(labels)
    n = int(labels.max()) + 1 if labels.size else 1
    ids = table["label"].to_numpy(np.int64)

    def lookup(flags) -> np.ndarray:
        keep = np.zeros(n, bool)
        keep[ids[np.asarray(flags, bool)]] = True
        return keep

    fr = lookup(table["fr"])
    ntm = lookup(table[ntm_column]) & ~fr
    ntm_rule_ = lookup(table["ntm_rule"]) & ~fr
    fam = lookup(table["fam"]) & ~fr & ~ntm
    fibre = lookup(np.ones(len(table), bool))
    analysable = fibre & ~fr & ~ntm & ~fam
    dtype = labels.dtype if labels.dtype.kind == "u" else np.uint32

    def keep(flags):
        return np.where(flags[labels], labels, 0).astype(dtype)

    am_vs_nam = np.where(labels > 0, np.where(analysable[labels], AM_CLASS, NAM_CLASS), 0)
    return {
        "myofibres": labels,
        "fr": np.asarray(fr_mask, bool).astype(np.uint8),
        "fr_fibres": keep(fr),
        "ntm": keep(ntm),
        "ntm_rule": keep(ntm_rule_),
        "fam": keep(fam),
        "analysable": keep(analysable),
        "am_vs_nam": am_vs_nam.astype(np.uint8),
    }


def curate(section, myofibres: np.ndarray | None = None, models: CurationModels | None = None,
           ntm: str = "learned") -> dict[str, np.ndarray]:
    """Curate one section: folded regions, NTM, FAM and the analysable myofibres.

    Parameters
    ----------
    section : Section or ArraySection
    myofibres : (H, W) label image, optional
        Predicted myofibres; default: the section's ground-truth myofibres.
    models : CurationModels
        Trained models (:func:`train_models`); required.
    ntm : {"learned", "rule"}
        Which NTM decision removes fibres from the analysable mask.

    Returns
    -------
    dict
        :data:`CURATED_ROLES` -> arrays (see :func:`masks_from_table`): ``fr`` (uint8 0/1
        region mask), instance masks ``fr_fibres``, ``ntm``, ``ntm_rule``, ``fam``,
        ``analysable`` (myofibre ids kept) and ``am_vs_nam`` (1 analysable, 2 not).
    """
    if ntm not in ("learned", "rule"):
        raise ValueError(f"ntm must be 'learned' or 'rule', got {ntm!r}")
    image = section.image()
    labels = section.mask("myofibres") if myofibres is None else myofibres
    table, fr_mask = classify_fibres(section, labels, models, image=image)
    return masks_from_table(labels, table, fr_mask,
                            ntm_column="ntm" if ntm == "learned" else "ntm_rule")


# ============================================================================ evaluation
def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 (NaN when undefined).

    >>> prf(8, 2, 2)
    (0.8, 0.8, 0.8)
    """
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    if tp == 0 and (fp or fn):
        f1 = 0.0
    else:
        f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else math.nan
    return precision, recall, f1


def match_fibres(gt: np.ndarray, pred: np.ndarray, rule: str = "centroid") -> pd.DataFrame:
    """Match ground-truth fibres to predicted fibres.

    ``rule="centroid"``: the paper's rule (:func:`nclsm_utils.metrics.evaluate`: the predicted
    fibre containing the GT fibre's centroid); ``"iou"``: the predicted fibre with IoU > 0.5
    (unique when it exists). Returns ``gt_id``, ``pred_id`` (0 = none) and ``iou``.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if rule == "centroid":
        from .metrics import evaluate

        table = evaluate(gt, pred)
        return table[["gt_id", "pred_id", "iou"]].reset_index(drop=True)
    if rule != "iou":
        raise ValueError(f"rule must be 'centroid' or 'iou', got {rule!r}")
    gt_ids = np.unique(gt)
    gt_ids = gt_ids[gt_ids > 0]
    if gt_ids.size == 0:
        return pd.DataFrame({"gt_id": pd.Series([], dtype="int64"),
                             "pred_id": pd.Series([], dtype="int64"),
                             "iou": pd.Series([], dtype="float64")})
    both = (gt > 0) & (pred > 0)
    pairs = pd.DataFrame({"gt_id": gt[both].astype(np.int64),
                          "pred_id": pred[both].astype(np.int64)})
    inter = pairs.value_counts().rename("inter").reset_index()
    gt_area = pd.Series(np.bincount(gt.ravel().astype(np.int64)))
    pred_area = pd.Series(np.bincount(pred.ravel().astype(np.int64)))
    inter["iou"] = inter["inter"] / (gt_area[inter["gt_id"]].to_numpy()
                                     + pred_area[inter["pred_id"]].to_numpy() - inter["inter"])
    best = inter[inter["iou"] > 0.5].sort_values("iou", ascending=False).drop_duplicates("gt_id")
    out = pd.DataFrame({"gt_id": gt_ids.astype(np.int64)}).merge(
        best[["gt_id", "pred_id", "iou"]], on="gt_id", how="left")
    out["pred_id"] = out["pred_id"].fillna(0).astype(np.int64)
    out["iou"] = out["iou"].fillna(0.0)
    return out


def _gt_classes(section, gt_labels: np.ndarray, overlap: float) -> pd.DataFrame:
    ids = np.unique(gt_labels)
    out = pd.DataFrame({"gt_id": ids[ids > 0].astype(np.int64)})
    for role in ("ntm", "fam", "analysable"):
        if section.has(role):
            out[f"gt_{role}"] = class_flags(gt_labels, section.mask(role), overlap).to_numpy()
        else:
            out[f"gt_{role}"] = np.nan
    return out


def evaluate_section(section, models: CurationModels, myofibres: np.ndarray | None = None,
                     match: str = "centroid", ntm: str = "learned",
                     with_image_metrics: bool = True) -> dict:
    """Curate one section and score it against its ground-truth masks.

    Returns a dict with ``masks`` (:func:`curate`), ``fibres`` (per predicted fibre:
    the classification plus the matched GT fibre's classes), ``gt_fibres`` (per GT fibre:
    its classes and the matched predicted fibre's decisions), ``fr`` (one row: pixel
    counts and IoU), ``counts`` (Table I counts, predicted and ground truth) and
    ``paper`` (the per-fibre paper metrics of the analysable mask vs the analysable GT).
    """
    from .metrics import evaluate
    from .tables import count_labels, count_regions

    image = section.image()
    gt_labels = section.mask("myofibres")
    use_gt = myofibres is None
    labels = gt_labels if use_gt else _check_mask(myofibres, image)
    table, fr_mask = classify_fibres(section, labels, models, image=image)
    masks = masks_from_table(labels, table, fr_mask,
                             ntm_column="ntm" if ntm == "learned" else "ntm_rule")
    overlap = models.params.class_overlap
    gt_classes = _gt_classes(section, gt_labels, overlap)
    if use_gt:
        matches = pd.DataFrame({"gt_id": gt_classes["gt_id"], "pred_id": gt_classes["gt_id"],
                                "iou": 1.0})
    else:
        matches = match_fibres(gt_labels, labels, match)
    decisions = table[["label", "fr", "ntm_rule", "ntm", "fam", "analysable"]].rename(
        columns={"label": "pred_id"})
    gt_fibres = gt_classes.merge(matches, on="gt_id", how="left").merge(
        decisions, on="pred_id", how="left")
    gt_fibres["pred_id"] = gt_fibres["pred_id"].fillna(0).astype(np.int64)
    gt_fibres["matched"] = gt_fibres["pred_id"] > 0
    for column in ("fr", "ntm_rule", "ntm", "fam", "analysable"):
        gt_fibres[column] = gt_fibres[column].fillna(False).astype(bool)
    matched_pred = set(gt_fibres.loc[gt_fibres["matched"], "pred_id"].tolist())
    fibres = table.copy()
    fibres["matched_gt"] = fibres["label"].isin(matched_pred)
    gt_fibres.insert(0, "section", section.id)
    gt_fibres.insert(0, "modality", section.modality)
    fibres.insert(0, "section", section.id)
    fibres.insert(0, "modality", section.modality)

    gt_fr = section.mask("fr") > 0 if section.has("fr") else None
    fr_row = {"modality": section.modality, "section": section.id,
              "pred_pixels": int(fr_mask.sum()),
              "gt_pixels": int(gt_fr.sum()) if gt_fr is not None else np.nan}
    if gt_fr is not None:
        inter = int((gt_fr & fr_mask).sum())
        union = int((gt_fr | fr_mask).sum())
        fr_row.update(intersection=inter, union=union,
                      iou=inter / union if union else np.nan)
    else:
        fr_row.update(intersection=np.nan, union=np.nan, iou=np.nan)

    def gt_count(role):
        return count_labels(section.mask(role)) if section.has(role) else np.nan

    counts = []
    for name, predicted, truth in (
            ("myofibres", count_labels(labels), count_labels(gt_labels)),
            ("analysable", count_labels(masks["analysable"]), gt_count("analysable")),
            ("non-transverse", count_labels(masks["ntm"]), gt_count("ntm")),
            ("freezing artefact", count_labels(masks["fam"]), gt_count("fam")),
            ("folded regions", count_regions(masks["fr"]),
             count_regions(section.mask("fr")) if section.has("fr") else np.nan)):
        counts.append({"modality": section.modality, "section": section.id, "class": name,
                       "predicted": predicted, "ground_truth": truth})
    paper = pd.DataFrame()
    if section.has("analysable"):
        gt_am = section.mask("analysable")
        if with_image_metrics:
            paper = evaluate(gt_am, masks["analysable"], image, section.half_width
                             if hasattr(section, "half_width") else _half_width(section.modality))
        else:
            paper = evaluate(gt_am, masks["analysable"])
        paper.insert(0, "section", section.id)
        paper.insert(0, "modality", section.modality)
    return {"masks": masks, "fibres": fibres, "gt_fibres": gt_fibres,
            "fr": pd.DataFrame([fr_row]), "counts": pd.DataFrame(counts), "paper": paper}


def _half_width(modality: str) -> int:
    from .dataset import HALF_WIDTH

    return HALF_WIDTH.get(modality, 2)


def class_scores(gt_fibres: pd.DataFrame, fibres: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-class precision / recall / F1, per section and pooled (``section == "all"``).

    Over the ground-truth fibres: a GT fibre of a class is a true positive when its matched
    predicted fibre is flagged, a false negative otherwise (also when the segmenter did not
    detect it: ``fn_undetected`` counts those); a GT fibre outside the class whose matched
    predicted fibre is flagged is a false positive.
    ``unmatched_flagged`` counts flagged predicted fibres matched by no GT fibre (spurious
    fibres; not in the precision), from ``fibres`` when given.
    """
    rows = []
    groups = [((m, s), g) for (m, s), g in gt_fibres.groupby(["modality", "section"], sort=False)]
    groups.append((("all", "all"), gt_fibres))
    for (modality, section_id), group in groups:
        for column, role in CLASS_COLUMNS.items():
            truth_col = f"gt_{role}"
            if truth_col not in group or group[truth_col].isna().all():
                continue
            truth = group[truth_col].astype(bool).to_numpy()
            pred = group[column].astype(bool).to_numpy()
            tp = int((truth & pred).sum())
            fp = int((~truth & pred).sum())
            fn = int((truth & ~pred).sum())
            precision, recall, f1 = prf(tp, fp, fn)
            detected = group["matched"].astype(bool).to_numpy() if "matched" in group \
                else np.ones(len(group), bool)
            row = {"modality": modality, "section": section_id, "class": CLASS_NAMES[column],
                   "gt_positive": int(truth.sum()), "pred_positive": int(pred.sum()),
                   "tp": tp, "fp": fp, "fn": fn, "fn_undetected": int((truth & ~detected).sum()),
                   "precision": precision, "recall": recall, "f1": f1}
            if fibres is not None and column in fibres:
                chosen = fibres if section_id == "all" else fibres[
                    (fibres["modality"] == modality) & (fibres["section"] == section_id)]
                row["unmatched_flagged"] = int((chosen[column].astype(bool)
                                                & ~chosen["matched_gt"]).sum())
            rows.append(row)
    return pd.DataFrame(rows)


def fr_scores(fr_rows: pd.DataFrame) -> pd.DataFrame:
    """FR pixel IoU per section plus the pooled row (``section == "all"``) over sections
    with ground-truth folded regions; ``false_positive_pixels`` on sections without."""
    table = fr_rows.copy()
    has_fr = table["gt_pixels"].fillna(0) > 0
    pooled = table[has_fr]
    inter = float(pooled["intersection"].sum())
    union = float(pooled["union"].sum())
    total = {"modality": "all", "section": "all", "pred_pixels": int(table["pred_pixels"].sum()),
             "gt_pixels": float(table["gt_pixels"].sum()), "intersection": inter, "union": union,
             "iou": inter / union if union else np.nan,
             "sections_with_fr": int(has_fr.sum())}
    table["sections_with_fr"] = has_fr.astype(int)
    table["false_positive_pixels"] = np.where(has_fr, np.nan, table["pred_pixels"])
    total["false_positive_pixels"] = float(table.loc[~has_fr, "pred_pixels"].sum())
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def counts_table(counts: pd.DataFrame) -> pd.DataFrame:
    """Add per-modality and total rows (``section == "all"``) to per-section Table I counts."""
    parts = [counts]
    for modality, group in counts.groupby("modality", sort=False):
        summed = group.groupby("class", sort=False)[["predicted", "ground_truth"]].sum(min_count=1)
        parts.append(summed.reset_index().assign(modality=modality, section="all"))
    summed = counts.groupby("class", sort=False)[["predicted", "ground_truth"]].sum(min_count=1)
    parts.append(summed.reset_index().assign(modality="all", section="all"))
    out = pd.concat(parts, ignore_index=True)[["modality", "section", "class", "predicted",
                                               "ground_truth"]]
    out["difference"] = out["predicted"] - out["ground_truth"]
    return out


def paper_summary(paper: pd.DataFrame) -> pd.DataFrame:
    """Paper summary (:func:`nclsm_utils.metrics.summarise`) per modality and overall."""
    from .metrics import summarise

    if paper.empty:
        return pd.DataFrame()
    rows = []
    for modality, group in list(paper.groupby("modality", sort=False)) + [("all", paper)]:
        summary = summarise(group)
        summary.insert(0, "sections", ", ".join(dict.fromkeys(group["section"])))
        summary.insert(0, "modality", modality)
        rows.append(summary)
    return pd.concat(rows, ignore_index=True)


def load_myofibres(section, method: str, workdir="data") -> np.ndarray | None:
    """Myofibres of ``method`` for ``section``: None for ``"gt"`` (ground truth), else the
    cached prediction ``<workdir>/predictions/<method>/<modality>_<id>.tiff`` (or the masks
    of ``external:<folder>``)."""
    from .dataset import as_labels

    if method == "gt":
        return None
    if method.startswith("external:"):
        from .segmenters import get_segmenter

        return get_segmenter(method, workdir=workdir).predict_section(section)
    path = Path(workdir) / "predictions" / method / f"{section.modality}_{section.id}.tiff"
    if not path.is_file():
        raise DataError(f"{path}: no cached prediction of method {method!r} for section "
                        f"{section.key}; run `nclsm segment --method {method} --data <data>` "
                        "first (or use --method gt for the ground-truth myofibres)")
    labels = as_labels(read_array(path), path)
    expected = tuple(section.shape())
    if labels.shape != expected:
        raise DataError(f"{path}: prediction shape {labels.shape} does not match section "
                        f"{section.key} {expected}")
    return labels


def evaluate_curation_methods(dataset, methods, workdir="data", split: str = "test",
                              models: CurationModels | None = None, scheduler=None,
                              workers: int | None = None, **options) -> tuple[dict, dict]:
    """:func:`evaluate_curation` for several methods, one Dask task per method when a
    scheduler is given or ``workers > 1`` (defaults: ``$NCLSM_SCHEDULER`` / ``$NCLSM_WORKERS``,
    see :func:`nclsm_utils.distributed.dask_settings`); else one after the other here.

    Parameters
    ----------
    dataset : Dataset
    methods : sequence of str
        ``"gt"`` and/or segmentation methods with cached predictions.
    models : CurationModels, optional
        Default: :func:`train_models` on the train split (cached), trained here once.
    options
        Passed to :func:`evaluate_curation` (``match``, ``ntm``, ``write``, ``params``).

    Returns
    -------
    (results, errors)
        ``results``: method -> the dict of tables :func:`evaluate_curation` returns (in the
        order of ``methods``); ``errors``: method -> ``"ErrorType: message"`` for a method
        that could not be curated at all (e.g. no cached predictions). The tables are the
        same wherever the tasks run.
    """
    from .distributed import dask_client, dask_settings

    methods = list(dict.fromkeys(str(m) for m in methods))
    if models is None:
        models = train_models(dataset.sections(split="train"), workdir=workdir,
                              params=options.get("params"))
    root = str(Path(dataset.root).resolve())
    workdir = str(Path(workdir).resolve())
    args = [(root, dict(dataset.role_overrides), dict(dataset.splits), method, workdir, split,
             options) for method in methods]
    scheduler, workers = dask_settings(scheduler, workers)
    with dask_client(scheduler, workers) as client:
        if client is None:
            outcomes = [_curate_method(*a, models=models, dataset=dataset) for a in args]
        else:
            shared = client.scatter(models, broadcast=True)
            futures = [client.submit(_curate_method, *a, models=shared, pure=False)
                       for a in args]
            outcomes = client.gather(futures)
    results = {m: out for m, (out, error) in zip(methods, outcomes) if error is None}
    errors = {m: error for m, (out, error) in zip(methods, outcomes) if error is not None}
    return results, errors


def _curate_method(root, roles, splits, method, workdir, split, options, models, dataset=None):
    """One method's :func:`evaluate_curation` (on a worker: the dataset is opened there);
    ``(result, None)`` or ``(None, "ErrorType: message")``."""
    from .dataset import Dataset

    try:
        dataset = dataset or Dataset(root, roles=roles or None, splits=splits)
        return evaluate_curation(dataset, method, workdir=workdir, split=split, models=models,
                                 **options), None
    except Exception as error:  # noqa: BLE001 - reported per method, the others go on
        return None, f"{type(error).__name__}: {' '.join(str(error).split())}"


def evaluate_curation(dataset, method: str = "gt", workdir="data", split: str = "test",
                      models: CurationModels | None = None,
                      params: CurationParams | None = None, match: str = "centroid",
                      ntm: str = "learned", write: bool = False,
                      progress: bool = False) -> dict[str, pd.DataFrame]:
    """Curate a split with ground-truth or predicted myofibres and score it.

    Parameters
    ----------
    dataset : Dataset
    method : str
        ``"gt"`` (ground-truth myofibres) or a segmentation method whose predictions are
        cached in ``<workdir>/predictions/<method>/`` (by ``nclsm segment``).
    workdir : path-like
        Holds ``models/`` and ``predictions/``; curated masks and tables go to
        ``<workdir>/curation/<method>/`` when ``write``.
    split : str
        Sections to curate (``test`` by default; ``all`` for every section).
    models : CurationModels, optional
        Default: :func:`train_models` on the dataset's train split (cached).
    match : {"centroid", "iou"}
        How predicted fibres are matched to GT fibres (ignored for ``"gt"``).
    ntm : {"learned", "rule"}
        Which NTM decision removes fibres from the analysable mask.
    write : bool
        Write the curated masks (``<role>/<modality>_<id>.tiff``) and the tables (csv).

    Returns
    -------
    dict of tidy DataFrames
        ``classes`` (per class and section, plus pooled rows: tp/fp/fn, precision, recall,
        F1), ``fr`` (FR pixel IoU per section plus pooled), ``counts`` (Table I counts,
        predicted vs ground truth, per section, modality and total), ``paper`` (per-fibre
        paper metrics of the analysable mask vs the analysable GT), ``paper_summary``
        (per modality and overall), ``fibres`` (per predicted fibre decisions),
        ``gt_fibres`` (per GT fibre classes and matched decisions), ``errors`` (sections
        that failed, with the message).
    """
    from tqdm.auto import tqdm

    if split == "all":
        sections = dataset.sections()
    else:
        sections = dataset.sections(split=split)
    if not sections:
        raise DataError(f"{dataset.root}: no sections in the {split!r} split")
    if models is None:
        models = train_models(dataset.sections(split="train"), workdir=workdir, params=params)
    out_dir = Path(workdir) / "curation" / method.replace(":", "-").replace("/", "-")
    parts: dict[str, list] = {k: [] for k in ("fibres", "gt_fibres", "fr", "counts", "paper")}
    errors = []
    for section in tqdm(sections, desc=f"curate {method}", disable=not progress):
        try:
            myofibres = load_myofibres(section, method, workdir)
            result = evaluate_section(section, models, myofibres, match=match, ntm=ntm)
        except (DataError, ValueError, OSError) as error:
            log.error("%s: curation failed: %s", section.key, error)
            errors.append({"modality": section.modality, "section": section.id,
                           "error": f"{type(error).__name__}: {error}"})
            continue
        for key in parts:
            parts[key].append(result[key])
        if write:
            for role in ("fr", "fr_fibres", "ntm", "ntm_rule", "fam", "analysable", "am_vs_nam"):
                write_tiff(out_dir / role / f"{section.modality}_{section.id}.tiff",
                           result["masks"][role])
            write_csv(out_dir / "fibres" / f"{section.modality}_{section.id}.csv",
                      result["fibres"])
    frames = {k: (pd.concat(v, ignore_index=True) if v else pd.DataFrame())
              for k, v in parts.items()}
    result = {
        "classes": class_scores(frames["gt_fibres"], frames["fibres"]) if len(frames["gt_fibres"])
        else pd.DataFrame(),
        "fr": fr_scores(frames["fr"]) if len(frames["fr"]) else pd.DataFrame(),
        "counts": counts_table(frames["counts"]) if len(frames["counts"]) else pd.DataFrame(),
        "paper": frames["paper"],
        "paper_summary": paper_summary(frames["paper"]),
        "fibres": frames["fibres"],
        "gt_fibres": frames["gt_fibres"],
        "errors": pd.DataFrame(errors, columns=["modality", "section", "error"]),
    }
    for frame in ("classes", "paper_summary"):
        if len(result[frame]):
            result[frame].insert(0, "method", method)
    if write:
        for name in ("classes", "fr", "counts", "paper", "paper_summary", "gt_fibres", "errors"):
            write_csv(out_dir / f"{name}.csv", result[name])
        write_text(out_dir / "models.json", json.dumps(
            {"models": str(models.path) if models.path else None, "params": models.params.key(),
             "info": models.info, "method": method, "split": split, "match": match, "ntm": ntm},
            indent=2, default=str))
    return result
