"""Segment a researcher's own microscope files in one go (``nclsm predict``).

:func:`predict_files` reads each file (:func:`nclsm_utils.core.io.read_microscope`),
chooses its membrane and mass channels, segments it with one segmenter fitted once, and
writes per image the outputs of :class:`OutputPaths`; a summary table has one row per
image. Images whose outputs all exist are skipped unless ``force``; an unreadable image is
recorded as failed and the others go on.
"""
from __future__ import annotations

import dataclasses
import glob
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.io import BIOIO_SUFFIXES, IMAGE_SUFFIXES, DataError, read_microscope, write_csv, \
    write_tiff
from ..segmenters.apply import (estimate_fibre_diameter, fit_for_prediction, predict_image,
                                select_channels)
from .measurements import fibre_table
from .overlay import write_overlay
from .shapes import fibre_polygons, write_geojson, write_roi_set

log = logging.getLogger(__name__)

#: Name suffixes of the per-image outputs (after the image's stem).
OUTPUT_SUFFIXES = {"labels": "_labels.tif", "rois": "_rois.zip", "geojson": "_fibres.geojson",
                   "table": "_fibres.csv", "overlay": "_overlay.png"}
#: File name of the batch summary.
SUMMARY_NAME = "nclsm_summary.csv"
SUMMARY_COLUMNS = ("image", "status", "fibres", "median_area_px", "median_area_um2",
                   "pixel_size_um", "fibre_diameter_px", "seconds", "error")


