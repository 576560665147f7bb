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
# # Paper reproduction
#
# How faithful is this toolkit to the NCL-SM paper? The paper's code repository
# (github.com/atifkhanncl/NCL-SM, MIT) ships real sample material under `sample_data/`
# (ground-truth and QA masks of IF sections S11 and S60, the published per-fibre QA csvs,
# the published shape features and NTM flags of the IF sections). `nclsm reproduce`
# (`nclsm_utils.report.reproduce`) recomputes every published number that material allows and says,
# row by row, whether ours agrees. The QA pairs are compared per fibre, every row of the published
# csv: the notebook's fibre indices, totals and IoUs, recomputed with the published definition of a
# fibre (`evaluate(..., definition="published")`, the notebook's OpenCV contours).
#
# The tables elsewhere on this site are computed on the data of this run (the synthetic
# NCL-SM unless the real dataset was given); the paper's own published rows are shown below,
# labelled, so the two are never confused.

# %% tags=["parameters"]
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # (unused here; the batch runner passes it to every notebook)
reports = "../reports"  # reproduction.csv is written here
ncl_sm_repo = None      # checkout of https://github.com/atifkhanncl/NCL-SM (None: not given)

# %%
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from nclsm_utils.report import reproduce
from nclsm_utils.core.io import write_csv

reports = Path(reports)
reports.mkdir(parents=True, exist_ok=True)
pd.set_option("display.max_colwidth", 120)

# %% [markdown]
# ## The paper's published rows (real NCL-SM)

# %%
display(Markdown("Table II: QA duplicate annotation vs ground truth; Table III on the IMC "
                 "sections P02 and P06, **mitocyto with manual corrections** (the paper's "
                 "numbers on the real dataset, not this run's)."))
reproduce.published_rows()

# %% [markdown]
# ## Published vs recomputed

# %%
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
