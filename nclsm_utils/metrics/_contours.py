"""Fibres as the published NCL-SM notebook enumerates them: OpenCV hole contours per label value.

The published per-fibre csvs index fibres by contour, not by label. For every distinct
non-zero value of the instance mask (after its outermost rows and columns are overwritten
with the mask's maximum), in ascending order, the notebook inverts the value's 0/255 mask,
runs ``cv2.findContours(..., cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)`` and keeps the
contours that have a parent (the holes of the inverted mask, i.e. the value's 4-connected
regions that do not reach the image border). Each kept contour is one fibre, numbered in
that order. This module does the same on each value's bounding box (padded by one pixel)
instead of the whole image, which gives the same contours in the same order
(:func:`published_contours`), and provides the contour centroid, the strict inside test and
the filled contour (:func:`contour_centroid`, :func:`strictly_inside`, :func:`filled_crop`)
that :func:`nclsm_utils.metrics.evaluate` uses with ``definition="published"``.

Requires OpenCV (a declared dependency): there is no scipy fallback, since the point is to
trace exactly what OpenCV traces.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._regions import cv2, label_boxes


def _require_cv2():
    if cv2 is None:  # pragma: no cover - OpenCV is installed with the package
        raise ImportError("definition='published' needs OpenCV (pip install "
                          "opencv-python-headless): it traces fibres with cv2.findContours "
                          "exactly as the published notebook does")
    return cv2


@dataclass(frozen=True)
class ContourFibre:
    """One fibre of the published enumeration.

    Attributes
    ----------
    label : int
        The mask value the contour belongs to (a value with several regions gives several
        fibres with the same label).
    contour : ndarray, shape (n, 1, 2), int32
        The hole contour in whole-image ``(x, y)`` coordinates, as ``cv2.findContours``
        returns it on the whole image.
    """

    label: int
    contour: np.ndarray

    def bounding_rect(self) -> tuple[int, int, int, int]:
        """``(row0, row1, col0, col1)``, half-open, of the contour's points."""
        x, y, w, h = _require_cv2().boundingRect(self.contour)
        return y, y + h, x, x + w


def published_contours(labels: np.ndarray) -> list[ContourFibre]:
    """Every fibre of an instance mask, enumerated as the published notebook does.

    Parameters
    ----------
    labels : ndarray, shape (H, W), integer
        Instance mask, 0 = background (not modified).

    Returns
    -------
    list of ContourFibre
        In the notebook's order: label values ascending, and within a value the order of
        ``cv2.findContours``. Its index is the csv's ``Fibre_GT`` (``Fibre_Assess``), its
        length ``Total_GTcontours`` (``Total_Assess_contours``).

    Notes
    -----
    The notebook first overwrites the image frame (outermost rows and columns) with the
    maximum value, so the maximum label gains the frame and every fibre loses its border
    pixels; a region of the maximum value that touches the frame is then connected to the
    image border and is not a fibre. Each value is traced on its bounding box within the
    frame, padded by one pixel, with the frame pixels of that crop set to the maximum:
    every pixel outside the crop is either another value (so the crop's one-pixel margin
    connects all outside background as on the whole image) or frame, and the contours of
    holes are traced along their own one-pixel neighbourhood, which lies in the crop.

    Examples
    --------
    Label 1 has two regions, so two fibres; label 2, the maximum, touches the frame it is
    written into and is no fibre:

    >>> mask = np.zeros((8, 10), np.uint8)
    >>> mask[2:4, 2:4] = 1; mask[2:4, 6:8] = 1; mask[5:7, 2:8] = 2
    >>> fibres = published_contours(mask)
    >>> [f.label for f in fibres], [f.bounding_rect() for f in fibres]
    ([1, 1], [(1, 5, 5, 9), (1, 5, 1, 5)])
    """
    cv = _require_cv2()
    labels = np.asarray(labels)
    height, width = labels.shape
    if height < 3 or width < 3 or not labels.any():
        return []    # everything is frame: no value has a region inside it
    top = labels.max()
    boxes = label_boxes(labels[1:-1, 1:-1])
    fibres = []
    for k, value in enumerate(boxes.ids):
        # the value's box in whole-image coordinates, padded by one pixel (stays in the image)
        r0, r1 = int(boxes.row0[k]), int(boxes.row1[k]) + 2
        c0, c1 = int(boxes.col0[k]), int(boxes.col1[k]) + 2
        crop = labels[r0:r1, c0:c1]
        inverted = np.where(crop == value, np.uint8(0), np.uint8(255))
        # the frame holds the maximum value: background of the maximum's mask, else foreground
        frame = np.uint8(0 if value == top else 255)
        if r0 == 0:
            inverted[0, :] = frame
        if c0 == 0:
            inverted[:, 0] = frame
        if r1 == height:
            inverted[-1, :] = frame
        if c1 == width:
            inverted[:, -1] = frame
        contours, hierarchy = cv.findContours(inverted, cv.RETR_CCOMP, cv.CHAIN_APPROX_SIMPLE)
        if hierarchy is None:
            continue
        offset = np.array([c0, r0], np.int32)
        fibres.extend(ContourFibre(int(value), contour + offset)
                      for contour, link in zip(contours, hierarchy[0]) if link[3] != -1)
    return fibres


