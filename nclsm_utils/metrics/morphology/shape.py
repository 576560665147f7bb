"""The published NCL-SM NTM shape features and the NTM rule.

Defined in :mod:`nclsm_utils.core.shape` (the synthetic generator uses the rule too) and
re-exported here, with every helper, so that ``nclsm_utils.metrics.morphology`` keeps one
namespace for both feature families.
"""
from __future__ import annotations

from ...core.shape import (CANNY_THRESHOLDS, ELLIPSE_PAD, MIN_AREA, MIN_CONTOUR_POINTS,  # noqa: F401
                           NTM_COLUMNS, NTM_REFERENCE_DIAMETER, NTM_THRESHOLDS, SHAPE_COLUMNS,
                           _MAX_DIRECT_LABEL, _PERIMETER_WEIGHTS, _SHAPE_DTYPES, _as_bool,
                           _compact_labels, _convex_hull_row_spans, _diamond_hull_points,
                           _empty_frame, _fibre_crops,
                           _fibre_shape, _perimeter_image, check_labels, convex_hull_mask,
                           convex_hull_pixels, crofton_perimeter_4, ellipse_axes, log,
                           ntm_rule, ntm_thresholds, perimeter_pixels, reduced_ratio,
                           shape_features)
