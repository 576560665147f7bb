"""A small U-Net in PyTorch: background / fibre interior / boundary, pretrained on synthetic data.

Model
    A 2-D U-Net (Ronneberger et al. 2015) with GroupNorm, max-pool downsampling, bilinear
    upsampling and ``base_channels`` x 2^level channels over ``depth`` levels. Input: the two
    percentile-normalised channels (membrane, mitochondrial mass) at the working scale where
    fibres are ``target_diameter`` (36) pixels across. Output: 3 classes (background, fibre
    interior, fibre boundary) or, with ``classes=2`` (method ``unet2``), background vs fibre.
Loss
    Pixel-wise cross-entropy weighted by the original U-Net weight map
    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`` on background pixels, where
    ``w_c`` balances the class frequencies and ``d1``, ``d2`` are the distances to the nearest
    and second-nearest fibre (see :func:`weight_map`); the maps are cached on disk.
Training
    Random crops with flips, 90-degree rotations, scale jitter, the mass channel of some
    fibres dimmed to near black (``dim_probability`` of the crops) or of the whole crop
    (``mass_dropout`` of the crops), so that fibres are found by their membrane too, the
    loss on fibres darker than 0.3 x the crop's median fibre weighted ``dark_weight`` times
    (:func:`upweight_dark`), and the shared intensity augmentation (:mod:`.augment`: gamma,
    contrast, brightness, blur, coarsening, noise).
    First pretrained on a separately generated synthetic NCL-SM (the ``pretrain`` preset,
    written to ``<workdir>/synthetic-pretrain``), cached under
    ``<workdir>/models/unet-pretrained-<hash>/`` so several fine-tunings share it; then
    fine-tuned on the train split. A user checkpoint (``checkpoint=``) replaces pretraining.
    Steps: 300 of pretraining, 100 of fine-tuning, chosen on the tuning sets (longer
    pretraining or fine-tuning fitted the synthetic look and transferred worse to real
    sections; the fine-tuning on the 8 train sections is what overfits their look, while
    the pretraining set's look is randomised more widely); predict-time settings (seed
    threshold, seed opening, dividing at narrow necks) gained nothing. See
    docs/decisions.md.
Instances
    3 classes: seeds are the connected components of fibre-probability > 0.5 after a small
    opening; a watershed on the negated fibre probability grows them into the fibre + boundary
    area (probability > 0.5). 2 classes: a distance-transform watershed of the foreground.
    Objects below ``min_area_fraction`` of a mean fibre area are removed.

Example
-------
>>> from nclsm_utils.segmenters import get_segmenter
>>> seg = get_segmenter("unet", workdir="data")               # doctest: +SKIP
>>> seg.fit(dataset.sections(split="train"))                  # doctest: +SKIP
>>> labels = seg.predict(section.image(), modality="IMC")     # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.io import write_text
from .augment import P_DIM, ZOOM, dim_fibres, drop_mass, intensity
from .base import (PREDICT_ONLY, BaseParams, Segmenter, SegmenterError, estimate_diameters,
                   register, remove_small, training_pairs)

log = logging.getLogger(__name__)

#: Format tag written into every checkpoint this module saves.
CHECKPOINT_FORMAT = "nclsm-unet"
#: Architecture keys that must agree between a checkpoint and the params.
ARCH_KEYS = ("in_channels", "classes", "base_channels", "depth", "groups")


@dataclasses.dataclass
class UNetParams(BaseParams):
    """Parameters of the U-Net (lengths in working-scale pixels, fibres ~36 px across)."""

    classes: int = 3                  # 3: background/fibre/boundary; 2: background/fibre
    base_channels: int = 16
    depth: int = 4                    # resolution levels (depth - 1 poolings)
    groups: int = 8                   # GroupNorm groups (fewer when a layer has few channels)
    crop: int = 160                   # training crop side
    batch_size: int = 4
    pretrain_steps: int = 300
    finetune_steps: int = 100
    lr: float = 3e-3                  # peak learning rate of pretraining (one-cycle)
    finetune_lr: float = 1.5e-3       # peak learning rate of fine-tuning
    weight_decay: float = 1e-4
    w0: float = 10.0                  # border weight of the U-Net weight map
    class_balance: str = "inverse"    # w_c: "inverse" (1 / frequency), "sqrt" or "none"
    sigma: float = 5.0                # its length scale (pixels)
    boundary_width: int = 1           # thickness of the boundary class inside each fibre
    dim_probability: float = P_DIM    # share of training crops with some fibres' mass dimmed
    mass_dropout: float = 0.3         # share of training crops with the whole mass channel dimmed
    dark_weight: float = 3.0          # loss weight factor on fibres darker than DARK_RELATIVE
    pretrain_preset: str = "pretrain"  # synthetic preset generated for pretraining
    pretrain_data_seed: int = 1001    # its seed (differs from the benchmark data's)
    checkpoint: str | None = None     # user .pt checkpoint: loaded instead of pretraining
    # the fields from here on are used only when predicting (PREDICT_ONLY: changing one
    # re-predicts with the trained model, Segmenter.model_key)
    #: average predictions over flips at inference
    tta: bool = dataclasses.field(default=True, metadata=PREDICT_ONLY)
    #: fibre probability of the seeds
    seed_threshold: float = dataclasses.field(default=0.5, metadata=PREDICT_ONLY)
    #: fibre + boundary probability of the instances' area
    area_threshold: float = dataclasses.field(default=0.5, metadata=PREDICT_ONLY)
    #: radius of the opening applied to the seeds
    seed_opening: int = dataclasses.field(default=1, metadata=PREDICT_ONLY)
    #: 2 classes: h-maxima depth, fraction of target_diameter
    distance_h: float = dataclasses.field(default=0.06, metadata=PREDICT_ONLY)
    #: drop objects below this fraction of a mean fibre area
    min_area_fraction: float = dataclasses.field(default=0.05, metadata=PREDICT_ONLY)

    def quick(self):
        """Short training for smoke runs (~20-30 s on 2 CPU cores)."""
        return dataclasses.replace(self, pretrain_steps=25, finetune_steps=25, crop=128,
                                   pretrain_preset="tiny", tta=False)

    def training_length(self) -> str:
        # the toolkit's own method: its ``full`` budget is its ``report`` one (no library
        # publishes a default training length for it)
        return (f"{self.pretrain_steps} pretraining steps on synthetic sections, then "
                f"{self.finetune_steps} fine-tuning steps on the train split (batches of "
                f"{self.batch_size} crops of {self.crop} px)")


# ----------------------------------------------------------------------------- network
def _torch():
    try:
        import torch
    except ImportError as error:  # pragma: no cover - torch is a dependency
        raise SegmenterError("the unet method needs PyTorch; install it with "
                             "`pip install torch`") from error
    return torch


def _groups(channels: int, groups: int) -> int:
    g = max(1, min(groups, channels // 4))
    while channels % g:
        g -= 1
    return g


def build_unet(in_channels: int = 2, classes: int = 3, base_channels: int = 16, depth: int = 4,
               groups: int = 8):
    """The U-Net as a ``torch.nn.Module`` (``(N, in_channels, H, W)`` -> ``(N, classes, H, W)``
    logits; H and W multiples of ``2 ** (depth - 1)``)."""
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(cout, groups), cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(cout, groups), cout), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = {"in_channels": in_channels, "classes": classes,
                           "base_channels": base_channels, "depth": depth, "groups": groups}
            widths = [base_channels * 2 ** i for i in range(depth)]
            self.down = nn.ModuleList()
            previous = in_channels
            for width in widths:
                self.down.append(block(previous, width))
                previous = width
            self.up = nn.ModuleList()
            for width in reversed(widths[:-1]):
                self.up.append(block(previous + width, width))
                previous = width
            self.head = nn.Conv2d(previous, classes, 1)

        def forward(self, x):
            skips = []
            for level, layer in enumerate(self.down):
                if level:
                    x = F.max_pool2d(x, 2)
                x = layer(x)
                skips.append(x)
            for layer, skip in zip(self.up, reversed(skips[:-1])):
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                x = layer(torch.cat([x, skip], dim=1))
            return self.head(x)

    return UNet()


def arch_config(params: UNetParams) -> dict:
    return {"in_channels": 2, "classes": int(params.classes),
            "base_channels": int(params.base_channels), "depth": int(params.depth),
            "groups": int(params.groups)}


def save_checkpoint(path: Path, model, extra: dict | None = None) -> None:
    """``torch.save`` a dict with the architecture ``config`` and the ``state_dict`` (atomic)."""
    torch = _torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "version": 1, "config": dict(model.config),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    payload.update(extra or {})
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path, expected: dict, device: str = "cpu"):
    """Load a checkpoint saved by :func:`save_checkpoint` into a new model.

    Raises
    ------
    SegmenterError
        One line naming the file when it is missing, unreadable, not a U-Net checkpoint of this
        module, or of another architecture than ``expected`` (an :func:`arch_config` dict).
    """
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise SegmenterError(f"{path}: U-Net checkpoint not found; expected a .pt file saved "
                             "by nclsm_utils.segmenters.unet")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle/zip errors of many types
        raise SegmenterError(f"{path}: cannot read the U-Net checkpoint "
                             f"({type(error).__name__}: {error})".replace("\n", " ")) from error
    if not isinstance(payload, dict) or "state_dict" not in payload or "config" not in payload:
        raise SegmenterError(f"{path}: not a U-Net checkpoint of nclsm_utils (expected a dict "
                             "with 'config' and 'state_dict', as saved by save_checkpoint)")
    config = payload["config"]
    found = {k: config.get(k) for k in ARCH_KEYS} if isinstance(config, dict) else config
    wanted = {k: expected[k] for k in ARCH_KEYS}
    if found != wanted or payload.get("format") != CHECKPOINT_FORMAT:
        raise SegmenterError(f"{path}: checkpoint of another architecture: found {found}, "
                             f"expected a {CHECKPOINT_FORMAT} checkpoint with {wanted}")
    model = build_unet(**wanted)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as error:
        first = str(error).strip().splitlines()[0]
        raise SegmenterError(f"{path}: checkpoint weights do not fit the expected architecture "
                             f"{wanted} ({first})") from error
    return model.to(device)


# ----------------------------------------------------------------------------- targets
def class_targets(labels: np.ndarray, classes: int = 3, boundary_width: int = 1) -> np.ndarray:
    """Per-pixel classes of an instance mask: 0 background, 1 fibre (interior), 2 boundary.

    The boundary is the ``boundary_width`` innermost ring of pixels of each fibre (so fibre +
    boundary is exactly the annotated fibre). With ``classes=2`` every fibre pixel is 1.
    """
    from skimage.segmentation import find_boundaries

    labels = np.asarray(labels)
    target = (labels > 0).astype(np.uint8)
    if classes == 2:
        return target
    ring = np.zeros(labels.shape, bool)
    remaining = labels.copy()
    for _ in range(max(1, int(boundary_width))):
        edge = find_boundaries(remaining, mode="inner") & (remaining > 0)
        ring |= edge
        remaining = np.where(edge, 0, remaining)
    target[ring] = 2
    return target


def weight_map(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0, classes: int = 3,
               boundary_width: int = 1, class_balance: str = "inverse") -> np.ndarray:
    """The U-Net loss weight map (Ronneberger et al. 2015, eq. 2) of an instance mask.

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`` where ``w_c`` is the
    class-balancing weight of the pixel's class (``class_balance="inverse"``: ``1 / (K f_k)``
    for the frequencies ``f_k`` of the :func:`class_targets` classes in this image, so the mean
    of ``w_c`` is 1; ``"sqrt"``: proportional to ``f_k ** -0.5``, also of mean 1; ``"none"``:
    1) and
    ``d1``, ``d2`` are the Euclidean distances to the border of the nearest and second-nearest
    fibre. The separation term is applied to background pixels (the gaps between fibres), as
    in the original paper's figure; distances are computed per fibre in a window of
    ``4 sigma`` around it (beyond, the term is below ``w0 * exp(-8)``).

    Returns
    -------
    (H, W) float32
    """
    labels = np.asarray(labels)
    target = class_targets(labels, classes, boundary_width)
    counts = np.bincount(target.ravel(), minlength=classes).astype(np.float64)
    present = counts > 0
    balance = np.zeros(classes)
    if class_balance == "none":
        balance[:] = 1.0
    elif class_balance in ("inverse", "sqrt"):
        power = 1.0 if class_balance == "inverse" else 0.5
        balance[present] = (counts.sum() / counts[present]) ** power
        balance *= counts.sum() / (balance * counts).sum()          # mean weight 1
    else:
        raise ValueError(f"class_balance must be inverse, sqrt or none, got {class_balance!r}")
    weights = balance[target].astype(np.float32)
    n = int(labels.max()) if labels.size else 0
    if n < 2 or w0 == 0:
        return weights
    margin = int(np.ceil(4 * sigma)) + 1
    big = np.float32(1e6)
    d1 = np.full(labels.shape, big, np.float32)
    d2 = np.full(labels.shape, big, np.float32)
    height, width = labels.shape
    for index, window in enumerate(ndimage.find_objects(labels), start=1):
        if window is None:
            continue
        r0, r1 = max(window[0].start - margin, 0), min(window[0].stop + margin, height)
        c0, c1 = max(window[1].start - margin, 0), min(window[1].stop + margin, width)
        inside = labels[r0:r1, c0:c1] == index
        dist = ndimage.distance_transform_edt(~inside).astype(np.float32)
        a, b = d1[r0:r1, c0:c1], d2[r0:r1, c0:c1]
        np.minimum(b, np.maximum(a, dist), out=b)
        np.minimum(a, dist, out=a)
    total = d1 + d2
    separation = w0 * np.exp(-(total ** 2) / (2 * sigma ** 2))
    separation[(labels > 0) | (d2 >= big)] = 0.0
    return (weights + separation).astype(np.float32)


def _array_digest(*arrays, extra=None) -> str:
    digest = hashlib.sha1()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
    digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def cached_weight_map(labels: np.ndarray, params: UNetParams, cache_dir: Path | None):
    """:func:`weight_map` of ``labels`` with the params' ``w0``, ``sigma``, cached as ``.npy``."""
    settings = {"w0": params.w0, "sigma": params.sigma, "classes": params.classes,
                "boundary_width": params.boundary_width, "class_balance": params.class_balance}
    if cache_dir is None:
        return weight_map(labels, **settings)
    path = Path(cache_dir) / f"{_array_digest(labels, extra=settings | {'version': 1})}.npy"
    if path.is_file():
        try:
            cached = np.load(path)
            if cached.shape == labels.shape:
                return cached
        except (OSError, ValueError):
            pass
    weights = weight_map(labels, **settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, weights)
    tmp.replace(path)
    return weights


