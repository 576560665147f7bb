"""Per-fibre measurements of a label image, in pixels and micrometres.

Shape values are :func:`nclsm_utils.metrics.morphology.fibre_morphology`'s (skimage's
regionprops definitions: area, perimeter, eccentricity, Feret diameters), the centroid is
regionprops' ``centroid``, the NTM flag is the published non-transverse-myofibre rule
(:func:`nclsm_utils.metrics.morphology.ntm_rule` on
:func:`~nclsm_utils.metrics.morphology.shape_features`), and the intensities are the mean
and median of each input channel as stored (before any contrast stretch).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy import ndimage

from ..metrics.morphology import check_labels, fibre_morphology, ntm_rule, shape_features

#: Fixed columns of :func:`fibre_table`, in order (the channel columns follow ``eccentricity``).
FIBRE_COLUMNS = (
    "id", "centroid_x_px", "centroid_y_px", "centroid_x_um", "centroid_y_um",
    "area_px", "area_um2", "perimeter_px", "perimeter_um",
    "feret_min_px", "feret_max_px", "feret_min_um", "feret_max_um", "eccentricity",
)
TAIL_COLUMNS = ("touches_border", "ntm_rule")


def channel_column(name: str) -> str:
    """A channel name as a column-name fragment.

    >>> channel_column("Laminin 488"), channel_column("channel 0")
    ('Laminin_488', 'channel_0')
    """
    return re.sub(r"\W+", "_", str(name)).strip("_") or "channel"


def fibre_table(labels, channels=None, channel_names=None, pixel_size=None) -> pd.DataFrame:
    """One row per fibre: position, size, shape, intensities and flags.

    Parameters
    ----------
    labels : (H, W) integer array
        Instance mask, 0 = background.
    channels : (H, W) or (H, W, C) array, optional
        The input image's channels as stored; each gets a ``mean_<name>`` and a
        ``median_<name>`` column.
    channel_names : sequence of str, optional
        Default ``channel 0``, ``channel 1`` ...
    pixel_size : float, optional
        Side of a pixel in micrometres; the ``_um``/``_um2`` columns are NaN without it.

    Returns
    -------
    DataFrame
        Columns :data:`FIBRE_COLUMNS`, the channel columns, ``touches_border`` (a pixel on
        the image's outermost row or column) and ``ntm_rule`` (the published NTM rule;
        fibres of 25 pixels or fewer, which the rule's feature script skips, are False).
        Centroids are ``(x, y)`` = (column, row) of the pixel centres' mean; Feret
        diameters as skimage's ``feret_diameter_max`` and the smallest caliper width of
        the same convex hull.

    Examples
    --------
    >>> labels = np.zeros((40, 60), np.uint16)
    >>> labels[10:20, 10:40] = 7
    >>> row = fibre_table(labels, pixel_size=0.5).iloc[0]
    >>> int(row["id"]), float(row["area_px"]), float(row["area_um2"]), float(row["centroid_x_px"])
    (7, 300.0, 75.0, 24.5)
    """
    from skimage.measure import regionprops_table

    labels = check_labels(labels)
    morphology = fibre_morphology(labels)
    ids = morphology["label"].to_numpy(np.int64)
    scale = float(pixel_size) if pixel_size is not None else np.nan
    table = pd.DataFrame({"id": ids})
    if ids.size:
        centroids = pd.DataFrame(regionprops_table(labels, properties=("label", "centroid")))
        centroids = centroids.set_index("label").loc[ids]
        table["centroid_x_px"] = centroids["centroid-1"].to_numpy(float)
        table["centroid_y_px"] = centroids["centroid-0"].to_numpy(float)
    else:
        table["centroid_x_px"] = table["centroid_y_px"] = pd.Series([], dtype=float)
    table["centroid_x_um"] = table["centroid_x_px"] * scale
    table["centroid_y_um"] = table["centroid_y_px"] * scale
    table["area_px"] = morphology["area"].to_numpy(float)
    table["area_um2"] = table["area_px"] * scale ** 2
    table["perimeter_px"] = morphology["perimeter"].to_numpy(float)
    table["perimeter_um"] = table["perimeter_px"] * scale
    table["feret_min_px"] = morphology["feret_diameter_min"].to_numpy(float)
    table["feret_max_px"] = morphology["feret_diameter_max"].to_numpy(float)
    table["feret_min_um"] = table["feret_min_px"] * scale
    table["feret_max_um"] = table["feret_max_px"] * scale
    table["eccentricity"] = morphology["eccentricity"].to_numpy(float)

    slices = ndimage.find_objects(labels) if ids.size else []
    crops = [(slices[i - 1], labels[slices[i - 1]] == i) for i in ids]
    if channels is not None:
        channels = np.asarray(channels)
        channels = channels[..., None] if channels.ndim == 2 else channels
        if channels.shape[:2] != labels.shape:
            raise ValueError(f"channels {channels.shape} and labels {labels.shape} differ in size")
        names = list(channel_names or [])
        names += [f"channel {i}" for i in range(len(names), channels.shape[-1])]
        for c, name in enumerate(names[:channels.shape[-1]]):
            values = [channels[sl + (c,)][mask] for sl, mask in crops]
            key = channel_column(name)
            table[f"mean_{key}"] = [float(v.mean()) for v in values]
            table[f"median_{key}"] = [float(np.median(v)) for v in values]
    height, width = labels.shape
    table["touches_border"] = [bool(sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == height
                                    or sl[1].stop == width) for sl, _ in crops]
    features = shape_features(labels)
    flagged = dict(zip(features["label"].to_numpy(np.int64), ntm_rule(features).to_numpy(bool)))
    table["ntm_rule"] = [bool(flagged.get(int(i), False)) for i in ids]
    return table
