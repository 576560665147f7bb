"""Quality-control overlay: fibre outlines drawn on the (downsampled) image."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..core.io import atomic_path

#: Longest side of the overlay image (pixels).
OVERLAY_MAX_SIDE = 2048
#: Outline colour (cyan: distinct from red membranes and green mass staining).
OUTLINE_COLOUR = (0, 255, 255)


def overlay_image(rgb: np.ndarray, labels: np.ndarray, max_side: int = OVERLAY_MAX_SIDE,
                  colour=OUTLINE_COLOUR) -> np.ndarray:
    """Fibre outlines on the image, shrunk by an integer factor to at most ``max_side``.

    The image is shrunk by area averaging, the labels by taking every ``factor``-th pixel;
    the outlines are the labels' inner boundaries at the shrunk size (one pixel wide).

    Examples
    --------
    >>> labels = np.zeros((100, 300), np.uint16)
    >>> labels[10:50, 10:100] = 1
    >>> out = overlay_image(np.zeros((100, 300, 3), np.uint8), labels, max_side=150)
    >>> out.shape, tuple(int(v) for v in out[2, 2]), tuple(int(v) for v in out[5, 10])
    ((50, 150, 3), (0, 0, 0), (0, 255, 255))
    """
    import cv2
    from skimage.segmentation import find_boundaries

    height, width = labels.shape
    factor = max(1, math.ceil(max(height, width) / max_side))
    small_h, small_w = height // factor, width // factor
    image = np.ascontiguousarray(rgb[:small_h * factor, :small_w * factor])
    if factor > 1:
        image = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
    small_labels = labels[:small_h * factor:factor, :small_w * factor:factor]
    out = image.copy()
    out[find_boundaries(small_labels, mode="inner")] = colour
    return out


def write_overlay(path: str | os.PathLike, rgb: np.ndarray, labels: np.ndarray,
                  max_side: int = OVERLAY_MAX_SIDE) -> Path:
    """Write :func:`overlay_image` as a PNG, atomically."""
    import imageio.v3 as iio

    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, overlay_image(rgb, labels, max_side), extension=".png")
    return path