# ----------------------------------------------------------------------------- training
class _Sampler:
    """Random augmented crops of working-scale (image, target, weight) triples."""

    def __init__(self, triples, crop: int, rng: np.random.Generator,
                 dim_probability: float = P_DIM, mass_dropout: float = 0.0,
                 dark_weight: float = 1.0):
        self.rng = rng
        self.crop = crop
        self.dim_probability, self.mass_dropout = dim_probability, mass_dropout
        self.dark_weight = dark_weight
        self.items = []
        for image, target, weights in triples:
            h, w = target.shape
            ph, pw = max(0, crop - h), max(0, crop - w)
            if ph or pw:  # pad small images; padding carries no loss
                pad = ((0, ph), (0, pw))
                image = np.pad(image, pad + ((0, 0),), mode="constant")
                target = np.pad(target, pad, mode="constant")
                weights = np.pad(weights, pad, mode="constant")
            self.items.append((np.ascontiguousarray(image.transpose(2, 0, 1)), target, weights))
        areas = np.array([t.size for _, t, _ in self.items], float)
        self.p = areas / areas.sum()

    def batch(self, size: int):
        rng, crop = self.rng, self.crop
        images = np.empty((size, 2, crop, crop), np.float32)
        targets = np.empty((size, crop, crop), np.int64)
        weights = np.empty((size, crop, crop), np.float32)
        for i in range(size):
            image, target, weight = self.items[rng.choice(len(self.items), p=self.p)]
            h, w = target.shape
            size = crop
            if rng.random() < 0.5:   # scale jitter: a larger or smaller window resized to crop
                size = int(round(crop / np.exp(rng.uniform(np.log(ZOOM[0]), np.log(ZOOM[1])))))
                size = min(max(size, 16), h, w)
            r = rng.integers(0, h - size + 1)
            c = rng.integers(0, w - size + 1)
            x = image[:, r:r + size, c:c + size]
            y = target[r:r + size, c:c + size]
            z = weight[r:r + size, c:c + size]
            if size != crop:
                x, y, z = _resize_crop(x, y, z, crop)
            k = int(rng.integers(4))
            flip = bool(rng.integers(2))
            x, y, z = (np.rot90(a, k, axes=(-2, -1)) for a in (x, y, z))
            if flip:
                x, y, z = x[..., ::-1], y[..., ::-1], z[..., ::-1]
            # fibres of the patch: the interior class, split by the boundary class
            fibres = ndimage.label(y == 1)[0]
            x = dim_fibres(x, fibres, rng, channel_axis=0, probability=self.dim_probability)
            z = upweight_dark(z, x[1], fibres, self.dark_weight)
            x = drop_mass(x, rng, self.mass_dropout, channel_axis=0)
            images[i] = intensity(x, rng, channel_axis=0)
            targets[i] = y
            weights[i] = z
        return images, targets, weights


