"""Cellpose 3 as its users run it: ``train_seg`` and ``CellposeModel.eval`` at their defaults.

What runs
    A ``CellposeModel`` with Cellpose's own network (CPnet, widths 32, 64, 128, 256; two input
    channels) is trained with ``cellpose.train.train_seg`` at the function's documented
    defaults (its learning rate, weight decay, batch size, per-image normalisation, random
    rotations, flips and zooms), except the number of epochs and the patch side ``bsize``,
    which the training budget sets (:data:`~.base.BUDGETS`: ``full`` is ``train_seg``'s
    defaults). The training set is the train split and ``dimmed_copies`` copies of each of
    its sections in which 20-50 % of the fibres (``dimmed_share``) have their mass dimmed to
    near black (:func:`~.augment.with_dimmed_copies`; ``stardist`` dims 50-100 %, which
    lowered Cellpose's F1 on the tuning sets: docs/decisions.md); each epoch draws as many
    images as there are train sections. The labels are ``CellposeModel.eval``'s masks at
    its default thresholds (``flow_threshold``, ``cellprob_threshold``, ``min_size``) and its
    own normalisation, told the fibre diameter of the working image. Nothing runs after it
    except the toolkit's shared scale-back of the labels to the image's pixels
    (:meth:`~.base.Segmenter.predict`).
Weights
    With the generalist ``cyto3`` weights on disk (``nclsm models fetch cyto3``: the file
    ``cyto3`` in Cellpose's model folder, ``$CELLPOSE_LOCAL_MODELS_PATH`` or
    ``~/.cellpose/models``, or ``Params(pretrained_model=...)``) training starts from them
    (``source`` "fine-tuned from cyto3"); without them it starts from a fresh network
    ("trained from scratch (no weights on disk)"). Nothing is downloaded here: only the
    file's existence is checked, and Cellpose is never asked for a model by name.
    ``pretrained``: ``"auto"`` (use when present; one log line when absent), ``"require"``
    (raise :class:`PretrainedUnavailable` when absent), ``"never"``. With ``finetune=False``
    and the weights present, ``cyto3`` is used as it is.
Channels
    The membrane marker (R) is Cellpose's channel 1, the "cyto" channel (the outline stain
    the generalist models were trained with), and the mitochondrial-mass marker (G) its
    channel 2, the optional interior ("nuclear") channel: ``channels=[1, 2]``.
Optimiser
    ``train_seg``'s own (AdamW at ``learning_rate`` 0.005) unless ``optimizer``,
    ``learning_rate`` or ``weight_decay`` are set: Cellpose's command line trains with SGD at
    0.2 and its GUI with SGD at 0.1 and weight decay 1e-4; on the tuning sets, at the
    ``report`` budget, both scored within a few hundredths of train_seg's own
    (docs/decisions.md).
Scale
    Images arrive at the toolkit's working scale (fibres ``target_diameter`` = 36 px across)
    and ``eval`` is told that diameter; Cellpose resizes them to its ``diam_mean`` (30 px) as
    it does for any user who gives a diameter. ``train_seg`` rescales its training images to
    ``diam_mean`` from their masks (``rescale=True``, its default).
Budget
    ``report`` trains 120 epochs of one batch of 8 patches of 112 px (about 1.4 s an epoch on
    2 CPU cores); ``full`` ``train_seg``'s defaults, 2,000 epochs of 224-px patches; ``quick``
    2 epochs. At ``train_seg``'s 224-px patches an epoch takes 8-20 s here, and the 10 epochs
    that fit the ``report`` budget end inside ``train_seg``'s 10-epoch learning-rate warm-up
    with a network that finds no fibre; the smaller patches, chosen on the tuning sets
    (docs/decisions.md), give twelve times as many updates for about 1.5 times the time.

Example
-------
>>> from nclsm_utils.segmenters import get_segmenter
>>> seg = get_segmenter("cellpose", workdir="data", budget="report")          # doctest: +SKIP
>>> seg.fit(dataset.sections(split="train")).source                           # doctest: +SKIP
'trained from scratch (no weights on disk)'
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..core.io import write_text
from .augment import COPY_SHARE, describe_training_set, with_dimmed_copies
from .base import (PREDICT_ONLY, BaseParams, PretrainedSegmenter, SegmenterError, register,
                   training_pairs, use_pretrained)

log = logging.getLogger(__name__)

#: File name of the generalist model in Cellpose's model folder.
PRETRAINED_NAME = "cyto3"
#: Where Cellpose publishes it (``cellpose.models._MODEL_URL``); ``nclsm models fetch`` reads it.
PRETRAINED_URL = "https://www.cellpose.org/models/cyto3"
WEIGHTS_FILE = "cellpose_weights.pt"
META_FILE = "cellpose_meta.json"
#: ``train_seg``'s documented default number of epochs (the ``full`` budget)
TRAIN_SEG_EPOCHS = 2000
#: ``train_seg``'s default patch side (the ``full`` budget's)
TRAIN_SEG_BSIZE = 224
#: the ``train_seg`` arguments shown on the methods page (their values are read from
#: ``train_seg``'s signature, so the page shows the installed Cellpose's defaults)
TRAIN_SEG_DEFAULTS = ("learning_rate", "weight_decay", "SGD",
                      "normalize", "rescale", "scale_range", "min_train_masks")
#: ``CellposeParams.optimizer``: None (train_seg's own, AdamW), "sgd" or "adamw"
OPTIMIZERS = (None, "sgd", "adamw")
#: the ``CellposeModel.eval`` arguments shown on the methods page (defaults, as above)
EVAL_DEFAULTS = ("flow_threshold", "cellprob_threshold", "min_size", "normalize", "resample",
                 "bsize")


@dataclasses.dataclass
class CellposeParams(BaseParams):
    """Parameters of the Cellpose method: Cellpose's own defaults except ``n_epochs``."""

    pretrained: str = "auto"            # auto | require | never (see the module docstring)
    pretrained_model: str | None = None  # cyto3 weights file; None: Cellpose's model folder
    finetune: bool = True               # with weights present: fine-tune (True) or use as is
    #: train_seg epochs: the ``report`` budget (``full``: train_seg's default 2,000)
    n_epochs: int = 120
    #: train_seg's patch side (``bsize``; ``full``: train_seg's 224) and images per epoch
    #: (``nimg_per_epoch``; None: the number of training sections)
    bsize: int = 112
    nimg_per_epoch: int | None = None
    #: patches per update (train_seg's ``batch_size``; its default 8)
    batch_size: int = 8
    #: train_seg's optimiser (OPTIMIZERS) and its settings; None: train_seg's own (module
    #: docstring, "Optimiser")
    optimizer: str | None = None
    learning_rate: float | None = None
    weight_decay: float | None = None
    #: copies of each training section with a share of its fibres' mass dimmed
    #: (augment.with_dimmed_copies); per epoch, still ``nimg_per_epoch`` images (None: the
    #: number of training sections) drawn from sections and copies
    dimmed_copies: int = 2
    #: range of the share of each copy's fibres that are dimmed (augment.COPY_SHARE; StarDist
    #: dims 50-100 %: docs/decisions.md)
    dimmed_share: tuple = COPY_SHARE
    #: nothing after Cellpose's own masks (BaseParams' fragment filter off)
    min_fibre_fraction: float = dataclasses.field(default=0.0, metadata=PREDICT_ONLY)
    #: working-scale tiles of big images: Cellpose tiles each image itself
    tile_size: int = dataclasses.field(default=2048, metadata=PREDICT_ONLY)

    def quick(self):
        return dataclasses.replace(self, n_epochs=2)

    def full(self):
        return dataclasses.replace(self, n_epochs=TRAIN_SEG_EPOCHS, bsize=TRAIN_SEG_BSIZE)

    def training_length(self) -> str:
        return (f"{self.n_epochs} epochs of cellpose.train.train_seg (train_seg's default: "
                f"{TRAIN_SEG_EPOCHS})")


