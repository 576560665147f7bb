#!/usr/bin/env python
"""Write the parameterised notebooks of ``notebooks/`` from the cell lists below.

The notebooks are sources without outputs; regenerate them after editing this file::

    python scripts/make_notebooks.py            # writes notebooks/0*.ipynb
    python scripts/make_notebooks.py --check    # exit 1 when a notebook differs from this file

Each notebook has one cell tagged ``parameters`` (papermill) whose defaults run on the
synthetic default data from the ``notebooks/`` folder, as JupyterLab opens them; the batch
runner (``nclsm run``) passes absolute paths. Logic lives in ``nclsm_utils``; the cells only
call it and show results. Cell ids are stable (``<notebook>-<n>``) so diffs stay small.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "notebooks"

SETUP = '''\
%matplotlib inline
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from nclsm_utils.report import plots
from nclsm_utils.report import tables
from nclsm_utils.dataset import Dataset
from nclsm_utils.core.io import write_csv
from nclsm_utils.report.pipeline import resolve_data

pd.set_option("display.max_columns", 30)
pd.set_option("display.precision", 3)
dataset = Dataset(resolve_data(data))
reports = Path(reports)
reports.mkdir(parents=True, exist_ok=True)
print(dataset)'''


def md(text: str):
    return ("markdown", text.strip("\n"))


def code(text: str, tags=()):
    return ("code", text.strip("\n"), list(tags))


NOTEBOOKS: dict[str, list] = {}

# ---------------------------------------------------------------------------- 01 dataset
NOTEBOOKS["01_dataset"] = [
    md("""
# Dataset overview

What the dataset holds: its sections per modality (IMC, IF) and split, **Table I** (the
annotation counts of the NCL-SM paper), the proportions of the fibre classes, and every
section with its masks outlined.

The notebook runs as it is on the synthetic default data (generated into `../data/synthetic`
on first use). Point `data` at an NCL-SM download (the folder holding `IMC/` and `IF/`) to use
the real dataset.
"""),
    code('''
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # NCL-SM folder, or where the synthetic default data goes
reports = "../reports"  # Table I is written here (table1.csv)
quick = False           # fewer thumbnails
max_thumbnails = 16     # sections shown with their masks
''', tags=["parameters"]),
    code(SETUP),
    md("""
## Sections and the roles found for them

One row per section: its split and, per role (image, masks), whether its file was found.
"""),
    code('''
check = dataset.check(read_masks=False)
check[[c for c in check.columns if c != "problems"]]
'''),
    code('''
check.groupby(["modality", "split"]).size().unstack(fill_value=0)
'''),
    md("""
## Table I: annotation counts

Myofibres, analysable myofibres, non-transverse myofibres (NTM), fibres with freezing
artefact (FAM) and folded regions (FR) per technique, as in Table I of the NCL-SM paper.
"""),
    code('''
table1 = tables.table1(dataset)
write_csv(reports / "table1.csv", table1)
table1
'''),
    md("""
## Class proportions

Percent of all myofibres that are analysable, non-transverse or carry a freezing artefact.
"""),
    code('''
proportions = tables.class_proportions(table1)
proportions.round(1)
'''),
    code('''
fig = plots.class_proportions(proportions)
'''),
    md("""
## Sections with their masks

Image (R membrane marker, G mitochondrial-mass marker) with every myofibre outlined in white
and tinted by class: non-transverse yellow, freezing artefact magenta, other (e.g. in folded
tissue) grey, folded regions blue; analysable fibres are not tinted.
"""),
    code('''
fig = plots.section_thumbnails(dataset, max_sections=4 if quick else max_thumbnails)
'''),
]

# ---------------------------------------------------------------------------- 02 annotation quality
NOTEBOOKS["02_annotation_quality"] = [
    md("""
# Annotation quality (Table II)

A second annotator re-drew a subset of the fibres (the QA masks). Scoring the QA annotation
against the ground truth with the paper's metrics gives the human-vs-human yardstick the
methods are measured against:

* **MF-A** matched fibres; **mean IoU** and **A%** (share of matched fibres with IoU above
  0.80 / 0.90 / 0.95);
