"""Paper metrics (match, IoU, AiB/AoB rings, r_AoB, r_AiB, A%) and standard instance metrics.

The NCL-SM paper (Khan et al., arXiv 2311.15113) compares an *assessed*
segmentation (a method's prediction or a QA duplicate annotation) with the
ground truth fibre by fibre. :func:`evaluate` produces the per-fibre table,
:func:`summarise` the one-row summary of Tables II and III, and
:func:`instance_metrics` the usual AP/F1/PQ over IoU thresholds (``stardist.matching``'s
definitions and matching, with a numpy overlap table).

The package is split by concept: :mod:`nclsm_utils.metrics.paper` holds the paper's
metrics (:func:`evaluate`, :func:`summarise`, the per-fibre csv readers),
:mod:`nclsm_utils.metrics.instance` the standard instance metrics, and
:mod:`nclsm_utils.metrics._regions` the pixel-level helpers both use (label boxes, hole
filling, erosion/dilation, exact percentiles: every OpenCV call, with its scipy/numpy
fallback). Every name is importable from ``nclsm_utils.metrics`` itself.

Definitions (the shared README's account of the published notebook)
--------------------------------------------------------------------
For each ground-truth (GT) fibre, i.e. each non-zero label of ``gt_labels``:

* **filled region** -- the label's pixels with its holes filled. A hole is a
  background component (8-connected, as OpenCV's contour tracing treats the
  pixels outside a fibre) that does not reach the image border; other fibres
  lying inside a hole are part of the filled region, as when the published
  code fills the fibre's outer contour.
* **centroid** -- ``(floor(mean row), floor(mean column))`` of the filled
  region's pixel coordinates (the area centroid on the pixel grid, exact
  integer arithmetic). The published code takes ``int(m10 / m00)`` of the
  OpenCV moments of the traced contour polygon: the same truncation, and a
  polygon centroid that differs from the pixel mean by a fraction of a pixel.
* **match** -- the predicted fibre whose filled region contains the centroid;
  when several do (a fibre inside another's hole) the lowest label wins
  ("the first such fibre", the published code visits labels in ascending
  order). None: not detected, ``pred_id`` 0.
* **IoU** -- intersection over union of the two filled regions (0 when not
  detected).
* **rings** with a square structuring element of side ``2k + 1`` (``k`` =
  ``half_width``: 2 for IMC, 6 for IF): AiB = region minus its erosion,
  AoB = dilation minus region. *Image border*: the erosion treats pixels
  outside the image as part of the region, as OpenCV's ``cv2.erode`` (used by
  the published code) does by default, so a fibre cut by the image edge has
  no inner ring along the cut; the dilation treats them as background and
  AoB is clipped to the image. (``scipy.ndimage.binary_erosion`` defaults to
  the opposite, ``border_value=0``; its equivalent here is ``border_value=1``.)
* **positive pixels** -- membrane-positive: R > the 85th percentile of the
  whole section's R channel; mass-positive: G > the 75th percentile of the
  whole section's G channel (``np.percentile``, linear method).
* ``membrane_included`` = 100 |AiB & membrane+| / |AiB| and ``mass_missed`` =
  100 |AoB & mass+| / |AoB|, in percent; NaN when the ring is empty.

Every label is one fibre (the published code would split a label with
several 4-connected parts into several contours).

Where the published code differs from these (README) definitions
----------------------------------------------------------------
* Match direction: its ``are_same_fibres(contours_GT[i], contours_Assess[j])``
  tests the *assessed* fibre's centroid inside the *GT* contour (the README
  states the reverse). ``evaluate(..., match="pred_centroid")`` follows the code.
* Region size: it traces each fibre's contour on the background pixels around
  the fibre (``RETR_CCOMP`` holes of the inverted mask) and fills that
  polygon, so its regions include a one-pixel outer band (a 10 x 10 fibre
  becomes 140 pixels). IoU and both rings shift accordingly; we use the
  label's own pixels, as the README defines them.
* Image border: it overwrites the outermost image rows/columns with the
  highest label before tracing, so fibres lose their border pixels.

``evaluate(..., definition="published")`` follows the published code in all three
(:mod:`nclsm_utils.metrics._contours`), so its fibre indices and IoUs equal the published
per-fibre csvs; the label-based definitions above stay the default.

Example
-------
>>> gt = np.zeros((20, 20), np.uint16); gt[2:12, 2:12] = 1
>>> pred = np.zeros_like(gt); pred[4:14, 2:12] = 7
>>> evaluate(gt, pred)[["gt_id", "pred_id", "matched", "iou"]]
   gt_id  pred_id  matched       iou
0      1        7     True  0.666667
"""
from __future__ import annotations

from dataclasses import dataclass  # noqa: F401  (re-exported: the old module's namespace)
from pathlib import Path  # noqa: F401

import numpy as np  # noqa: F401  (the example above)

from ..core.dataset import HALF_WIDTH  # noqa: F401
from ..core.io import DataError  # noqa: F401
from ._regions import (  # noqa: F401
    LabelBoxes, _check_labels, _counts, _dilate, _erode, _fast_dtype, _percentile_from_counts,
    channel_percentile, fill_holes, label_boxes,
)
from .instance import (  # noqa: F401
    DEFAULT_IOU_THRESHOLDS, INSTANCE_COLUMNS, _instance_row, _present_labels, _safe_divide,
    aggregate_instance_metrics, instance_metrics, instance_metrics_dataset, iou_matrix,
    label_overlap, match_counts,
)
from ._contours import (  # noqa: F401
    ContourFibre, contour_centroid, filled_crop, published_contours, strictly_inside,
)
from .paper import (  # noqa: F401
    A_THRESHOLDS, DEFINITIONS, MASS_PERCENTILE, MATCH_RULES, PUBLISHED_LABEL_COLUMNS, MEMBRANE_PERCENTILE, PER_FIBRE_COLUMNS,
    PUBLISHED_COLUMNS, SUMMARY_COLUMNS, MetricWarning, _Fibre, _PER_FIBRE_DTYPES, _box,
    _check_half_width, _check_image, _empty_table, _fibre, _iou, _match, _match_pred_centroid,
    _pearson, _percent, _read_csv, _ring_percentages, _unmatched_predictions, a_column,
    evaluate, log, modality_half_width, positive_thresholds, read_per_fibre_csv,
    read_per_fibre_table, ring_masks, summarise,
)
