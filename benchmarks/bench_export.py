"""Benchmark: the exports of ``nclsm predict`` on a full-size IF section.

Uses the real S11 ground-truth mask (12272 x 15129 uint16, 489 fibres) as the
segmentation and a two-channel image of the same size; times each export step
(per-fibre table with the intensities of both channels, pixel-edge outlines,
ROI set + GeoJSON, overlay), checks that every outline's area equals its pixel
count and prints the output sizes. Peak memory is the process's (``ru_maxrss``),
inputs included. No asserts on time.

Usage::

    PYTHONPATH=. python benchmarks/bench_export.py [--mask PATH] [--pixel-size UM]
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from nclsm_utils.export import (fibre_polygons, fibre_table, write_geojson, write_overlay,
                                write_roi_set)

MASK = Path(__file__).resolve().parents[2] / "shared" / "ncl-sm-sample" / "S11_groundtruth_mask.tiff"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mask", type=Path, default=MASK)
    parser.add_argument("--pixel-size", type=float, default=0.5)
    args = parser.parse_args(argv)
    labels = tifffile.imread(args.mask)
    channels = np.zeros(labels.shape + (2,), np.uint8)
    channels[..., 0][labels == 0] = 200
    channels[..., 1][labels > 0] = 100
    out = Path(tempfile.mkdtemp())
    rows = []

    def timed(name, call):
        start = time.perf_counter()
        result = call()
        rows.append((name, time.perf_counter() - start))
        return result

    table = timed("per-fibre table (2 channels)",
                  lambda: fibre_table(labels, channels, ["membrane", "mass"], args.pixel_size))
    polygons = timed("pixel-edge outlines", lambda: fibre_polygons(labels))
    timed("ROI set + GeoJSON", lambda: (write_roi_set(out / "rois.zip", polygons),
                                        write_geojson(out / "fibres.geojson", polygons, table)))
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., :2] = channels
    timed("overlay PNG", lambda: write_overlay(out / "overlay.png", rgb, labels))
    counts = np.bincount(labels.ravel())
    exact = all(polygons[i].area == counts[i] for i in table["id"])
    print(f"{args.mask.name}: {labels.shape[0]} x {labels.shape[1]}, {len(table)} fibres; "
          f"outline areas == pixel counts: {exact}")
    print("| step | wall s |\n| --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} |")
    print(f"| total | {sum(s for _, s in rows):.1f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"peak memory {peak:.1f} GB; " + ", ".join(
        f"{p.name} {p.stat().st_size / 2 ** 20:.1f} MB" for p in sorted(out.iterdir())))


if __name__ == "__main__":
    main()
