"""What a researcher takes to Fiji or QuPath: per-fibre measurements (px and µm), ImageJ
ROI sets, GeoJSON, overlays, and the batch that writes them for microscope files.

Modules (imports flow down this list; the writers use only ``core`` and ``metrics``):

* :mod:`~nclsm_utils.export.batch` -- :func:`predict_files`, ``nclsm predict``'s engine;
* :mod:`~nclsm_utils.export.shapes` -- fibre outlines (:func:`fibre_polygons`),
  :func:`write_roi_set` (ImageJ ``.zip``), :func:`write_geojson` (QuPath);
* :mod:`~nclsm_utils.export.overlay` -- :func:`write_overlay`, outlines on the image;
* :mod:`~nclsm_utils.export.measurements` -- :func:`fibre_table`, one row per fibre.
"""
from __future__ import annotations

from .batch import (OUTPUT_SUFFIXES, SUMMARY_COLUMNS, SUMMARY_NAME, OutputPaths, expand_images,
                    export_outputs, predict_files)
from .measurements import FIBRE_COLUMNS, channel_column, fibre_table
from .overlay import overlay_image, write_overlay
from .shapes import fibre_polygons, geojson_features, write_geojson, write_roi_set

__all__ = [
    "FIBRE_COLUMNS", "OUTPUT_SUFFIXES", "SUMMARY_COLUMNS", "SUMMARY_NAME", "OutputPaths",
    "channel_column", "expand_images", "export_outputs", "fibre_polygons", "fibre_table",
    "geojson_features", "overlay_image", "predict_files", "write_geojson", "write_overlay",
    "write_roi_set",
]