* per fibre, the percent of mass-marker positive pixels in the ring just **outside** the
  border (AoB, what the border misses) and of membrane-marker positive pixels in the ring
  just **inside** it (AiB, how much membrane it includes); **r_AoB** and **r_AiB** are the
  Pearson correlations of those percentages between ground truth and QA.
"""),
    code('''
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # NCL-SM folder, or where the synthetic default data goes
reports = "../reports"  # Table II is written here (table2.csv)
''', tags=["parameters"]),
    code(SETUP),
    md("## Table II: QA vs ground truth, per modality"),
    code('''
table2 = tables.table2(dataset)
write_csv(reports / "table2.csv", table2)
tables.with_intervals(table2)   # value [95 % interval]: matched fibres resampled within sections
'''),
    md("## Per-fibre agreement"),
    code('''
per_fibre = tables.qa_per_fibre(dataset)
per_fibre.groupby(["modality", "section"]).agg(
    fibres=("gt_id", "size"), matched=("matched", "sum"), mean_iou=("iou", "mean"))
'''),
    code('''
fig = plots.agreement_scatter(per_fibre, assessed="QA", by="modality")
'''),
    code('''
fig = plots.iou_histogram(per_fibre, by="modality")
'''),
]

# ---------------------------------------------------------------------------- 03 segment
NOTEBOOKS["03_segment"] = [
    md("""
# Segment with one method

Fit the method on the train split (cached under `workdir/models/`), predict the test split
(cached under `workdir/predictions/<method>/`) and score every ground-truth fibre with the
paper's metrics. The per-fibre tables are written to `workdir/results/<method>/`, one CSV per
section, with the summary (`<method>_summary.csv`) and standard instance metrics
(`<method>_instance.csv`) beside them.

Run it for another method with papermill:
`papermill notebooks/03_segment.ipynb out.ipynb -p method stardist`.
Methods: `mitocyto`, `cellpose`, `stardist`, `stardist+refine`, `unet`, `unet2`,
`external:<folder of masks>`.
"""),
    code('''
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # NCL-SM folder, or where the synthetic default data goes
workdir = "../data"     # models, predictions and per-fibre results go here
reports = "../reports"  # (unused here; the batch runner passes it to every notebook)
method = "mitocyto"     # mitocyto | cellpose | stardist | stardist+refine | unet | unet2 | external:<folder>
split = "test"          # the split to predict and score
sections = None         # or a list of section ids, e.g. ["P02", "S11"]
quick = False           # short training, for smoke runs (the "quick" budget)
budget = "report"       # training budget: quick | report | full (`nclsm run --budget`)
force = False           # refit and re-predict even when cached
scheduler = None        # Dask scheduler address ("tcp://host:8786") for the per-section tasks
workers = None          # > 1: a local Dask cluster of this many processes (None: $NCLSM_WORKERS or 1)
seeds = 1               # > 1: train and score a trained method again with further seeds
''', tags=["parameters"]),
    code(SETUP),
    md("## Fit, predict, evaluate"),
    code('''
import os

from nclsm_utils.runner.cluster import dask_settings
from nclsm_utils.report.pipeline import segment_method

# `nclsm run --workers/--scheduler` hands its Dask cluster to this kernel as $NCLSM_SCHEDULER
scheduler, workers = dask_settings(scheduler, workers, os.environ)
result, status = segment_method(method, dataset, split=split, sections=sections,
                                workdir=workdir, quick="quick" if quick else budget, force=force,
                                scheduler=scheduler, workers=workers, seeds=seeds)
pd.Series(status, name=method).to_frame()
'''),
    md("## Summary over the scored sections"),
    code('''
if result is None:
    display(Markdown(f"**{method} could not run:** {status['error']}"))
else:
    display(result.summary.T.rename(columns={0: result.method}))
'''),
    md("## Per section"),
    code('''
from nclsm_utils.metrics import summarise

per_section = pd.DataFrame()
if result is not None and result.tables:
    per_section = pd.concat(
        [summarise(table).assign(section=key) for key, table in result.tables.items()],
        ignore_index=True).set_index("section")
per_section
'''),
    md("""
## Prediction vs ground truth