def image_stem(path: Path) -> str:
    """File name without its image suffixes (``a.ome.tif`` -> ``a``)."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", *sorted(BIOIO_SUFFIXES, key=len, reverse=True),
                   *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return path.stem


@dataclasses.dataclass
class OutputPaths:
    """The files written for one image: label TIFF, ROI set, GeoJSON, fibre CSV, overlay."""

    labels: Path
    rois: Path
    geojson: Path
    table: Path
    overlay: Path

    @classmethod
    def for_image(cls, image: str | os.PathLike, out_dir=None, labels=None) -> "OutputPaths":
        """``<out_dir>/<stem>_labels.tif`` ... (``out_dir`` default: the image's folder);
        ``labels`` names the label TIFF itself, the others go beside it under its stem."""
        image = Path(image)
        if labels is not None:
            labels = Path(labels)
            folder, stem = labels.parent, labels.stem
            paths = {k: folder / f"{stem}{s}" for k, s in OUTPUT_SUFFIXES.items()}
            paths["labels"] = labels
        else:
            folder = Path(out_dir) if out_dir is not None else image.parent
            paths = {k: folder / f"{image_stem(image)}{s}" for k, s in OUTPUT_SUFFIXES.items()}
        return cls(**paths)

    def all(self) -> list[Path]:
        return [self.labels, self.rois, self.geojson, self.table, self.overlay]

    def done(self) -> bool:
        return all(p.is_file() for p in self.all())


def expand_images(items) -> list[Path]:
    """Image paths from files, folders (their image files, not recursive, outputs of this
    module excluded) and glob patterns; a path that does not exist is kept (it is reported
    as missing when read).

    >>> expand_images(["/nonexistent/a.tif"])
    [PosixPath('/nonexistent/a.tif')]
    """
    suffixes = tuple(IMAGE_SUFFIXES) + tuple(BIOIO_SUFFIXES)
    outputs = tuple(OUTPUT_SUFFIXES.values())
    found: list[Path] = []
    for item in items:
        item = str(item)
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file()
                            and p.name.lower().endswith(suffixes) and not p.name.endswith(outputs))
        elif not path.exists() and glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item) if Path(m).is_file())
            if not matches:
                raise DataError(f"{item}: no file matches this pattern")
            found += matches
        else:
            found.append(path)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise DataError(f"no image files in {', '.join(map(str, items))}")
    return unique


def export_outputs(paths: OutputPaths, labels: np.ndarray, rgb: np.ndarray, channels=None,
                   channel_names=None, pixel_size=None) -> pd.DataFrame:
    """Write the five outputs of one segmented image; returns its fibre table."""
    count = int(labels.max()) if labels.size else 0
    dtype = np.uint16 if count < 2 ** 16 else np.uint32
    table = fibre_table(labels, channels, channel_names, pixel_size)
    polygons = fibre_polygons(labels)
    write_roi_set(paths.rois, polygons)
    write_geojson(paths.geojson, polygons, table)
    write_csv(paths.table, table)
    write_overlay(paths.overlay, rgb, labels)
    write_tiff(paths.labels, labels.astype(dtype), pixel_size=pixel_size)   # last: marks done
    return table


def _row(image, status, table=None, **extra) -> dict:
    row = dict.fromkeys(SUMMARY_COLUMNS, np.nan)
    row.update(image=str(image), status=status, error="")
    if table is not None:
        row["fibres"] = len(table)
        row["median_area_px"] = float(table["area_px"].median()) if len(table) else np.nan
        row["median_area_um2"] = float(table["area_um2"].median()) if len(table) else np.nan
    row.update(extra)
    return row


def predict_files(images, segmenter, data=None, out_dir=None, labels_path=None,
                  modality: str = "IMC", membrane_channel=None, mass_channel=None,
                  pixel_size: float | None = None, fibre_diameter: float | None = None,
                  fibre_diameter_um: float | None = None, force: bool = False,
                  reader: str | None = None, progress: bool | None = None,
                  report=None) -> pd.DataFrame:
    """Segment several microscope files with one segmenter and export each one's fibres.

    Parameters
    ----------
    images : list of path-like
        Files (:func:`expand_images` expands folders and patterns).
    segmenter : Segmenter
        Fitted on ``data``'s train split once, at the first readable image
        (:func:`nclsm_utils.segmenters.apply.fit_for_prediction`).
    data : path-like, Dataset or callable, optional
        As :func:`nclsm_utils.segmenters.apply.predict_image`; a callable returning one is
        called only when the first readable image needs the fitted method.
    out_dir : path-like, optional
        Outputs go here (default: beside each image). The summary
        (:data:`SUMMARY_NAME`) goes here too, else beside the first image.
    labels_path : path-like, optional
        For one image: the label TIFF's path; the other outputs go beside it.
    modality : {"IMC", "IF"}
    membrane_channel, mass_channel : int or str, optional
        See :func:`nclsm_utils.segmenters.apply.select_channels`.
    pixel_size : float, optional
        Micrometres per pixel; overrides the files' metadata.
    fibre_diameter, fibre_diameter_um : float, optional
        Median fibre diameter in pixels or micrometres (the latter needs a pixel size);
        default: estimated per image from its membrane channel.
    force : bool
        Redo images whose outputs all exist.
    reader : {None, "bioio"}
        See :func:`nclsm_utils.core.io.read_microscope`.
    progress : bool or None
        tqdm bars over images and tiles (None: when the output is a terminal).
    report : callable, optional
        ``report(line, error=False)``, called once per event (estimate, result; failures
        with ``error=True``) for a front end; default: logged.

    Returns
    -------
    DataFrame
        The summary, columns :data:`SUMMARY_COLUMNS`; ``status`` is ``done``, ``skipped``
        or ``failed`` (``error`` holds the message). Also written to the summary CSV.

    Raises
    ------
    ValueError
        A segmenter that cannot segment new images (``external:``).
    SegmenterError, DataError
        The method cannot be fitted (e.g. no training data): no image can be segmented.
    """
    from tqdm.auto import tqdm

    report = report or (lambda line, error=False: (log.warning if error else log.info)("%s", line))
    if segmenter.name == "external":
        raise ValueError(f"{getattr(segmenter, 'label', 'external')}: external masks were made "
                         "by another tool and cannot segment a new image; choose a method such "
                         "as mitocyto or unet")
    images = [Path(p) for p in images]
    if labels_path is not None and len(images) != 1:
        raise ValueError("a label TIFF path as --out is for one image; give a folder for several")
    segmenter.progress = progress
    rows = []
    for path in tqdm(images, desc="images", unit="image",
                     disable=None if progress is None else not progress):
        outputs = OutputPaths.for_image(path, out_dir, labels_path)
        if not force and outputs.done():
            table = pd.read_csv(outputs.table)
            rows.append(_row(path, "skipped", table))
            report(f"{path}: done before, skipped (--force redoes it)")
            continue
        start = time.perf_counter()
        try:
            image = read_microscope(path, reader)
            size = pixel_size if pixel_size is not None else image.pixel_size
            if pixel_size is not None and image.pixel_size is not None \
                    and not math.isclose(pixel_size, image.pixel_size, rel_tol=1e-3):
                log.info("%s: pixel size %g µm given, %g µm in the file", path, pixel_size,
                         image.pixel_size)
            diameter = fibre_diameter
            if fibre_diameter_um is not None:
                if size is None:
                    raise DataError(f"{path}: --fibre-diameter-um needs the pixel size and the "
                                    "file has none in its metadata; give --pixel-size UM")
                diameter = fibre_diameter_um / size
            rgb = select_channels(image, membrane_channel, mass_channel)
            if diameter is None:
                diameter = estimate_fibre_diameter(rgb)
                report(f"{path}: estimated fibre diameter: {diameter:.1f} px (set it with "
                       "--fibre-diameter or --fibre-diameter-um)")
        except (DataError, ValueError) as error:
            rows.append(_row(path, "failed", error=str(error)))
            report(str(error) if str(path) in str(error) else f"{path}: {error}", True)
            continue
        if not segmenter.fitted:
            fit_for_prediction(segmenter, data() if callable(data) else data)
        try:
            labels = predict_image(segmenter, rgb, modality=modality, fibre_diameter=diameter)
            table = export_outputs(outputs, labels, rgb, image.channels, image.channel_names,
                                   size)
        except (DataError, ValueError, OSError) as error:
            for stale in outputs.all():
                if stale.is_file() and force:
                    stale.unlink()
            rows.append(_row(path, "failed", error=str(error)))
            report(str(error) if str(path) in str(error) else f"{path}: {error}", True)
            continue
        seconds = time.perf_counter() - start
        rows.append(_row(path, "done", table, pixel_size_um=size if size is not None else np.nan,
                         fibre_diameter_px=float(diameter), seconds=round(seconds, 3)))
        report(f"{path}: {len(table)} objects -> {outputs.labels}")
        del image, rgb, labels
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    folder = Path(out_dir) if out_dir is not None else (
        Path(labels_path).parent if labels_path is not None else images[0].parent)
    write_csv(folder / SUMMARY_NAME, summary)
    return summary