#: A fibre is dark for :func:`upweight_dark` below this share of the crop's median fibre mass.
DARK_RELATIVE = 0.3


def upweight_dark(weights: np.ndarray, mass: np.ndarray, fibres: np.ndarray,
                  factor: float) -> np.ndarray:
    """Multiply the loss weights of the dark fibres of a crop by ``factor``.

    A fibre (a label of ``fibres``) is dark when its mean ``mass`` is under
    :data:`DARK_RELATIVE` times the median of the crop's fibres: the few fibres a network
    could only find by their membrane weigh more in the loss.

    Examples
    --------
    >>> fibres = np.array([[1, 1, 2, 2, 3, 3]]); mass = np.array([[0.8, 0.8, 0.7, 0.7, 0.05, 0.05]])
    >>> upweight_dark(np.ones((1, 6), np.float32), mass, fibres, 3.0).tolist()
    [[1.0, 1.0, 1.0, 1.0, 3.0, 3.0]]
    """
    if factor == 1.0 or fibres.max() == 0:
        return weights
    index = np.arange(1, int(fibres.max()) + 1)
    means = np.asarray(ndimage.mean(mass, fibres, index))
    dark = index[means < DARK_RELATIVE * np.median(means)]
    if dark.size == 0:
        return weights
    out = np.array(weights, np.float32, copy=True)
    out[np.isin(fibres, dark)] *= np.float32(factor)
    return out


