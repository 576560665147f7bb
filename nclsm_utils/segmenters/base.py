"""The shared segmenter interface: params, registry, caches, scaling and tiled prediction.

Every method implements :class:`Segmenter`::

    seg = get_segmenter("unet", workdir="data")
    seg.fit(dataset.sections(split="train"))          # cached under data/models/
    labels = seg.predict(image, modality="IF")        # (H, W) uint32 label image
    labels = seg.predict_section(section)             # cached under data/predictions/<name>/

Work happens at a *working scale* where fibres are about ``target_diameter`` pixels
across: an image is resized by ``target_diameter / fibre_diameter[modality]`` before
prediction and the labels are brought back to full size by a bilinear vote
(:func:`~nclsm_utils.core.imaging.resize_labels` with ``order=1``: each pixel takes the label
of largest bilinear weight, so outlines stay smooth instead of stair-stepped). Big images
are predicted in overlapping tiles whose labels are stitched across tile borders
(:func:`predict_tiled`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from ..core.errors import NclsmError
from ..core.imaging import (DEFAULT_DIAMETER, estimate_diameters,  # noqa: F401 - re-exported
                            normalize_channel, normalize_channels, rescale_image, resize_labels,
                            working_image)
from ..core.io import DataError, read_array, write_text, write_tiff
from ..core.workdir import Workdir

log = logging.getLogger(__name__)

REGISTRY: dict[str, type["Segmenter"]] = {}


class SegmenterError(NclsmError, RuntimeError):
    """A segmenter could not run (missing weights offline, bad checkpoint, ...)."""


class PretrainedUnavailable(SegmenterError):
    """Pretrained weights were requested but cannot be loaded (offline, not cached)."""


#: The methods the benchmark compares, in Table III's order (the one method list: the report's
#: default methods, Table III's rows and the explorer's built-in choices). ``cellpose`` and
#: ``stardist`` are the libraries as their users run them; ``stardist+refine`` is the same
#: StarDist network followed by the toolkit's own post-processing (:mod:`.membrane`).
BENCHMARK_METHODS = ("mitocyto", "cellpose", "stardist", "unet", "stardist+refine")

#: Training budgets (``--budget``): ``quick`` a smoke run; ``report`` the CPU budget of
#: ``make report``; ``full`` each library's documented default training length.
BUDGETS = ("quick", "report", "full")


def budget_name(budget) -> str:
    """A budget name from a budget or the older ``quick`` flag: ``True`` -> ``"quick"``,
    ``False`` / ``None`` -> ``"report"``, a name of :data:`BUDGETS` -> itself.

    >>> budget_name(True), budget_name(False), budget_name("full")
    ('quick', 'report', 'full')
    """
    if budget is None or budget is False:
        return "report"
    if budget is True:
        return "quick"
    name = str(budget).strip().lower()
    if name not in BUDGETS:
        raise ValueError(f"unknown training budget {budget!r}; one of {', '.join(BUDGETS)}")
    return name

#: How a method with optional pretrained weights uses them: ``auto`` when on disk (else it
#: trains from scratch and logs one line), ``require`` (else :class:`PretrainedUnavailable`),
#: ``never``.
PRETRAINED_POLICIES = ("auto", "require", "never")


def method_label(method) -> str:
    """The result-folder name of a method (a name or a :class:`Segmenter`): its name, or
    ``external-<folder name>`` for external masks.

    >>> method_label("unet"), method_label("external:/data/ilastik masks/")
    ('unet', 'external-ilastik masks')
    """
    if isinstance(method, Segmenter):
        return str(getattr(method, "label", method.name))
    method = str(method)
    if method.startswith("external:"):
        return "external-" + Path(method.split(":", 1)[1]).expanduser().resolve().name
    return method


def check_pretrained_policy(method: str, policy: str) -> None:
    """Raise ``ValueError`` unless ``policy`` is one of :data:`PRETRAINED_POLICIES`."""
    if policy not in PRETRAINED_POLICIES:
        raise ValueError(f"{method}: pretrained must be one of {', '.join(PRETRAINED_POLICIES)}, "
                         f"got {policy!r}")


def use_pretrained(policy: str, available: bool, unavailable_message: str, logger) -> bool:
    """Whether pretrained weights will be used under ``policy``.

    ``never``: False. Weights ``available``: True. Otherwise ``require`` raises
    :class:`PretrainedUnavailable` and ``auto`` logs ``unavailable_message`` (one warning line
    on ``logger``, the method's own) and returns False: the method trains from scratch.
    """
    if policy == "never":
        return False
    if available:
        return True
    if policy == "require":
        raise PretrainedUnavailable(unavailable_message + "; or use pretrained='auto' to train "
                                    "from scratch")
    logger.warning("%s; training from scratch on the train split", unavailable_message)
    return False


def register(cls):
    """Class decorator: make a segmenter available by its ``name``."""
    REGISTRY[cls.name] = cls
    return cls


def known_methods() -> list[str]:
    return sorted(REGISTRY) + ["external:<folder>"]


def get_segmenter(name: str, params=None, workdir="data", **kwargs) -> "Segmenter":
    """Look a method up by name (``mitocyto``, ``cellpose``, ``stardist``, ``unet``,
    ``external:<folder>``) and construct it."""
    from . import _load_all  # noqa: F401  (importing the package registers the methods)

    if name.startswith("external:"):
        cls = REGISTRY["external"]
        return cls(folder=name.split(":", 1)[1], params=params, workdir=workdir, **kwargs)
    if name not in REGISTRY:
        raise ValueError(f"unknown segmentation method {name!r}; known methods: "
                         f"{', '.join(known_methods())}")
    return REGISTRY[name](params=params, workdir=workdir, **kwargs)


def default_device() -> str:
    """``"cuda"`` when PyTorch sees a GPU, else ``"cpu"``."""
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


#: ``metadata`` of a Params field used only when predicting (post-processing thresholds,
#: tiling): changing it re-predicts but keeps the trained model (:meth:`Segmenter.model_key`)
PREDICT_ONLY = {"predict_only": True}


@dataclasses.dataclass
class BaseParams:
    """Parameters shared by all methods (lengths in pixels)."""

    #: fibre diameter at which a method works; images are rescaled to it
    target_diameter: float = 36.0
    #: full-resolution fibre diameter per modality; None = estimated from training masks
    fibre_diameter: dict | None = None
    #: working-scale tile side for big images (prediction only)
    tile_size: int = dataclasses.field(default=1024, metadata=PREDICT_ONLY)
    #: working-scale overlap (> the largest fibre)
    tile_overlap: int = dataclasses.field(default=128, metadata=PREDICT_ONLY)
    #: predicted objects smaller than this fraction of a fibre's area (pi d^2 / 4 at the
    #: image's fibre diameter d) are dropped: fragments and debris, not fibres
    min_fibre_fraction: float = dataclasses.field(default=0.1, metadata=PREDICT_ONLY)
    seed: int = 0

    @property
    def fibre_area(self) -> float:
        """Area (px) of a round fibre of ``target_diameter``: pi d^2 / 4 at the working scale."""
        return np.pi * (float(self.target_diameter) / 2) ** 2

    def quick(self):
        """A copy with short training for smoke runs (methods override)."""
        return dataclasses.replace(self)

    def full(self):
        """A copy with the library's documented default training length (methods override;
        the default: as the ``report`` budget)."""
        return dataclasses.replace(self)

    def for_budget(self, budget) -> "BaseParams":
        """This params' copy for a training budget (:data:`BUDGETS`): ``quick`` ->
        :meth:`quick`, ``report`` -> itself, ``full`` -> :meth:`full`."""
        name = budget_name(budget)
        if name == "quick":
            return self.quick()
        if name == "full":
            return self.full()
        return dataclasses.replace(self)

    def training_length(self) -> str:
        """The training length in words (methods that train override)."""
        return "no training"


def predict_only_fields(params) -> list[str]:
    """Names of the fields of a params dataclass marked :data:`PREDICT_ONLY`.

    >>> @dataclasses.dataclass
    ... class P:
    ...     epochs: int = 10
    ...     threshold: float = dataclasses.field(default=0.5, metadata=PREDICT_ONLY)
    >>> predict_only_fields(P())
    ['threshold']
    """
    return [f.name for f in dataclasses.fields(params) if f.metadata.get("predict_only")]


def params_hash(name: str, params, extra: dict | None = None, skip=()) -> str:
    """A short stable hash of a method name, its params dataclass (without the fields named
    in ``skip``) and extra facts."""
    values = dataclasses.asdict(params)
    for field in skip:
        values.pop(field, None)
    payload = {"name": name, "params": values, "extra": extra or {}}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` overlapping by ``overlap`` covering ``length``.

    >>> tile_starts(1000, 400, 100)
    [0, 300, 600]
    """
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def predict_tiled(predict: Callable[[np.ndarray], np.ndarray], image: np.ndarray, tile: int,
                  overlap: int, progress: bool | None = False) -> np.ndarray:
    """Predict a big image in overlapping tiles and stitch the labels.

    Each tile is predicted whole; an object is kept from the tile whose *core* (the tile minus
    half the overlap on inner sides) holds its centroid, so every object that fits in the
    overlap is taken complete from exactly one tile. Kept objects only fill pixels still free;
    one whose free part is under half of it (a duplicate of an object already placed) is
    dropped.

    Parameters
    ----------
    predict : callable
        ``(h, w, C) -> (h, w)`` label image.
    image : (H, W, C) array
    tile, overlap : int
        Tile side and overlap in pixels; ``overlap`` should exceed the largest object.
    progress : bool or None
        Show a tqdm bar over the tiles when there are several (None: when the output is a
        terminal).

    Returns
    -------
    (H, W) uint32 label image with labels 1..N.
    """
    height, width = image.shape[:2]
    if height <= tile and width <= tile:
        return _sequential(predict(image))
    out = np.zeros((height, width), np.uint32)
    next_label = 1
    half = overlap // 2
    row_starts, col_starts = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(row_starts) * len(col_starts), desc="tiles", unit="tile", leave=False,
               disable=None if progress is None else not progress)
    for r in row_starts:
        for c in col_starts:
            bar.update()
            r1, c1 = min(r + tile, height), min(c + tile, width)
            labels = predict(image[r:r1, c:c1])
            core_r0 = 0 if r == 0 else half
            core_c0 = 0 if c == 0 else half
            core_r1 = (r1 - r) if r1 == height else (r1 - r) - half
            core_c1 = (c1 - c) if c1 == width else (c1 - c) - half
            ids = np.unique(labels)
            ids = ids[ids > 0]
            if ids.size == 0:
                continue
            centres = np.asarray(ndimage.center_of_mass(np.ones_like(labels), labels, ids))
            keep = ids[(centres[:, 0] >= core_r0) & (centres[:, 0] < core_r1)
                       & (centres[:, 1] >= core_c0) & (centres[:, 1] < core_c1)]
            if keep.size == 0:
                continue
            lookup = np.zeros(int(labels.max()) + 1, np.uint32)
            lookup[keep] = np.arange(next_label, next_label + keep.size, dtype=np.uint32)
            next_label += keep.size
            mapped = lookup[labels]
            window = out[r:r1, c:c1]
            free = (window == 0) & (mapped > 0)
            # an object mostly taken by objects of earlier tiles is a duplicate: skip it
            # rather than leave its free fragment
            whole = np.bincount(mapped.ravel(), minlength=next_label)
            kept = np.bincount(mapped[free], minlength=next_label)
            duplicate = kept < 0.5 * whole
            duplicate[0] = False
            free &= ~duplicate[mapped]
            window[free] = mapped[free]
    bar.close()
    return _sequential(out)