Ground-truth contours cyan, predicted contours magenta; right: each ground-truth fibre coloured by
the IoU of its matched prediction (grey: not detected).
"""),
    code('''
if result is not None and result.tables:
    for key, table in list(result.tables.items())[:2]:
        section = dataset.section(key)
        prediction = tables.load_prediction(method, section, workdir)
        if prediction is not None:
            fig = plots.segmentation_overlay(section.image(), section.mask("myofibres"), prediction,
                                             per_fibre=table, title=f"{result.method}: {key}")
'''),
    code('''
if result is not None and result.tables:
    fig = plots.iou_histogram(pd.concat(result.tables.values(), ignore_index=True), by="modality")
'''),
]

# ---------------------------------------------------------------------------- 04 compare
NOTEBOOKS["04_compare"] = [
    md("""
# Methods compared (Table III)

Every method against the ground truth on the same test sections, with the QA duplicate
annotation as the human-vs-human reference row:

* the paper's metrics (MF-A, r_AoB, r_AiB, mean IoU, A%) over the matched fibres;
* the standard instance metrics over IoU thresholds 0.50 ... 0.95 with one-to-one matching:
  AP = TP / (TP + FP + FN), F1 and panoptic quality (PQ);
* fibre morphology (area, circularity, solidity, ...) of each method's fibres against the
  ground truth's, with Mann-Whitney U tests;
* the same region of a section as every method outlines it.

It reads what the `03_segment` notebook left in `workdir/results/` and
`workdir/predictions/`; a method that was not run or could not run says so in the `note`
column.
"""),
    code('''
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # NCL-SM folder, or where the synthetic default data goes
workdir = "../data"     # where 03_segment left models, predictions and results
reports = "../reports"  # Table III is written here (table3.csv)
methods = ["mitocyto", "cellpose", "stardist", "unet"]  # or "mitocyto,unet"
split = "test"
sections = None         # or a list of section ids
seeds = 1               # > 1: Table III adds the spread over the training seeds 03_segment ran
''', tags=["parameters"]),
    code(SETUP),
    code('''
if isinstance(methods, str):
    methods = [m.strip() for m in methods.split(",") if m.strip()]
chosen = dataset.sections(split=split) if sections is None else dataset.sections(ids=sections)
print("methods:", ", ".join(methods))
print("sections:", ", ".join(s.key for s in chosen))
'''),
    md("""
## Table III

Each value with its 95 % bootstrap interval in brackets: the paper's metrics resample the
matched fibres within each section, AP, F1 and PQ resample fixed tiles (4 x 4 per section)
within each section (`nclsm_utils.metrics.uncertainty`). `table3.csv` has the intervals as
`<metric> CI low` / `<metric> CI high` columns. With `nclsm run --seeds N` it also has,
for mean IoU, r_AoB, r_AiB, A%(IoU>0.90) and F1@0.5, the mean, sd, min and max over the N
training seeds (`<metric> seeds mean` ...): the interval is the spread from other fibres,
the seed columns the spread from training the same method again.
"""),
    code('''
table3 = tables.table3(dataset, methods=methods, workdir=workdir, sections=chosen, seeds=seeds)
write_csv(reports / "table3.csv", table3)
tables.with_intervals(table3)
'''),
    code('''
if seeds > 1:   # the spread over training seeds, beside the first seed's value
    spread = table3[["method", "seeds", *(c for m in tables.SEED_METRICS
                                          for c in tables.seed_columns(m))]]
    display(spread.dropna(subset=["seeds"]).round(3))
'''),
    code('''
scored = table3.dropna(subset=["mean IoU"])
if len(scored):
    fig = plots.forest_plot(scored)
'''),
    md("""
## Which differences are real

