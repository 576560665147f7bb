"""Benchmark: published NTM shape features on the real S11 ground-truth mask.

Times reading the mask, :func:`nclsm_utils.metrics.morphology.shape_features` (and its
per-fibre pieces), the NTM rule and :func:`fibre_morphology` on IF section S11
(12272 x 15129 uint16, 489 fibres), and prints a table. With ``--skimage`` it
also times ``skimage.morphology.convex_hull_image`` on the same crops, the slow
reference that ``convex_hull_pixels`` reproduces exactly. No asserts on time.

Usage::

    PYTHONPATH=. python benchmarks/bench_shape_features.py [--mask PATH] [--repeat N] [--skimage]
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from nclsm_utils.metrics import morphology as M
from nclsm_utils.dataset import as_labels
from nclsm_utils.core.io import read_array

DEFAULT_MASK = (Path(__file__).resolve().parents[2] / "shared" / "ncl-sm-sample"
                / "S11_groundtruth_mask.tiff")


def _best(function, repeat: int):
    """((best wall time, its CPU time) in s, last result) of ``repeat`` calls.

    CPU time (``time.process_time``) is reported too: on a shared, loaded machine it
    is the steadier number.
    """
    best, result = (np.inf, np.inf), None
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        result = function()
        best = min(best, (time.perf_counter() - start, time.process_time() - cpu))
    return best, result


def _pieces(labels: np.ndarray, skimage_hull: bool) -> dict[str, tuple[float, float]]:
    """Total (wall, CPU) time in s of each per-fibre piece over all fibres."""
    names = ["crop extraction", "perimeter", "convex hull (exact, fast)",
             "ellipse (Canny + contours + fit)"]
    if skimage_hull:
        names.append("convex hull (skimage reference)")
        from skimage.morphology import convex_hull_image
    totals = {name: np.zeros(2) for name in names}

    def timed(name, function, *arguments):
        start, cpu = time.perf_counter(), time.process_time()
        result = function(*arguments)
        totals[name] += (time.perf_counter() - start, time.process_time() - cpu)
        return result

    crops = timed("crop extraction", lambda: list(M._fibre_crops(labels, M.MIN_AREA)))
    for _, mask, origin, _ in crops:
        timed("perimeter", M.perimeter_pixels, mask)
        timed("convex hull (exact, fast)", M.convex_hull_pixels, mask)
        timed("ellipse (Canny + contours + fit)", M.ellipse_axes, mask, origin)
        if skimage_hull:
            timed("convex hull (skimage reference)", lambda m: convex_hull_image(m).sum(), mask)
    return {name: (float(v[0]), float(v[1])) for name, v in totals.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mask", default=str(DEFAULT_MASK), help="label mask (TIFF)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    parser.add_argument("--skimage", action="store_true",
                        help="also time skimage's convex_hull_image (slow, ~20 s on S11)")
    args = parser.parse_args(argv)

    rows = []
    t_read, labels = _best(lambda: as_labels(read_array(args.mask), args.mask), 1)
    rows.append(("read mask (tifffile)", *t_read, 1))
    n_labels = int(sum(s is not None for s in ndi.find_objects(labels)))
    t, _ = _best(lambda: ndi.find_objects(labels), args.repeat)
    rows.append(("find_objects (bounding boxes)", *t, args.repeat))
    t, table = _best(lambda: M.shape_features(labels), args.repeat)
    rows.append(("shape_features (total)", *t, args.repeat))
    for name, (seconds, cpu) in _pieces(labels, args.skimage).items():
        rows.append((f"  {name}", seconds, cpu, 1))
    t, flags = _best(lambda: M.ntm_rule(table), args.repeat)
    rows.append(("ntm_rule", *t, args.repeat))
    t, morph = _best(lambda: M.fibre_morphology(labels), 1)
    rows.append(("fibre_morphology (regionprops + Feret)", *t, 1))

    result = pd.DataFrame(rows, columns=["step", "wall s", "cpu s", "runs"])
    result["wall ms/fibre"] = 1000 * result["wall s"] / max(len(table), 1)
    print(f"mask {args.mask}: {labels.shape[0]} x {labels.shape[1]} {labels.dtype}, "
          f"{n_labels} labels, {len(table)} fibres with > {M.MIN_AREA} pixels, "
          f"{int(flags.sum())} flagged NTM, {len(morph)} morphology rows")
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"best of {args.repeat} where runs > 1")
    with pd.option_context("display.width", 120, "display.float_format", "{:.3f}".format):
        print(result.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
