"""Scoring a segmenter's transfer to real images: one score row per (method, case).

Used by ``benchmarks/bench_real_transfer.py`` (and reusable by the site and tests). Three
cases compare a method trained on the (synthetic) train split with real material:

* **real**: panel A of the NCL-SM overview figure against its panel-B mask
  (:mod:`nclsm_utils.core.realpanel`), objects kept by the half their centroid lies in
  (:func:`restrict_to_half`; the left half is for benchmarks, the right half is held out);
* **synthetic control**: a synthetic test section shrunk to the real panel's fibre size
  (:func:`shrink_to_diameter`), so the gap between the two rows is the appearance gap, not
  a scale gap;
* **real geometry**: the real S11 ground-truth mask rendered by the synthetic renderer
  (optionally downscaled, :func:`downscale_labels`), predicted in a fresh process so that
  each method's peak memory is its own (:func:`call_in_subprocess`, :func:`predict_file`;
  the render itself: :func:`render_geometry`, cached by :func:`nclsm_utils.synth.renderer_fingerprint`).

:func:`score_instances` gives one flat dict per prediction: the standard instance metrics
(precision, recall, F1 at IoU 0.5 / 0.75 / 0.9, ``stardist.matching``'s definitions) and
the paper's summary (MF-A, mean IoU of matched fibres, r_AoB, r_AiB, A%).

Example
-------
>>> gt = np.zeros((20, 20), np.uint16); gt[2:8, 2:8] = 1; gt[10:18, 10:18] = 2
>>> row = score_instances(gt, gt.copy())
>>> row["F1@0.5"], row["mean IoU"], row["n_gt"], row["n_pred"]
(1.0, 1.0, 2, 2)
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ..metrics import MetricWarning, a_column, evaluate, instance_metrics, summarise
from .calibration import at_diameter
from ..core.realpanel import half_of, median_diameter

log = logging.getLogger(__name__)

#: IoU thresholds of the instance-metric columns of :func:`score_instances`.
INSTANCE_THRESHOLDS = (0.5, 0.75, 0.9)
#: Paper-summary columns copied into :func:`score_instances`' dict (names as in
#: :func:`nclsm_utils.metrics.summarise`).
PAPER_COLUMNS = ("MF-A", "mean IoU", "r_AoB", "r_AiB", a_column(0.80), a_column(0.90),
                 a_column(0.95), "detected %")


def _threshold_name(t: float) -> str:
    return f"{float(t):g}"


def score_columns(thresholds=INSTANCE_THRESHOLDS) -> list[str]:
    """The keys of :func:`score_instances`' dict, in order.

    >>> score_columns([0.5])[:6]
    ['n_gt', 'n_pred', 'precision@0.5', 'recall@0.5', 'F1@0.5', 'MF-A']
    """
    columns = ["n_gt", "n_pred"]
    for t in thresholds:
        name = _threshold_name(t)
        columns += [f"precision@{name}", f"recall@{name}", f"F1@{name}"]
    return columns + list(PAPER_COLUMNS)


def score_instances(gt: np.ndarray, pred: np.ndarray, image: np.ndarray | None = None,
                    half_width: int = 1, thresholds=INSTANCE_THRESHOLDS,
                    intervals: bool = False) -> dict:
    """Standard instance metrics and the paper summary of one prediction, as a flat dict.

    Parameters
    ----------
    gt, pred : (H, W) integer ndarray
        Ground-truth and predicted instance masks (0 = background; labels need not be
        sequential).
    image : (H, W, 3) uint8 ndarray, optional
        The RGB image (R membrane, G mass) for the paper's ring percentages (r_AoB, r_AiB);
        without it those two are NaN.
    half_width : int
        Ring half-width k of the paper metrics (pixels); 1 suits fibres ~16 px across.
    thresholds : sequence of float
        IoU thresholds of the instance metrics (a match needs IoU >= t, one-to-one).
    intervals : bool
        Add 95 % bootstrap intervals (:mod:`nclsm_utils.metrics.uncertainty`, seed 0) of
        ``F1@0.5`` (tiles of a 4 x 4 grid resampled, as for Table III) and ``mean IoU``
        (matched fibres resampled): keys ``<metric> CI low`` and ``<metric> CI high``. The
        spread from other fibres of this image only: not other images, not training again.

    Returns
    -------
    dict
        Keys :func:`score_columns` ``(thresholds)``: ``n_gt``, ``n_pred`` (objects in each
        mask); ``precision@t``, ``recall@t``, ``F1@t`` (:func:`metrics.instance_metrics`);
        ``MF-A`` (GT fibres matched by the paper's centroid rule), ``mean IoU`` (over those
        matched fibres), ``r_AoB``, ``r_AiB``, ``A%(IoU>0.80)`` ... and ``detected %``
        (:func:`metrics.evaluate` then :func:`metrics.summarise`). Undefined values (no
        matched fibre, no image, fewer than 2 matched fibres for r) are NaN, without a
        warning.

    Examples
    --------
    >>> gt = np.zeros((30, 30), np.uint8); gt[0:10, 0:10] = 1; gt[15:25, 15:25] = 2
    >>> pred = np.zeros_like(gt); pred[0:10, 0:10] = 1      # fibre 2 missed
    >>> row = score_instances(gt, pred)
    >>> row["recall@0.5"], row["precision@0.5"], round(row["F1@0.5"], 3), row["MF-A"]
    (0.5, 1.0, 0.667, 1)
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    thresholds = [float(t) for t in thresholds]
    table = instance_metrics(gt, pred, thresholds)
    row: dict = {"n_gt": int(table["n_true"].iloc[0]), "n_pred": int(table["n_pred"].iloc[0])}
    for t, record in zip(thresholds, table.to_dict("records")):
        name = _threshold_name(t)
        row[f"precision@{name}"] = float(record["precision"])
        row[f"recall@{name}"] = float(record["recall"])
        row[f"F1@{name}"] = float(record["f1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        per_fibre = evaluate(gt, pred, image, half_width=half_width if image is not None
                             else None)
        summary = summarise(per_fibre).iloc[0]
    for column in PAPER_COLUMNS:
        value = summary.get(column, math.nan)
        row[column] = int(value) if column == "MF-A" else float(value)
    if intervals:
        from ..metrics.uncertainty import (ci_columns, instance_intervals,
                                           paper_metric_intervals, tile_counts)

        f1 = instance_intervals([tile_counts(gt, pred, thresholds=(0.5,))],
                                metrics=(("F1@0.5", "f1", 0.5),))["F1@0.5"]
        iou = paper_metric_intervals(per_fibre, thresholds=())["mean IoU"]
        for metric, (low, high) in (("F1@0.5", f1), ("mean IoU", iou)):
            row[ci_columns(metric)[0]], row[ci_columns(metric)[1]] = float(low), float(high)
    return row


def restrict_to_half(gt: np.ndarray, pred: np.ndarray, half: str = "left"):
    """Keep the GT and predicted objects whose centroid lies in one half of the real panel.

    Both masks go through :func:`nclsm_utils.core.realpanel.half_of` (centroid column below or
    at/above ``LEFT_HALF_X``, objects under the panel letter dropped), so an object is
    scored where its centroid lies: a predicted fibre straddling the split belongs to one
    half only.

    Parameters
    ----------
    gt, pred : (H, W) integer ndarray
        Masks on the panel's pixel grid.
    half : {"left", "right"}
        ``"left"`` for calibration and benchmarks; ``"right"`` is the held-out half.

    Returns
    -------
    (gt_half, pred_half) : two (H, W) integer ndarrays, relabelled 1..N
    """
    with np.errstate(invalid="ignore", divide="ignore"):   # absent labels: NaN centroids
        return half_of(gt, half), half_of(pred, half)


def shrink_to_diameter(image: np.ndarray, labels: np.ndarray, diameter: float):
    """Resize a section so that its median fibre diameter becomes ``diameter`` pixels.

    :func:`nclsm_utils.report.calibration.at_diameter`, plus the factor
    ``diameter / median_diameter(labels)``.

    Parameters
    ----------
    image : (H, W, 3) uint8 ndarray
    labels : (H, W) integer ndarray
    diameter : float
        Target median equivalent diameter, pixels.

    Returns
    -------
    image : (h, w, 3) uint8 ndarray
    labels : (h, w) ndarray, same dtype as ``labels``
    factor : float

    Examples
    --------
    >>> labels = np.kron(np.arange(1, 10).reshape(3, 3), np.ones((20, 20), int))
    >>> image = np.zeros(labels.shape + (3,), np.uint8)
    >>> small, small_labels, factor = shrink_to_diameter(image, labels, 11.28)
    >>> small.shape, small_labels.shape, round(factor, 2)
    ((30, 30, 3), (30, 30), 0.5)
    """
    small, small_labels = at_diameter(image, labels, diameter)   # validates both
    return small, small_labels, float(diameter) / median_diameter(labels)


def downscale_labels(labels: np.ndarray, factor: float) -> np.ndarray:
    """Nearest-neighbour downscale of a label image by ``factor`` (1 = unchanged).

    The new shape is ``round(H / factor) x round(W / factor)``; each output pixel takes
    the input pixel at its centre (:func:`nclsm_utils.core.imaging.resize_labels`), so no labels
    are invented and small fibres may vanish.

    >>> downscale_labels(np.arange(16).reshape(4, 4), 2)
    array([[ 5,  7],
           [13, 15]])
    """
    from ..core.imaging import resize_labels

    factor = float(factor)
    if not (math.isfinite(factor) and factor >= 1):
        raise ValueError(f"the downscale factor must be >= 1, got {factor}")
    if factor == 1:
        return labels
    shape = tuple(max(1, int(round(s / factor))) for s in labels.shape)
    return resize_labels(labels, shape)


# ---------------------------------------------------------------------------- processes
def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this process's own
    address space. (``getrusage``'s ``ru_maxrss`` is not used there: a process started by
    fork + exec inherits the parent's high-water mark in it, so a small child of a big
    parent would report the parent's peak.) Elsewhere ``ru_maxrss`` (bytes on macOS,
    kilobytes on other systems).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _child(func, args, kwargs):
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return result, {"peak_rss_bytes": peak_rss_bytes(), "seconds": time.perf_counter() - start}


def call_in_subprocess(func, *args, **kwargs):
    """Run ``func(*args, **kwargs)`` in a fresh (spawned) Python process.

    The process starts empty (``spawn``), so its peak memory (:func:`peak_rss_bytes`) is
    ``func``'s own plus the interpreter and imports, never inflated by what this process or
    an earlier call held.
    ``func`` must be importable (a module-level function) and its result picklable; return
    large arrays through files.

    Returns
    -------
    result
        ``func``'s return value (its exception is re-raised here).
    stats : dict
        ``peak_rss_bytes`` (the child's peak RSS, :func:`peak_rss_bytes`) and ``seconds`` (wall time
        of the call inside the child, without the process start).
    """
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_child, func, args, kwargs).result()