def _resize_crop(x, y, z, crop: int):
    """Resize a ``(C, s, s)`` image, its class targets and weights to ``crop`` x ``crop``."""
    import cv2

    size = (crop, crop)
    x = np.stack([cv2.resize(np.ascontiguousarray(c, np.float32), size,
                             interpolation=cv2.INTER_LINEAR) for c in x])
    y = cv2.resize(np.ascontiguousarray(y, np.uint8), size, interpolation=cv2.INTER_NEAREST)
    z = cv2.resize(np.ascontiguousarray(z, np.float32), size, interpolation=cv2.INTER_LINEAR)
    return x, y.astype(np.int64), z


def train_unet(model, triples, steps: int, lr: float, params: UNetParams, seed: int,
               device: str = "cpu", desc: str = "unet") -> list[float]:
    """Train ``model`` in place for ``steps`` one-cycle Adam steps on augmented random crops.

    Returns the per-step weighted cross-entropy losses.
    """
    torch = _torch()
    from tqdm.auto import tqdm

    if steps <= 0:
        return []
    rng = np.random.default_rng([seed, 7])
    sampler = _Sampler(triples, params.crop, rng, params.dim_probability, params.mass_dropout,
                       params.dark_weight)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=params.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps,
                                                   pct_start=0.15)
    losses = []
    for _ in tqdm(range(steps), desc=desc, leave=False, disable=not log.isEnabledFor(logging.INFO)):
        images, targets, weights = sampler.batch(params.batch_size)
        x = torch.from_numpy(images).to(device)
        y = torch.from_numpy(targets).to(device)
        w = torch.from_numpy(weights).to(device)
        logits = model(x)
        per_pixel = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        loss = (per_pixel * w).sum() / w.sum().clamp_min(1e-6)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


