"""Benchmark: the paper metrics (:func:`nclsm_utils.metrics.evaluate`) on a full IF section.

Uses the real S11 ground-truth mask (12272 x 15129 uint16, 489 fibres), a
perturbed copy as the "prediction" (a random subset of fibres eroded or dilated
by 1-4 pixels, a few removed, labels renumbered) and a synthetic RGB image of
the same size (membrane signal on label borders, mass signal inside fibres).
Prints a table of wall and CPU times, the peak memory of ``evaluate`` and the
speed-up over a straightforward whole-image implementation (one fibre at a
time on full-size masks, as the published notebook does), timed on a few
fibres and scaled to all of them. No asserts on time.

Peak memory is measured twice: ``tracemalloc`` (numpy/OpenCV arrays allocated
by ``evaluate`` on top of its inputs) and the peak resident memory (VmHWM, reset
just before the call) of a child process that loads the inputs from ``.npy``
files and runs ``evaluate`` once (inputs included).

Usage::

    PYTHONPATH=. python benchmarks/bench_metrics.py [--mask PATH] [--reference-fibres N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from nclsm_utils import metrics as M
from nclsm_utils.dataset import as_labels
from nclsm_utils.core.io import read_array

DEFAULT_MASK = (Path(__file__).resolve().parents[2] / "shared" / "ncl-sm-sample"
                / "S11_groundtruth_mask.tiff")
HALF_WIDTH = 6  # IF


def _timed(function, *args, **kwargs):
    """(wall s, CPU s, result) of one call; CPU time is the steadier number on a shared machine."""
    start, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, time.process_time() - cpu, result


def perturb(gt: np.ndarray, seed: int = 0) -> np.ndarray:
    """A plausible prediction: 30 % of fibres eroded, 30 % dilated (1-4 px), 3 % removed."""
    rng = np.random.default_rng(seed)
    pred = gt.copy()
    boxes = M.label_boxes(gt)
    height, width = gt.shape
    for i, label in enumerate(boxes.ids):
        action = rng.choice(["keep", "erode", "dilate", "remove"], p=[0.37, 0.3, 0.3, 0.03])
        if action == "keep":
            continue
        pad = 5
        r0, c0 = max(boxes.row0[i] - pad, 0), max(boxes.col0[i] - pad, 0)
        r1, c1 = min(boxes.row1[i] + pad, height), min(boxes.col1[i] + pad, width)
        crop, region = pred[r0:r1, c0:c1], gt[r0:r1, c0:c1] == label
        steps = int(rng.integers(1, 5))
        if action == "remove":
            crop[region] = 0
        elif action == "erode":
            crop[region & ~ndimage.binary_erosion(region, iterations=steps)] = 0
        else:
            grown = ndimage.binary_dilation(region, iterations=steps)
            crop[grown & (crop == 0)] = label
    # renumber so that labels differ from the ground truth's
    order = rng.permutation(int(gt.max()) + 1).astype(gt.dtype)
    order[0] = 0
    return order[pred]


def synthetic_image(gt: np.ndarray) -> np.ndarray:
    """RGB uint8: R high on label borders (membrane), G high inside fibres (mass), B = 0."""
    import cv2

    height, width = gt.shape
    texture = ((np.arange(height, dtype=np.uint16)[:, None] * 7
                + np.arange(width, dtype=np.uint16)[None, :] * 13) % 41).astype(np.uint8)
    image = np.zeros((height, width, 3), np.uint8)
    border = np.zeros(gt.shape, bool)
    border[1:] |= gt[1:] != gt[:-1]
    border[:-1] |= gt[:-1] != gt[1:]
    border[:, 1:] |= gt[:, 1:] != gt[:, :-1]
    border[:, :-1] |= gt[:, :-1] != gt[:, 1:]
    border = cv2.dilate(border.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    image[..., 0] = texture
    image[..., 0][border] += 180
    image[..., 1] = texture
    image[..., 1][gt > 0] += 100
    return image


def straightforward_fibre(gt, pred, image, label, thresholds, k=HALF_WIDTH) -> dict:
    """One GT fibre the straightforward way: full-size masks, no crops (as the published code).

    Matching by the pixel under the GT centroid (then that prediction's filled region),
    OpenCV flood fill, erosion and dilation on the whole image (the same primitives as
    ``evaluate``, so the speed-up measures the crops); the thresholds are computed once.
    """
    import cv2

    kernel = np.ones((2 * k + 1, 2 * k + 1), np.uint8)

    def fill(mask):  # holes = background not 8-connected to the image border, whole image
        buffer = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
        buffer[1:-1, 1:-1] = mask
        cv2.floodFill(buffer, None, (0, 0), 2, flags=8)
        return buffer[1:-1, 1:-1] != 2

    def rings(region):
        u8 = region.view(np.uint8)
        inner = region & ~cv2.erode(u8, kernel, borderType=cv2.BORDER_CONSTANT,
                                    borderValue=1).view(bool)
        outer = cv2.dilate(u8, kernel).view(bool) & ~region
        return (100 * np.sum(inner & (image[..., 0] > thresholds[0])) / np.sum(inner),
                100 * np.sum(outer & (image[..., 1] > thresholds[1])) / np.sum(outer))

    region = fill(gt == label)
    rows, cols = np.nonzero(region)
    row, col = int(rows.mean()), int(cols.mean())
    result = {"gt_id": int(label), "gt": rings(region)}
    other_label = pred[row, col]
    if other_label:
        other = fill(pred == other_label)
        result["iou"] = np.sum(region & other) / np.sum(region | other)
        result["pred"] = rings(other)
    return result


def _rss_kib(field: str = "VmHWM") -> int:
    """Peak (VmHWM) or current (VmRSS) resident memory of this process from /proc, KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def child(folder: str) -> None:
    """Run evaluate once on inputs saved as .npy; print JSON with its time and peak RSS."""
    gt = np.load(Path(folder) / "gt.npy")
    pred = np.load(Path(folder) / "pred.npy")
    image = np.load(Path(folder) / "image.npy")
    reset = _reset_peak_rss()
    before = _rss_kib("VmRSS")
    wall, cpu, _ = _timed(M.evaluate, gt, pred, image, half_width=HALF_WIDTH)
    print(json.dumps({"wall": wall, "cpu": cpu, "rss_before_kib": before,
                      "peak_kib": _rss_kib("VmHWM"), "peak_reset": reset}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mask", default=str(DEFAULT_MASK))
    parser.add_argument("--reference-fibres", type=int, default=5,
                        help="fibres timed with the straightforward implementation")
    parser.add_argument("--repeat", type=int, default=2, help="timed evaluate runs (best kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0

    rows = []
    wall, cpu, gt = _timed(lambda: as_labels(read_array(args.mask), args.mask))
    rows.append(("read mask (tifffile, not part of evaluate)", wall, cpu, ""))
    wall, cpu, pred = _timed(perturb, gt, args.seed)
    rows.append(("build perturbed prediction", wall, cpu, ""))
    wall, cpu, image = _timed(synthetic_image, gt)
    rows.append(("build synthetic RGB image", wall, cpu, f"{image.nbytes / 2**20:.0f} MiB"))
    n_gt = len(M.label_boxes(gt))

    wall, cpu, boxes = _timed(M.label_boxes, gt)
    rows.append(("  label_boxes (one mask)", wall, cpu, f"{len(boxes)} labels"))
    wall, cpu, thresholds = _timed(M.positive_thresholds, image)
    rows.append(("  positive_thresholds (R p85, G p75)", wall, cpu,
                 f"R > {thresholds[0]:g}, G > {thresholds[1]:g}"))
    wall, cpu, _ = _timed(np.percentile, image[..., 0], 85)
    rows.append(("  (np.percentile of R, for comparison)", wall, cpu, ""))

    best = None
    for _ in range(args.repeat):
        wall, cpu, table = _timed(M.evaluate, gt, pred, image, half_width=HALF_WIDTH)
        best = (wall, cpu) if best is None or wall < best[0] else best
    summary = M.summarise(table).iloc[0]
    rows.append(("evaluate (end to end, k = 6)", *best,
                 f"{int(summary['MF-A'])}/{n_gt} matched, mean IoU {summary['mean IoU']:.3f}"))
    wall, cpu, _ = _timed(M.evaluate, gt, pred, image, half_width=HALF_WIDTH,
                          match="pred_centroid")
    rows.append(("evaluate, match='pred_centroid'", wall, cpu, ""))
    wall, cpu, _ = _timed(M.evaluate, gt, pred)
    rows.append(("evaluate without image", wall, cpu, ""))

    tracemalloc.start()
    M.evaluate(gt, pred, image, half_width=HALF_WIDTH)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rows.append(("evaluate peak allocations (tracemalloc)", np.nan, np.nan,
                 f"{traced_peak / 2**20:.0f} MiB on top of the inputs"))

    with tempfile.TemporaryDirectory(prefix="bench_metrics_") as folder:
        for name, array in (("gt", gt), ("pred", pred), ("image", image)):
            np.save(Path(folder) / f"{name}.npy", array)
        inputs = (gt.nbytes + pred.nbytes + image.nbytes) / 2**20
        done = subprocess.run([sys.executable, __file__, "--child", folder], check=True,
                              capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        report = json.loads(done.stdout.strip().splitlines()[-1])
    rows.append(("child process: evaluate", report["wall"], report["cpu"], ""))
    what = "peak RSS during evaluate" if report["peak_reset"] else "peak RSS (whole process)"
    rows.append((f"child process {what}", np.nan, np.nan,
                 f"{report['peak_kib'] / 2**20:.2f} GiB, of which inputs {inputs / 1024:.2f} GiB;"
                 f" {report['rss_before_kib'] / 2**20:.2f} GiB before evaluate"))

    # the straightforward implementation on a few fibres, scaled to all of them
    labels = M.label_boxes(gt).ids[:: max(1, n_gt // max(1, args.reference_fibres))]
    labels = labels[:args.reference_fibres]
    start, cpu0 = time.perf_counter(), time.process_time()
    check = [straightforward_fibre(gt, pred, image, label, thresholds) for label in labels]
    per_fibre = (time.perf_counter() - start) / len(labels)
    per_fibre_cpu = (time.process_time() - cpu0) / len(labels)
    rows.append((f"straightforward, per fibre ({len(labels)} fibres)", per_fibre, per_fibre_cpu,
                 ""))
    rows.append((f"straightforward, scaled to {n_gt} fibres", per_fibre * n_gt,
                 per_fibre_cpu * n_gt, f"speed-up of evaluate: {per_fibre * n_gt / best[0]:.0f}x "
                 f"wall, {per_fibre_cpu * n_gt / best[1]:.0f}x CPU"))
    by_id = table.set_index("gt_id")
    same = all(  # the fast path gives the same numbers
        np.allclose([by_id.loc[item["gt_id"], "gt_membrane_included"],
                     by_id.loc[item["gt_id"], "gt_mass_missed"],
                     by_id.loc[item["gt_id"], "iou"]],
                    [*item["gt"], item.get("iou", 0.0)], rtol=0, atol=1e-9)
        for item in check)
    rows.append(("straightforward == evaluate on those fibres", np.nan, np.nan, str(same)))

    frame = pd.DataFrame(rows, columns=["step", "wall s", "CPU s", "note"])
    print(f"bench_metrics: {Path(args.mask).name} {gt.shape[0]} x {gt.shape[1]} {gt.dtype}, "
          f"{n_gt} fibres; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    with pd.option_context("display.max_colwidth", 90, "display.width", 200):
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
