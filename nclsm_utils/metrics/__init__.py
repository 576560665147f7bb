"""Paper metrics (match, IoU, AiB/AoB rings, r_AoB, r_AiB, A%) and standard instance metrics.

The NCL-SM paper (Khan et al., arXiv 2311.15113) compares an *assessed*
segmentation (a method's prediction or a QA duplicate annotation) with the
ground truth fibre by fibre. :func:`evaluate` produces the per-fibre table,
:func:`summarise` the one-row summary of Tables II and III, and
:func:`instance_metrics` the usual AP/F1/PQ over IoU thresholds (``stardist.matching``'s
definitions and matching, with a numpy overlap table).

In short: each ground-truth fibre (its label's pixels, holes filled) is matched to the
predicted fibre whose filled region contains its centroid; IoU compares the two filled
regions; the inner ring AiB (region minus its erosion) and the outer ring AoB (dilation
minus region), with a square element of half-width 2 px (IMC) or 6 px (IF), give the
percentage of membrane-positive pixels included and of mass-positive pixels missed.
The exact definitions, and where the published notebook's code differs from them, are in
:mod:`nclsm_utils.metrics.paper`; ``evaluate(..., definition="published")`` reproduces
the published per-fibre csvs (:mod:`nclsm_utils.metrics._contours`).

The package is split by concept: :mod:`nclsm_utils.metrics.paper` holds the paper's
metrics (:func:`evaluate`, :func:`summarise`, the per-fibre csv readers),
:mod:`nclsm_utils.metrics.instance` the standard instance metrics, and
:mod:`nclsm_utils.metrics._regions` the pixel-level helpers both use (label boxes, hole
filling, erosion/dilation, exact percentiles: every OpenCV call, with its scipy/numpy
fallback). Every name is importable from ``nclsm_utils.metrics`` itself.

Example
-------
>>> gt = np.zeros((20, 20), np.uint16); gt[2:12, 2:12] = 1
>>> pred = np.zeros_like(gt); pred[4:14, 2:12] = 7
>>> evaluate(gt, pred)[["gt_id", "pred_id", "matched", "iou"]]
   gt_id  pred_id  matched       iou
0      1        7     True  0.666667
"""
from __future__ import annotations

from dataclasses import dataclass  # noqa: F401  (re-exported)
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
    label_overlap, match_counts, match_pairs, overlap_pairs,
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