# ----------------------------------------------------------------------------- instances
def instances_three_class(prob: np.ndarray, params: UNetParams) -> np.ndarray:
    """Labels from ``(3, h, w)`` probabilities: fibre seeds, watershed into fibre + boundary."""
    from skimage.morphology import disk
    from skimage.segmentation import watershed

    fibre = prob[1]
    seeds = fibre > params.seed_threshold
    if params.seed_opening > 0:
        seeds = ndimage.binary_opening(seeds, structure=disk(params.seed_opening))
    markers, _ = ndimage.label(seeds)
    area = (prob[1] + prob[2]) > params.area_threshold
    labels = watershed(-fibre, markers, mask=area | (markers > 0))
    return remove_small(labels, _min_area(params))


def instances_two_class(prob: np.ndarray, params: UNetParams) -> np.ndarray:
    """Labels from ``(2, h, w)`` probabilities: distance-transform watershed of the foreground."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    foreground = prob[1] > params.area_threshold
    distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(foreground), 1.0)
    # a fibre's centre is a distance maximum standing out by distance_h x its diameter
    h = max(0.5, params.distance_h * params.target_diameter)
    markers, _ = ndimage.label(h_maxima(distance, h))
    labels = watershed(-distance, markers, mask=foreground)
    return remove_small(labels, _min_area(params))


def _min_area(params: UNetParams) -> int:
    return int(params.min_area_fraction * params.fibre_area)


# ----------------------------------------------------------------------------- segmenters
@register
class UNetSegmenter(Segmenter):
    """Three-class U-Net (background, fibre, boundary), pretrained on synthetic sections and
    fine-tuned on the train split."""

    name = "unet"
    Params = UNetParams
    trainable = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model = None
        self.history: dict[str, list[float]] = {}
        self.timings: dict[str, float] = {}

    # -- what runs, in words (the methods page) ---------------------------------------------
    def weights_description(self) -> str:
        p = self.params
        if p.checkpoint:
            return f"the user checkpoint {p.checkpoint}, fine-tuned on the train split"
        if p.pretrain_steps <= 0:
            return "a fresh network, trained on the train split"
        return (f"the toolkit's own pretraining on synthetic sections (preset "
                f"{p.pretrain_preset!r}, seed {p.pretrain_data_seed}), fine-tuned on the train split")

    def network_description(self) -> str:
        p = self.params
        return (f"the toolkit's own U-Net (PyTorch; {p.classes} classes, depth {p.depth}, "
                f"{p.base_channels} base channels); instances from its probabilities by a "
                f"seeded watershed (tta = {p.tta}, seed_threshold = {p.seed_threshold}, "
                f"area_threshold = {p.area_threshold}, seed_opening = {p.seed_opening}, "
                f"min_area = {p.min_area_fraction} x fibre area"
                + (f", distance_h = {p.distance_h}" if p.classes == 2 else "") + ")")

    # -- caches ---------------------------------------------------------------------------
    def _cache_extra(self) -> dict:
        extra = super()._cache_extra()
        if self.params.checkpoint:
            extra["checkpoint_sha1"] = _file_digest(Path(self.params.checkpoint))
        return extra

    def pretrain_key(self) -> str:
        """Hash of everything that determines the pretrained weights (not the fine-tuning)."""
        p = self.params
        keys = ("target_diameter", "crop", "batch_size", "pretrain_steps", "lr", "weight_decay",
                "w0", "sigma", "class_balance", "boundary_width", "pretrain_preset",
                "pretrain_data_seed", "seed")
        payload = {"arch": arch_config(p), "params": {k: getattr(p, k) for k in keys}, "v": 1}
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    @property
    def pretrain_dir(self) -> Path:
        return self.workdir / "models" / f"unet-pretrained-{self.pretrain_key()}"

    @property
    def pretrain_data_dir(self) -> Path:
        p = self.params
        if p.pretrain_preset == "pretrain" and p.pretrain_data_seed == 1001:
            return self.workdir / "synthetic-pretrain"
        return self.workdir / f"synthetic-pretrain-{p.pretrain_preset}-{p.pretrain_data_seed}"

    @property
    def weight_cache_dir(self) -> Path:
        return self.workdir / "cache" / "unet-weights"

    # -- training -------------------------------------------------------------------------
    def _triples(self, pairs):
        p = self.params
        return [(image, class_targets(labels, p.classes, p.boundary_width),
                 cached_weight_map(labels, p, self.weight_cache_dir)) for image, labels in pairs]

    def _new_model(self):
        torch = _torch()
        torch.manual_seed(self.params.seed)
        return build_unet(**arch_config(self.params)).to(self.device)

    def initial_model(self):
        """The model fine-tuning starts from: the user checkpoint, else the (cached) pretrained
        model, else (``pretrain_steps=0``) a random initialisation."""
        p = self.params
        if p.checkpoint:
            self.source = "fine-tuned from a user checkpoint"
            return load_checkpoint(p.checkpoint, arch_config(p), self.device)
        if p.pretrain_steps <= 0:
            self.source = "trained from scratch"
            return self._new_model()
        self.source = "fine-tuned from the toolkit's synthetic pretraining"
        path = self.pretrain_dir / "pretrained.pt"
        if path.is_file():
            log.info("unet: reusing pretrained model %s", path)
            return load_checkpoint(path, arch_config(p), self.device)
        return self._pretrain(path)

    def _pretrain(self, path: Path):
        from ..core.dataset import Dataset
        from ..synth import SynthConfig, default_workers, write_dataset

        p = self.params
        start = time.perf_counter()
        root = write_dataset(self.pretrain_data_dir, SynthConfig.preset(p.pretrain_preset),
                             seed=p.pretrain_data_seed, progress=False,
                             workers=default_workers())   # byte-identical in any number
        sections = Dataset(root, splits={"test": [], "validation": []}).sections()
        self.timings["pretrain_data_s"] = time.perf_counter() - start
        saved = self.diameters
        try:  # scale the pretraining sections by their own fibre diameters
            self.diameters = estimate_diameters(sections)
            pairs = training_pairs(sections, self)
        finally:
            self.diameters = saved
        model = self._new_model()
        start = time.perf_counter()
        losses = train_unet(model, self._triples(pairs), p.pretrain_steps, p.lr, p,
                            seed=p.seed, device=self.device, desc="unet pretrain")
        self.timings["pretrain_s"] = time.perf_counter() - start
        self.history["pretrain"] = losses
        save_checkpoint(path, model, {"stage": "pretrained", "params": dataclasses.asdict(p),
                                      "losses": losses})
        write_text(self.pretrain_dir / "pretrained.json",
                   json.dumps({"key": self.pretrain_key(), "data": str(root),
                               "sections": [s.key for s in sections],
                               "seconds": self.timings["pretrain_s"]}, indent=2))
        log.info("unet: pretrained %d steps in %.1f s -> %s", p.pretrain_steps,
                 self.timings["pretrain_s"], path)
        return model

    def _fit(self, train_sections, model_dir: Path) -> None:
        p = self.params
        model = self.initial_model()
        start = time.perf_counter()
        triples = self._triples(training_pairs(train_sections, self))
        losses = train_unet(model, triples, p.finetune_steps, p.finetune_lr, p,
                            seed=p.seed + 1, device=self.device, desc="unet fine-tune")
        self.timings["finetune_s"] = time.perf_counter() - start
        self.history["finetune"] = losses
        save_checkpoint(model_dir / "model.pt", model,
                        {"stage": self.source, "params": dataclasses.asdict(p),
                         "losses": losses, "train": self.train_ids})
        self.model = model.eval()

    def _load(self, model_dir: Path) -> None:
        self.model = load_checkpoint(Path(model_dir) / "model.pt", arch_config(self.params),
                                     self.device).eval()

    # -- prediction -----------------------------------------------------------------------
    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities ``(classes, h, w)`` float32 of a working-scale ``(h, w, 2)``
        image (averaged over flips when ``tta``)."""
        torch = _torch()
        if self.model is None:
            raise SegmenterError(f"{self.name}: not fitted; call fit(train_sections) first")
        multiple = 2 ** (self.params.depth - 1)
        h, w = image.shape[:2]
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "edge"
            image = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None], np.float32))
        x = x.to(self.device)
        flips = [(), (-1,), (-2,), (-2, -1)] if self.params.tta else [()]
        self.model.eval()
        with torch.inference_mode():
            total = None
            for dims in flips:
                xi = torch.flip(x, dims) if dims else x
                prob = torch.softmax(self.model(xi), dim=1)
                prob = torch.flip(prob, dims) if dims else prob
                total = prob if total is None else total + prob
            prob = (total / len(flips))[0, :, :h, :w]
        return prob.float().cpu().numpy()

    def _predict_working(self, image: np.ndarray, modality: str) -> np.ndarray:
        prob = self.probabilities(image)
        if self.params.classes == 2:
            return instances_two_class(prob, self.params)
        return instances_three_class(prob, self.params)


@dataclasses.dataclass
class UNet2Params(UNetParams):
    """:class:`UNetParams` with two classes (background vs fibre)."""

    classes: int = 2


@register
class UNet2Segmenter(UNetSegmenter):
    """Two-class U-Net (foreground vs background) + distance-transform watershed: the
    two-class arm of the two- vs three-class comparison."""

    name = "unet2"
    Params = UNet2Params


def _file_digest(path: Path) -> str:
    if not path.is_file():
        return "missing"
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]
