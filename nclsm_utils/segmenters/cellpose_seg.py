"""Cellpose 3 (CPnet): the generalist ``cyto3`` model when its weights are on disk, else trained.

Weights (never downloaded)
    ``cyto3`` is looked for where Cellpose itself keeps its models: the file ``cyto3`` in
    ``cellpose.models.MODEL_DIR`` (``$CELLPOSE_LOCAL_MODELS_PATH`` or ``~/.cellpose/models``),
    or the file given as ``Params(pretrained_model=...)``. Only the file's existence is
    checked: Cellpose is never asked for a model by name, because that downloads it.
    ``pretrained``: ``"auto"`` uses the weights when present and trains from scratch otherwise
    (one log line says which); ``"require"`` raises :class:`PretrainedUnavailable` when they are
    absent; ``"never"`` always trains from scratch.
Training
    :meth:`fit` trains on the train split with ``cellpose.train.train_seg``: from the ``cyto3``
    weights when present (``source = "fine-tuned"``), from scratch otherwise
    (``"trained from scratch"``). With ``finetune=False`` and the weights present it only
    loads them (``"pretrained"``). From scratch the CPnet may be narrower than Cellpose's
    (``nbase``) to fit the CPU budget; fine-tuning always uses Cellpose's own widths
    (32, 64, 128, 256).
Channels
    The image's membrane channel (R) is Cellpose's channel 1, the "cyto" channel, and the
    mitochondrial-mass channel (G) its channel 2 (``channels=[1, 2]``). The generalist models
    were trained with the cell-outline stain in channel 1 (cytoplasm or membrane markers, e.g.
    TissueNet's membrane channel), which is what the membrane marker is: bright at fibre borders
    and in the gaps between fibres. Channel 2 is an optional "nuclear" channel, an interior
    signal that marks which pixels belong to an object; the mass stain fills each fibre's
    interior (dark in the gaps and background) and plays that role. A trained model learns
    from both channels anyway.
Normalisation
    The segmenter interface already gives percentile-normalised channels for the whole image
    (before tiling), so Cellpose's own per-image normalisation is switched off, in training and
    in prediction alike (``normalize={"normalize": False}``): the same pixels get the same
    values whatever tile they fall in. (A dict is passed, never a bool, because Cellpose 3
    writes a bool into its module-level defaults.)
Scale
    Images arrive at the working scale (fibres ``target_diameter`` = 36 px across) and ``eval``
    is told that diameter; Cellpose then resizes them to its ``diam_mean``: 30 px for ``cyto3``
    and ``net_diameter`` (24 px) for a CPnet trained here, which needs 2.25x fewer pixels per
    fibre than 36 px and fits the CPU budget. Flows are resized back and the masks computed at
    the working scale (``resample=True``), so borders are not quantised at the coarser scale.
Budget
    Default params train a CPnet of widths (16, 32, 64, 128) for 250 steps of 8 patches of
    96 x 96 (at 24 px per fibre) with Cellpose's AdamW schedule (warm-up, then halving over the
    last 50 steps): about 3 minutes on 2 CPU cores. ``quick()``: 30 steps of 4 patches.
    Chosen on a synthetic tuning set (seed 2027, 14 sections never trained on), the real
    panel's left half and the S11 geometry at a tenth of full size (mean IoU of matched fibres
    / F1@0.5): 150 steps (137 s to fit) tuning set 0.897 / 0.867, real 0.869 / 0.919, S11 / 10
    0.916 / 0.913; 200 steps (180 s) 0.906 / 0.870, 0.872 / 0.926, 0.928 / 0.920; **250 steps
    (188 s) 0.908 / 0.889, 0.872 / 0.954, 0.931 / 0.921**. Not better for their time:
    ``net_diameter`` 30 (150 steps: 0.899 / 0.879, real F1 0.941) and 64-px patches (300
    steps, 150 s: 0.902 / 0.874, real F1 0.934).
Scale range
    Cellpose's trainer zooms every image by a random factor in 1 -/+ ``scale_range`` / 2.
    Its default (0.5, x0.75-1.25) never showed the net the small fibres of a real IF
    section, which it then missed entirely (S11 geometry at a tenth of full size: 92 of 488
    fibres missed, median area 174 px at the working scale against 1,514 for the found ones).
    ``scale_range=1.0`` (x0.5-1.5), same steps, models of commit 926ec35 -> retrained (F1@0.5 /
    mean IoU): S11 / 10 0.887 / 0.916 -> 0.913 / 0.916; real left half 0.919 / 0.874 ->
    0.919 / 0.869; validation P04 0.945 / 0.909 -> 0.931 / 0.906, S25 0.946 / 0.921 ->
    0.922 / 0.924.
Background objects
    Masks whose mean membrane + mass signal is under ``background_level`` (0.2 of the
    normalised range) are dropped (:func:`~.membrane.drop_background_objects`, StarDist's rule
    and level). On the real S11 geometry at full size (models of commit c9ee821, true median
    diameter) 15 of Cellpose's 30 false objects lay off the tissue, with signals 0.05-0.14
    against 0.30 and more for every object on a fibre: dropping them took F1@0.5 from 0.889 to
    0.903 (mean IoU 0.913); S11 at a tenth of full size 0.897 -> 0.913; real left half 0.916 ->
    0.919; a synthetic tuning set (seed 2027, never trained on) F1 0.866 -> 0.867, mean IoU
    unchanged.

Example
-------
>>> from nclsm_utils.segmenters import get_segmenter
>>> seg = get_segmenter("cellpose", workdir="data")                   # doctest: +SKIP
>>> seg.fit(dataset.sections(split="train")).source                   # doctest: +SKIP
'trained from scratch'
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..core.io import write_text
from .augment import intensity
from .base import (PREDICT_ONLY, BaseParams, PretrainedSegmenter, SegmenterError, register,
                   remove_small, training_pairs, use_pretrained)
from .membrane import drop_background_objects

log = logging.getLogger(__name__)

#: File name of the generalist model in Cellpose's model folder.
PRETRAINED_NAME = "cyto3"
#: Where Cellpose serves it (for the message only; nothing here downloads).
PRETRAINED_URL = "https://www.cellpose.org/models/cyto3"
#: Cellpose's own CPnet widths (those of cyto3).
CELLPOSE_NBASE = (32, 64, 128, 256)
WEIGHTS_FILE = "cellpose_weights.pt"
META_FILE = "cellpose_meta.json"


@dataclasses.dataclass
class CellposeParams(BaseParams):
    """Parameters of the Cellpose method (lengths in working-scale pixels, fibres ~36 px)."""

    pretrained: str = "auto"            # auto | require | never (see the module docstring)
    pretrained_model: str | None = None  # cyto3 weights file; None: Cellpose's model folder
    finetune: bool = True               # with weights present: fine-tune (True) or use as is
    nbase: tuple = (16, 32, 64, 128)    # CPnet widths when training from scratch
    net_diameter: float = 24.0          # fibre diameter inside a CPnet trained from scratch
    n_steps: int = 250                  # optimiser steps (one batch each)
    batch_size: int = 8
    bsize: int = 96                     # training patch side at the net's scale (multiple of 16)
    learning_rate: float = 0.005        # from scratch
    finetune_learning_rate: float = 0.001
    weight_decay: float = 1e-5
    # the fields below marked PREDICT_ONLY are used only when predicting: changing one
    # re-predicts with the trained model (Segmenter.model_key)
    flow_threshold: float = dataclasses.field(default=0.4, metadata=PREDICT_ONLY)
    cellprob_threshold: float = dataclasses.field(default=0.0, metadata=PREDICT_ONLY)
    #: smallest kept object (working-scale pixels)
    min_size: int = dataclasses.field(default=30, metadata=PREDICT_ONLY)
    intensity_copies: int = 2           # intensity-augmented copies of each training image
    #: Cellpose's random zoom in training, 1 - r/2 .. 1 + r/2 (its default 0.5 is 0.75-1.25):
    #: 1.0 shows the net fibres from half to 1.5 times the median size, as small IF fibres are
    scale_range: float = 1.0
    #: network tile side at prediction
    eval_bsize: int = dataclasses.field(default=224, metadata=PREDICT_ONLY)
    #: objects with a mean membrane + mass signal below this are dropped, as for StarDist
    #: (membrane.drop_background_objects; 0 = keep all)
    background_level: float = dataclasses.field(default=0.2, metadata=PREDICT_ONLY)

    def quick(self):
        return dataclasses.replace(self, n_steps=30, batch_size=4)


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


@register
class CellposeSegmenter(PretrainedSegmenter):
    """Cellpose 3: pretrained ``cyto3`` when on disk, fine-tuned or trained on the train split."""

    name = "cellpose"
    Params = CellposeParams

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
        return (f"cellpose: pretrained {PRETRAINED_NAME} weights not found at {path} (offline: "
                f"nothing is downloaded); to use them, download {PRETRAINED_URL} on a connected "
                f"machine and copy it to {path} (or set CELLPOSE_LOCAL_MODELS_PATH, or "
                f"Params(pretrained_model='/path/to/cyto3'))")

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

    # -- training ----------------------------------------------------------------------------
    def fit(self, train_sections, workdir=None, force: bool = False):
        if self.params.pretrained == "require" and not self.pretrained_available():
            self._check_pretrained()                       # raises before any folder is made
        return super().fit(train_sections, workdir=workdir, force=force)

    def _fit(self, train_sections, model_dir: Path) -> None:
        import torch

        params = self.params
        use_pretrained = self._check_pretrained()
        if use_pretrained and not params.finetune:
            self.model = self._build(weights=self.pretrained_path(), nbase=CELLPOSE_NBASE)
            self._write_meta(model_dir, {"weights": str(self.pretrained_path()),
                                         "nbase": list(CELLPOSE_NBASE)})
            self.source = "pretrained"
            log.info("cellpose: using the pretrained %s weights as they are", PRETRAINED_NAME)
            return
        from cellpose import train

        torch.manual_seed(params.seed)
        np.random.seed(params.seed)
        if use_pretrained:
            nbase, lr = CELLPOSE_NBASE, params.finetune_learning_rate
            model = self._build(weights=self.pretrained_path(), nbase=nbase)
        else:
            nbase, lr = tuple(params.nbase), params.learning_rate
            model = self._build(weights=None, nbase=nbase)
        pairs = training_pairs(train_sections, self)
        images = [np.ascontiguousarray(np.moveaxis(image, -1, 0)) for image, _ in pairs]
        labels = [lab for _, lab in pairs]
        usable = [i for i, lab in enumerate(labels) if len(np.unique(lab)) > 1]
        if not usable:
            raise SegmenterError("cellpose: no training section has any labelled fibre")
        images, labels = [images[i] for i in usable], [labels[i] for i in usable]
        # Cellpose's train_seg flips, rotates and rescales; intensity augmentation (shared
        # with the other methods) is added offline: augmented copies of every image
        images, labels = _pad_to(images, labels, params.bsize)
        from cellpose import dynamics

        # the flows are computed once (Cellpose skips labels that already carry flows)
        flows = dynamics.labels_to_flows(labels, device=torch.device("cpu"))
        rng = np.random.default_rng([params.seed, 3])
        copies = max(0, int(params.intensity_copies))
        images = images + [intensity(image, rng, channel_axis=0)
                           for _ in range(copies) for image in images]
        labels = flows * (copies + 1)
        start, cpu = time.time(), time.process_time()
        filename, losses, _ = train.train_seg(
            model.net, train_data=images, train_labels=labels, channels=None,
            normalize={"normalize": False}, learning_rate=lr, weight_decay=params.weight_decay,
            n_epochs=params.n_steps, nimg_per_epoch=params.batch_size,
            batch_size=params.batch_size, bsize=params.bsize, rescale=True,
            scale_range=float(params.scale_range),
            min_train_masks=1, save_path=str(model_dir), save_every=10 ** 9,
            model_name="cellpose")
        final = model_dir / WEIGHTS_FILE
        os.replace(filename, final)
        try:
            (model_dir / "models").rmdir()
        except OSError:
            pass
        seconds, cpu_seconds = time.time() - start, time.process_time() - cpu
        self.model = self._build(weights=final, nbase=nbase)
        self.source = "fine-tuned" if use_pretrained else "trained from scratch"
        self._write_meta(model_dir, {"weights": WEIGHTS_FILE, "nbase": list(nbase),
                                     "train_seconds": round(seconds, 1),
                                     "train_cpu_seconds": round(cpu_seconds, 1),
                                     "final_loss": float(np.mean(losses[-5:])),
                                     "source": self.source})
        log.info("cellpose: %s in %.0f s (%.0f CPU s), final loss %.3f", self.source, seconds,
                 cpu_seconds, float(np.mean(losses[-5:])))

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
        self.model = self._build(weights=weights, nbase=tuple(meta["nbase"]))

    def _build(self, weights: Path | None, nbase):
        """A CellposeModel holding a CPnet of widths ``nbase`` (weights from a file or fresh)."""
        import torch
        from cellpose import models

        device = torch.device("cuda" if self.device == "cuda" and torch.cuda.is_available()
                              else "cpu")
        # pretrained_model=None and model_type=None: Cellpose neither looks a model up by name
        # nor downloads anything
        model = models.CellposeModel(gpu=device.type == "cuda", pretrained_model=None,
                                     model_type=None, nchan=2, device=device,
                                     diam_mean=float(self.params.net_diameter))
        if tuple(nbase) != tuple(model.nbase[1:]):
            model.nbase = [2, *nbase]
            model.net = _cpnet_class()(model.nbase, model.nclasses, sz=3, mkldnn=model.mkldnn,
                                       max_pool=True, diam_mean=model.diam_mean).to(device)
        if weights is not None:
            try:
                model.net.load_model(str(weights), device=device)
            except Exception as error:  # a corrupt file, or one of another architecture
                raise SegmenterError(f"cellpose: cannot load weights {weights} into a CPnet of "
                                     f"widths {list(nbase)}: {error}") from error
            model.net.to(device)
            model.pretrained_model = str(weights)
            model.diam_mean = float(model.net.diam_mean.data.cpu().numpy()[0])
            model.diam_labels = float(model.net.diam_labels.data.cpu().numpy()[0])
        return model

    # -- prediction --------------------------------------------------------------------------
    def _ensure_model(self):
        if self.model is not None:
            return self.model
        if self.pretrained_available():
            self.model = self._build(weights=self.pretrained_path(), nbase=CELLPOSE_NBASE)
            self.source = "pretrained"
            return self.model
        if self.params.pretrained == "require":
            self._check_pretrained()
        raise SegmenterError("cellpose: no model; call fit(train_sections) first (no pretrained "
                             f"weights at {self.pretrained_path()})")

    def _predict_working(self, image: np.ndarray, modality: str) -> np.ndarray:
        model = self._ensure_model()
        params = self.params
        masks, _, _ = model.eval(
            np.ascontiguousarray(image[..., :2], dtype=np.float32), channels=[1, 2],
            channel_axis=2, diameter=float(params.target_diameter),
            normalize={"normalize": False}, flow_threshold=params.flow_threshold,
            cellprob_threshold=params.cellprob_threshold, min_size=params.min_size,
            bsize=params.eval_bsize)
        masks = drop_background_objects(np.asarray(masks), image, params.background_level)
        return remove_small(masks, params.min_size)


_CPNET_CLASS = None


def _cpnet_class():
    """Cellpose's CPnet, with its style vector zero-padded to the 256 values Cellpose expects.

    Cellpose's ``run_net`` allocates 256 style values per tile whatever the widths, so a CPnet
    narrower than Cellpose's own (last width below 256) pads its style (only used by Cellpose's
    size model, not for masks) with zeros; the network itself is unchanged.
    """
    global _CPNET_CLASS
    if _CPNET_CLASS is None:
        import torch.nn.functional as F
        from cellpose.resnet_torch import CPnet

        class NarrowCPnet(CPnet):
            def forward(self, data):
                out = super().forward(data)
                style = out[1]
                if style.shape[-1] < 256:
                    style = F.pad(style, (0, 256 - style.shape[-1]))
                return (out[0], style, *out[2:])

        _CPNET_CLASS = NarrowCPnet
    return _CPNET_CLASS


def _pad_to(images, labels, size: int):
    """Zero-pad images (C, H, W) and labels (H, W) to at least ``size`` on each side."""
    out_images, out_labels = [], []
    for image, label in zip(images, labels):
        pad_h, pad_w = max(0, size - label.shape[0]), max(0, size - label.shape[1])
        if pad_h or pad_w:
            image = np.pad(image, ((0, 0), (0, pad_h), (0, pad_w)))
            label = np.pad(label, ((0, pad_h), (0, pad_w)))
        out_images.append(image.astype(np.float32))
        out_labels.append(label.astype(np.int32))
    return out_images, out_labels