Every pair of methods on the ground-truth fibres both matched: the mean difference in IoU
and in the absolute error of the membrane-included and mass-missed percentages, with a 95 %
bootstrap interval (fibres resampled within sections), the Wilcoxon signed-rank test and
Holm's adjustment over all rows. *distinguishable*: adjusted p < 0.05 and the interval
excludes 0. Written to `table3_pairwise.csv`.
"""),
    code('''
pairwise = tables.table3_pairwise(dataset, methods=methods, workdir=workdir, sections=chosen)
write_csv(reports / "table3_pairwise.csv", pairwise)
for metric, group in pairwise.groupby("metric", sort=False):
    same = group[~group["distinguishable"]]
    text = "; ".join(f"{a} vs {b}" for a, b in zip(same["method_a"], same["method_b"]))
    print(f"{metric}: not distinguishable: {text or 'none'}")
pairwise.round(4)
'''),
    md("## Instance metrics over IoU thresholds"),
    code('''
curves = tables.instance_curves(dataset, methods, workdir=workdir, sections=chosen)
if len(curves):
    fig = plots.instance_curves(curves)
    display(curves.pivot_table(index="thresh", columns="method", values=["AP", "f1", "PQ"]))
'''),
    md("""
## Who gets missed: recall by fibre brightness and size

Recall of the ground-truth fibres (detected: a predicted object with IoU >= 0.5) per decile
of the fibre's mean mitochondrial-mass signal and of its area, each relative to the median
fibre of its section; bands are 95 % bootstrap intervals (fibres resampled within sections).
A method that finds fibres by their mass signal rather than their membrane loses the darkest
decile; one sentence per method says whether its darkest and smallest tenth are missed more
than the rest. Written to `recall_by_fibre.csv` (deciles) and `recall_gaps.csv`.
"""),
    code('''
from nclsm_utils.metrics import recall

detections = tables.recall_by_fibre(dataset, methods, workdir=workdir, sections=chosen)
deciles, gaps = recall.recall_report(detections)
write_csv(reports / "recall_by_fibre.csv", deciles)
write_csv(reports / "recall_gaps.csv", gaps)
display(Markdown("\\n".join(f"* {recall.gap_sentence(row)}" for _, row in gaps.iterrows())))
if len(deciles):
    fig = plots.recall_by_decile(deciles)
'''),
    code('''
deciles.pivot_table(index=["property", "decile"], columns="method", values="recall").round(3)
'''),
    md("""
## Fibre morphology vs ground truth

Distributions of per-fibre shape features of every method's fibres and of the ground truth's
on the scored sections; the table gives the medians and the two-sided Mann-Whitney U test
with its effect sizes (rank-biserial r: 0 = same distribution, 1 = fully separated).
"""),
    code('''
morphology, tests = tables.morphology_comparison(dataset, methods, workdir=workdir,
                                                 sections=chosen)
features = ["area", "circularity", "solidity", "eccentricity", "feret_diameter_min", "shape_index"]
tests[tests["feature"].isin(features)].round(4) if len(tests) else tests
'''),
    code('''
if len(morphology):
    fig = plots.morphology_distributions(morphology, features=features)
'''),
    md("## The same region, every method"),
    code('''
for modality in ("IMC", "IF"):
    section = next((s for s in chosen if s.modality == modality), None)
    if section is None:
        continue
    predictions = {tables.method_label(m): tables.load_prediction(m, section, workdir)
                   for m in methods}
    size = 200 if modality == "IMC" else 360
    fig = plots.method_overlays(section.image(), section.mask("myofibres"), predictions,
                                size=size, title=f"{section.key}: ground truth cyan, prediction magenta")
'''),
]


# ---------------------------------------------------------------------------- 05 curation
NOTEBOOKS["05_curation"] = [
    md("""
# Automatic curation: from all myofibres to the analysable ones

The NCL-SM paper (Section VI) proposes the workflow no tool automates yet: (1) segment all
myofibres, (2) segment folded regions (FR), (3) classify non-transverse fibres (NTM) from the
instance mask, (4) classify freezing-artefact fibres (FAM) from the mask and the image, and
(5) remove 2-4 from 1 to get the **analysable** myofibres. `nclsm_utils.curation` does it:

* **FR**: a pixel classifier (gradient boosting on multi-scale texture features of the
  membrane and mass channels) trained on the train split's FR masks;
* **NTM**: NCL-SM's IF labels are the published shape rule's output (`morphology.ntm_rule`),
  so IF sections take that rule with its pixel thresholds converted to the section's scale;
  IMC's NTM labels are annotations, so IMC takes a classifier on scale-free shape features
  trained on the train split's IMC NTM masks;
