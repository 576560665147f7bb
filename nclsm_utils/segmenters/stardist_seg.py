"""StarDist2D as its users run it: ``train``, ``optimize_thresholds``, ``predict_instances``.

What runs
    A ``StarDist2D`` of ``Config2D``'s defaults (32 rays, a U-Net of depth 3 and 32 base
    filters, batches of 4, learning rate 3e-4 with its reduce-on-plateau schedule) with the
    subsampling grid (2, 2) of StarDist's 2D training example and the image's two channels,
    trained with ``StarDist2D.train`` with the example's augmenter (random flips and
    90-degree rotations, random intensity change). The training set is the train split and
    ``dimmed_copies`` copies of each of its sections in which 50-100 % of the fibres
    (``dimmed_share``) have their mass dimmed to near black
    (:func:`~.augment.with_dimmed_copies`; ``cellpose`` dims 20-50 %): fibres without
    mitochondrial signal occur in every training image, and the network must find them by
    their membrane. The patch side, the number of epochs and
    steps per epoch are the training budget's (:data:`~.base.BUDGETS`: ``full`` is
    ``Config2D``'s 256-px patches, 400 x 100). TensorBoard logging is off (it is not
    installed).
    The probability and NMS thresholds are chosen by ``optimize_thresholds`` (its defaults)
    on the dataset's validation split, as StarDist users do; when a dataset has no validation
    sections, one train section is held out (the last of the modality with most sections)
    when there are at least 3, else the train sections are used. The labels are
    ``predict_instances``' at those thresholds (in ``n_tiles`` tiles of at most
    ``predict_tile`` px). Nothing runs after it except the toolkit's shared scale-back of the
    labels to the image's pixels (:meth:`~.base.Segmenter.predict`).
Weights
    With ``2D_versatile_fluo`` on disk (``nclsm models fetch 2D_versatile_fluo``, or where
    ``StarDist2D.from_pretrained`` caches it: ``$KERAS_HOME`` or ``~/.keras``, then
    ``models/StarDist2D/2D_versatile_fluo/``, extracted by Keras 3 or Keras 2, or the
    downloaded ``2D_versatile_fluo.zip``; or ``Params(pretrained_model=...)``) training starts
    from it ("fine-tuned from 2D_versatile_fluo"); else from a fresh network ("trained from
    scratch (no weights on disk)"). The folder is loaded with ``StarDist2D(None, name,
    basedir)``, never with ``from_pretrained`` (which downloads). ``pretrained``: ``"auto"``,
    ``"require"``, ``"never"`` as for Cellpose.
Input
    A network trained here takes both channels (membrane, mitochondrial mass). The versatile
    model is a one-channel *nucleus* model (bright, roundish blobs on a dark background); it
    is fed the fibre interior ``max(mass - membrane, 0)`` re-normalised
    (:func:`interior_channel`), the closest image to a nucleus image, fine-tuned or not.
Budget
    ``report`` trains 15 epochs of 100 steps on 96-px patches (about 0.12 s a step on 2 CPU
    cores): the pixels of 15 x 15 steps of Config2D's 256-px patches, in more updates;
    that choice, made on the tuning sets (docs/decisions.md), turned a network that found
    almost no fibre at this budget into one that finds most. ``full`` trains Config2D's
    400 x 100 steps of 256-px patches, ``quick`` 2 of 5 (and skips ``optimize_thresholds``
    for a fixed probability threshold of 0.2).

``stardist+refine`` (:class:`StarDistRefineSegmenter`) is the same trained network, its
detections taken at a probability threshold of at most 0.5 (``prob_ceiling``), followed by
the toolkit's own post-processing (:mod:`.membrane`), a separately named variant.

Example
-------
>>> from nclsm_utils.segmenters import get_segmenter
>>> train = dataset.sections(split="train")                            # doctest: +SKIP
>>> validation = dataset.sections(split="validation")                  # doctest: +SKIP
>>> get_segmenter("stardist").fit(train, validation=validation).source  # doctest: +SKIP
'trained from scratch (no weights on disk)'
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np

from ..core.io import write_text
from .augment import describe_training_set, with_dimmed_copies
from .base import (PREDICT_ONLY, BaseParams, PretrainedSegmenter, SegmenterError, register,
                   remove_small, training_pairs, use_pretrained)
from .membrane import (drop_background_objects, grow_and_trim, refine_to_membrane,
                       separate_touching, split_on_faint_membrane)
from .postprocess import Step, run_steps

log = logging.getLogger(__name__)

PRETRAINED_NAME = "2D_versatile_fluo"
#: where StarDist publishes it (``stardist.models`` registers it with this URL)
PRETRAINED_URL = ("https://github.com/stardist/stardist-models/releases/download/v0.1/"
                  "python_2D_versatile_fluo.zip")
MODEL_NAME = "stardist"
META_FILE = "stardist_meta.json"
#: ``Config2D``'s documented default training length (the ``full`` budget)
CONFIG2D_EPOCHS, CONFIG2D_STEPS = 400, 100
#: ``Config2D``'s default training patch side (the ``full`` budget's)
CONFIG2D_PATCH = 256


@dataclasses.dataclass
class StarDistParams(BaseParams):
    """Parameters of the StarDist method: ``Config2D``'s defaults, grid (2, 2), and the
    budget's epochs."""

    pretrained: str = "auto"             # auto | require | never (see the module docstring)
    pretrained_model: str | None = None  # model folder or zip; None: the Keras cache
    finetune: bool = True                # with weights present: fine-tune (True) or use as is
    grid: tuple = (2, 2)                 # StarDist's 2D example (Config2D's default: (1, 1))
    epochs: int = 15                     # the ``report`` budget (``full``: Config2D's 400)
    steps_per_epoch: int = 100           # (``full``: Config2D's 100)
    #: Config2D's train_patch_size (square side; ``full``: Config2D's 256), train_batch_size
    #: and train_learning_rate
    train_patch_size: int = 96
    train_batch_size: int = 4
    train_learning_rate: float = 3e-4
    #: copies of each training section with a share of its fibres' mass dimmed
    #: (augment.with_dimmed_copies; validation sections are not copied)
    dimmed_copies: int = 2
    #: range of the share of each copy's fibres that are dimmed (Cellpose's: 20-50 %,
    #: augment.COPY_SHARE; docs/decisions.md)
    dimmed_share: tuple = (0.5, 1.0)
    optimize_thresholds: bool = True
    # prediction only (PREDICT_ONLY: changing one re-predicts with the trained model)
    #: None: the thresholds optimize_thresholds chose
    prob_thresh: float | None = dataclasses.field(default=None, metadata=PREDICT_ONLY)
    nms_thresh: float | None = dataclasses.field(default=None, metadata=PREDICT_ONLY)
    #: tile side for predict_instances' n_tiles
    predict_tile: int = dataclasses.field(default=1024, metadata=PREDICT_ONLY)
    #: nothing after StarDist's own labels (BaseParams' fragment filter off)
    min_fibre_fraction: float = dataclasses.field(default=0.0, metadata=PREDICT_ONLY)
    #: working-scale tiles of big images: StarDist tiles each image itself (n_tiles)
    tile_size: int = dataclasses.field(default=2048, metadata=PREDICT_ONLY)

    def quick(self):
        # a few short epochs leave the object probabilities low: a lower fixed threshold
        return dataclasses.replace(self, epochs=2, steps_per_epoch=5, optimize_thresholds=False,
                                   prob_thresh=0.2 if self.prob_thresh is None else self.prob_thresh)

    def full(self):
        return dataclasses.replace(self, epochs=CONFIG2D_EPOCHS, steps_per_epoch=CONFIG2D_STEPS,
                                   train_patch_size=CONFIG2D_PATCH)

    def training_length(self) -> str:
        return (f"{self.epochs} epochs x {self.steps_per_epoch} steps of StarDist2D.train "
                f"(Config2D's default: {CONFIG2D_EPOCHS} x {CONFIG2D_STEPS})")


