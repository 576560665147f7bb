"""The curation classifiers: per-fibre NTM / FAM forests and the folded-region classifier.

Also their parameters (:class:`CurationParams`), the curation exceptions and the
folded-region working scale and pixel features (:func:`fr_pixel_features`).
"""
from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..core.errors import NclsmError
from ..core.imaging import resize_labels
from ..core.io import available_cores
from .features import DEFAULT_DIAMETER, _as_rgb, fibre_diameter

log = logging.getLogger(__package__)  # the package's logger (nclsm_utils.curation)

#: Fibre diameter (pixels) of the working scale of the folded-region classifier.
WORKING_DIAMETER = 32.0
#: Working-scale tile side for folded-region features (bounds memory on full IF sections;
#: a multiple of any ``fr_stride``).
FR_TILE = 960
#: Largest enlargement to the working scale: fibres under ``WORKING_DIAMETER / 2`` px across
#: (or a segmenter's specks taken for fibres) would otherwise blow a section up many times.
MAX_WORKING_ENLARGEMENT = 2.0


class CurationError(NclsmError, RuntimeError):
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
def _threads(n: int):
    """Limit OpenMP/BLAS threads (gradient boosting oversubscribes shared cores otherwise)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=max(1, int(n)))


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

    Returns ``(array (h, w, 2) float32, factor)`` with ``factor`` = working / full size
    (at most :data:`MAX_WORKING_ENLARGEMENT`).
    """
    image = _as_rgb(image)
    factor = WORKING_DIAMETER / max(float(diameter), 1.0)
    if factor > MAX_WORKING_ENLARGEMENT:
        log.warning("fibre diameter %.1f px: the folded-region classifier enlarges the image "
                    "%.0fx, not %.1fx (pass the section's own fibre size if this is wrong)",
                    diameter, MAX_WORKING_ENLARGEMENT, factor)
        factor = MAX_WORKING_ENLARGEMENT
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


#: Nearest-neighbour resize of a mask (the one label resize, ``core.imaging.resize_labels``).
_resize_mask = resize_labels


def _downsample_mask(mask: np.ndarray, shape) -> np.ndarray:
    """Resize a bool mask to ``shape`` by area fraction > 0.5 (for training targets)."""
    if mask.shape == tuple(shape):
        return mask.astype(bool)
    return _resize_channel(mask.astype(np.uint8) * np.uint8(255), shape) > 127.5


class FoldedRegionClassifier:
    """Pixel classifier of folded regions (doubled, mesh-like membrane) -> region mask.

    Works at a working scale where fibres are :data:`WORKING_DIAMETER` pixels across;
    features from :func:`fr_pixel_features`; a random forest (``fr_model="rf"``) or
    histogram gradient boosting (``"hgb"``) on class-balanced pixel samples. Its
    probability map is smoothed, thresholded, hole-filled and cleaned of small regions
    (:meth:`postprocess`) into the region mask.
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

    def section_samples(self, section, rng: np.random.Generator, diameter: float | None = None,
                        image: np.ndarray | None = None):
        """:meth:`samples` of one section, or None when it has no ``fr`` mask (with a warning).

        ``image`` is the section's image when the caller has already read it (a full-size IF
        section takes seconds to decode); ``diameter`` defaults to its myofibres' own.
        """
        if not section.has("fr"):
            log.warning("%s: no folded-region mask; not used to train the FR classifier",
                        section.key)
            return None
        if diameter is None:
            diameter = fibre_diameter(section.mask("myofibres"), section.modality) \
                if section.has("myofibres") else DEFAULT_DIAMETER.get(section.modality, 34.0)
        return self.samples(section.image() if image is None else image, section.mask("fr"),
                            diameter, rng)

    def fit(self, sections, diameters: dict | None = None) -> "FoldedRegionClassifier":
        """Train on sections with an ``fr`` mask (sections without one are skipped)."""
        rng = np.random.default_rng(self.params.seed)
        samples = [self.section_samples(section, rng, (diameters or {}).get(section.key))
                   for section in sections]
        return self.fit_sections(samples)

    def fit_sections(self, samples) -> "FoldedRegionClassifier":
        """Train on the :meth:`section_samples` of each section (None entries are skipped)."""
        samples = [pair for pair in samples if pair is not None]
        x = np.concatenate([pair[0] for pair in samples]) if samples \
            else np.zeros((0, len(fr_feature_names(self.params))))
        y = np.concatenate([pair[1] for pair in samples]) if samples else np.zeros(0, bool)
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
        # prediction, unlike fitting, gives the same numbers on any number of threads
        with _threads(max(int(self.params.n_jobs), available_cores())):
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
        """Smooth, threshold, fill holes and drop regions under ``fr_min_area`` fibres' area."""
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
