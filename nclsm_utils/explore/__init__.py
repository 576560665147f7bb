"""Interactive exploration of sections, predictions and per-fibre metrics (ipywidgets).

Researchers explore before they trust a number: :class:`Explorer` is a one-cell JupyterLab
app that shows a section's image (R membrane, G mitochondrial mass) with the ground-truth
contours in white and each method's predicted contours coloured by the IoU of the fibre
they match, two methods side by side on the same region, a selected fibre's AiB/AoB rings
next to its per-fibre metrics row, and live A% and matched / missed / extra counts at an
IoU threshold chosen with a slider::

    from nclsm_utils.explore import Explorer
    app = Explorer(data="../data", workdir="../data")
    app                                   # the last expression of a cell displays it

It only reads what the pipeline cached: predictions in
``<workdir>/predictions/<method>/<modality>_<id>.tiff`` and per-fibre tables in
``<workdir>/results/<method>/<modality>_<id>.csv`` (a missing table is computed with
:func:`nclsm_utils.metrics.evaluate`; missing predictions give a message and a button that
runs the method with :func:`nclsm_utils.runner.run_method`).

Big sections
    Full-size IF sections are about 10k x 15k pixels. Nothing is rendered at full
    resolution: a view is the zoom/pan region cropped first, then downsampled to at most
    ``max_side`` pixels (the image by area averaging, label images by striding, which keeps
    labels exact). Views are cached by ``(section, layer, max_side, region)`` in a bounded
    LRU (:class:`ViewCache`), so switching back to a section or method already seen is
    instant. The full-resolution arrays of one section at a time are kept (for zooming and
    the fibre rings) and dropped when another section is read; the fibre panels use small
    cached crops (those of the first fibres of the list are kept while the arrays are in
    memory), label bounding boxes and positive-pixel thresholds are kept per section, so a
    section seen before is shown again without reading its files. The whole-section views
    (overviews) of the image, the ground truth and each prediction are also cached on disk
    in ``<workdir>/overviews/<modality>_<id>/<layer>_<max_side>.npz``, keyed by the source
    file's path, size and modification time (a changed file rebuilds its overview): a
    full-size section whose overviews are there is shown in a new process without decoding
    its full-resolution files, which are read only for a zoom and the fibre panel (the
    first visit writes them; :meth:`ExploreData.build_overviews` writes them for every
    section beforehand, with the image's positive thresholds; timings in
    ``benchmarks/bench_explore.py``). The app builds the fibre panel only when a fibre is
    asked for (:meth:`Explorer.show_fibre`), so opening it or switching section reads no
    full-resolution file when the overviews are cached.

The code is split by concept:

:mod:`nclsm_utils.explore.views`
    The pure functions (arrays in, arrays out), the testable core: :func:`view_sampling`,
    :func:`downsample_image`, :func:`downsample_labels`, :func:`label_boundaries`,
    :func:`overlay`, :func:`fibre_rings`, :func:`fibre_panel`, :func:`threshold_counts`,
    :func:`worst_fibres`, :func:`png_bytes`; the view geometry (:class:`Region`) and the
    overlay colours.
:mod:`nclsm_utils.explore.store`
    The data store :class:`ExploreData`: sections, cached predictions and per-fibre
    tables, full-resolution arrays, crops and the view cache (:class:`ViewCache`);
    :class:`MissingPrediction`.
:mod:`nclsm_utils.explore.app`
    The ipywidgets app :class:`Explorer` (its :meth:`~Explorer.snapshot` is in
    :mod:`nclsm_utils.explore.snapshot`).

Every name is importable from :mod:`nclsm_utils.explore` as before.

Example
-------
>>> table = pd.DataFrame({"gt_id": [1, 2, 3], "pred_id": [7, 8, 0],
...                       "matched": [True, True, False], "iou": [0.85, 0.97, 0.0]})
>>> counts = threshold_counts(table, n_pred=3, iou_threshold=0.9)
>>> counts["matched"], counts["missed"], counts["extra"], counts["A%"]
(1, 2, 2, 50.0)
"""
from __future__ import annotations

import logging
from collections import OrderedDict  # noqa: F401
from dataclasses import dataclass, field  # noqa: F401
from pathlib import Path  # noqa: F401

import numpy as np  # noqa: F401
import pandas as pd  # noqa: F401

from .. import metrics  # noqa: F401
from ..core.dataset import Dataset, Section, find_ncl_sm  # noqa: F401
from ..core.io import DataError, read_array  # noqa: F401
from ..core.errors import one_line as _one_line  # noqa: F401 - the one formatter, old name
from .app import FIBRE_COLUMNS, NO_METHOD, Explorer, PanelState  # noqa: F401
from .store import (BUILTIN_METHODS, ExploreData, MissingPrediction, SectionView,  # noqa: F401
                    ViewCache, _open_dataset, method_label)
from .views import (AIB_COLOUR, AOB_COLOUR, DEFAULT_CMAP, DEFAULT_MAX_SIDE,  # noqa: F401
                    EXTRA_COLOUR, GT_COLOUR, IOU_RANGE, MISSED_COLOUR, SELECTED_COLOUR,
                    FibreRings, Region, _blend, _decode_png, _enlarge, _fmt, _html_table,
                    _members, _paint_rings, _pred_iou, _ring_masks, _shift_box, colorbar_png,
                    colour_lut, cv2, downsample_image, downsample_labels, fibre_box, fibre_panel,
                    fibre_rings, fibre_window, label_boundaries, matched_at, overlay, png_bytes,
                    threshold_counts, view_sampling, view_to_full, worst_fibres, zoom_region)

#: The explorer's logger (the parent of those of its submodules).
log = logging.getLogger(__name__)