def keras_cache_dirs() -> list[Path]:
    """The Keras cache folders ``get_file`` uses (``$KERAS_HOME`` or ``~/.keras``, ``/tmp/.keras``)."""
    dirs = []
    if os.environ.get("KERAS_HOME"):
        dirs.append(Path(os.environ["KERAS_HOME"]))
    dirs += [Path.home() / ".keras", Path("/tmp/.keras")]
    out = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("weights*.h5"))


def interior_channel(image: np.ndarray) -> np.ndarray:
    """Fibre interior ``max(smoothed mass - membrane, 0)``, re-normalised (1-99.8 %): ``(h, w, 1)``.

    The mass channel is smoothed (Gaussian, sigma 1.5 px) to remove its granular texture, so
    fibres of low mass (another fibre type) stay uniformly positive.
    """
    from scipy import ndimage

    mass = ndimage.gaussian_filter(image[..., 1].astype(np.float32), 1.5)
    interior = np.clip(mass - image[..., 0], 0, None).astype(np.float32)
    lo, hi = np.percentile(interior, [1.0, 99.8])
    return ((interior - lo) / max(hi - lo, 1e-6))[..., None].astype(np.float32)


@contextlib.contextmanager
def _quiet():
    """StarDist/CSBDeep print(); send that to the log (debug) instead of stdout."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        text = buffer.getvalue().strip()
        if text:
            log.debug("stardist: %s", text)


def _import_stardist():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from stardist.models import Config2D, StarDist2D
    except ImportError as error:  # pragma: no cover - stardist is a declared dependency
        raise SegmenterError(f"stardist: cannot import stardist/tensorflow ({error}); install "
                             "them (see environment.yml)") from error
    return Config2D, StarDist2D




def example_augmenter(x: np.ndarray, y: np.ndarray):
    """The augmenter of StarDist's 2D training example: random flips and 90-degree rotations
    of image and labels, then a random intensity change of the image (``x * U(0.6, 2) +
    U(-0.2, 0.2)``). Draws from NumPy's global random state, as the example does."""
    axes = (0, 1)
    perm = tuple(np.random.permutation(axes))
    x = x.transpose(perm + tuple(range(2, x.ndim)))
    y = y.transpose(perm)
    for ax in axes:
        if np.random.rand() > 0.5:
            x = np.flip(x, axis=ax)
            y = np.flip(y, axis=ax)
    x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
    return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y)


