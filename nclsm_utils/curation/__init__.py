"""Automatic curation: folded regions, non-transverse and freezing-artefact fibres, analysable.

The NCL-SM paper (Khan et al., arXiv 2311.15113, Section VI) defines the curation workflow
a researcher needs after segmentation: (1) segment all myofibres, (2) segment folded
regions (FR), (3) classify non-transverse myofibres (NTM) from the instance mask,
(4) classify freezing-artefact myofibres (FAM) from the mask and the image, (5) remove
2-4 from 1 to get the *analysable* myofibres. This package does 2-5 automatically and
measures how well.

Models (scikit-learn, trained on the train split, seeded, cached)
-----------------------------------------------------------------
* **NTM** -- per modality (:data:`NTM_DEFINITION`): IF takes the published rule
  :func:`nclsm_utils.metrics.morphology.ntm_rule` (NCL-SM's IF labels are its output) at
  the section's scale (:func:`section_ntm_scale`); IMC a random forest on scale-free shape
  features (:data:`NTM_FEATURES`). :func:`definitions_table` says which decided.
* **FAM** -- a class-balanced random forest on mass-channel features inside each fibre
  (:func:`fam_features`: the dark holes freezing leaves, relative to the fibre's own level).
* **FR** -- a pixel classifier (:class:`FoldedRegionClassifier`) on multi-scale texture
  features of R and G (:func:`fr_pixel_features`), whose probability map becomes a
  region mask.

:class:`CurationModels` holds every learned piece; :func:`train_models` trains it and
caches it under ``<workdir>/models/curation-<hash>/`` (joblib; the hash covers the
parameters and the training sections).

:func:`curate` turns one section (ground-truth or predicted myofibres) into masks (``fr``,
``fr_fibres``, ``ntm``, ``ntm_rule``, ``fam``, ``analysable``, ``am_vs_nam``); flags are
exclusive in the workflow's order (FR, NTM, FAM), while the per-fibre table of
:func:`classify_fibres` keeps every raw decision. :func:`evaluate_curation` scores a split
(per-class precision / recall / F1, Table I counts, FR pixel IoU, the paper metrics of the
analysable mask); :func:`figure_curation_scores` scores the real section of the NCL-SM
overview figure against its panels C-F.

Submodules: :mod:`~nclsm_utils.curation.features` (per-fibre features),
:mod:`~nclsm_utils.curation.classifiers` (:class:`CurationParams`, the classifiers, FR
pixel features), :mod:`~nclsm_utils.curation.models` (training, cache, :func:`curate`),
:mod:`~nclsm_utils.curation.evaluation` (scores, :func:`cross_validate`, the per-method
Dask fan-out). Their names are re-exported here; patch a module constant in the submodule
that defines it (e.g. ``nclsm_utils.curation.classifiers.FR_TILE``).

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

# The exceptions report this package as their module (tracebacks, doctests).
CurationError.__module__ = NotTrainedError.__module__ = __name__

# every name of the submodules (private helpers too), importable from the package
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