def cellpose_model_dir() -> Path:
    """Cellpose's model folder, without importing Cellpose when it is not imported yet.

    The same rule as ``cellpose.models.MODEL_DIR``: ``$CELLPOSE_LOCAL_MODELS_PATH`` or
    ``~/.cellpose/models``; when Cellpose is imported its (possibly changed) value is used.
    """
    module = sys.modules.get("cellpose.models")
    if module is not None and getattr(module, "MODEL_DIR", None) is not None:
        return Path(module.MODEL_DIR)
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(env) if env else Path.home() / ".cellpose" / "models"


def _defaults(func, names) -> dict:
    """The default values of ``func``'s arguments ``names`` (from its signature)."""
    params = inspect.signature(func).parameters
    return {name: params[name].default for name in names if name in params}


@register
class CellposeSegmenter(PretrainedSegmenter):
    """Cellpose 3 as its users run it: ``train_seg`` (fine-tuning ``cyto3`` when on disk),
    ``CellposeModel.eval`` at its default thresholds."""

    name = "cellpose"
    Params = CellposeParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.params.optimizer not in OPTIMIZERS:
            raise ValueError(f"cellpose: optimizer must be one of "
                             f"{', '.join(map(str, OPTIMIZERS))}, got {self.params.optimizer!r}")

    # -- pretrained weights ----------------------------------------------------------------
    def pretrained_path(self) -> Path:
        """Where the ``cyto3`` weights are looked for (they need not exist)."""
        if self.params.pretrained_model:
            return Path(self.params.pretrained_model).expanduser()
        return cellpose_model_dir() / PRETRAINED_NAME

    def pretrained_available(self) -> bool:
        return self.params.pretrained != "never" and self.pretrained_path().is_file()

    def unavailable_message(self) -> str:
        path = self.pretrained_path()
        return (f"cellpose: pretrained {PRETRAINED_NAME} weights not found at {path} (nothing "
                f"is downloaded while training); on a connected machine run `nclsm models "
                f"fetch {PRETRAINED_NAME}` (or download {PRETRAINED_URL}) and put the file at "
                f"{path}")

    def _check_pretrained(self) -> bool:
        """True when the weights will be used; raises or logs when they cannot be."""
        return use_pretrained(self.params.pretrained, self.pretrained_available(),
                              self.unavailable_message(), log)

    def _cache_extra(self) -> dict:
        extra = super()._cache_extra()
        if self.pretrained_available():
            path = self.pretrained_path()
            extra["init"] = f"{path.name}:{path.stat().st_size}"
        else:
            extra["init"] = "scratch"
        return extra

    def weights_description(self) -> str:
        return self._library_weights_description(
            "Cellpose", PRETRAINED_NAME,
            self.pretrained_path() if self.pretrained_available() else None,
            f"no {PRETRAINED_NAME} weights on disk at {self.pretrained_path()}")

    def network_description(self) -> str:
        from cellpose import models, train

        optimiser = self.optimizer_kwargs()
        fit = ", ".join(f"{k} = {v}" for k, v in _defaults(train.train_seg,
                                                         TRAIN_SEG_DEFAULTS).items()
                        if k not in optimiser)
        run = ", ".join(f"{k} = {v}" for k, v in _defaults(models.CellposeModel.eval,
                                                          EVAL_DEFAULTS).items())
        p = self.params
        return (f"CellposeModel (CPnet widths 32, 64, 128, 256; channels [1, 2]); "
                f"train_seg with bsize = {int(p.bsize)}, batch_size = {int(p.batch_size)}"
                f"{''.join(f', {k} = {v}' for k, v in optimiser.items())}, "
                f"nimg_per_epoch = "
                f"{p.nimg_per_epoch or 'the number of training sections'}; training set: "
                f"{describe_training_set(p.dimmed_copies, p.dimmed_share)}; other "
                f"train_seg defaults: {fit}; eval defaults: {run}; eval diameter = "
                f"{float(self.params.target_diameter):g} (the working scale's fibre diameter)")

    # -- training ----------------------------------------------------------------------------
    def fit(self, train_sections, workdir=None, force: bool = False, validation=None):
        if self.params.pretrained == "require" and not self.pretrained_available():
            self._check_pretrained()                       # raises before any folder is made
        return super().fit(train_sections, workdir=workdir, force=force)

    def _scratch_source(self) -> str:
        return ("trained from scratch (pretrained='never')" if self.params.pretrained == "never"
                else "trained from scratch (no weights on disk)")

    def _fit(self, train_sections, model_dir: Path) -> None:
        import torch

        params = self.params
        use_pretrained = self._check_pretrained()
        if use_pretrained and not params.finetune:
            self.model = self._build(self.pretrained_path())
            self.source = f"pretrained {PRETRAINED_NAME} as is (no training)"
            self._write_meta(model_dir, {"weights": str(self.pretrained_path()),
                                         "source": self.source})
            log.info("cellpose: using the pretrained %s weights as they are", PRETRAINED_NAME)
            return
        from cellpose import train

        torch.manual_seed(params.seed)
        np.random.seed(params.seed)
        model = self._build(self.pretrained_path() if use_pretrained else None)
        sections = list(train_sections)
        pairs = with_dimmed_copies(training_pairs(sections, self), params.dimmed_copies,
                                   params.seed, params.dimmed_share)
        images = [np.ascontiguousarray(np.moveaxis(image, -1, 0)) for image, _ in pairs]
        labels = [lab for _, lab in pairs]
        minimum = _defaults(train.train_seg, ["min_train_masks"]).get("min_train_masks", 5)
        if not any(len(np.unique(lab)) - 1 >= minimum for lab in labels):
            raise SegmenterError(f"cellpose: no training section has {minimum} or more labelled "
                                 "fibres (train_seg's min_train_masks)")
        start, cpu = time.time(), time.process_time()
        filename, losses, _ = train.train_seg(
            model.net, train_data=images, train_labels=labels, n_epochs=int(params.n_epochs),
            bsize=int(params.bsize), nimg_per_epoch=int(params.nimg_per_epoch or len(sections)),
            batch_size=int(params.batch_size), save_path=str(model_dir), model_name="cellpose",
            **self.optimizer_kwargs())
        final = model_dir / WEIGHTS_FILE
        os.replace(filename, final)
        try:
            (model_dir / "models").rmdir()
        except OSError:
            pass
        seconds, cpu_seconds = time.time() - start, time.process_time() - cpu
        self.model = self._build(final)
        self.source = (f"fine-tuned from {PRETRAINED_NAME}" if use_pretrained
                       else self._scratch_source())
        self._write_meta(model_dir, {"weights": WEIGHTS_FILE, "epochs": int(params.n_epochs),
                                     "train_seconds": round(seconds, 1),
                                     "train_cpu_seconds": round(cpu_seconds, 1),
                                     "final_loss": float(np.mean(losses[-5:])),
                                     "source": self.source})
        log.info("cellpose: %s, %d epochs in %.0f s (%.0f CPU s), final loss %.3f", self.source,
                 int(params.n_epochs), seconds, cpu_seconds, float(np.mean(losses[-5:])))

    def optimizer_kwargs(self) -> dict:
        """The optimiser arguments given to ``train_seg`` (none: its own defaults).

        >>> from nclsm_utils.segmenters import get_segmenter
        >>> get_segmenter("cellpose").optimizer_kwargs()
        {}
        >>> get_segmenter("cellpose", params={"optimizer": "sgd", "learning_rate": 0.2}
        ...               ).optimizer_kwargs()
        {'SGD': True, 'learning_rate': 0.2}
        """
        p, kwargs = self.params, {}
        if p.optimizer is not None:
            kwargs["SGD"] = p.optimizer == "sgd"
        if p.learning_rate is not None:
            kwargs["learning_rate"] = float(p.learning_rate)
        if p.weight_decay is not None:
            kwargs["weight_decay"] = float(p.weight_decay)
        return kwargs

    def _write_meta(self, model_dir: Path, meta: dict) -> None:
        write_text(model_dir / META_FILE, json.dumps(meta, indent=2))

    def _load(self, model_dir: Path) -> None:
        meta_path = model_dir / META_FILE
        if not meta_path.is_file():
            raise SegmenterError(f"cellpose: {meta_path} is missing; delete {model_dir} to "
                                 "retrain")
        meta = json.loads(meta_path.read_text())
        weights = Path(meta["weights"])
        if not weights.is_absolute():
            weights = model_dir / weights
        if not weights.is_file():
            raise SegmenterError(f"cellpose: weights {weights} named in {meta_path} are missing;"
                                 f" delete {model_dir} to retrain")
        self.model = self._build(weights)

    def _build(self, weights: Path | None):
        """A ``CellposeModel`` with Cellpose's own network: weights from a file, or fresh."""
        import torch
        from cellpose import models

        device = torch.device("cuda" if self.device == "cuda" and torch.cuda.is_available()
                              else "cpu")
        if weights is not None and not Path(weights).is_file():
            raise SegmenterError(f"cellpose: weights file {weights} not found")
        try:
            # a file path, or None with model_type=None: Cellpose neither looks a model up by
            # name nor downloads anything
            return models.CellposeModel(gpu=device.type == "cuda", device=device, nchan=2,
                                        pretrained_model=str(weights) if weights else None,
                                        model_type=None)
        except Exception as error:  # a corrupt file, or one of another architecture
            raise SegmenterError(f"cellpose: cannot load weights {weights}: {error}") from error

    # -- prediction --------------------------------------------------------------------------
    def _ensure_model(self):
        if self.model is not None:
            return self.model
        if self.pretrained_available():
            self.model = self._build(self.pretrained_path())
            self.source = f"pretrained {PRETRAINED_NAME} as is (no training)"
            return self.model
        if self.params.pretrained == "require":
            self._check_pretrained()
        raise SegmenterError("cellpose: no model; call fit(train_sections) first (no pretrained "
                             f"weights at {self.pretrained_path()})")

    def eval_kwargs(self) -> dict:
        """The arguments :meth:`_predict_working` gives ``CellposeModel.eval`` besides the
        image (everything else at Cellpose's defaults)."""
        return {"channels": [1, 2], "channel_axis": 2,
                "diameter": float(self.params.target_diameter)}

    def _predict_working(self, image: np.ndarray, modality: str) -> np.ndarray:
        model = self._ensure_model()
        masks, _, _ = model.eval(np.ascontiguousarray(image[..., :2], dtype=np.float32),
                                 **self.eval_kwargs())
        return np.asarray(masks)
