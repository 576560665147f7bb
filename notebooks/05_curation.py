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
# # Automatic curation: from all myofibres to the analysable ones
#
# The NCL-SM paper (Section VI) proposes the workflow no tool automates yet: (1) segment all
# myofibres, (2) segment folded regions (FR), (3) classify non-transverse fibres (NTM) from the
# instance mask, (4) classify freezing-artefact fibres (FAM) from the mask and the image, and
# (5) remove 2-4 from 1 to get the **analysable** myofibres. `nclsm_utils.curation` does it:
#
# * **FR**: a pixel classifier (gradient boosting on multi-scale texture features of the
#   membrane and mass channels) trained on the train split's FR masks;
# * **NTM**: NCL-SM's IF labels are the published shape rule's output (`morphology.ntm_rule`),
#   so IF sections take that rule with its pixel thresholds converted to the section's scale;
#   IMC's NTM labels are annotations, so IMC takes a classifier on scale-free shape features
#   trained on the train split's IMC NTM masks;
# * **FAM**: a classifier on per-fibre mass-channel features (dark holes, texture, solidity);
# * **analysable** = myofibres minus FR fibres, NTM and FAM.
#
# It is scored on the test split against the dataset's masks, first from the ground-truth
# myofibres, then from each segmenter's cached predictions (end to end).

# %% tags=["parameters"]
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # NCL-SM folder, or where the synthetic default data goes
workdir = "../data"     # models (curation classifiers are cached here) and predictions
reports = "../reports"  # curation tables are written here
methods = ["mitocyto", "cellpose", "stardist", "unet"]  # segmenters to curate end to end
split = "test"
quick = False           # smaller classifiers, for smoke runs
scheduler = None        # Dask scheduler address ("tcp://host:8786"): one task per method
workers = None          # > 1: a local Dask cluster of this many processes (None: $NCLSM_WORKERS or 1)

# %%
# %matplotlib inline
import pandas as pd
from IPython.display import Markdown, display

from nclsm_utils.report import plots
from nclsm_utils.report import tables
from nclsm_utils.core.io import write_csv
from nclsm_utils.report.pipeline import method_list, open_notebook

dataset, reports = open_notebook(data, reports)
print(dataset)

# %%
from nclsm_utils import curation

methods = method_list(methods)
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

# %% [markdown]
# ## Per-class quality from ground-truth myofibres (test split)

# %%
classes = gt["classes"]
write_csv(reports / "curation_classes.csv", classes)
display(gt["definitions"])  # which definition each class used, and at what scale
classes

# %% [markdown]
# The published NTM rule is stated in pixels of NCL-SM's IF sections (fibres about 360 px
# across); with its two area limits scaled by the square of the section's scale it means the
# same on the synthetic 72 px fibres. Both NTM rows are scored; the definitions table says
# which one removes fibres from the analysable mask.
#
# ## The real section of the NCL-SM figure: curation vs its own labels (left half)
#
# The overview figure of the NCL-SM paper shows one real section with its curation: panel C the
# freezing-artefact fibres, D the non-transverse fibres, E a folded region and F the analysable
# fibres (`core.realpanel.load_curation_labels`). The same models curate panels A and B; only the
# LEFT half (x < 240 px) is scored, the right half is held out.

# %%
curation.figure_curation_scores(models, missing_ok=True).round(3)

# %% [markdown]
# ## Folded regions: pixel IoU

# %%
write_csv(reports / "curation_fr.csv", gt["fr"])
gt["fr"]

# %% [markdown]
# ## Table I counts: curated vs ground truth

# %%
gt["counts"]

# %% [markdown]
# ## End to end: curation of each segmenter's predicted myofibres
#
# The analysable mask from predicted myofibres, scored with the paper metrics against the
# analysable ground truth (methods without cached predictions are listed with the reason).

# %%
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

# %% [markdown]
# ## One test section: curated masks

# %%
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
