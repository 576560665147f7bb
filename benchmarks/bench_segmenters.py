"""Segmenter speed and memory.

1. Inference seconds per megapixel (full-resolution pixels) of every registered method that
   can run, on the test sections of the default synthetic NCL-SM (generated when missing).
   Trainable methods run only with a cached model (from ``nclsm segment``) unless
   ``--train-quick`` trains them briefly; others are listed with a note.
2. Peak resident memory (``resource.getrusage`` max RSS of a fresh subprocess per method)
   while a method predicts a full-size synthetic IF section (10,000 x 15,000 pixels, 72-px
   fibres) through ``predict_section``: read the RGB TIFF, shrink to the working scale,
   predict in tiles, resize the labels back, write the cached label TIFF. mitocyto always;
   trained methods when their model is cached under ``--workdir`` (or ``--train-quick``).
   Target < 4 GB.

Usage::

    python benchmarks/bench_segmenters.py [--data data/synthetic] [--workdir data]
        [--train-quick] [--methods mitocyto ...] [--skip-memory] [--size 10000 15000]
        [--memory-methods mitocyto unet ...]

No assertions on time; the numbers are printed (and with ``--json PATH`` written).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _test_images(data: Path):
    from nclsm_utils.dataset import Dataset
    from nclsm_utils.synth import write_dataset

    if not data.is_dir():
        write_dataset(data, seed=0)
    dataset = Dataset(data)
    return dataset, dataset.sections(split="test")


def speed_table(data: Path, workdir: Path, methods=None, train_quick: bool = False):
    import pandas as pd

    from nclsm_utils.segmenters import REGISTRY, get_segmenter

    dataset, sections = _test_images(data)
    images = [(s, s.image()) for s in sections]
    train = dataset.sections(split="train")
    validation = dataset.sections(split="validation")  # StarDist chooses thresholds on it
    rows = []
    for name in sorted(methods or REGISTRY):
        if name == "external":
            rows.append({"method": name, "note": "reads masks from a folder; nothing to time"})
            continue
        try:
            seg = get_segmenter(name, workdir=workdir, quick=train_quick)
            if seg.trainable and not train_quick:
                if not seg.has_cached_model(train, validation):
                    rows.append({"method": name, "note": "untrained: run `nclsm segment --method "
                                 f"{name}` first or pass --train-quick"})
                    continue
            start = time.perf_counter()
            seg.fit(train, validation=validation)
            fit_s = time.perf_counter() - start
            seg.predict(images[0][1][:256, :256], modality=images[0][0].modality)  # warm-up
            for modality in ("IMC", "IF"):
                chosen = [(s, im) for s, im in images if s.modality == modality]
                if not chosen:
                    continue
                megapixels = sum(im.shape[0] * im.shape[1] for _, im in chosen) / 1e6
                start = time.perf_counter()
                repeats = 0
                while True:
                    for section, image in chosen:
                        seg.predict(image, modality=modality)
                    repeats += 1
                    elapsed = time.perf_counter() - start
                    if elapsed > 2.0 or repeats >= 5:
                        break
                rows.append({"method": name, "source": seg.source, "device": seg.device,
                             "modality": modality, "sections": len(chosen),
                             "megapixels": round(megapixels, 3),
                             "s_per_MP": round(elapsed / repeats / megapixels, 3),
                             "fit_or_load_s": round(fit_s, 2), "note": ""})
        except Exception as error:  # noqa: BLE001 - report and go on with the other methods
            rows.append({"method": name, "note": f"cannot run: {type(error).__name__}: "
                         f"{' '.join(str(error).split())[:160]}"})
    columns = ["method", "source", "device", "modality", "sections", "megapixels", "s_per_MP",
               "fit_or_load_s", "note"]
    table = pd.DataFrame(rows, columns=columns)
    table["sections"] = table["sections"].astype("Int64")
    return table


# -------------------------------------------------------------------------- memory
def make_big_if_image(path: Path, size=(10000, 15000), tile: int = 2048, seed: int = 0) -> Path:
    """A full-size synthetic IF RGB TIFF: one rendered ``tile`` x ``tile`` section (72-px
    fibres) mirrored out to ``size`` (seamless), written uncompressed."""
    import tifffile

    from nclsm_utils.synth import SynthConfig, carve_gaps, render_image, tessellate

    config = SynthConfig()
    rng = np.random.default_rng(seed)
    labels = tessellate((tile, tile), config.if_.fibre_diameter, config.if_.size_cv, rng)
    labels = carve_gaps(labels, config.if_.gap)
    _, rgb = render_image(labels, "IF", seed=seed, config=config,
                          fibre_diameter=config.if_.fibre_diameter)
    pad = ((0, max(0, size[0] - tile)), (0, max(0, size[1] - tile)), (0, 0))
    big = np.pad(rgb, pad, mode="symmetric")[:size[0], :size[1]]
    tifffile.imwrite(path, np.ascontiguousarray(big))
    return path


def _child_memory(image_path: str, workdir: str, method: str = "mitocyto", data: str = "",
                  train_quick: str = "0") -> None:
    """Run in a fresh process: ``method``'s predict_section on the big image, a JSON line."""
    import resource

    from nclsm_utils.dataset import Dataset, Section
    from nclsm_utils.segmenters import get_segmenter

    quick = train_quick == "1"
    if method == "mitocyto":
        seg = get_segmenter("mitocyto", params={"fibre_diameter": {"IF": 72.0}}, workdir=workdir)
        seg.fit([])
    else:
        seg = get_segmenter(method, workdir=workdir, quick=quick)
        seg.fit(Dataset(data).sections(split="train"))    # loads the cached model
        seg.diameters["IF"] = 72.0                        # the big image's fibre size
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    section = Section("BIG", "IF", files={"image": Path(image_path)}, split="test")
    start = time.perf_counter()
    labels = seg.predict_section(section, force=True)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    written = seg.prediction_dir / "IF_BIG.tiff"
    for stale in (written, written.with_suffix(".json")):   # keep the user's workdir clean
        stale.unlink(missing_ok=True)
    print(json.dumps({"method": method, "shape": list(labels.shape), "fibres": int(labels.max()),
                      "seconds": round(elapsed, 1), "rss_after_imports_mb": round(before),
                      "peak_rss_mb": round(peak)}))


