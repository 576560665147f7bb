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
# # Explore sections, predictions and fibres
#
# Before trusting a number, look at the fibres behind it. This notebook opens an interactive
# explorer (ipywidgets) on the cached results of the pipeline:
#
# * pick the dataset, modality, section and up to two methods shown **side by side** on the same
#   region;
# * the image (R = membrane, G = mitochondrial mass) carries the ground-truth contours in
#   **white** and each method's predicted contours **coloured by the IoU** of the fibre they
#   match (colour bar on the right); GT fibres missed at the IoU threshold are tinted **blue**,
#   extra predictions **orange**;
# * the **IoU threshold** slider updates the matched / missed / extra counts and A% live
#   (A% = 100 x matched fibres with IoU > t / matched fibres, the paper's A% columns);
# * pick a fibre (the worst first, or by id; **show fibre** shows the one selected): its **AiB**
#   (inner, yellow) and **AoB** (outer, blue) rings are drawn at full resolution exactly as the
#   metrics compute them (square of side 2k + 1; solid pixels are membrane- / mass-positive)
#   next to its per-fibre metrics row. This panel reads the section's full-resolution files, so
#   it waits until a fibre is asked for;
# * **zoom** and **pan** move over downsampled views: a full-size IF section (~10k x 15k
#   pixels) is cropped first and then downsampled, never rendered at full resolution; the
#   whole-section views are cached in `workdir/overviews/`, so a section seen once opens at
#   once whenever it is opened again (`build_overviews = True` prepares every section).
#
# It reads `workdir/predictions/<method>/` and `workdir/results/<method>/` as `03_segment` left
# them. A method without cached predictions for the section shows a message and a **Run**
# button that segments and evaluates that section.
#
# **Open it live:** `jupyter lab notebooks/06_explore.ipynb`, then *Run All*; it works on the
# default data with no edits (the synthetic dataset is generated when no NCL-SM is found). On the
# website the widgets have no kernel, so this page shows a **static snapshot** of the same view
# (saved to `reports/06_explore_snapshot.png` and `.html` when the notebook runs).

# %% tags=["parameters"]
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # NCL-SM folder, or where the synthetic default data goes
workdir = "../data"     # where 03_segment left predictions/ and results/
reports = "../reports"  # the static snapshot is written here
methods = None          # methods of panels A and B, e.g. ["mitocyto", "unet"] (default: cached)
section = None          # e.g. "P02" (default: the first section with cached predictions)
fibre = None            # a GT fibre id to select (default: the worst fibre of method A)
iou_threshold = 0.8
max_side = 640          # longest side of a rendered view (pixels)
snapshot = True         # save the static snapshot for the website
build_overviews = False  # write every section's overviews first (reads each section once)

# %%
from pathlib import Path

from IPython.display import HTML, Image, Markdown, display

from nclsm_utils.explore import Explorer
from nclsm_utils.report.pipeline import resolve_data

data = resolve_data(data)
reports = Path(reports)
app = Explorer(data=data, workdir=workdir, methods=methods, section=section,
               iou_threshold=iou_threshold, max_side=max_side)
if build_overviews:
    app.store.build_overviews()
if fibre is not None:
    app.select(fibre=fibre)
app

# %% [markdown]
# ## Static snapshot
#
# The view above as a picture (what the website shows): the method panels with the counts at
# the IoU threshold, the colour bar and the selected fibre's rings, then the counts and the
# fibre's metrics rows.

# %%
app.show_fibre()  # the selected fibre's panel (reads the section at full resolution)
state = app.state
display(Markdown(f"Section **{state['section']}**, methods **{', '.join(m for m in state['methods'] if m != '(none)')}**, "
                 f"IoU threshold **{state['threshold']:.2f}**, fibre **{state['fibre']}**."))
for line in state["messages"]:
    display(HTML(f"<p>{line}</p>"))
if snapshot:
    png = app.snapshot(reports / "06_explore_snapshot.png", reports / "06_explore_snapshot.html")
    display(Image(filename=str(png)))
display(HTML(app.counts.value))
display(HTML(app.fibre_info.value))