* **FAM**: a classifier on per-fibre mass-channel features (dark holes, texture, solidity);
* **analysable** = myofibres minus FR fibres, NTM and FAM.

It is scored on the test split against the dataset's masks, first from the ground-truth
myofibres, then from each segmenter's cached predictions (end to end).
"""),
    code('''
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # NCL-SM folder, or where the synthetic default data goes
workdir = "../data"     # models (curation classifiers are cached here) and predictions
reports = "../reports"  # curation tables are written here
methods = ["mitocyto", "cellpose", "stardist", "unet"]  # segmenters to curate end to end
split = "test"
quick = False           # smaller classifiers, for smoke runs
scheduler = None        # Dask scheduler address ("tcp://host:8786"): one task per method
workers = None          # > 1: a local Dask cluster of this many processes (None: $NCLSM_WORKERS or 1)
''', tags=["parameters"]),
    code(SETUP),
    code('''
from nclsm_utils import curation

if isinstance(methods, str):
    methods = [m.strip() for m in methods.split(",") if m.strip()]
params = curation.CurationParams().quick() if quick else curation.CurationParams()
models = curation.train_models(dataset.sections(split="train"), workdir=workdir, params=params)
# ground truth and every method, one task per method on Dask when a scheduler is set
# (`nclsm run --workers 2` sets $NCLSM_SCHEDULER), else one after the other
import os

from nclsm_utils.runner.cluster import dask_settings

scheduler, workers = dask_settings(scheduler, workers, os.environ)
results, failed = curation.evaluate_curation_methods(
    dataset, ["gt", *methods], workdir=workdir, split=split, models=models,
    scheduler=scheduler, workers=workers)
if "gt" in failed:
    raise RuntimeError(f"curation from the ground-truth myofibres failed: {failed['gt']}")
gt = results["gt"]
'''),
    md("## Per-class quality from ground-truth myofibres (test split)"),
    code('''
classes = gt["classes"]
write_csv(reports / "curation_classes.csv", classes)
display(gt["definitions"])  # which definition each class used, and at what scale
classes
'''),
    md("""
The published NTM rule is stated in pixels of NCL-SM's IF sections (fibres about 360 px
across); with its two area limits scaled by the square of the section's scale it means the
same on the synthetic 72 px fibres. Both NTM rows are scored; the definitions table says
which one removes fibres from the analysable mask.

## The real section of the NCL-SM figure: curation vs its own labels (left half)

The overview figure of the NCL-SM paper shows one real section with its curation: panel C the
freezing-artefact fibres, D the non-transverse fibres, E a folded region and F the analysable
fibres (`core.realpanel.load_curation_labels`). The same models curate panels A and B; only the
LEFT half (x < 240 px) is scored, the right half is held out.
"""),
    code('''
curation.figure_curation_scores(models, missing_ok=True).round(3)
'''),
    md("## Folded regions: pixel IoU"),
    code('''
write_csv(reports / "curation_fr.csv", gt["fr"])
gt["fr"]
'''),
    md("## Table I counts: curated vs ground truth"),
    code('''
gt["counts"]
'''),
    md("""
## End to end: curation of each segmenter's predicted myofibres

The analysable mask from predicted myofibres, scored with the paper metrics against the
analysable ground truth (methods without cached predictions are listed with the reason).
"""),
    code('''
rows = []
errors = [{"method": m, "error": e} for m, e in failed.items()]  # not run: say why, go on
for method in methods:
    if method not in results:
        continue
    result = results[method]
    summary = result["paper_summary"]
    if len(summary):
        row = summary[summary["modality"] == "all"].drop(columns=["method"], errors="ignore")
        row.insert(0, "method", method)
        rows.append(row)
    if len(result["errors"]):
        errors.extend({"method": method, "error": e} for e in result["errors"].iloc[:, -1])
end_to_end = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
write_csv(reports / "curation_end_to_end.csv", end_to_end)
display(end_to_end)
pd.DataFrame(errors)
'''),
    md("## One test section: curated masks"),
    code('''
import matplotlib.pyplot as plt

section = dataset.sections(split=split)[0]
masks = curation.curate(section, models=models)
panels = [("image", section.image()), ("FR predicted", masks["fr"]),
          ("FR ground truth", section.mask("fr") if section.has("fr") else None),
          ("NTM", masks["ntm"]), ("FAM", masks["fam"]), ("analysable", masks["analysable"])]
fig, axes = plt.subplots(2, 3, figsize=(12, 8))
for ax, (title, panel) in zip(axes.ravel(), panels):
    if panel is not None:
        ax.imshow(panel if panel.ndim == 3 else panel > 0, cmap=None if panel.ndim == 3 else "gray")
    ax.set_title(f"{section.key}: {title}")
    ax.set_axis_off()
fig.tight_layout()
'''),
]


# ---------------------------------------------------------------------------- 07 synthetic vs real
NOTEBOOKS["07_synthetic_vs_real"] = [
    md("""
