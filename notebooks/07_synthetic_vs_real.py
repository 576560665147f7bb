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
# # Synthetic vs real
#
# How close is the data of this report to real NCL-SM images? The real reference is **one real
# NCL-SM section (IF)** with its ground truth, seen at reduced resolution in the NCL-SM paper's
# overview figure (fibres about 16 px across; `nclsm_utils.core.realpanel`). Only its **left half**
# (x < 240 px) is shown, measured or reported here; the right half is held out as an
# independent check and appears nowhere on this site.
#
# Every section of the dataset being reported is shrunk to the real fibre diameter and measured
# with the same statistics (`nclsm_utils.report.calibration`): channel levels of fibre interiors, the
# membrane line and the gaps, the membrane and mass profiles across the fibre edge, the
# fibre-type mosaic, texture and packing. Domain randomisation aims to make the real look one
# of the synthetic looks: the real value inside the synthetic 10-90 % range.

# %% tags=["parameters"]
# Parameters (papermill: -p NAME VALUE)
data = "../data"        # NCL-SM folder, or where the synthetic default data goes
reports = "../reports"  # calibration.csv is written here; real_transfer.csv is read from here
n_examples = 3          # synthetic sections shown beside the real image

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
from nclsm_utils.report import realcheck
from nclsm_utils.report.calibration import REAL_TARGETS

real = realcheck.real_left_half()  # the LEFT half only (x < 240 px); None without the figure
kind = "synthetic" if realcheck.is_synthetic(dataset) else "NCL-SM"
print("real reference:", "missing" if real is None else
      f"{real.path.name}, left half {real.image.shape}, fibres {real.diameter:.1f} px across")

# %% [markdown]
# ## Calibration statistics
#
# The real value of each statistic (the left half of the real panel) against the median and the
# 10-90 % range over every section of the dataset, each shrunk to the real median fibre diameter
# first. Levels are 8-bit; `profile` statistics are the mean level at a signed distance from the
# annotated edge (fibre diameters, negative inside); `_rel` statistics are relative to the median
# fibre or to the fibre diameter. The fibre diameter (equal by construction) and the fibre count
# (set by the image size) are left out.

# %%
synthetic = realcheck.synthetic_statistics(dataset, diameter=REAL_TARGETS["diameter_px"])
comparison = realcheck.calibration_table(synthetic)
write_csv(reports / "calibration.csv", comparison)
display(Markdown(f"**{realcheck.calibration_reading(comparison, len(synthetic))}** ({kind} data)"))
comparison

# %% [markdown]
# ## The real image beside synthetic sections
#
# The same crop size at the same fibre diameter: the real left half (left column) and synthetic
# sections of the dataset, shrunk with `calibration.at_diameter`; bottom row with the annotated
# fibre outlines (cyan).

# %%
if real is None:
    display(Markdown("*The real reference figure is missing: expected "
                     "`../shared/ncl-sm-sample/annotation_process_figure.png` beside the project.*"))
else:
    fig = plots.real_vs_synthetic_figure(real.image, real.labels,
                                         realcheck.section_pairs(dataset, n=n_examples),
                                         n=n_examples)

# %% [markdown]
# ## Membrane and mass profiles across the fibre edge
#
# Mean membrane-marker (R) and mitochondrial-mass (G) level at signed distances from the
# annotated fibre edge: the real left half (black) and the synthetic median with its 10-90 %
# band.

# %%
fig = plots.calibration_profile_figure(comparison)

# %% [markdown]
# ## Real-image check
#
# How the methods fitted by this report segment real pixels: the table written by
# `benchmarks/bench_real_transfer.py` (`reports/real_transfer.csv`).

# %%
transfer = realcheck.load_transfer_table(reports)
display(Markdown(realcheck.transfer_reading(transfer)))
transfer
