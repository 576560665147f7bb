"""Measure the automatic curation on the default synthetic data: quality table and timings.

Run: ``python benchmarks/bench_curation.py [--data data/synthetic] [--methods mitocyto]
[--compare-fr]``. Prints tables, asserts nothing. Targets on the default test
split: FAM F1 >= 0.8, folded-region pixel IoU >= 0.7, analysable mean IoU >= 0.85 (best
segmenter).

* models trained on the train split (in a fresh temporary workdir, so training is timed);
* curation of the test split from ground-truth myofibres (``gt``) and from the cached
  predictions of ``--methods`` (``<workdir>/predictions/<method>/``, default workdir ``data``);
* grouped (by section) cross-validation of the FAM and NTM classifiers on train+validation;
* ``--compare-fr``: the folded-region pixel classifiers compared on the validation split
  (the measurement behind the default ``fr_model``).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time

import numpy as np
import pandas as pd

from nclsm_utils import curation as C
from nclsm_utils.dataset import Dataset


def _fmt(value) -> str:
    return "nan" if value is None or (isinstance(value, float) and np.isnan(value)) \
        else f"{value:.3f}"


def quality_rows(method: str, result: dict) -> list[dict]:
    classes = result["classes"]
    pooled = classes[classes["section"] == "all"].set_index("class")
    fr = result["fr"].set_index("section")
    summary = result["paper_summary"].set_index("modality") if len(result["paper_summary"]) \
        else pd.DataFrame()
    rows = []
    for name in ("FAM", "NTM (curation)", "NTM (rule)", "NTM (learned)", "analysable"):
        if name in pooled.index:
            row = pooled.loc[name]
            rows.append({"method": method, "measure": f"{name} P / R / F1",
                         "value": f"{_fmt(row['precision'])} / {_fmt(row['recall'])} / "
                                  f"{_fmt(row['f1'])}",
                         "detail": f"{int(row['gt_positive'])} GT positive, "
                                   f"{int(row['pred_positive'])} flagged"})
    per_section = ", ".join(f"{s} {_fmt(r['iou'])}" for s, r in fr.iterrows() if s != "all")
    rows.append({"method": method, "measure": "FR pixel IoU (pooled)",
                 "value": _fmt(fr.loc["all", "iou"]), "detail": per_section})
    if len(summary):
        row = summary.loc["all"]
        rows.append({"method": method, "measure": "analysable mean IoU (paper)",
                     "value": _fmt(row["mean IoU"]),
                     "detail": f"MF-A {int(row['MF-A'])} of {int(row['GT fibres'])} analysable "
                               f"GT fibres, {int(row['unmatched predictions'])} unmatched"})
    return rows


def compare_fr(dataset: Dataset, params: C.CurationParams) -> pd.DataFrame:
    """Validation IoU and timings of the FR pixel classifiers (same features and samples)."""
    train = dataset.sections(split="train")
    validation = dataset.sections(split="validation")
    rows = []
    for model in ("hgb", "rf", "logreg"):
        p = dataclasses.replace(params, fr_model=model,
                                fr_trees=50 if model == "rf" else params.fr_trees)
        clf = C.FoldedRegionClassifier(p)
        start = time.perf_counter()
        clf.fit(train)
        fit_s = time.perf_counter() - start
        inter = union = 0
        per = []
        start = time.perf_counter()
        for section in validation:
            diameter = C.fibre_diameter(section.mask("myofibres"), section.modality)
            predicted = clf.predict(section.image(), diameter)
            truth = section.mask("fr") > 0
            i, u = int((predicted & truth).sum()), int((predicted | truth).sum())
            inter, union = inter + i, union + u
            per.append(f"{section.id} {i / u:.3f}" if u else f"{section.id} -")
        rows.append({"fr_model": model, "validation IoU": inter / union if union else np.nan,
                     "per section": ", ".join(per), "fit s": fit_s,
                     "predict s/section": (time.perf_counter() - start) / max(len(validation), 1)})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--workdir", default="data",
                        help="where cached predictions of --methods are read")
    parser.add_argument("--methods", nargs="*", default=[],
                        help="segmentation methods with cached test predictions")
    parser.add_argument("--compare-fr", action="store_true")
    parser.add_argument("--no-cv", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    pd.set_option("display.max_colwidth", 90)

    dataset = Dataset(args.data)
    params = C.CurationParams()
    timings = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        models = C.train_models(dataset.sections(split="train"), workdir=tmp, params=params)
        timings.append(("train (8 sections, features + 3 models)", time.perf_counter() - start))
        start = time.perf_counter()
        C.train_models(dataset.sections(split="train"), workdir=tmp, params=params)
        timings.append(("load cached models", time.perf_counter() - start))
        test = dataset.sections(split="test")
        start = time.perf_counter()
        for section in test:
            C.curate(section, models=models)
        timings.append((f"curate, per test section (mean of {len(test)})",
                        (time.perf_counter() - start) / len(test)))
        rows = []
        results = {}
        for method in ["gt", *args.methods]:
            workdir = tmp if method == "gt" else args.workdir
            start = time.perf_counter()
            results[method] = C.evaluate_curation(dataset, method, workdir=workdir, models=models)
            timings.append((f"evaluate_curation {method} (test split)",
                            time.perf_counter() - start))
            if len(results[method]["errors"]):
                print(results[method]["errors"].to_string(index=False))
            if len(results[method]["classes"]):
                rows.extend(quality_rows(method, results[method]))

    print("\n== quality on the test split (P02, P06, S11, S60) ==")
    print(pd.DataFrame(rows).to_string(index=False))
    gt = results["gt"]
    print("\n== per section, ground-truth myofibres ==")
    classes = gt["classes"]
    print(classes[classes["class"] != "analysable"].pivot_table(
        index="section", columns="class", values="f1", sort=False).round(3).to_string())
    print(gt["fr"][["section", "gt_pixels", "pred_pixels", "iou"]].round(3).to_string(index=False))
    print("\n== Table I counts, predicted vs ground truth (ground-truth myofibres) ==")
    counts = gt["counts"]
    print(counts[counts["section"] == "all"].to_string(index=False))
    if not args.no_cv:
        start = time.perf_counter()
        sections = dataset.sections(split="train") + dataset.sections(split="validation")
        tables = [C.training_tables(s) for s in sections]
        for kind in ("fam", "ntm"):
            table = pd.concat([t[kind] for t in tables], ignore_index=True)
            print(f"\n== {kind.upper()} grouped 5-fold cross-validation, train + validation ==")
            print(C.cross_validate(table, kind, params).round(3).to_string(index=False))
        timings.append(("cross-validation (FAM + NTM)", time.perf_counter() - start))
    if args.compare_fr:
        print("\n== folded-region pixel classifiers, validation split (P04, S25) ==")
        print(compare_fr(dataset, params).round(3).to_string(index=False))
    print("\n== timings ==")
    for name, seconds in timings:
        print(f"{name:<48}{seconds:>8.1f} s")


if __name__ == "__main__":
    main()