def _sequential(labels: np.ndarray) -> np.ndarray:
    from skimage.segmentation import relabel_sequential

    labels = np.asarray(labels)
    if labels.size == 0 or labels.max() == 0:
        return np.zeros(labels.shape, np.uint32)
    return relabel_sequential(labels.astype(np.uint32))[0].astype(np.uint32)


def _fill_label_gaps(labels: np.ndarray) -> np.ndarray:
    """Labels 1..N without gaps (an object too small to survive the scale-back leaves one);
    the same array when there is none. One pass over the pixels, no full-size sort.

    >>> _fill_label_gaps(np.array([[0, 3], [1, 1]], np.uint32)).tolist()
    [[0, 2], [1, 1]]
    """
    top = int(labels.max()) if labels.size else 0
    if top == 0:
        return labels
    present = np.bincount(labels.ravel(), minlength=top + 1) > 0
    present[0] = True
    if present.all():
        return labels
    lookup = np.zeros(top + 1, labels.dtype)
    lookup[present] = np.arange(int(present.sum()), dtype=labels.dtype)
    return lookup[labels]


def remove_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Drop labels smaller than ``min_area`` pixels and relabel 1..N."""
    if min_area <= 1 or labels.max() == 0:
        return _sequential(labels)
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    cleaned = labels.copy()
    cleaned[small[labels]] = 0
    return _sequential(cleaned)


class Segmenter(ABC):
    """Base class: caching, scaling and tiling around a method's own ``_predict_working``.

    Subclasses set ``name`` and ``Params`` and implement :meth:`_predict_working` (an image at
    the working scale -> labels); training methods also implement :meth:`_fit` and
    :meth:`_load`.
    """

    name: str = "base"
    Params: type = BaseParams
    trainable: bool = False
    #: the name the trained model is cached under (a variant shares its plain method's model)
    model_name: str | None = None
    #: whether :meth:`fit` uses the validation sections (they then key the model)
    uses_validation: bool = False

    def __init__(self, params=None, workdir="data", device: str | None = None, quick=False,
                 budget=None):
        params = params if params is not None else self.Params()
        if isinstance(params, dict):
            params = self.Params(**params)
        #: the training budget (:data:`BUDGETS`); ``quick=True`` is the ``quick`` budget
        self.budget = budget_name(budget if budget is not None else quick)
        self.params = params.for_budget(self.budget)
        self.validation_ids: list[str] = []
        self.validation_sections: list = []
        self.workdir = Path(workdir)
        self.device = device or default_device()
        self.diameters: dict[str, float] = dict(self.params.fibre_diameter or {})
        self.fitted = False
        #: show a progress bar over the tiles of big images (``nclsm predict`` sets it)
        self.progress = False
        self.source = "untrained"   # "pretrained", "trained", "fine-tuned", ...
        self.train_ids: list[str] = []

    # -- identity and caches -------------------------------------------------------------
    def cache_key(self) -> str:
        """Key of the predictions: every parameter, the diameters and training sections."""
        return params_hash(self.name, self.params, self._cache_extra())

    def model_key(self) -> str:
        """Key of the trained model (its folder ``models/<name>-<key>``): as
        :meth:`cache_key` without the :data:`PREDICT_ONLY` fields, so a new post-processing
        setting re-predicts with the model already trained."""
        return params_hash(self.model_name or self.name, self.params, self._cache_extra(),
                           skip=predict_only_fields(self.params))

    def _cache_extra(self) -> dict:
        extra = {"diameters": {k: round(float(v), 3) for k, v in sorted(self.diameters.items())}}
        if self.trainable:
            extra["train"] = self.train_ids
        if self.uses_validation and self.validation_ids:
            extra["validation"] = self.validation_ids
        return extra

    @property
    def model_dir(self) -> Path:
        return Workdir(self.workdir).model_dir(self.model_name or self.name, self.model_key())

    @property
    def prediction_dir(self) -> Path:
        return Workdir(self.workdir).prediction_dir(self.name)

    # -- training -------------------------------------------------------------------------
    def fit(self, train_sections, workdir=None, force: bool = False,
            validation=None) -> "Segmenter":
        """Train on ``train_sections`` unless a cached model with the same key exists.

        ``validation``: the dataset's validation sections, for a method that chooses settings
        on them (:attr:`uses_validation`; StarDist's ``optimize_thresholds``); ignored by the
        others.
        """
        if workdir is not None:
            self.workdir = Path(workdir)
        train_sections = list(train_sections)
        self.train_ids = sorted(s.key for s in train_sections)
        if self.uses_validation:
            self.validation_sections = list(validation or [])
            self.validation_ids = sorted(s.key for s in self.validation_sections)
        if not self.diameters:
            self.diameters = estimate_diameters(train_sections)
        if not self.trainable:
            self.fitted = True
            return self
        marker = self.model_dir / "model.json"
        if marker.is_file() and not force:
            info = json.loads(marker.read_text())
            self.diameters = info.get("diameters", self.diameters)
            self._load(self.model_dir)
            self.source = info.get("source", "trained")
            log.info("%s: loaded cached model %s", self.name, self.model_dir)
        else:
            if not train_sections:
                raise DataError(f"{self.name}: no training sections; the dataset's train split "
                                "is empty")
            self.model_dir.mkdir(parents=True, exist_ok=True)
            self._fit(train_sections, self.model_dir)
            write_text(marker, json.dumps({"name": self.name, "key": self.model_key(),
                                           "params": dataclasses.asdict(self.params),
                                           "diameters": self.diameters, "source": self.source},
                                          indent=2, default=str))
        self.fitted = True
        return self

    def has_cached_model(self, train_sections, validation=None) -> bool:
        """Whether :meth:`fit` on ``train_sections`` would load a cached model (no training).

        A query: the segmenter is not changed (the key is computed on a shallow copy with the
        training ids and diameters :meth:`fit` would set). A method that needs no training is
        always ready.
        """
        if not self.trainable:
            return True
        import copy

        train_sections = list(train_sections)
        probe = copy.copy(self)
        probe.train_ids = sorted(s.key for s in train_sections)
        if self.uses_validation:
            probe.validation_ids = sorted(s.key for s in (validation or []))
        probe.diameters = dict(self.diameters) or estimate_diameters(train_sections)
        return (probe.model_dir / "model.json").is_file()

    def _fit(self, train_sections, model_dir: Path) -> None:  # pragma: no cover - trainable only
        raise NotImplementedError

    def _load(self, model_dir: Path) -> None:  # pragma: no cover - trainable only
        raise NotImplementedError

    # -- prediction -----------------------------------------------------------------------
    def scale_for(self, modality: str, fibre_diameter: float | None = None) -> float:
        """Working scale: ``target_diameter`` over ``fibre_diameter`` (pixels of the image)
        when given, else over the modality's fibre diameter (estimated from training masks)."""
        diameter = fibre_diameter or self.diameters.get(modality) or \
            DEFAULT_DIAMETER.get(modality, 36.0)
        return float(self.params.target_diameter) / float(diameter)

    def predict(self, image: np.ndarray, modality: str = "IMC",
                fibre_diameter: float | None = None) -> np.ndarray:
        """Segment an RGB image ``(H, W, 3)`` uint8 -> ``(H, W)`` uint32 labels (0 background).

        ``fibre_diameter`` (pixels of ``image``), when given, sets the working scale to
        ``target_diameter / fibre_diameter`` instead of :meth:`scale_for` ``(modality)``.
        """
        if image.ndim != 3 or image.shape[-1] < 2:
            raise ValueError(f"{self.name}: expected an RGB image (H, W, 3), got {image.shape}")
        scale = self.scale_for(modality, fibre_diameter)
        working = working_image(image, scale)
        labels = predict_tiled(lambda tile: self._predict_working(tile, modality), working,
                               self.params.tile_size, self.params.tile_overlap,
                               progress=self.progress)
        # objects that cannot be fibres at this fibre size (fragments, debris) are dropped,
        # at the working scale (a full-size copy of the labels would double the peak memory)
        labels = remove_small(labels, int(self.params.min_fibre_fraction
                                          * self.params.fibre_area))
        # back to the image's pixels by a bilinear vote (order=1): outlines follow each
        # object's interpolated mask instead of the working scale's pixel staircase
        out = resize_labels(labels.astype(np.uint32, copy=False), image.shape[:2], order=1)
        return _fill_label_gaps(out)

    @abstractmethod
    def _predict_working(self, image: np.ndarray, modality: str) -> np.ndarray:
        """Labels for a normalised ``(h, w, 2)`` float32 image at the working scale."""

    # -- what runs, in words (the methods page) ------------------------------------------
    def weights_description(self) -> str:
        """Where the weights start from (trainable methods override)."""
        return "no trained weights"

    def network_description(self) -> str:
        """What produces the labels before any post-processing (methods override)."""
        return self.name

    def _library_weights_description(self, network: str, weights: str, path,
                                     missing: str) -> str:
        """:meth:`weights_description` of a library network that starts from the published
        ``weights`` when ``path`` (where they are) is given, else from scratch; ``missing``
        says where they were looked for."""
        if path is not None:
            how = "fine-tuned from" if self.params.finetune else "used as is:"
            return f"{how} {weights} ({path})"
        if self.params.pretrained == "never":
            return f"a fresh {network} network (pretrained='never')"
        return f"a fresh {network} network: {missing} (`nclsm models fetch {weights}`)"

    def postprocessing(self) -> list:
        """The toolkit's steps after the method's own output, in call order, as
        :class:`~.postprocess.Step` (name, function, keyword arguments); what
        :meth:`describe` lists. Plain methods have none."""
        return []

    def describe(self) -> dict:
        """What this method runs, generated from its params: ``method``, ``weights`` (what
        training starts from), ``training`` (length, at this budget), ``network``, ``steps``
        (every step after the network with its parameters, in call order, the shared
        scale-back last) and ``budget``."""
        from .postprocess import describe_steps

        steps = describe_steps(self.postprocessing())
        fraction = float(getattr(self.params, "min_fibre_fraction", 0) or 0)
        if fraction > 0:
            steps.append({"step": "remove_small (after stitching tiles)",
                          "parameters": f"min_area = {fraction:g} x fibre area "
                                        f"({int(fraction * self.params.fibre_area)} px)"})
        steps.append({"step": "resize_labels (scale-back to the image's pixels, shared by "
                              "every method)",
                      "parameters": f"order = 1 (bilinear vote); working scale: fibres "
                                    f"{float(self.params.target_diameter):g} px across"})
        return {"method": self.name, "weights": self.weights_description(),
                "training": self.params.training_length() if self.trainable else "no training",
                "network": self.network_description(), "steps": steps, "budget": self.budget}

    def predict_section(self, section, force: bool = False) -> np.ndarray:
        """Predict a section, cached in ``data/predictions/<name>/<modality>_<id>.tiff``.

        The sidecar ``.json`` records the cache key; a different key re-predicts.
        """
        path = Workdir(self.workdir).prediction_path(self.name, section.modality, section.id)
        sidecar = path.with_suffix(".json")
        key = self.cache_key()
        if path.is_file() and sidecar.is_file() and not force:
            if json.loads(sidecar.read_text()).get("key") == key:
                return read_array(path)
        labels = self.predict(section.image(), modality=section.modality)
        write_tiff(path, labels.astype(np.uint32, copy=False))
        write_text(sidecar, json.dumps({"method": self.name, "key": key, "source": self.source,
                                        "section": section.key}, indent=2))
        return labels


class PretrainedSegmenter(Segmenter):
    """Base of the trainable methods that may start from pretrained weights.

    ``Params`` has a ``pretrained`` policy (:data:`PRETRAINED_POLICIES`), checked on
    construction; ``model`` is None until the method is fitted or loaded.
    """

    trainable: bool = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_pretrained_policy(self.name, self.params.pretrained)
        self.model = None


def training_pairs(sections, segmenter: Segmenter, role: str = "myofibres"):
    """Working-scale training pairs for a trainable method.

    Returns
    -------
    list of (image, labels): image ``(h, w, 2)`` float32 (membrane, mass; percentile
    normalised), labels ``(h, w)`` int32 instance mask, both resized to the segmenter's working
    scale for the section's modality.
    """
    pairs = []
    for section in sections:
        image = working_image(section.image(), segmenter.scale_for(section.modality))
        labels = resize_labels(section.mask(role), image.shape[:2]).astype(np.int32)
        pairs.append((image, labels))
    return pairs