def predict_file(method: str, image_path, out_path, modality: str = "IF",
                 fibre_diameter: float | None = None, data="data", workdir="data",
                 quick: bool = False) -> dict:
    """Predict an RGB TIFF with :func:`segmenters.apply.predict_image` and save the labels.

    Meant to run in a fresh process (:func:`call_in_subprocess`) so that the peak memory of
    one method's prediction is measured alone: the image is read, ``predict_image`` runs
    (the method is fitted on ``data``'s train split as ``nclsm segment`` does: a cached
    model is loaded), the peak RSS is taken, and the labels are written to ``out_path``
    (``.npy``, uint16 when they fit).

    Returns
    -------
    dict
        ``input_rss_bytes`` (peak RSS after reading the image, before predicting),
        ``predict_peak_rss_bytes`` (peak RSS right after the prediction), ``predict_s``
        (seconds of ``predict_image``) and ``n_pred`` (objects predicted).
    """
    import tifffile

    from ..segmenters.apply import predict_image

    image = np.asarray(tifffile.imread(image_path))
    input_rss = peak_rss_bytes()
    start = time.perf_counter()
    labels = predict_image(method, image, modality=modality, fibre_diameter=fibre_diameter,
                           data=data, workdir=workdir, quick=quick)
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes()
    del image
    count = int(labels.max()) if labels.size else 0
    if count < 2 ** 16:
        labels = labels.astype(np.uint16)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(out_path, labels)
    return {"input_rss_bytes": input_rss, "predict_peak_rss_bytes": peak,
            "predict_s": seconds, "n_pred": count}


def render_geometry(mask_path, out_path, downscale: float = 1, modality: str = "IF",
                    seed: int = 0) -> dict:
    """Render a real instance mask with the synthetic renderer and write the RGB TIFF.

    The mask (e.g. the real S11 ground truth) is read, downscaled (nearest,
    :func:`downscale_labels`), rendered with ``synth.render_image(labels, modality, seed)``
    and the ``(H, W, 3)`` uint8 RGB is written atomically to ``out_path``. Run it in a
    fresh process (:func:`call_in_subprocess`) to keep the renderer's temporaries out of
    the caller's memory.

    Returns
    -------
    dict
        ``shape`` of the rendered image, ``n_labels`` (distinct labels after the downscale)
        and ``median_diameter`` (pixels, of the downscaled mask).
    """
    import tifffile

    from ..core.io import write_tiff
    from ..synth import render_image

    labels = downscale_labels(np.asarray(tifffile.imread(mask_path)), downscale)
    _, rgb = render_image(labels, modality=modality, seed=seed)
    write_tiff(out_path, rgb)
    n_labels = int(np.count_nonzero(np.bincount(labels.ravel())[1:]))
    return {"shape": list(rgb.shape), "n_labels": n_labels,
            "median_diameter": median_diameter(labels)}