def contour_centroid(contour: np.ndarray) -> tuple[int, int] | None:
    """``(x, y)`` = ``int(m10 / m00)``, ``int(m01 / m00)`` of the contour's moments.

    The polygon's area centroid truncated toward zero, as the notebook's ``getcentre``;
    None for a contour of zero area (the notebook would divide by zero).

    >>> square = np.array([[[2, 2]], [[2, 6]], [[6, 6]], [[6, 2]]], np.int32)
    >>> contour_centroid(square)
    (4, 4)
    """
    moments = _require_cv2().moments(contour)
    if moments["m00"] == 0:
        return None
    return int(moments["m10"] / moments["m00"]), int(moments["m01"] / moments["m00"])


def strictly_inside(contour: np.ndarray, point: tuple[int, int]) -> bool:
    """``cv2.pointPolygonTest(contour, point, True) > 0``: the notebook's match test.

    >>> square = np.array([[[2, 2]], [[2, 6]], [[6, 6]], [[6, 2]]], np.int32)
    >>> strictly_inside(square, (4, 4)), strictly_inside(square, (2, 4))
    (True, False)
    """
    x, y = point
    return _require_cv2().pointPolygonTest(contour, (float(x), float(y)), True) > 0


def filled_crop(contour: np.ndarray, pad: int, shape: tuple[int, int]):
    """The contour drawn filled (``cv2.drawContours(..., thickness=cv2.FILLED)``) on its
    bounding box padded by ``pad`` pixels (clipped to an image of ``shape``).

    Returns
    -------
    (row0, col0, filled)
        The crop's top-left pixel in the image and the filled pixels (bool), exactly the
        pixels the notebook's whole-image drawing sets, cut to the crop.

    >>> square = np.array([[[2, 2]], [[2, 6]], [[6, 6]], [[6, 2]]], np.int32)
    >>> row0, col0, filled = filled_crop(square, 1, (10, 10))
    >>> row0, col0, filled.shape, int(filled.sum())
    (1, 1, (7, 7), 25)
    """
    cv = _require_cv2()
    height, width = shape
    x, y, w, h = cv.boundingRect(contour)
    r0, c0 = max(y - pad, 0), max(x - pad, 0)
    r1, c1 = min(y + h + pad, height), min(x + w + pad, width)
    canvas = np.zeros((r1 - r0, c1 - c0), np.uint8)
    cv.drawContours(canvas, [contour - np.array([c0, r0], np.int32)], 0, 255,
                    thickness=cv.FILLED)
    return r0, c0, canvas > 0
