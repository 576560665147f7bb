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
# # Annotation quality (Table II)
#
# A second annotator re-drew a subset of the fibres (the QA masks). Scoring the QA annotation
# against the ground truth with the paper's metrics gives the human-vs-human yardstick the
# methods are measured against:
#
# * **MF-A** matched fibres; **mean IoU** and **A%** (share of matched fibres with IoU above
#   0.80 / 0.90 / 0.95);
# * per fibre, the percent of mass-marker positive pixels in the ring just **outside** the
#   border (AoB, what the border misses) and of membrane-marker positive pixels in the ring
#   just **inside** it (AiB, how much membrane it includes); **r_AoB** and **r_AiB** are the
#   Pearson correlations of those percentages between ground truth and QA.

# %% tags=["parameters"]
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # NCL-SM folder, or where the synthetic default data goes
reports = "../reports"  # Table II is written here (table2.csv)

# %%
# %matplotlib inline
from IPython.display import Markdown, display

from nclsm_utils.report import plots
from nclsm_utils.report import tables
from nclsm_utils.core.io import write_csv
from nclsm_utils.report.pipeline import method_list, open_notebook

dataset, reports = open_notebook(data, reports)
print(dataset)

# %% [markdown]
# ## Table II: QA vs ground truth, per modality

# %%
per_fibre = tables.qa_per_fibre(dataset)  # every QA fibre scored once, for both views
table2 = tables.table2(dataset, per_fibre=per_fibre)
write_csv(reports / "table2.csv", table2)
tables.with_intervals(table2)   # value [95 % interval]: matched fibres resampled within sections

# %% [markdown]
# ## Per-fibre agreement

# %%
per_fibre.groupby(["modality", "section"]).agg(
    fibres=("gt_id", "size"), matched=("matched", "sum"), mean_iou=("iou", "mean"))

# %%
fig = plots.agreement_scatter(per_fibre, assessed="QA", by="modality")

# %%
fig = plots.iou_histogram(per_fibre, by="modality")
