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
# # Dataset overview
#
# What the dataset holds: its sections per modality (IMC, IF) and split, **Table I** (the
# annotation counts of the NCL-SM paper), the proportions of the fibre classes, and every
# section with its masks outlined.
#
# The notebook runs as it is on the synthetic default data (generated into `../data/synthetic`
# on first use). Point `data` at an NCL-SM download (the folder holding `IMC/` and `IF/`) to use
# the real dataset.

# %% tags=["parameters"]
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # NCL-SM folder, or where the synthetic default data goes
reports = "../reports"  # Table I is written here (table1.csv)
quick = False           # fewer thumbnails
max_thumbnails = 16     # sections shown with their masks

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
# ## Sections and the roles found for them
#
# One row per section: its split and, per role (image, masks), whether its file was found.

# %%
check = dataset.check(read_masks=False)
check[[c for c in check.columns if c != "problems"]]

# %%
check.groupby(["modality", "split"]).size().unstack(fill_value=0)

# %% [markdown]
# ## Table I: annotation counts
#
# Myofibres, analysable myofibres, non-transverse myofibres (NTM), fibres with freezing
# artefact (FAM) and folded regions (FR) per technique, as in Table I of the NCL-SM paper.

# %%
table1 = tables.table1(dataset)
write_csv(reports / "table1.csv", table1)
table1

# %% [markdown]
# ## Class proportions
#
# Percent of all myofibres that are analysable, non-transverse or carry a freezing artefact.

# %%
proportions = tables.class_proportions(table1)
proportions.round(1)

# %%
fig = plots.class_proportions(proportions)

# %% [markdown]
# ## Sections with their masks
#
# Image (R membrane marker, G mitochondrial-mass marker) with every myofibre outlined in white
# and tinted by class: non-transverse yellow, freezing artefact magenta, other (e.g. in folded
# tissue) grey, folded regions blue; analysable fibres are not tinted.

# %%
fig = plots.section_thumbnails(dataset, max_sections=4 if quick else max_thumbnails)
