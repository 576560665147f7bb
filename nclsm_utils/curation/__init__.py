"""Automatic curation: folded regions, non-transverse and freezing-artefact fibres, analysable.

The NCL-SM paper (Section VI) defines the curation workflow a researcher needs
after segmentation: (1) segment all myofibres, (2) segment folded regions (FR),
(3) classify non-transverse myofibres (NTM) from the instance mask, (4) classify
freezing-artefact myofibres (FAM) from the mask and the image, (5) remove 2-4
from 1 to get the *analysable* myofibres. This package does 2-5 automatically
and measures it.

Models (all scikit-learn, trained on the train split, seeded, cached)
--------------------------------------------------------------------
* **NTM** -- NCL-SM's own definition per modality (:data:`NTM_DEFINITION`): IF sections
  take the published rule :func:`nclsm_utils.metrics.morphology.ntm_rule` (NCL-SM's IF
  labels are its output) with its area limits converted to the section's scale
  (:func:`section_ntm_scale`); IMC sections a random forest on scale-free shape features
  (:data:`NTM_FEATURES`: ratios of the published features, relative area, solidity, axis
  ratio) trained on the IMC sections' ``ntm`` masks. Both decisions are computed and
  scored; :func:`definitions_table` says which one removed fibres, at what scale.
* **FAM** -- a class-balanced random forest on per-fibre features of the mass
  (G) channel inside the fibre (:func:`fam_features`): dark-hole fractions relative
  to the fibre's own intensity, texture statistics, hole count and size from a
  local threshold, solidity and partial-fibre cues.
* **FR** -- a pixel classifier (:class:`FoldedRegionClassifier`) on multi-scale
  texture features of R and G (:func:`fr_pixel_features`: Gaussian smoothing,
  gradient magnitude, Laplacian of Gaussian, structure-tensor eigenvalues, local
  standard deviation, local membrane density), computed at a working scale where
  fibres are :data:`WORKING_DIAMETER` pixels across, trained on class-balanced
  pixel samples; its probability map is smoothed, thresholded, cleaned of small
  regions and hole-filled into a region mask.

Every learned piece lives in :class:`CurationModels`, trained by
:func:`train_models` and cached under ``<workdir>/models/curation-<hash>/``
(joblib; the hash covers the parameters and the training sections).

Curation and evaluation
-----------------------
:func:`curate` turns one section (ground-truth or predicted myofibres) into
masks: ``fr`` (region), ``fr_fibres``, ``ntm``, ``ntm_rule``, ``fam``,
``analysable`` and ``am_vs_nam``. :func:`figure_curation_scores` scores it on the real
section of the NCL-SM overview figure (left half) against the figure's own panels C-F. Flags are exclusive in the workflow's order
(FR, then NTM, then FAM) in the masks; the per-fibre table of
:func:`classify_fibres` keeps every classifier's raw decision.
:func:`evaluate_curation` scores a whole split: per-class precision / recall /
F1, predicted vs ground-truth Table I counts, FR pixel IoU and the paper
metrics of the analysable mask against the analysable ground truth.

Submodules
----------
* :mod:`~nclsm_utils.curation.features` -- per-fibre features (:func:`ntm_features`,
  :func:`fam_features`) and the mask helpers they share (:func:`fibre_diameter`,
  :func:`class_flags`).
* :mod:`~nclsm_utils.curation.classifiers` -- :class:`CurationParams`, the exceptions,
  :class:`FibreClassifier` (NTM, FAM), the folded-region pixel features
  (:func:`fr_pixel_features`) and :class:`FoldedRegionClassifier`.
* :mod:`~nclsm_utils.curation.models` -- :class:`CurationModels` with training, the
  on-disk cache (:func:`train_models`) and curation of a section
  (:func:`classify_fibres`, :func:`masks_from_table`, :func:`curate`); :class:`ArraySection`.
* :mod:`~nclsm_utils.curation.evaluation` -- scoring (:func:`evaluate_section`,
  :func:`evaluate_curation`, :func:`class_scores`, ...), :func:`cross_validate` and the
  per-method Dask fan-out (:func:`evaluate_curation_methods`).

Every name of these submodules is re-exported here (``from nclsm_utils.curation import
curate`` works as it did when this was one module). A module constant is read in the
submodule that defines it, so patch it there (e.g.
``nclsm_utils.curation.classifiers.FR_TILE``).

Example
-------
>>> from nclsm_utils.dataset import Dataset                       # doctest: +SKIP
>>> ds = Dataset("data/synthetic")                                 # doctest: +SKIP
>>> models = train_models(ds.sections(split="train"), workdir="data")   # doctest: +SKIP
>>> masks = curate(ds.section("P02"), models=models)               # doctest: +SKIP
>>> result = evaluate_curation(ds, "gt", workdir="data")           # doctest: +SKIP
>>> result["classes"].query("section == 'all'")                    # doctest: +SKIP
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..core.io import DataError, read_array, write_csv, write_text, write_tiff
from .classifiers import (CurationError, CurationParams, FR_TILE, FibreClassifier,
                          FoldedRegionClassifier, NotTrainedError, WORKING_DIAMETER,
                          _downsample_mask, _normalise, _resize_channel, _resize_mask, _threads,
                          fr_feature_names, fr_pixel_features, fr_thresholds, working_image)
from .evaluation import (CLASS_COLUMNS, CLASS_NAMES, _curate_method, _gt_classes, _half_width,
                         class_scores, counts_table, cross_validate, evaluate_curation,
                         evaluate_curation_methods, evaluate_section, figure_curation_scores,
                         fr_scores, load_myofibres,
                         match_fibres, paper_summary, prf)
from .features import (DEFAULT_DIAMETER, FAM_FEATURES, NTM_EXTRA_COLUMNS, NTM_FEATURES,
                       NTM_SHAPE_COLUMNS, _as_rgb, _check_mask, _fraction_inside, _masked_smooth,
                       _percentile, class_flags, fam_features, fibre_diameter, moment_axis_ratio,
                       ntm_features)
from .models import (AM_CLASS, ArraySection, CURATED_ROLES, CurationModels, MODEL_FILES, NAM_CLASS,
                     NTM_DEFINITION, _concat, _file_facts, _params_from_dict, classify_fibres,
                     curate, definitions_table, masks_from_table, models_dir, models_key,
                     ntm_decision, ntm_definition, section_ntm_scale, train_models,
                     training_tables)

log = logging.getLogger(__name__)

# The exceptions keep the module name they had before the split (tracebacks, doctests).
CurationError.__module__ = NotTrainedError.__module__ = __name__

# every name of the former single module (private helpers too), for existing imports
__all__ = [
    "AM_CLASS", "ArraySection", "CLASS_COLUMNS", "CLASS_NAMES", "CURATED_ROLES", "CurationError",
    "CurationModels", "CurationParams", "DEFAULT_DIAMETER", "DataError", "FAM_FEATURES", "FR_TILE",
    "FibreClassifier", "FoldedRegionClassifier", "MODEL_FILES", "NAM_CLASS", "NTM_EXTRA_COLUMNS",
    "NTM_FEATURES", "NTM_SHAPE_COLUMNS", "NotTrainedError", "Path", "WORKING_DIAMETER", "_as_rgb",
    "_check_mask", "_concat", "_curate_method", "_downsample_mask", "_file_facts",
    "_fraction_inside", "_gt_classes", "_half_width", "_masked_smooth", "_normalise",
    "_params_from_dict", "_percentile", "_resize_channel", "_resize_mask", "_threads",
    "NTM_DEFINITION", "class_flags", "class_scores", "classify_fibres", "counts_table",
    "cross_validate", "curate", "definitions_table", "ntm_decision", "ntm_definition",
    "section_ntm_scale",
    "evaluate_curation", "evaluate_curation_methods", "evaluate_section", "fam_features",
    "figure_curation_scores",
    "fibre_diameter", "fr_feature_names", "fr_pixel_features", "fr_scores", "fr_thresholds",
    "load_myofibres", "masks_from_table", "match_fibres", "models_dir", "models_key",
    "moment_axis_ratio", "ntm_features", "paper_summary", "prf", "read_array", "train_models",
    "training_tables", "working_image", "write_csv", "write_text", "write_tiff",
]
