"""Image utilities shared by every layer, each written once: exact channel percentiles,
percentile normalisation, resizing of images and label images, fibre diameters.

>>> channel = np.arange(10, dtype=np.uint8).reshape(2, 5)
>>> channel_percentile(channel, 85) == float(np.percentile(channel, 85))
True
>>> resize_labels(np.array([[1, 2]], np.uint32), (2, 4)).tolist()
[[1, 1, 2, 2], [1, 1, 2, 2]]
"""
from __future__ import annotations

import numpy as np

try:  # OpenCV is a declared dependency; numpy gives the same histograms, slower
    import cv2
except ImportError:  # pragma: no cover - exercised through the fallbacks in tests
    cv2 = None


def _counts(image: np.ndarray, channel: int | None, bins: int,
            chunk_pixels: int = 1 << 22) -> np.ndarray:
    """Exact int64 histogram of an unsigned 8/16-bit channel, in row chunks of a few MB.

    ``image`` is (H, W) with ``channel=None`` or (H, W, C) with a channel index.
    OpenCV's calcHist is used when available (float32 counts, exact per chunk of
    < 2**24 pixels); otherwise numpy's bincount.
    """
    counts = np.zeros(bins, np.int64)
    rows = max(1, chunk_pixels // max(1, image.shape[1]))
    for start in range(0, image.shape[0], rows):
        block = image[start:start + rows]
        if cv2 is not None:
            if block.ndim == 2 or not block.flags.c_contiguous:
                block = np.ascontiguousarray(block if channel is None else block[..., channel])
                index = 0
            else:
                index = channel
            hist = cv2.calcHist([block], [index], None, [bins], [0, bins])
            counts += hist.ravel().astype(np.int64)
        else:
            values = block if channel is None else block[..., channel]
            counts += np.bincount(values.ravel(), minlength=bins)[:bins]
    return counts


def _percentile_from_counts(counts: np.ndarray, q: float, dtype) -> float:
    """numpy's linear-method percentile of the values whose histogram is ``counts``."""
    n = int(counts.sum())
    cumulative = np.cumsum(counts)
    # numpy's linear method: virtual index (n - 1) * q / 100, then a lerp of its neighbours
    virtual = np.float64(n - 1) * np.true_divide(q, 100)
    below = int(np.floor(virtual))
    above = min(below + 1, n - 1)
    lo, hi = np.searchsorted(cumulative, [below, above], side="right").astype(dtype)
    gamma = float(virtual - below) if virtual < n - 1 else 0.0
    # np.quantile of (lo, hi) at gamma performs numpy's own lerp with weight gamma exactly
    return float(np.quantile(np.array([lo, hi], dtype=dtype), gamma))


def _fast_dtype(array: np.ndarray) -> int | None:
    """Number of histogram bins for uint8/uint16 arrays, None for other dtypes."""
    return {np.dtype(np.uint8): 256, np.dtype(np.uint16): 65536}.get(array.dtype)


def channel_percentile(channel: np.ndarray, q: float) -> float:
    """``np.percentile(channel, q)`` (linear method), exactly, without sorting a copy for uint8/uint16.

    Parameters
    ----------
    channel : ndarray, shape (H, W)
        One image channel. uint8 and uint16 channels are histogrammed in row
        chunks (a few MB of memory for a 185-megapixel section); other dtypes
        fall back to :func:`numpy.percentile` (which copies the channel).
    q : float
        Percentile in [0, 100].

    Returns
    -------
    float
        The same value as ``np.percentile(channel, q)``, bit for bit.

    Examples
    --------
    >>> channel = np.arange(10, dtype=np.uint8).reshape(2, 5)
    >>> channel_percentile(channel, 85) == float(np.percentile(channel, 85))
    True
    """
    channel = np.asarray(channel)
    if channel.size == 0:
        raise ValueError("cannot take a percentile of an empty channel")
    bins = _fast_dtype(channel)
    if bins is None or channel.ndim != 2:
        return float(np.percentile(channel, q))
    return _percentile_from_counts(_counts(channel, None, bins), q, channel.dtype)


def _bincountable(labels: np.ndarray) -> int | None:
    """The largest value of an integer label image that :func:`numpy.bincount` can count
    cheaply (no negatives, not far above its size), else None."""
    if labels.size == 0 or labels.dtype.kind not in "ui":
        return None
    if labels.dtype.kind == "i" and int(labels.min()) < 0:
        return None
    high = int(labels.max())
    return high if high <= max(4 * labels.size, 1 << 16) else None


def label_areas(labels: np.ndarray, region: np.ndarray | None = None,
                minlength: int = 0) -> np.ndarray:
    """Pixel count of every label value (``np.bincount(labels.ravel())``) in row chunks.

    ``np.bincount`` copies its input to 64-bit integers first (1.5 GB for a 185-megapixel
    section); counting chunks of a few megapixels keeps that copy small. With ``region``
    (bool, same shape) only the pixels inside it are counted.

    >>> label_areas(np.array([[0, 2, 2], [2, 0, 1]], np.uint16)).tolist()
    [2, 1, 3]
    >>> label_areas(np.array([[0, 2, 2], [2, 0, 1]]), np.array([[1, 1, 0], [1, 1, 1]], bool),
    ...             minlength=4).tolist()
    [2, 1, 2, 0]
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui" or (labels.size and labels.dtype.kind == "i"
                                          and int(labels.min()) < 0):
        raise ValueError(f"label_areas needs non-negative integer labels, got {labels.dtype}")
    high = int(labels.max()) if labels.size else -1
    counts = np.zeros(max(high + 1, int(minlength)), np.int64)
    rows = max(1, (1 << 22) // max(1, int(np.prod(labels.shape[1:], dtype=np.int64))))
    for start in range(0, labels.shape[0] if labels.ndim else 0, rows):
        block = labels[start:start + rows]
        if region is not None:
            block = block[np.asarray(region[start:start + rows], bool)]
        counts[:high + 1] += np.bincount(block.ravel(), minlength=high + 1)
    return counts


def label_values(labels: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a label image: ``np.unique(labels)``, without the sort.

    Label images of unsigned or non-negative integers whose largest value is not far above
    their size are counted with :func:`label_areas` (a 185-megapixel section in a fraction
    of the time a sort of it takes); anything else goes to :func:`numpy.unique`.

    >>> label_values(np.array([[0, 7, 7], [3, 0, 3]], np.uint32)).tolist()
    [0, 3, 7]
    >>> label_values(np.array([-1, 2])).tolist()
    [-1, 2]
    """
    labels = np.asarray(labels)
    if labels.ndim == 0 or _bincountable(labels) is None:
        return np.unique(labels)
    return np.flatnonzero(label_areas(labels)).astype(labels.dtype)


#: Fallback full-resolution fibre diameters (pixels) when none can be estimated.
DEFAULT_DIAMETER = {"IMC": 34.0, "IF": 72.0}


def estimate_diameters(sections) -> dict[str, float]:
    """Median equivalent diameter (pixels) of the ground-truth myofibres, per modality."""
    per_modality: dict[str, list[float]] = {}
    for section in sections:
        if not section.has("myofibres"):
            continue
        areas = np.bincount(section.mask("myofibres").ravel())[1:]
        areas = areas[areas > 0]
        per_modality.setdefault(section.modality, []).extend(2 * np.sqrt(areas / np.pi))
    return {m: float(np.median(d)) for m, d in per_modality.items() if d}


def normalize_channel(channel: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """One channel -> float32 scaled so percentiles ``low``..``high`` map to 0..1."""
    lo, hi = channel_percentile(channel, low), channel_percentile(channel, high)
    out = channel.astype(np.float32)
    out -= lo
    out *= 1.0 / max(hi - lo, 1e-6)
    return out


def normalize_channels(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` -> float32 ``(H, W, 2)`` (membrane, mass), percentile-normalised."""
    return np.stack([normalize_channel(image[..., c], low, high) for c in range(2)], axis=-1)


def rescale_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize an ``(H, W, C)`` or ``(H, W)`` image by ``factor`` (float32 result).

    Area averaging when shrinking (anti-aliased), bilinear when enlarging (OpenCV, float32,
    so a 150-megapixel channel is resized without float64 copies).
    """
    import cv2

    if abs(factor - 1.0) < 1e-6:
        return image.astype(np.float32, copy=False)
    height, width = (max(1, int(round(s * factor))) for s in image.shape[:2])
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    if image.ndim == 3:
        return np.stack([rescale_image(image[..., c], factor) for c in range(image.shape[2])],
                        axis=-1)
    return cv2.resize(image.astype(np.float32, copy=False), (width, height),
                      interpolation=interpolation)


def working_image(image: np.ndarray, factor: float) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` -> normalised ``(h, w, 2)`` float32 at the working scale.

    Processes one channel at a time, so peak memory stays near one float32 full-size channel.
    """
    return np.stack([rescale_image(normalize_channel(image[..., c]), factor) for c in range(2)],
                    axis=-1)


def _bilinear_taps(n_out: int, n_in: int):
    """The two input pixels (clipped) and the weight of the second for each output pixel,
    pixel centres aligned as in :func:`resize_labels`' nearest-neighbour mode."""
    position = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    first = np.floor(position).astype(np.intp)
    weight = (position - first).astype(np.float32)
    return np.clip(first, 0, n_in - 1), np.clip(first + 1, 0, n_in - 1), weight


def resize_labels(labels: np.ndarray, shape: tuple[int, int], order: int = 0,
                  chunk_pixels: int = 1 << 22) -> np.ndarray:
    """Resize a label image to ``shape``; no new labels are made.

    Parameters
    ----------
    labels : (H, W) integer ndarray
        Label image (0 = background).
    shape : (int, int)
        Output shape ``(h, w)``.
    order : {0, 1}
        0: nearest neighbour (the input pixel under each output pixel's centre). 1: bilinear
        vote: each output pixel takes the label with the largest bilinear weight among the
        four input pixels around its centre, so an outline follows the 0.5 level of each
        object's interpolated mask instead of jumping by up to half an input pixel (a
        prediction made at a working scale 1.3-2x the image's then loses less of its
        IoU when it is brought back; ties keep the first of the four taps).
    chunk_pixels : int
        Output pixels computed at a time with ``order=1``, in whole rows (memory bound: a
        few hundred MB at the default; on a full-size IF section the networks' peak rose
        by about 0.3 GB against nearest neighbour).

    Returns
    -------
    (h, w) ndarray of ``labels``' dtype.

    Examples
    --------
    A disc drawn at 4/3 of the scale, brought back: the nearest-neighbour outline differs
    from the disc drawn at the output scale in 8 pixels, the bilinear vote's in none.

    >>> yy, xx = np.mgrid[:48, :48] + 0.5
    >>> disc = ((yy - 24) ** 2 + (xx - 24) ** 2 < 9.6 ** 2).astype(np.uint8)
    >>> yy, xx = np.mgrid[:36, :36] + 0.5
    >>> truth = (yy - 18) ** 2 + (xx - 18) ** 2 < 7.2 ** 2
    >>> [int(((resize_labels(disc, (36, 36), order=k) > 0) ^ truth).sum()) for k in (0, 1)]
    [8, 0]
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (bilinear vote), got {order!r}")
    if labels.shape == tuple(shape):
        return labels
    if order == 0:
        rows = np.minimum((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0],
                          labels.shape[0] - 1)
        cols = np.minimum((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1],
                          labels.shape[1] - 1)
        return labels[rows.astype(np.intp)[:, None], cols.astype(np.intp)[None, :]]
    row_a, row_b, row_w = _bilinear_taps(shape[0], labels.shape[0])
    col_a, col_b, col_w = _bilinear_taps(shape[1], labels.shape[1])
    out = np.empty(tuple(shape), labels.dtype)
    step = max(1, int(chunk_pixels) // max(1, shape[1]))
    for start in range(0, shape[0], step):
        rows = slice(start, min(shape[0], start + step))
        ra, rb, fr = row_a[rows, None], row_b[rows, None], row_w[rows, None]
        taps = [labels[ra, col_a], labels[ra, col_b], labels[rb, col_a], labels[rb, col_b]]
        weights = [(1 - fr) * (1 - col_w), (1 - fr) * col_w, fr * (1 - col_w), fr * col_w]

        def weight_of(tap):   # summed weight of the taps that carry tap's label
            return sum(w * (other == tap) for w, other in zip(weights, taps))

        best, best_score = taps[0], weight_of(taps[0])
        for tap in taps[1:]:
            score = weight_of(tap)
            better = score > best_score + 1e-6   # ties keep the earlier tap
            best = np.where(better, tap, best)
            best_score = np.where(better, score, best_score)
        out[rows] = best
    return out