@register
class StarDistSegmenter(PretrainedSegmenter):
    """StarDist2D as its users run it: ``train``, ``optimize_thresholds``, ``predict_instances``
    (fine-tuning ``2D_versatile_fluo`` when on disk)."""

    name = "stardist"
    Params = StarDistParams
    uses_validation = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_mode = "membrane+mass"

    # -- pretrained weights ----------------------------------------------------------------
    def pretrained_candidates(self) -> list[Path]:
        """Folders (and zip files) where ``2D_versatile_fluo`` is looked for, in order."""
        if self.params.pretrained_model:
            return [Path(self.params.pretrained_model).expanduser()]
        out = []
        for cache in keras_cache_dirs():
            base = cache / "models" / "StarDist2D" / PRETRAINED_NAME
            out += [base / f"{PRETRAINED_NAME}_extracted", base / PRETRAINED_NAME, base,
                    base / f"{PRETRAINED_NAME}.zip"]
        return out

    def pretrained_path(self) -> Path | None:
        """The first candidate that holds the model (folder or zip), or None."""
        if self.params.pretrained == "never":
            return None
        for candidate in self.pretrained_candidates():
            if candidate.is_dir() and _is_model_folder(candidate):
                return candidate
            if candidate.is_file() and candidate.suffix == ".zip":
                return candidate
        return None

    def unavailable_message(self) -> str:
        looked = (self.pretrained_candidates()[0] if self.params.pretrained_model
                  else keras_cache_dirs()[0] / "models" / "StarDist2D" / PRETRAINED_NAME)
        return (f"stardist: pretrained {PRETRAINED_NAME} not found at {looked} (nothing is "
                f"downloaded while training); on a connected machine run `nclsm models fetch "
                f"{PRETRAINED_NAME}` (or download {PRETRAINED_URL}) and put the zip at "
                f"{looked / (PRETRAINED_NAME + '.zip')}")

    def _check_pretrained(self) -> Path | None:
        """The weights' location when they will be used; raises or logs when they cannot be."""
        path = self.pretrained_path()   # None under "never"
        used = use_pretrained(self.params.pretrained, path is not None,
                              self.unavailable_message(), log)
        return path if used else None

    def _cache_extra(self) -> dict:
        extra = super()._cache_extra()
        path = self.pretrained_path()
        extra["init"] = f"{PRETRAINED_NAME}:{path}" if path is not None else "scratch"
        return extra

    def _pretrained_folder(self, path: Path) -> Path:
        """A model folder from a folder or a downloaded zip (extracted under the workdir)."""
        if path.is_dir():
            return path
        target = self.workdir / "models" / f"_{PRETRAINED_NAME}"
        if not _is_model_folder(target):
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                with zipfile.ZipFile(path) as archive:
                    archive.extractall(tmp)
            except (zipfile.BadZipFile, OSError) as error:
                raise SegmenterError(f"stardist: cannot extract {path}: {error}") from error
            found = [p.parent for p in tmp.rglob("config.json")]
            if not found:
                raise SegmenterError(f"stardist: {path} holds no config.json")
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(found[0]), str(target))
            shutil.rmtree(tmp, ignore_errors=True)
        return target


    def weights_description(self) -> str:
        return self._library_weights_description("StarDist2D", PRETRAINED_NAME,
                                                  self.pretrained_path(),
                                                  f"no {PRETRAINED_NAME} on disk")

    def network_description(self) -> str:
        p = self.params
        thresholds = ("optimize_thresholds on the validation split" if p.optimize_thresholds
                      else "fixed")
        fixed = ", ".join(f"{k} = {v}" for k, v in (("prob_thresh", p.prob_thresh),
                                                    ("nms_thresh", p.nms_thresh)) if v is not None)
        return (f"StarDist2D (Config2D defaults: 32 rays, U-Net depth 3, 32 base filters; "
                f"grid {tuple(p.grid)}; {int(p.train_patch_size)}-px patches, batch "
                f"{int(p.train_batch_size)}, learning rate {float(p.train_learning_rate):g}; "
                f"Config2D's: {CONFIG2D_PATCH} px, 4, 0.0003), StarDist2D.train with the 2D "
                f"example's augmenter; training set: "
                f"{describe_training_set(p.dimmed_copies, p.dimmed_share)}; "
                f"thresholds: {thresholds}"
                + (f" ({fixed})" if fixed else "") + "; predict_instances")

    # -- training ----------------------------------------------------------------------------
    def _train_config(self) -> dict:
        """The ``Config2D`` training fields the params set."""
        p = self.params
        side = int(p.train_patch_size)
        return {"train_patch_size": (side, side), "train_batch_size": int(p.train_batch_size),
                "train_learning_rate": float(p.train_learning_rate)}

    def fit(self, train_sections, workdir=None, force: bool = False, validation=None):
        if self.params.pretrained == "require" and self.pretrained_path() is None:
            self._check_pretrained()                       # raises before any folder is made
        return super().fit(train_sections, workdir=workdir, force=force, validation=validation)

    def _scratch_source(self) -> str:
        return ("trained from scratch (pretrained='never')" if self.params.pretrained == "never"
                else "trained from scratch (no weights on disk)")

    def _fit(self, train_sections, model_dir: Path) -> None:
        params = self.params
        Config2D, StarDist2D = _import_stardist()
        import keras

        pretrained = self._check_pretrained()
        folder = model_dir / MODEL_NAME
        shutil.rmtree(folder, ignore_errors=True)
        keras.utils.set_random_seed(params.seed)
        np.random.seed(params.seed)

        if pretrained is not None:
            shutil.copytree(self._pretrained_folder(pretrained), folder)
            self.input_mode = "interior"
            with _quiet():
                model = StarDist2D(None, name=MODEL_NAME, basedir=str(model_dir))
            if not params.finetune:
                self.model, self.source = model, f"pretrained {PRETRAINED_NAME} as is (no training)"
                self._write_meta(model_dir, {"input": self.input_mode, "source": self.source})
                log.info("stardist: using the pretrained %s as it is", PRETRAINED_NAME)
                return
            model.config.train_tensorboard = False
            model.config.use_gpu = False
            for key, value in self._train_config().items():
                setattr(model.config, key, value)
        else:
            self.input_mode = "membrane+mass"
            config = Config2D(n_channel_in=2, grid=tuple(params.grid), train_tensorboard=False,
                              use_gpu=False, **self._train_config())
            with _quiet():
                model = StarDist2D(config, name=MODEL_NAME, basedir=str(model_dir))

        size = max(model.config.train_patch_size)

        def inputs(pairs):
            return [_pad_pair(self._model_input(image), labels, size) for image, labels in pairs]

        validation = list(self.validation_sections)
        if validation:
            train, val = training_pairs(train_sections, self), training_pairs(validation, self)
            held_out = []
        else:
            pairs = training_pairs(train_sections, self)
            train_idx, val_idx = _holdout(train_sections)
            train, val = [pairs[i] for i in train_idx], [pairs[i] for i in val_idx]
            held_out = [train_sections[i].key for i in val_idx if i not in train_idx]
        # dimmed on the working image (membrane, mass), before any model input is made of it
        train = inputs(with_dimmed_copies(train, params.dimmed_copies, params.seed,
                                           params.dimmed_share))
        val = inputs(val)
        x_train, y_train = [x for x, _ in train], [y for _, y in train]
        x_val, y_val = [x for x, _ in val], [y for _, y in val]
        if not any(y.max() > 0 for y in y_train):
            raise SegmenterError("stardist: no training section has any labelled fibre")

        start, cpu = time.time(), time.process_time()
        with _quiet():
            history = model.train(x_train, y_train, validation_data=(x_val, y_val),
                                  augmenter=example_augmenter, epochs=int(params.epochs),
                                  steps_per_epoch=int(params.steps_per_epoch))
        train_seconds = time.time() - start
        if params.optimize_thresholds:
            with _quiet():
                model.optimize_thresholds(x_val, y_val,
                                          predict_kwargs={"show_tile_progress": False})
        thresholds = {"prob": float(model.thresholds.prob), "nms": float(model.thresholds.nms)}
        seconds, cpu_seconds = time.time() - start, time.process_time() - cpu
        self.model = model
        self.source = (f"fine-tuned from {PRETRAINED_NAME}" if pretrained is not None
                       else self._scratch_source())
        losses = (getattr(history, "history", None) or {}).get("loss") or [float("nan")]
        self._write_meta(model_dir, {
            "input": self.input_mode, "source": self.source, "thresholds": thresholds,
            "validation": self.validation_ids or held_out,
            "epochs": int(params.epochs), "steps_per_epoch": int(params.steps_per_epoch),
            "train_seconds": round(train_seconds, 1), "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu_seconds, 1), "final_loss": float(losses[-1])})
        log.info("stardist: %s in %.0f s (%.0f CPU s; training %.0f s), thresholds prob %.3f "
                 "nms %.2f (chosen on: %s)", self.source, seconds, cpu_seconds, train_seconds,
                 thresholds["prob"], thresholds["nms"],
                 ", ".join(self.validation_ids or held_out) or "the train sections")

    def _write_meta(self, model_dir: Path, meta: dict) -> None:
        write_text(model_dir / META_FILE, json.dumps(meta, indent=2))

    def _load(self, model_dir: Path) -> None:
        _, StarDist2D = _import_stardist()
        meta_path = model_dir / META_FILE
        folder = model_dir / MODEL_NAME
        if not meta_path.is_file() or not _is_model_folder(folder):
            raise SegmenterError(f"stardist: {model_dir} has no complete model ({META_FILE}, "
                                 f"{MODEL_NAME}/config.json, weights); delete it to retrain")
        meta = json.loads(meta_path.read_text())
        self.input_mode = meta.get("input", "membrane+mass")
        try:
            with _quiet():
                self.model = StarDist2D(None, name=MODEL_NAME, basedir=str(model_dir))
        except Exception as error:
            raise SegmenterError(f"stardist: cannot load the model in {folder}: {error}; delete "
                                 f"{model_dir} to retrain") from error

    # -- prediction --------------------------------------------------------------------------
    def _model_input(self, image: np.ndarray) -> np.ndarray:
        if self.input_mode == "interior":
            return interior_channel(image)
        return np.ascontiguousarray(image[..., :2], np.float32)

    def _ensure_model(self):
        if self.model is not None:
            return self.model
        path = self.pretrained_path()
        if path is None and self.params.pretrained == "require":
            self._check_pretrained()
        if path is not None:
            _, StarDist2D = _import_stardist()
            folder = self._pretrained_folder(path)
            with _quiet():
                model = StarDist2D(None, name=folder.name, basedir=str(folder.parent))
            model.basedir = None   # read-only, as from_pretrained does
            self.model, self.input_mode = model, "interior"
            self.source = f"pretrained {PRETRAINED_NAME} as is (no training)"
            return model
        raise SegmenterError("stardist: no model; call fit(train_sections) first (no pretrained "
                             f"{PRETRAINED_NAME} found)")

    def predict_kwargs(self, shape) -> dict:
        """The arguments :meth:`_predict_working` gives ``predict_instances`` for an input of
        ``shape`` (everything else at StarDist's defaults)."""
        params = self.params
        tile = max(64, int(params.predict_tile))
        n_tiles = (math.ceil(shape[0] / tile), math.ceil(shape[1] / tile), 1)
        return {"axes": "YXC", "n_tiles": n_tiles if max(n_tiles) > 1 else None,
                "prob_thresh": params.prob_thresh, "nms_thresh": params.nms_thresh,
                "show_tile_progress": False}

    def _predict_working(self, image: np.ndarray, modality: str) -> np.ndarray:
        model = self._ensure_model()
        x = self._model_input(image)
        with _quiet():
            labels, _ = model.predict_instances(x, **self.predict_kwargs(x.shape))
        return np.asarray(labels)


@dataclasses.dataclass
class StarDistRefineParams(StarDistParams):
    """``stardist``'s parameters plus those of the toolkit's post-processing (all used only
    when predicting: the variant shares ``stardist``'s trained model)."""

    #: BaseParams' fragment filter, after stitching: objects under this fraction of a fibre's
    #: area are dropped
    min_fibre_fraction: float = dataclasses.field(default=0.1, metadata=PREDICT_ONLY)
    #: smallest kept object at the end of the chain (working-scale pixels)
    min_size: int = dataclasses.field(default=30, metadata=PREDICT_ONLY)
    #: detections are taken at the lower of the stardist row's probability threshold (the
    #: one optimize_thresholds chose, or ``prob_thresh``) and this (Config2D's default
    #: threshold): the steps below redraw each candidate along the membrane, and near-black
    #: fibres get lower probabilities than bright ones (docs/decisions.md)
    prob_ceiling: float = dataclasses.field(default=0.5, metadata=PREDICT_ONLY)
    #: how far a polygon's outline may move when it is redrawn along the membrane, as a
    #: fraction of target_diameter (membrane.refine_to_membrane)
    refine_fraction: float = dataclasses.field(default=1 / 3, metadata=PREDICT_ONLY)
    #: pieces of the fibre interior without a polygon and of at least this fraction of a
    #: fibre's area become objects: fibres the network missed (refine_to_membrane's fill_area)
    fill_fraction: float = dataclasses.field(default=0.04, metadata=PREDICT_ONLY)
    #: breaks in membrane outlines up to about twice this fraction of target_diameter are
    #: closed before enclosed pixels count as fibre interior (refine_to_membrane's closing)
    closing_fraction: float = dataclasses.field(default=1 / 9, metadata=PREDICT_ONLY)
    #: detections without interior under them (no mass, no closed outline) keep their own
    #: pixels as seed (refine_to_membrane's keep_seedless)
    keep_seedless: bool = dataclasses.field(default=True, metadata=PREDICT_ONLY)
    #: grow each object over the pixels within target_diameter / 9 whose mass is at least
    #: this share of its median mass (membrane.grow_to_mass_edge) ...
    edge_mass: float = dataclasses.field(default=0.5, metadata=PREDICT_ONLY)
    #: ... and take back what grew past the membrane's ridge (membrane.trim_beyond_ridge)
    ridge_trim: bool = dataclasses.field(default=True, metadata=PREDICT_ONLY)
    #: objects holding a faint membrane line between two interiors are split when the line
    #: reaches this share of the way from interior to outline (membrane.split_on_faint_membrane)
    split_contrast: float = dataclasses.field(default=0.3, metadata=PREDICT_ONLY)
    #: ... into parts of at least this fraction of a fibre's area
    split_min_fraction: float = dataclasses.field(default=0.12, metadata=PREDICT_ONLY)
    #: objects with a mean membrane + mass signal below this and no membrane around them
    #: are dropped (membrane.drop_background_objects); 0, the default, leaves the step out
    background_level: float = dataclasses.field(default=0.0, metadata=PREDICT_ONLY)
    #: working-scale pixels taken off each side of a border two objects share
    #: (membrane.separate_touching)
    border_gap: int = dataclasses.field(default=1, metadata=PREDICT_ONLY)


@register
class StarDistRefineSegmenter(StarDistSegmenter):
    """``stardist`` (the same trained network; its probability threshold capped at
    ``prob_ceiling``) followed by the toolkit's membrane post-processing (:mod:`.membrane`):
    the polygons are used as detections and redrawn along the membrane, grown to the mass
    edge, split on faint membranes."""

    name = "stardist+refine"
    model_name = "stardist"     # the plain method's trained model, shared
    Params = StarDistRefineParams

    def fit(self, train_sections, workdir=None, force: bool = False, validation=None):
        super().fit(train_sections, workdir=workdir, force=force, validation=validation)
        if "post-processing" not in self.source:
            self.source = f"stardist {self.source} + toolkit post-processing"
        return self

    def network_description(self) -> str:
        return (f"the stardist row's network and NMS threshold, its probability threshold "
                f"capped at {float(self.params.prob_ceiling):g}: "
                + super().network_description())

    def predict_kwargs(self, shape) -> dict:
        """``stardist``'s arguments with the probability threshold capped at
        ``prob_ceiling``."""
        kwargs = super().predict_kwargs(shape)
        prob = kwargs["prob_thresh"]
        if prob is None:
            prob = float(self._ensure_model().thresholds.prob)
        kwargs["prob_thresh"] = min(prob, float(self.params.prob_ceiling))
        return kwargs

    def postprocessing(self) -> list:
        """The toolkit's steps after ``predict_instances``, in call order, from the params."""
        p = self.params
        diameter = float(p.target_diameter)
        background = ([Step("membrane.drop_background_objects", drop_background_objects,
                            {"level": p.background_level})] if p.background_level > 0 else [])
        return [
            Step("membrane.refine_to_membrane", refine_to_membrane,
                 {"distance": p.refine_fraction * diameter, "erosion": int(round(diameter / 12)),
                  "relative_mass": 0.65, "merge_length": diameter / 2,
                  "merge_membrane": 0.15, "ridge": 0,
                  "fill_area": p.fill_fraction * p.fibre_area,
                  "closing": int(round(p.closing_fraction * diameter)),
                  "keep_seedless": bool(p.keep_seedless)}),
            Step("membrane.grow_and_trim (grow_to_mass_edge, then trim_beyond_ridge)",
                 grow_and_trim, {"fraction": p.edge_mass, "reach": int(round(diameter / 9)),
                                 "trim": bool(p.ridge_trim)}),
            Step("membrane.split_on_faint_membrane", split_on_faint_membrane,
                 {"min_area": p.split_min_fraction * p.fibre_area,
                  "contrast": p.split_contrast}),
            *background,
            Step("membrane.separate_touching", separate_touching, {"width": int(p.border_gap)},
                 takes_image=False),
            Step("remove_small", remove_small, {"min_area": int(p.min_size)}, takes_image=False),
        ]

    def _predict_working(self, image: np.ndarray, modality: str) -> np.ndarray:
        labels = super()._predict_working(image, modality)
        return run_steps(labels, image, self.postprocessing())


def _holdout(sections) -> tuple[list[int], list[int]]:
    """Indices of training and validation sections: one section held out when >= 3."""
    sections = list(sections)
    if len(sections) < 3:
        every = list(range(len(sections)))
        return every, every
    by_modality: dict[str, list[int]] = {}
    for i, section in enumerate(sections):
        by_modality.setdefault(section.modality, []).append(i)
    modality = max(sorted(by_modality), key=lambda m: len(by_modality[m]))
    held = max(by_modality[modality], key=lambda i: sections[i].key)
    return [i for i in range(len(sections)) if i != held], [held]




def _pad_pair(x: np.ndarray, y: np.ndarray, size: int):
    """Zero-pad an image (h, w, c) and its labels to at least ``size`` on each side."""
    pad_h, pad_w = max(0, size - y.shape[0]), max(0, size - y.shape[1])
    if pad_h or pad_w:
        x = np.pad(x, ((0, pad_h), (0, pad_w), (0, 0)))
        y = np.pad(y, ((0, pad_h), (0, pad_w)))
    return x.astype(np.float32), y.astype(np.int32)
