"""Fibres that are near black in the mitochondrial-mass channel: does each method find them?

In mitochondrial-disease muscle the fibres with unusual mitochondrial mass are the ones a
study is about; a method that finds fibres by their mass signal instead of their membrane
misses exactly those. This script writes a separate synthetic set (its own seed, 5001; the
default generator with 15 % of each section's fibres set near background in G, alone and in
groups, ``SynthConfig.look_overrides``) and scores the models of ``make report`` on it:

* a fibre is **near black** when its mean G is under 0.2 x its section's median fibre
  (:func:`nclsm_utils.metrics.recall.fibre_detection`, :func:`relative_to_section`);
* it is **detected** when a predicted object overlaps it with IoU >= 0.5;
* the table gives, per method, the recall of the near-black fibres and of the others, with
  95 % bootstrap intervals (fibres resampled within sections).

Usage::

    python benchmarks/bench_dark_fibres.py [--methods unet stardist ...] [--workdir data]
        [--train] [--seed N] [--budget report|full|quick]

Methods without a cached model are listed as untrained unless ``--train`` is given.
``--seed N`` scores the models trained with training seed ``N`` (``make report`` trains
with seed 0; another seed is another model in the cache, trained with ``--train``), so
that the spread of a retraining can be measured. ``--budget full`` scores (with ``--train``,
trains) the models of each library's documented training length, as ``nclsm report
--budget full`` builds them (hours on a CPU; for a GPU). The set
goes to ``<workdir>/work/tuning/dark5001`` (about 30 s to generate), the table to
``reports/dark_fibres.csv`` and stdout. No assertions; not run in CI.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 5001
#: Mean G under this share of the section's median fibre: near black.
NEAR_BLACK = 0.2
#: The set's generator: the default data's, with these look fields on every section.
LOOK = {"dark_fraction": 0.15, "dark_level": 0.03}
log = logging.getLogger("bench_dark_fibres")


def dark_set_config():
    """The generator settings of the dark-fibre set."""
    from nclsm_utils.synth import SynthConfig

    return SynthConfig(look_overrides=dict(LOOK), splits={"test": [], "validation": []})


def dark_set(root: Path) -> Path:
    """Write the set under ``root`` (when missing) and return its folder."""
    from nclsm_utils.synth import write_dataset

    folder = root / f"dark{SEED}"
    if not (folder / "synth_manifest.json").is_file():
        write_dataset(folder, dark_set_config(), seed=SEED, progress=False, workers=1)
    return folder


def detections(segmenter, sections):
    """Per ground-truth fibre rows (``fibre_detection``) of every section, with ``rel_mass``."""
    import pandas as pd

    from nclsm_utils.metrics.recall import fibre_detection, relative_to_section

    parts = []
    for section in sections:
        image, gt = section.image(), section.mask("myofibres")
        pred = segmenter.predict(image, section.modality)
        parts.append(fibre_detection(gt, pred, image).assign(section=section.key))
    return relative_to_section(pd.concat(parts, ignore_index=True))


def summary(table) -> dict:
    """Recall of the near-black fibres and of the rest, with bootstrap intervals."""
    from nclsm_utils.metrics.recall import recall_interval

    dark = table["rel_mass"] < NEAR_BLACK
    row = {"fibres": len(table), "near black": int(dark.sum()),
           "near black %": 100.0 * float(dark.mean())}
    for name, chosen in (("near black", table[dark]), ("others", table[~dark])):
        detected = chosen["detected"].to_numpy(bool)
        low, high = recall_interval(detected, chosen["section"].to_numpy())
        row[f"recall {name}"] = float(detected.mean()) if detected.size else float("nan")
        row[f"recall {name} CI"] = f"[{low:.3f}, {high:.3f}]"
    return row


def make_segmenter(method: str, workdir, seed: int | None = None, budget: str = "report"):
    """The method as ``make report`` builds it, with training seed ``seed`` (None: its own)
    and training budget ``budget``."""
    from nclsm_utils.segmenters import get_segmenter

    params = None if seed is None else {"seed": int(seed)}
    return get_segmenter(method, params=params, workdir=workdir, budget=budget)


def parse_args(argv=None):
    from nclsm_utils.segmenters.base import BENCHMARK_METHODS, BUDGETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(BENCHMARK_METHODS))
    p.add_argument("--data", default=None, help="dataset whose train split fits the methods "
                   "(default: as `make report`)")
    p.add_argument("--workdir", default=str(ROOT / "data"), help="model cache")
    p.add_argument("--train", action="store_true", help="train methods without a cached model")
    p.add_argument("--seed", type=int, default=None, help="training seed of the models "
                   "(default: the methods' own, 0, as `make report`)")
    p.add_argument("--budget", default="report", choices=list(BUDGETS),
                   help="training budget of the models (default: report, as `make report`)")
    p.add_argument("--out", default=str(ROOT / "reports" / "dark_fibres.csv"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    import pandas as pd

    from nclsm_utils.core.dataset import Dataset
    from nclsm_utils.core.io import write_csv
    from nclsm_utils.report.pipeline import resolve_data
    from nclsm_utils.report.site import markdown_table
    from nclsm_utils.segmenters.apply import fit_if_cached

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = Dataset(Path(args.data) if args.data else resolve_data(ROOT / "data"))
    sections = Dataset(dark_set(Path(args.workdir) / "work" / "tuning")).sections()
    rows = []
    for method in args.methods:
        segmenter = make_segmenter(method, args.workdir, args.seed, args.budget)
        row = {"method": method, "seed": segmenter.params.seed, "budget": segmenter.budget}
        if not fit_if_cached(segmenter, data, train=args.train):
            log.warning("%s: no cached model (run make report, or pass --train)", method)
            rows.append({**row, "note": "untrained"})
            continue
        start = time.time()
        rows.append({**row, **summary(detections(segmenter, sections))})
        log.info("%s: near-black recall %.3f (%.0f s)", method, rows[-1]["recall near black"],
                 time.time() - start)
    table = pd.DataFrame(rows)
    write_csv(args.out, table)
    print(markdown_table(table))
    print(f"\ntable -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
