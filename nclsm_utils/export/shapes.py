"""Fibre outlines as polygons: ImageJ ROI sets (Fiji's ROI Manager) and GeoJSON (QuPath).

Each fibre's outline is traced along its pixels' edges (the union of its pixel squares,
computed with shapely), so coordinates are pixel corners: pixel ``(row, col)`` covers
``[col, col + 1) x [row, row + 1)``, the convention of ImageJ and QuPath. Filling a
polygon by pixel centres gives back the fibre's pixels exactly, and the polygon's area is
its pixel count.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.io import atomic_path, write_text
from ..metrics.morphology import check_labels


def _pixel_polygon(mask: np.ndarray, row0: int, col0: int):
    """The union of a mask's pixel squares (shapely), shifted by ``(row0, col0)``."""
    import shapely

    padded = np.pad(mask, ((0, 0), (1, 1))).astype(np.int8)
    step = np.diff(padded, axis=1)
    starts = np.argwhere(step == 1)              # (row, first col) of each run, row-major
    stops = np.argwhere(step == -1)              # (row, col after the run)
    boxes = shapely.box(starts[:, 1] + col0, starts[:, 0] + row0,
                        stops[:, 1] + col0, starts[:, 0] + row0 + 1)
    return shapely.union_all(boxes).simplify(0)


def fibre_polygons(labels) -> dict:
    """Outline of every fibre as a shapely (Multi)Polygon in pixel-corner coordinates.

    Parameters
    ----------
    labels : (H, W) integer array

    Returns
    -------
    dict
        ``{label: Polygon or MultiPolygon}`` (holes kept; a label of several separate
        parts is a MultiPolygon), in label order; ``x`` = column, ``y`` = row.

    Examples
    --------
    >>> labels = np.zeros((10, 10), np.uint8)
    >>> labels[2:5, 3:7] = 1
    >>> polygon = fibre_polygons(labels)[1]
    >>> polygon.area, polygon.bounds
    (12.0, (3.0, 2.0, 7.0, 5.0))
    """
    labels = check_labels(labels)
    polygons = {}
    for index, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        polygons[index] = _pixel_polygon(labels[sl] == index, sl[0].start, sl[1].start)
    return polygons


def _rings(geometry) -> list[np.ndarray]:
    """Every ring (exteriors and holes) of a (Multi)Polygon, each without its closing point."""
    rings = []
    for part in getattr(geometry, "geoms", [geometry]):
        rings.append(np.asarray(part.exterior.coords)[:-1])
        rings += [np.asarray(hole.coords)[:-1] for hole in part.interiors]
    return rings


def _roi(geometry, name: str):
    """A traced polygon ROI for a simple polygon; a composite (shape) ROI, filled even-odd,
    for a fibre with holes or of several parts (e.g. pixels touching only at a corner)."""
    import roifile

    rings = _rings(geometry)
    if len(rings) == 1:
        roi = roifile.ImagejRoi.frompoints(rings[0], name=name)
        roi.roitype = roifile.ROI_TYPE.TRACED
        return roi
    path = []
    for ring in rings:
        path += [0.0, *map(float, ring[0])]
        for x, y in ring[1:]:
            path += [1.0, float(x), float(y)]
        path.append(4.0)
    left, top, right, bottom = (int(v) for v in geometry.bounds)
    return roifile.ImagejRoi(roitype=roifile.ROI_TYPE.RECT, name=name, left=left, top=top,
                             right=right, bottom=bottom, shape_roi_size=len(path),
                             multi_coordinates=np.asarray(path, np.float32))


def write_roi_set(path: str | os.PathLike, polygons: dict) -> Path:
    """Write fibre outlines as an ImageJ ROI set (``.zip``) for Fiji's ROI Manager.

    One ROI per fibre, named ``fibre-<id>`` (zero-padded, so the ROI Manager lists them in
    id order), along the pixel edges: a traced polygon, or a composite (shape) ROI when the
    fibre has a hole or several parts (pixels that touch only at a corner are a separate
    part). Written atomically with roifile.

    Parameters
    ----------
    path : path-like
        Ends in ``.zip``.
    polygons : dict
        ``{id: Polygon or MultiPolygon}`` (:func:`fibre_polygons`).
    """
    import roifile

    path = Path(path)
    width = max(4, len(str(max(polygons, default=0))))
    rois = []
    for label, geometry in polygons.items():
        rois.append(_roi(geometry, f"fibre-{label:0{width}d}"))
    with atomic_path(path) as tmp:
        if rois:
            roifile.roiwrite(tmp, rois, mode="w")
        else:                                   # an empty zip: no fibres
            import zipfile

            zipfile.ZipFile(tmp, "w").close()
    return path


def _json_value(value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def geojson_features(polygons: dict, table=None) -> dict:
    """A GeoJSON FeatureCollection of fibre outlines, in the form QuPath imports.

    Each feature is a QuPath annotation (``objectType``), named ``fibre <id>``, with
    ``properties.fibre_id`` and ``properties.measurements`` (the row of ``table`` whose
    ``id`` is the fibre's; NaN values are left out). Coordinates are pixels.
    """
    from shapely.geometry import mapping

    rows = {}
    if table is not None and len(table):
        rows = table.set_index("id").to_dict(orient="index")
    features = []
    for label, geometry in polygons.items():
        measurements = {k: _json_value(v) for k, v in rows.get(label, {}).items()}
        features.append({
            "type": "Feature",
            "geometry": mapping(geometry),
            "properties": {
                "objectType": "annotation",
                "name": f"fibre {label}",
                "fibre_id": int(label),
                "classification": {"name": "Fibre", "color": [0, 255, 255]},
                "measurements": {k: v for k, v in measurements.items() if v is not None},
            },
        })
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike, polygons: dict, table=None) -> Path:
    """Write :func:`geojson_features` to ``path`` atomically (QuPath: File > Import objects,
    or drag the file onto the image)."""
    collection = geojson_features(polygons, table)
    return write_text(path, json.dumps(collection, allow_nan=False))
