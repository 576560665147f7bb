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
# # Segment with one method
#
# Fit the method on the train split (cached under `workdir/models/`), predict the test split
# (cached under `workdir/predictions/<method>/`) and score every ground-truth fibre with the
# paper's metrics. The per-fibre tables are written to `workdir/results/<method>/`, one CSV per
# section, with the summary (`<method>_summary.csv`) and standard instance metrics
# (`<method>_instance.csv`) beside them.
#
# Run it for another method with papermill:
# `papermill notebooks/03_segment.ipynb out.ipynb -p method stardist`.
# Methods: `mitocyto`, `cellpose`, `stardist`, `stardist+refine`, `unet`, `unet2`,
# `external:<folder of masks>`.

# %% tags=["parameters"]
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

# %% [markdown]
# ## Fit, predict, evaluate

# %%
import os

from nclsm_utils.runner.cluster import dask_settings
from nclsm_utils.report.pipeline import segment_method

# `nclsm run --workers/--scheduler` hands its Dask cluster to this kernel as $NCLSM_SCHEDULER
scheduler, workers = dask_settings(scheduler, workers, os.environ)
result, status = segment_method(method, dataset, split=split, sections=sections,
                                workdir=workdir, quick="quick" if quick else budget, force=force,
                                scheduler=scheduler, workers=workers, seeds=seeds)
pd.Series(status, name=method).to_frame()

# %% [markdown]
# ## Summary over the scored sections

# %%
if result is None:
    display(Markdown(f"**{method} could not run:** {status['error']}"))
else:
    display(result.summary.T.rename(columns={0: result.method}))

# %% [markdown]
# ## Per section

# %%
from nclsm_utils.metrics import summarise

per_section = pd.DataFrame()
if result is not None and result.tables:
    per_section = pd.concat(
        [summarise(table).assign(section=key) for key, table in result.tables.items()],
        ignore_index=True).set_index("section")
per_section

# %% [markdown]
# ## Prediction vs ground truth
#
# Ground-truth contours cyan, predicted contours magenta; right: each ground-truth fibre coloured by
# the IoU of its matched prediction (grey: not detected).

# %%
if result is not None and result.tables:
    for key, table in list(result.tables.items())[:2]:
        section = dataset.section(key)
        prediction = tables.load_prediction(method, section, workdir)
        if prediction is not None:
            fig = plots.segmentation_overlay(section.image(), section.mask("myofibres"), prediction,
                                             per_fibre=table, title=f"{result.method}: {key}")

# %%
if result is not None and result.tables:
    fig = plots.iou_histogram(pd.concat(result.tables.values(), ignore_index=True), by="modality")
