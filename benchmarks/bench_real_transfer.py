"""How well do the methods trained on the (synthetic) train split transfer to real images?

For each method (``--methods``, default mitocyto cellpose stardist unet), fitted exactly as
``nclsm segment`` / ``make report`` fit it (``segmenters.apply.predict_image``: a cached
model under ``<workdir>/models/`` is loaded), three cases:

``real-left``
    Panel A of the NCL-SM overview figure (the only real image with ground truth at hand,
    ``nclsm_utils.core.realpanel``), predicted whole as IF with the true median fibre diameter of
    the left-half ground truth; GT and predicted objects are kept by the half their centroid
    lies in and scored (instance F1 at IoU 0.5 / 0.75 / 0.9 and the paper metrics with
    ring half-width 1). ``--half right`` scores the held-out right half instead: a
    maintainer runs it ONCE, at the end (case ``real-right``, written to
    ``reports/real_transfer_right.csv``); never tune on it.
``synthetic-control``
    The data's test section IMC/P02 shrunk to the same median fibre diameter (image: area
    averaging, labels: nearest), predicted and scored the same way (modality IF, all
    objects; ``--control-modality IMC`` for the section's own setting): the gap to
    ``real-left`` is the appearance gap, not a scale gap.
``s11-geometry`` (``--skip-geometry`` to skip)
    The real S11 ground truth (12272 x 15129, 489 fibres) rendered by
    ``synth.render_image(labels, "IF", seed=0)`` (cached in ``data/work/bench_real/``, keyed
    by the renderer's source), predicted by each method in a fresh process with the true
    median diameter; F1 and mean IoU, prediction seconds (``predict_s``), the child's
    peak RSS (``peak_rss_gb``: VmHWM, interpreter, imports and input image included) and
    its peak before predicting (``input_rss_gb``: imports and image). ``--downscale F`` runs it on the mask downscaled F x (nearest).
    Rendering (once; also in a fresh process) took 19 s and 0.9 GB peak at
    ``--downscale 4`` on a shared 2-core machine (the renderer renders full-size masks in
    windows; its docstring says about 2 GB at full size).

Every case's F1@0.5 and mean IoU come with 95 % bootstrap intervals (``score_instances(...,
intervals=True)``: tiles of a 4 x 4 grid / matched fibres resampled, seed 0): the spread
from other fibres of the same image, not from other images or from training again.

Methods without a cached model are listed as untrained (this script does not train unless
``--train`` is given). The table goes to ``reports/real_transfer.csv`` (atomic write), a
JSON sidecar (commit, date, settings) beside it, and stdout as a Markdown table. The real
case's fibres are also broken down by decile of their mean mass signal and of their area
(relative to the panel's median fibre; ``metrics.recall``): who gets missed on a real image,
written to ``reports/real_transfer_recall.csv``. No assertions; not run in CI.

Usage::

    python benchmarks/bench_real_transfer.py [--methods mitocyto unet ...] [--data PATH]
        [--workdir data] [--skip-geometry] [--downscale 4] [--quick] [--train]
        [--half left]
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("mitocyto", "cellpose", "stardist", "unet", "stardist+refine")
S11_MASK = ROOT.parent / "shared" / "ncl-sm-sample" / "S11_groundtruth_mask.tiff"
PRINTED = ["case", "method", "n_gt", "n_pred", "F1@0.5", "F1@0.5 CI low", "F1@0.5 CI high",
           "F1@0.75", "F1@0.9", "mean IoU", "mean IoU CI low", "mean IoU CI high",
           "r_AoB", "r_AiB", "A%(IoU>0.80)", "predict_s", "input_rss_gb", "peak_rss_gb",
           "note"]
log = logging.getLogger("bench_real_transfer")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--data", default=None,
                   help="dataset whose train split fits the methods and whose test section "
                        "is the control (default: as `make report`: NCL-SM in data/, else "
                        "data/synthetic, generated when missing)")
    p.add_argument("--workdir", default=str(ROOT / "data"), help="model cache (as nclsm segment)")
    p.add_argument("--quick", action="store_true", help="the --quick models of nclsm segment")
    p.add_argument("--train", action="store_true",
                   help="train methods without a cached model (default: list them untrained)")
    p.add_argument("--half", choices=("left", "right"), default="left",
                   help="half of the real panel to score; 'right' is the held-out half: "
                        "opt-in, run once by a maintainer at the end")
    p.add_argument("--control-section", default="IMC/P02")
    p.add_argument("--control-modality", choices=("IF", "IMC"), default="IF",
                   help="modality setting for the control's prediction (default IF, as for "
                        "the real panel, so that only the image differs)")
    p.add_argument("--geometry", dest="geometry", action="store_true", default=True,
                   help="run the S11 geometry case (default)")
    p.add_argument("--skip-geometry", dest="geometry", action="store_false")
    p.add_argument("--downscale", type=float, default=1.0,
                   help="downscale the S11 mask by this factor (nearest) for quick checks")
    p.add_argument("--s11", default=str(S11_MASK), help="the S11 ground-truth mask")
    p.add_argument("--cache", default=str(ROOT / "data" / "work" / "bench_real"),
                   help="where the rendered S11 image is cached")
    p.add_argument("--out", default=None, help="csv (default reports/real_transfer.csv; "
                   "reports/real_transfer_right.csv with --half right)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- provenance
def _git(*args) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(args, extra: dict) -> dict:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "python": platform.python_version(),
        "machine": platform.platform(),
        "methods": args.methods, "half": args.half, "downscale": args.downscale,
        "quick": args.quick, **extra,
    }


# ---------------------------------------------------------------------------- cases
def _row(case, method, **values) -> dict:
    return {"case": case, "method": method, **values}


def _failed(case, method, error) -> dict:
    log.debug("%s %s failed:\n%s", case, method, traceback.format_exc())
    return _row(case, method, note=f"{type(error).__name__}: {error}"[:300])


#: Per ground-truth fibre detection rows of the real case, one frame per method.
DETECTIONS: list = []


def real_case(segmenter, panel, half, diameter, dataset, args) -> dict:
    from nclsm_utils.metrics.recall import fibre_detection
    from nclsm_utils.segmenters.apply import predict_image
    from nclsm_utils.report.transfer import restrict_to_half, score_instances

    start = time.perf_counter()
    pred = predict_image(segmenter, panel.image, modality="IF", fibre_diameter=diameter,
                         data=dataset, workdir=args.workdir, quick=args.quick)
    seconds = time.perf_counter() - start
    gt_half, pred_half = restrict_to_half(panel.labels, pred, half)
    scores = score_instances(gt_half, pred_half, panel.image, half_width=1,
                             intervals=True)
    DETECTIONS.append(fibre_detection(gt_half, pred_half, panel.image)
                      .assign(method=segmenter.name, section=f"real-{half}"))
    return _row(f"real-{half}", segmenter.name, source=segmenter.source, modality="IF",
                diameter_px=diameter, half_width=1, **scores, predict_s=seconds)


def control_case(segmenter, image, gt, dataset, args) -> dict:
    from nclsm_utils.core.realpanel import median_diameter
    from nclsm_utils.segmenters.apply import predict_image
    from nclsm_utils.report.transfer import score_instances

    diameter = median_diameter(gt)
    start = time.perf_counter()
    pred = predict_image(segmenter, image, modality=args.control_modality,
                         fibre_diameter=diameter, data=dataset, workdir=args.workdir,
                         quick=args.quick)
    seconds = time.perf_counter() - start
    scores = score_instances(gt, pred, image, half_width=1, intervals=True)
    return _row("synthetic-control", segmenter.name, source=segmenter.source,
                modality=args.control_modality,
                diameter_px=diameter, half_width=1, **scores, predict_s=seconds)


def geometry_render(args) -> tuple[Path, dict]:
    """The cached rendered S11 image (rendered in a fresh process when missing)."""
    from nclsm_utils.synth import renderer_fingerprint
    from nclsm_utils.report.transfer import call_in_subprocess, render_geometry

    cache = Path(args.cache)
    path = cache / f"s11_IF_seed0_x{args.downscale:g}_{renderer_fingerprint()}.tiff"
    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file():
        return path, json.loads(info_path.read_text())
    print(f"rendering S11 (downscale {args.downscale:g}) -> {path}", file=sys.stderr)
    info, stats = call_in_subprocess(render_geometry, args.s11, path, args.downscale, "IF", 0)
    info.update(render_s=stats["seconds"], render_peak_rss_gb=stats["peak_rss_bytes"] / 1e9)
    from nclsm_utils.core.io import write_text

    write_text(info_path, json.dumps(info, indent=2))
    return path, info


def geometry_case(method, rgb_path, gt, diameter, dataset_root, args) -> dict:
    from nclsm_utils.report.transfer import call_in_subprocess, predict_file, score_instances

    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        out = Path(tmp) / "labels.npy"
        info, stats = call_in_subprocess(predict_file, method, rgb_path, out, modality="IF",
                                         fibre_diameter=diameter, data=dataset_root,
                                         workdir=args.workdir, quick=args.quick)
        pred = np.load(out)
    scores = score_instances(gt, pred, intervals=True)   # no image: F1, mean IoU
    return _row("s11-geometry", method, modality="IF", diameter_px=diameter, **scores,
                predict_s=info["predict_s"], peak_rss_gb=stats["peak_rss_bytes"] / 1e9,
                input_rss_gb=info["input_rss_bytes"] / 1e9)


# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import pandas as pd
    import tifffile

    from nclsm_utils.dataset import Dataset
    from nclsm_utils.core.io import write_csv, write_text
    from nclsm_utils.report.pipeline import resolve_data
    from nclsm_utils.core.realpanel import half_of, load_panel, median_diameter
    from nclsm_utils.segmenters import get_segmenter
    from nclsm_utils.report.site import markdown_table
    from nclsm_utils.report.transfer import downscale_labels, shrink_to_diameter

    if args.half == "right":
        print("NOTE: scoring the HELD-OUT right half of the real panel; run this once, at "
              "the end, and never tune on it", file=sys.stderr)
    out = Path(args.out) if args.out else ROOT / "reports" / (
        "real_transfer.csv" if args.half == "left" else "real_transfer_right.csv")
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    data_root = Path(args.data) if args.data else resolve_data(ROOT / "data")
    dataset = Dataset(data_root)
    train = dataset.sections(split="train")
    validation = dataset.sections(split="validation")  # StarDist chooses thresholds on it

    panel = load_panel()
    # the diameter comes from the LEFT half whatever --half says: nothing reads the right GT
    diameter = median_diameter(half_of(panel.labels, "left"))
    section = dataset.section(args.control_section)
    control_image, control_gt, factor = shrink_to_diameter(section.image(),
                                                           section.mask("myofibres"), diameter)
    extra = {"data": str(data_root), "workdir": str(args.workdir),
             "real": {"figure": str(panel.path), "scale": panel.scale[0],
                      "shift": list(panel.shift), "left_median_diameter_px": diameter},
             "control": {"section": section.key, "shrink_factor": factor,
                         "shape": list(control_gt.shape)}}

    geometry = None
    if args.geometry:
        rgb_path, info = geometry_render(args)
        gt = downscale_labels(tifffile.imread(args.s11), args.downscale)
        geometry = (rgb_path, gt, median_diameter(gt))
        extra["geometry"] = {"mask": str(args.s11), "image": str(rgb_path), **info}

    rows, sources = [], {}
    cases = [f"real-{args.half}", "synthetic-control"] + (["s11-geometry"] if geometry else [])
    for method in args.methods:
        try:
            segmenter = get_segmenter(method, workdir=args.workdir, quick=args.quick)
            ready = segmenter.has_cached_model(train, validation)
        except Exception as error:   # unknown method, missing package: one row, go on
            rows += [_failed(case, method, error) for case in cases]
            continue
        if not ready and not args.train:
            note = (f"untrained: no cached model in {Path(args.workdir) / 'models'}; run "
                    f"`nclsm segment --method {method}` first (or pass --train)")
            rows += [_row(case, method, note=note) for case in cases]
            continue
        for case in cases:
            start = time.perf_counter()
            try:
                if case.startswith("real-"):
                    row = real_case(segmenter, panel, args.half, diameter, dataset, args)
                elif case == "synthetic-control":
                    row = control_case(segmenter, control_image, control_gt, dataset, args)
                else:
                    row = geometry_case(method, *geometry, data_root, args)
            except Exception as error:   # a failing method/case never loses the others
                row = _failed(case, method, error)
            rows.append(row)
            print(f"{case} {method}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        sources[method] = segmenter.source

    table = pd.DataFrame(rows)
    for column in PRINTED:
        if column not in table:
            table[column] = np.nan if column != "note" else ""
    table["note"] = table["note"].fillna("")
    write_csv(out, table)
    sidecar = out.with_suffix(".json")
    write_text(sidecar, json.dumps(provenance(args, {**extra, "sources": sources}), indent=2,
                                   default=str))
    print(markdown_table(table[PRINTED]))
    print(f"table -> {out}\nprovenance -> {sidecar}")
    if DETECTIONS:
        from nclsm_utils.metrics.recall import recall_report, relative_to_section

        deciles, gaps = recall_report(relative_to_section(pd.concat(DETECTIONS,
                                                                    ignore_index=True)))
        recall_out = out.with_name(out.stem + "_recall.csv")
        write_csv(recall_out, deciles)
        print("\nrecall of the real panel's fibres by mass-signal and area decile "
              "(relative to the panel's median fibre):")
        print(markdown_table(deciles.pivot_table(index=["property", "decile"], columns="method",
                                                 values="recall").round(3).reset_index()))
        print(markdown_table(gaps[["method", "property", "threshold", "lowest recall",
                                   "rest recall", "difference", "difference CI low",
                                   "difference CI high", "missed more"]]))
        print(f"recall by decile -> {recall_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