def memory_run(size=(10000, 15000), methods=("mitocyto",), data: Path | None = None,
               workdir: Path | None = None, train_quick: bool = False) -> list[dict]:
    """Peak memory of each method predicting one big synthetic IF section (one process each)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="nclsm-bench-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        image = make_big_if_image(tmp / "BIG.tiff", size=size)
        made = time.perf_counter() - start
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for method in methods:
            # mitocyto needs no model: a scratch workdir; trained methods load theirs
            work = tmp / "work" if method == "mitocyto" else workdir
            proc = subprocess.run([sys.executable, __file__, "--_child-memory", str(image),
                                   str(work), method, str(data), "1" if train_quick else "0"],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                results.append({"method": method, "error": proc.stderr.strip()[-300:]})
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result["image_build_s"] = round(made, 1)
            results.append(result)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "synthetic")
    parser.add_argument("--workdir", type=Path, default=ROOT / "data")
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--train-quick", action="store_true",
                        help="train methods without a cached model (short schedule)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--size", nargs=2, type=int, default=[10000, 15000])
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--memory-methods", nargs="+", default=None,
                        help="methods for the memory run (default: mitocyto and every method "
                             "the speed table could run)")
    parser.add_argument("--_child-memory", nargs="+", dest="child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        _child_memory(*args.child)
        return 0
    import pandas as pd

    speed = speed_table(args.data, args.workdir, args.methods, args.train_quick)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print("== inference time per megapixel (full-resolution pixels; default synthetic test "
              "sections)")
        print(speed.astype(object).fillna("").to_string(index=False))
    out = {"speed": speed.to_dict("records")}
    if not args.skip_memory:
        ran = [r["method"] for r in out["speed"] if not r.get("note")]
        chosen = args.memory_methods or ["mitocyto"] + sorted(set(ran) - {"mitocyto"})
        memory = memory_run(tuple(args.size), chosen, args.data, args.workdir, args.train_quick)
        print(f"== predict_section on a {args.size[0]} x {args.size[1]} synthetic IF section "
              "(72-px fibres): peak RSS of a fresh process per method; target < 4096 MB")
        for row in memory:
            if "error" in row:
                print(f"  {row['method']:9s} failed: {row['error']}")
                continue
            print(f"  {row['method']:9s} {row['fibres']:6d} fibres in {row['seconds']:6.1f} s, "
                  f"peak RSS {row['peak_rss_mb']} MB (after imports "
                  f"{row['rss_after_imports_mb']} MB)")
        out["memory"] = memory
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
