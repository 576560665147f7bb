"""Training augmentation: the U-Net's (the toolkit's own training) and the dimmed training
copies every library-trained network also sees (:func:`with_dimmed_copies`); the plain
Cellpose and StarDist rows otherwise use their libraries' trainers and augmentation.

All functions take percentile-normalised float images (membrane, mass channels; ~0..1) and
a :class:`numpy.random.Generator`, and return new arrays (no hidden state):

* :func:`intensity` - per-channel gamma, contrast and brightness, blur, coarsening (shrink
  and enlarge back, as in images 2-3x coarser than native) and Gaussian noise: real sections
  differ in all of these (see :class:`nclsm_utils.synth.Appearance`);
* :func:`geometric` - flips and 90-degree rotations of an image and its label image;
* :func:`scale_jitter` - a random zoom of image and labels that keeps the array shape;
* :func:`dim_fibres` - the mass channel of a random share of the fibres dimmed to near
  black (fibres with little mitochondrial mass still have a membrane: a model must find
  them by it);
* :func:`with_dimmed_copies` - training pairs plus copies with a share of the fibres dimmed
  (the training set of the library-trained networks);
* :func:`drop_mass` - the whole mass channel of a patch dimmed to near black (a section, or a
  field of one, without mitochondrial signal: the membrane alone must outline the fibres);
* :func:`augment_pair` - geometry, zoom, dimmed fibres and intensity for one training patch
  and its labels.

Scipy and OpenCV do the resampling; the parameters are ours because the ranges are tied to
what real NCL-SM sections show.

Example
-------
>>> rng = np.random.default_rng(0)
>>> x = rng.random((32, 32, 2)).astype(np.float32); y = np.zeros((32, 32), np.int32)
>>> x2, y2 = augment_pair(x, y, rng)
>>> x2.shape, x2.dtype, y2.shape
((32, 32, 2), dtype('float32'), (32, 32))
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Ranges of :func:`intensity` (per channel unless said otherwise).
GAMMA = (0.6, 1.6)
CONTRAST_SD = 0.25          # log-normal s.d. of the contrast factor
BRIGHTNESS_SD = 0.08
BLUR = (0.3, 1.5)           # Gaussian sigma (px), with probability P_BLUR
P_BLUR = 0.3
P_COARSEN = 0.15            # shrink 1.5-3x and enlarge back (both channels)
NOISE = (0.01, 0.1)         # Gaussian noise s.d., with probability P_NOISE
P_NOISE = 0.5
#: Zoom range of :func:`scale_jitter` (fibre size around the working diameter); the U-Net's.
#: StarDist uses a wider one (``StarDistParams.zoom``, 0.5-1.5) and Cellpose's own trainer
#: zooms 0.5-1.5 (``CellposeParams.scale_range``): the small fibres of real IF sections,
#: half the median size and less, were never detected by either with 0.75-1.33.
ZOOM = (0.75, 1.33)
#: :func:`dim_fibres`: probability per patch, share of its fibres dimmed, their remaining mass.
P_DIM = 0.5
DIM_SHARE = (0.05, 0.3)
DIM_LEVEL = (0.0, 0.2)
#: :func:`with_dimmed_copies`: range of the share of each copy's fibres dimmed (the default;
#: ``cellpose``'s, while ``stardist`` dims 50-100 %: ``StarDistParams.dimmed_share``).
COPY_SHARE = (0.2, 0.5)
#: :func:`drop_mass`: the mass channel's remaining share (the probability is the caller's).
DROP_LEVEL = (0.0, 0.2)


def intensity(x: np.ndarray, rng: np.random.Generator, channel_axis: int = -1) -> np.ndarray:
    """Random per-channel gamma, contrast, brightness; blur, coarsening and noise.

    Parameters
    ----------
    x : float array with a channel axis (``(h, w, C)`` or ``(C, h, w)``)
    channel_axis : int
        Where the channels are (-1 or 0).

    Returns
    -------
    float32 array of the same shape.
    """
    x = np.moveaxis(np.asarray(x, np.float32), channel_axis, 0).copy()
    for c in range(x.shape[0]):
        channel = np.clip(x[c], 0, None)
        channel = channel ** np.float32(rng.uniform(*GAMMA))
        channel = channel * np.float32(np.exp(rng.normal(0.0, CONTRAST_SD)))
        x[c] = channel + np.float32(rng.normal(0.0, BRIGHTNESS_SD))
    if rng.random() < P_BLUR:
        sigma = rng.uniform(*BLUR)
        x = ndimage.gaussian_filter(x, (0, sigma, sigma))
    if rng.random() < P_COARSEN:
        import cv2

        factor = rng.uniform(1.5, 3.0)
        h, w = x.shape[1:]
        small = (max(1, int(round(w / factor))), max(1, int(round(h / factor))))
        x = np.stack([cv2.resize(cv2.resize(c, small, interpolation=cv2.INTER_AREA), (w, h),
                                 interpolation=cv2.INTER_LINEAR) for c in x])
    if rng.random() < P_NOISE:
        x = x + rng.normal(0.0, rng.uniform(*NOISE), x.shape).astype(np.float32)
    return np.ascontiguousarray(np.moveaxis(x.astype(np.float32), 0, channel_axis))


def geometric(x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """A random 90-degree rotation and flip of ``x`` ``(h, w, ...)`` and ``y`` ``(h, w)``."""
    k = int(rng.integers(4))
    x, y = np.rot90(x, k, axes=(0, 1)), np.rot90(y, k, axes=(0, 1))
    if rng.random() < 0.5:
        x, y = x[:, ::-1], y[:, ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def scale_jitter(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, zoom=ZOOM,
                 probability: float = 0.5):
    """Zoom image ``(h, w, C)`` and labels ``(h, w)`` by a random factor, keeping the shape.

    Zooming in crops the centre; zooming out pads with zeros (background). Labels are
    resampled nearest-neighbour, the image bilinearly.
    """
    if rng.random() >= probability:
        return x, y
    import cv2

    factor = float(np.exp(rng.uniform(np.log(zoom[0]), np.log(zoom[1]))))
    h, w = y.shape
    nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    xs = np.stack([cv2.resize(np.ascontiguousarray(x[..., c], np.float32), (nw, nh),
                              interpolation=cv2.INTER_LINEAR) for c in range(x.shape[-1])], -1)
    ys = cv2.resize(np.ascontiguousarray(y).astype(np.float32), (nw, nh),
                    interpolation=cv2.INTER_NEAREST).astype(y.dtype)
    out_x = np.zeros_like(x, dtype=np.float32)
    out_y = np.zeros_like(y)
    r0, c0 = max(0, (nh - h) // 2), max(0, (nw - w) // 2)      # source offset (zoom in)
    t0, u0 = max(0, (h - nh) // 2), max(0, (w - nw) // 2)      # target offset (zoom out)
    hh, ww = min(h, nh), min(w, nw)
    out_x[t0:t0 + hh, u0:u0 + ww] = xs[r0:r0 + hh, c0:c0 + ww]
    out_y[t0:t0 + hh, u0:u0 + ww] = ys[r0:r0 + hh, c0:c0 + ww]
    return out_x, out_y


def dim_fibres(x: np.ndarray, labels: np.ndarray, rng: np.random.Generator, channel: int = 1,
               channel_axis: int = -1, probability: float = P_DIM,
               share: tuple = DIM_SHARE) -> np.ndarray:
    """Dim the mass channel of a random share of the fibres of ``labels`` to near black.

    With probability ``probability``, a share (drawn from ``share``) of the labelled fibres
    keep only a fraction (:data:`DIM_LEVEL`) of their mass signal; membranes are untouched.

    Examples
    --------
    >>> x = np.ones((4, 4, 2), np.float32); labels = np.repeat([[1, 1, 2, 2]], 4, axis=0)
    >>> out = dim_fibres(x, labels, np.random.default_rng(3), probability=1.0)
    >>> [round(float(v), 2) for v in out[0, :, 1]], float(out[..., 0].min())   # fibre 1 dimmed
    ([0.12, 0.12, 1.0, 1.0], 1.0)
    """
    if rng.random() >= probability:
        return x
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return x
    count = max(1, int(round(rng.uniform(*share) * ids.size)))
    chosen = rng.choice(ids, count, replace=False)
    out = np.moveaxis(np.asarray(x, np.float32), channel_axis, 0).copy()
    inside = np.isin(labels, chosen)
    out[channel][inside] *= np.float32(rng.uniform(*DIM_LEVEL))
    return np.ascontiguousarray(np.moveaxis(out, 0, channel_axis))


def with_dimmed_copies(pairs, copies: int, seed: int = 0, share: tuple = COPY_SHARE) -> list:
    """Training pairs followed by ``copies`` copies of each in which a share (drawn from
    ``share``) of the fibres have their mass dimmed to near black (:func:`dim_fibres`).

    The training set of the library-trained networks (``cellpose``, ``stardist``): their
    trainers see fibres without mitochondrial signal in every section, not only where the
    data happens to have them, and must find them by their membrane. Dimming is per fibre,
    so it survives a trainer's own per-image normalisation (Cellpose's).

    Examples
    --------
    >>> x = np.ones((4, 8, 2), np.float32); labels = np.repeat([[1] * 4 + [2] * 4], 4, axis=0)
    >>> out = with_dimmed_copies([(x, labels)], copies=1, seed=0)
    >>> len(out), out[0][0] is x, float(out[1][0][..., 0].min()), bool(out[1][0][..., 1].min() < 0.2)
    (2, True, 1.0, True)
    """
    pairs = list(pairs)
    rng = np.random.default_rng(seed)
    out = list(pairs)
    for _ in range(int(copies)):
        out += [(dim_fibres(x, y, rng, probability=1.0, share=share), y) for x, y in pairs]
    return out


def describe_training_set(copies: int, share: tuple = COPY_SHARE) -> str:
    """The training set of :func:`with_dimmed_copies` in words.

    >>> describe_training_set(2, (0.5, 1.0))  # doctest: +NORMALIZE_WHITESPACE
    'the train split and 2 copies of each section with 50-100 % of its fibres
     mass-dimmed (augment.with_dimmed_copies)'
    """
    if not copies:
        return "the train split"
    low, high = (int(round(100 * float(v))) for v in share)
    return (f"the train split and {int(copies)} "
            f"cop{'y' if int(copies) == 1 else 'ies'} of each section with {low}-{high} % "
            f"of its fibres mass-dimmed (augment.with_dimmed_copies)")


def drop_mass(x: np.ndarray, rng: np.random.Generator, probability: float, channel: int = 1,
              channel_axis: int = -1) -> np.ndarray:
    """With probability ``probability``, keep only a share (:data:`DROP_LEVEL`) of the whole
    mass channel of ``x``; the membrane channel is untouched.

    Where :func:`dim_fibres` darkens some fibres among bright ones, this darkens all of them:
    a model that still finds the fibres must find them by their membrane.

    Examples
    --------
    >>> x = np.ones((2, 2, 2), np.float32)
    >>> out = drop_mass(x, np.random.default_rng(0), probability=1.0)
    >>> float(out[..., 0].min()), bool(out[..., 1].max() <= 0.2)
    (1.0, True)
    >>> drop_mass(x, np.random.default_rng(0), probability=0.0) is x
    True
    """
    if probability <= 0 or rng.random() >= probability:
        return x
    out = np.moveaxis(np.asarray(x, np.float32), channel_axis, 0).copy()
    out[channel] *= np.float32(rng.uniform(*DROP_LEVEL))
    return np.ascontiguousarray(np.moveaxis(out, 0, channel_axis))


def augment_pair(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, zoom=ZOOM):
    """:func:`geometric`, :func:`scale_jitter` (``zoom`` range), :func:`dim_fibres` and
    :func:`intensity` of a training patch (``x`` ``(h, w, C)`` float, ``y`` ``(h, w)``
    labels); shapes are kept."""
    x, y = geometric(x, y, rng)
    x, y = scale_jitter(x, y, rng, zoom=zoom)
    x = dim_fibres(x, y, rng)
    return intensity(x, rng), np.ascontiguousarray(y)