# Synthetic vs real

How close is the data of this report to real NCL-SM images? The real reference is **one real
NCL-SM section (IF)** with its ground truth, seen at reduced resolution in the NCL-SM paper's
overview figure (fibres about 16 px across; `nclsm_utils.core.realpanel`). Only its **left half**
(x < 240 px) is shown, measured or reported here; the right half is held out as an
independent check and appears nowhere on this site.

Every section of the dataset being reported is shrunk to the real fibre diameter and measured
with the same statistics (`nclsm_utils.report.calibration`): channel levels of fibre interiors, the
membrane line and the gaps, the membrane and mass profiles across the fibre edge, the
fibre-type mosaic, texture and packing. Domain randomisation aims to make the real look one
of the synthetic looks: the real value inside the synthetic 10-90 % range.
"""),
    code('''
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # NCL-SM folder, or where the synthetic default data goes
reports = "../reports"  # calibration.csv is written here; real_transfer.csv is read from here
n_examples = 3          # synthetic sections shown beside the real image
''', tags=["parameters"]),
    code(SETUP),
    code('''
from nclsm_utils.report import realcheck
from nclsm_utils.report.calibration import REAL_TARGETS

real = realcheck.real_left_half()  # the LEFT half only (x < 240 px); None without the figure
kind = "synthetic" if realcheck.is_synthetic(dataset) else "NCL-SM"
print("real reference:", "missing" if real is None else
      f"{real.path.name}, left half {real.image.shape}, fibres {real.diameter:.1f} px across")
'''),
    md("""
## Calibration statistics

The real value of each statistic (the left half of the real panel) against the median and the
10-90 % range over every section of the dataset, each shrunk to the real median fibre diameter
first. Levels are 8-bit; `profile` statistics are the mean level at a signed distance from the
annotated edge (fibre diameters, negative inside); `_rel` statistics are relative to the median
fibre or to the fibre diameter. The fibre diameter (equal by construction) and the fibre count
(set by the image size) are left out.
"""),
    code('''
synthetic = realcheck.synthetic_statistics(dataset, diameter=REAL_TARGETS["diameter_px"])
comparison = realcheck.calibration_table(synthetic)
write_csv(reports / "calibration.csv", comparison)
display(Markdown(f"**{realcheck.calibration_reading(comparison, len(synthetic))}** ({kind} data)"))
comparison
'''),
    md("""
## The real image beside synthetic sections

The same crop size at the same fibre diameter: the real left half (left column) and synthetic
sections of the dataset, shrunk with `calibration.at_diameter`; bottom row with the annotated
fibre outlines (cyan).
"""),
    code('''
if real is None:
    display(Markdown("*The real reference figure is missing: expected "
                     "`../shared/ncl-sm-sample/annotation_process_figure.png` beside the project.*"))
else:
    fig = plots.real_vs_synthetic_figure(real.image, real.labels,
                                         realcheck.section_pairs(dataset, n=n_examples),
                                         n=n_examples)
'''),
    md("""
## Membrane and mass profiles across the fibre edge

Mean membrane-marker (R) and mitochondrial-mass (G) level at signed distances from the
annotated fibre edge: the real left half (black) and the synthetic median with its 10-90 %
band.
"""),
    code('''
fig = plots.calibration_profile_figure(comparison)
'''),
    md("""
## Real-image check

