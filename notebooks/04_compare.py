# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Methods compared (Table III)
#
# Every method against the ground truth on the same test sections, with the QA duplicate
# annotation as the human-vs-human reference row:
#
# * the paper's metrics (MF-A, r_AoB, r_AiB, mean IoU, A%) over the matched fibres;
# * the standard instance metrics over IoU thresholds 0.50 ... 0.95 with one-to-one matching:
#   AP = TP / (TP + FP + FN), F1 and panoptic quality (PQ);
# * fibre morphology (area, circularity, solidity, ...) of each method's fibres against the
#   ground truth's, with Mann-Whitney U tests;
# * the same region of a section as every method outlines it.
#
# It reads what the `03_segment` notebook left in `workdir/results/` and
# `workdir/predictions/`; a method that was not run or could not run says so in the `note`
# column.

# %% tags=["parameters"]
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # NCL-SM folder, or where the synthetic default data goes
workdir = "../data"     # where 03_segment left models, predictions and results
reports = "../reports"  # Table III is written here (table3.csv)
methods = ["mitocyto", "cellpose", "stardist", "unet"]  # or "mitocyto,unet"
split = "test"
sections = None         # or a list of section ids
seeds = 1               # > 1: Table III adds the spread over the training seeds 03_segment ran

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from nclsm_utils.report import plots
from nclsm_utils.report import tables
from nclsm_utils.core.io import write_csv
from nclsm_utils.report.pipeline import method_list, open_notebook

dataset, reports = open_notebook(data, reports)
print(dataset)

# %%
methods = method_list(methods)
chosen = dataset.sections(split=split) if sections is None else dataset.sections(ids=sections)
print("methods:", ", ".join(methods))
print("sections:", ", ".join(s.key for s in chosen))

# %% [markdown]
# ## Table III
#
# Each value with its 95 % bootstrap interval in brackets: the paper's metrics resample the
# matched fibres within each section, AP, F1 and PQ resample fixed tiles (4 x 4 per section)
# within each section (`nclsm_utils.metrics.uncertainty`). `table3.csv` has the intervals as
# `<metric> CI low` / `<metric> CI high` columns. With `nclsm run --seeds N` it also has,
# for mean IoU, r_AoB, r_AiB, A%(IoU>0.90) and F1@0.5, the mean, sd, min and max over the N
# training seeds (`<metric> seeds mean` ...): the interval is the spread from other fibres,
# the seed columns the spread from training the same method again.

# %%
table3 = tables.table3(dataset, methods=methods, workdir=workdir, sections=chosen, seeds=seeds)
write_csv(reports / "table3.csv", table3)
tables.with_intervals(table3)

# %%
if seeds > 1:   # the spread over training seeds, beside the first seed's value
    spread = table3[["method", "seeds", *(c for m in tables.SEED_METRICS
                                          for c in tables.seed_columns(m))]]
    display(spread.dropna(subset=["seeds"]).round(3))

# %%
scored = table3.dropna(subset=["mean IoU"])
if len(scored):
    fig = plots.forest_plot(scored)

# %% [markdown]
# ## Which differences are real
#
# Every pair of methods on the ground-truth fibres both matched: the mean difference in IoU
# and in the absolute error of the membrane-included and mass-missed percentages, with a 95 %
# bootstrap interval (fibres resampled within sections), the Wilcoxon signed-rank test and
# Holm's adjustment over all rows. *distinguishable*: adjusted p < 0.05 and the interval
# excludes 0. Written to `table3_pairwise.csv`.

# %%
pairwise = tables.table3_pairwise(dataset, methods=methods, workdir=workdir, sections=chosen)
write_csv(reports / "table3_pairwise.csv", pairwise)
for metric, group in pairwise.groupby("metric", sort=False):
    same = group[~group["distinguishable"]]
    text = "; ".join(f"{a} vs {b}" for a, b in zip(same["method_a"], same["method_b"]))
    print(f"{metric}: not distinguishable: {text or 'none'}")
pairwise.round(4)

# %% [markdown]
# ## Instance metrics over IoU thresholds

# %%
curves = tables.instance_curves(dataset, methods, workdir=workdir, sections=chosen)
if len(curves):
    fig = plots.instance_curves(curves)
    display(curves.pivot_table(index="thresh", columns="method", values=["AP", "f1", "PQ"]))

# %% [markdown]
# ## Who gets missed: recall by fibre brightness and size
#
# Recall of the ground-truth fibres (detected: a predicted object with IoU >= 0.5) per decile
# of the fibre's mean mitochondrial-mass signal and of its area, each relative to the median
# fibre of its section; bands are 95 % bootstrap intervals (fibres resampled within sections).
# A method that finds fibres by their mass signal rather than their membrane loses the darkest
# decile; one sentence per method says whether its darkest and smallest tenth are missed more
# than the rest. Written to `recall_by_fibre.csv` (deciles) and `recall_gaps.csv`.

# %%
from nclsm_utils.metrics import recall

detections = tables.recall_by_fibre(dataset, methods, workdir=workdir, sections=chosen)
deciles, gaps = recall.recall_report(detections)
write_csv(reports / "recall_by_fibre.csv", deciles)
write_csv(reports / "recall_gaps.csv", gaps)
display(Markdown("\n".join(f"* {recall.gap_sentence(row)}" for _, row in gaps.iterrows())))
if len(deciles):
    fig = plots.recall_by_decile(deciles)

# %%
deciles.pivot_table(index=["property", "decile"], columns="method", values="recall").round(3)

# %% [markdown]
# ## Fibre morphology vs ground truth
#
# Distributions of per-fibre shape features of every method's fibres and of the ground truth's
# on the scored sections; the table gives the medians and the two-sided Mann-Whitney U test
# with its effect sizes (rank-biserial r: 0 = same distribution, 1 = fully separated).

# %%
morphology, tests = tables.morphology_comparison(dataset, methods, workdir=workdir,
                                                 sections=chosen)
features = ["area", "circularity", "solidity", "eccentricity", "feret_diameter_min", "shape_index"]
tests[tests["feature"].isin(features)].round(4) if len(tests) else tests

# %%
if len(morphology):
    fig = plots.morphology_distributions(morphology, features=features)

# %% [markdown]
# ## The same region, every method

# %%
for modality in ("IMC", "IF"):
    section = next((s for s in chosen if s.modality == modality), None)
    if section is None:
        continue
    predictions = {tables.method_label(m): tables.load_prediction(m, section, workdir)
                   for m in methods}
    size = 200 if modality == "IMC" else 360
    fig = plots.method_overlays(section.image(), section.mask("myofibres"), predictions,
                                size=size, title=f"{section.key}: ground truth cyan, prediction magenta")