How the methods fitted by this report segment real pixels: the table written by
`benchmarks/bench_real_transfer.py` (`reports/real_transfer.csv`).
"""),
    code('''
transfer = realcheck.load_transfer_table(reports)
display(Markdown(realcheck.transfer_reading(transfer)))
transfer
'''),
]


def build(name: str, cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                       "name": "python3"},
        "language_info": {"name": "python", "pygments_lexer": "ipython3"},
    }
    for i, spec in enumerate(cells):
        if spec[0] == "markdown":
            cell = nbformat.v4.new_markdown_cell(spec[1])
        else:
            cell = nbformat.v4.new_code_cell(spec[1])
            if spec[2]:
                cell.metadata["tags"] = spec[2]
        cell.id = f"{name.split('_')[0]}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


# ---------------------------------------------------------------------------- 08 paper reproduction
NOTEBOOKS["08_paper_reproduction"] = [
    md("""
# Paper reproduction

How faithful is this toolkit to the NCL-SM paper? The paper's code repository
(github.com/atifkhanncl/NCL-SM, MIT) ships real sample material under `sample_data/`
(ground-truth and QA masks of IF sections S11 and S60, the published per-fibre QA csvs,
the published shape features and NTM flags of the IF sections). `nclsm reproduce`
(`nclsm_utils.report.reproduce`) recomputes every published number that material allows and says,
row by row, whether ours agrees. The QA pairs are compared per fibre, every row of the published
csv: the notebook's fibre indices, totals and IoUs, recomputed with the published definition of a
fibre (`evaluate(..., definition="published")`, the notebook's OpenCV contours).

The tables elsewhere on this site are computed on the data of this run (the synthetic
NCL-SM unless the real dataset was given); the paper's own published rows are shown below,
labelled, so the two are never confused.
"""),
    code('''
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # (unused here; the batch runner passes it to every notebook)
reports = "../reports"  # reproduction.csv is written here
ncl_sm_repo = None      # checkout of https://github.com/atifkhanncl/NCL-SM (None: not given)
''', tags=["parameters"]),
    code('''
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from nclsm_utils.report import reproduce
from nclsm_utils.core.io import write_csv

reports = Path(reports)
reports.mkdir(parents=True, exist_ok=True)
pd.set_option("display.max_colwidth", 120)
'''),
    md("## The paper's published rows (real NCL-SM)"),
    code('''
display(Markdown("Table II: QA duplicate annotation vs ground truth; Table III on the IMC "
                 "sections P02 and P06, **mitocyto with manual corrections** (the paper's "
                 "numbers on the real dataset, not this run's)."))
reproduce.published_rows()
'''),
    md("## Published vs recomputed"),
    code('''
if ncl_sm_repo is None:
    display(Markdown(
        "*No checkout of the paper's repository was given.* To fill this page, get it on a "
        "connected machine (`git clone https://github.com/atifkhanncl/NCL-SM`), copy it here "
        "and run `nclsm report --ncl-sm-repo PATH` (or `make report NCLSM_REPO=PATH`, or "
        "`nclsm reproduce --ncl-sm-repo PATH` alone). The page then lists, for each check, "
        "the published number, ours and whether they agree: every per-fibre row of each QA "
        "pair (fibre indices, totals and IoU), Table II's QA-IF row, the shape features of "
        "each ground-truth mask, the NTM rule's flags and Table I's 10,744, and our time "
        "against the published notebook's (36 min 53 s for S11, 22 min 56 s for S60)."))
    checks = None
else:
    checks = reproduce.reproduce(ncl_sm_repo)
    write_csv(reports / "reproduction.csv", checks)
    compared = int(checks["match"].notna().sum())
    display(Markdown(f"**{compared} numbers compared, {reproduce.disagreements(checks)} "
                     f"disagree**, {int(checks['match'].isna().sum())} rows skipped (a file "
                     "missing from the checkout) or informative."))
checks
'''),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when a notebook is out of date")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, cells in NOTEBOOKS.items():
        text = nbformat.writes(build(name, cells)) + "\n"
        path = out / f"{name}.ipynb"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
            continue
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print("out of date (run scripts/make_notebooks.py):", *map(str, stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
