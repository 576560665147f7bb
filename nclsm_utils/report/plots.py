"""Figures of the notebooks and the site (matplotlib + seaborn); arrays and tables in, figures out.

Every function returns a :class:`matplotlib.figure.Figure` made with ``pyplot`` (so that
Jupyter's inline backend shows it once at the end of the cell: assign the result,
``fig = plots.qa_scatter(table)``). Large sections are shown through strided thumbnails
computed one section at a time; no full-resolution copies are kept.

Example
-------
>>> import numpy as np
>>> from nclsm_utils.report import plots
>>> image = np.zeros((64, 64, 3), np.uint8); labels = np.zeros((64, 64), np.uint16)
>>> labels[8:30, 8:30] = 1
>>> rgb = plots.draw_contours(image, labels, (0, 255, 255))
>>> rgb.shape, bool(rgb[8, 8:30, 1].all())
((64, 64, 3), True)
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: Overlay colours (RGB 0-255) of the NCL-SM classes and of the comparison layers.
COLOURS = {
    "myofibres": (255, 255, 255),
    "analysable": (0, 230, 0),
    "ntm": (255, 210, 0),
    "fam": (255, 0, 255),
    "fr": (70, 150, 255),
    "gt": (0, 255, 255),
    "pred": (255, 0, 255),
    "other": (150, 150, 150),
}
CLASS_NAMES = {"myofibres": "myofibre outline (analysable: no tint)", "ntm": "non-transverse",
               "fam": "freezing artefact", "other": "other myofibre", "fr": "folded region"}


def _plt():
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------- arrays
def stride_for(shape, max_side: int) -> int:
    """Integer stride that brings the longer side of ``shape`` to at most ``max_side``.

    >>> stride_for((10000, 15000), 500), stride_for((384, 384), 512)
    (30, 1)
    """
    return max(1, int(math.ceil(max(shape[:2]) / float(max_side))))


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels of each label that touch another label or the background (inner boundary)."""
    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, bool)
    if labels.size == 0:
        return edge
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    return edge & (labels > 0)


def draw_contours(image: np.ndarray, labels: np.ndarray, colour, thickness: int = 1) -> np.ndarray:
    """A copy of an RGB uint8 ``image`` with the label boundaries drawn in ``colour``."""
    from scipy import ndimage

    rgb = np.array(image[..., :3], dtype=np.uint8, copy=True)
    edge = boundaries(labels)
    if thickness > 1:
        edge = ndimage.binary_dilation(edge, iterations=thickness - 1) & (np.asarray(labels) > 0)
    rgb[edge] = colour
    return rgb


def tint(image: np.ndarray, mask: np.ndarray, colour, alpha: float = 0.35) -> np.ndarray:
    """A copy of ``image`` with ``mask`` blended towards ``colour``."""
    rgb = np.array(image[..., :3], dtype=np.float32, copy=True)
    mask = np.asarray(mask, bool)
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colour, np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _labels_in(mask_labels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels of ``labels`` that mostly (> 50 %) lie inside the non-zero pixels of ``mask_labels``."""
    if labels.max() == 0:
        return np.zeros(0, np.int64)
    total = np.bincount(labels.ravel())
    inside = np.bincount(labels.ravel(), weights=(mask_labels.ravel() > 0), minlength=len(total))
    ids = np.nonzero((total > 0) & (inside > 0.5 * total))[0]
    return ids[ids > 0]


def section_overlay(section, max_side: int = 512) -> np.ndarray:
    """A thumbnail of a section (RGB) with its myofibres outlined and tinted by NCL-SM class.

    Every myofibre is outlined in white; non-transverse fibres are tinted yellow, freezing
    artefact magenta, myofibres in none of the classes (e.g. in folded tissue) grey, and the
    folded regions blue; analysable fibres keep the image's colours. Roles a section lacks are
    left out.
    """
    image = section.image()
    step = stride_for(image.shape, max_side)
    rgb = np.ascontiguousarray(image[::step, ::step, :3])
    del image
    if section.has("fr"):
        rgb = tint(rgb, section.mask("fr")[::step, ::step] > 0, COLOURS["fr"], 0.5)
    if not section.has("myofibres"):
        return rgb
    fibres = section.mask("myofibres")[::step, ::step]
    class_of = np.zeros(int(fibres.max()) + 1, np.int8)  # 0 other, 1 analysable, 2 ntm, 3 fam
    for code, role in ((1, "analysable"), (2, "ntm"), (3, "fam")):
        if section.has(role):
            class_of[_labels_in(section.mask(role)[::step, ::step], fibres)] = code
    classes = np.where(fibres > 0, class_of[fibres], -1)
    for code, role, alpha in ((0, "myofibres", 0.55), (2, "ntm", 0.5), (3, "fam", 0.6)):
        rgb = tint(rgb, classes == code, COLOURS["other" if code == 0 else role], alpha)
    rgb[boundaries(fibres)] = COLOURS["myofibres"]
    return rgb


def _legend_handles(roles):
    from matplotlib.patches import Patch

    return [Patch(facecolor=np.array(COLOURS[r]) / 255.0, edgecolor="k",
                  label=CLASS_NAMES.get(r, r)) for r in roles]


# ---------------------------------------------------------------------------- dataset
def section_thumbnails(sections, max_side: int = 384, ncols: int = 4, max_sections: int | None = None):
    """Grid of section thumbnails with their masks outlined by class (see :func:`section_overlay`).

    ``sections`` is a list of :class:`~nclsm_utils.dataset.Section` or a ``Dataset``.
    """
    plt = _plt()
    if hasattr(sections, "sections"):
        sections = sections.sections()
    sections = list(sections)[:max_sections] if max_sections else list(sections)
    n = max(1, len(sections))
    ncols = max(1, min(ncols, n))
    nrows = int(math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.8 * ncols, 2.9 * nrows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, section in zip(axes.ravel(), sections):
        ax.imshow(section_overlay(section, max_side))
        ax.set_title(f"{section.modality} {section.id} ({section.split})", fontsize=9)
    fig.legend(handles=_legend_handles(["myofibres", "ntm", "fam", "other", "fr"]),
               loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def class_proportions(proportions: pd.DataFrame):
    """Bar chart of the percent of myofibres per class and technique
    (the output of :func:`nclsm_utils.report.tables.class_proportions`)."""
    import seaborn as sns

    plt = _plt()
    long = proportions.melt(id_vars="technique", var_name="class", value_name="percent")
    long["class"] = long["class"].str.replace(" %", "", regex=False)
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    sns.barplot(data=long, x="class", y="percent", hue="technique", ax=ax)
    ax.set_ylabel("% of myofibres")
    ax.set_xlabel("")
    ax.set_title("Class proportions")
    for container in ax.containers:
        ax.bar_label(container, fmt="%.1f", fontsize=7)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- annotation quality
def _pearson(x, y) -> float:
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2 or np.std(x[keep]) == 0 or np.std(y[keep]) == 0:
        return float("nan")
    return float(np.corrcoef(x[keep], y[keep])[0, 1])


def agreement_scatter(per_fibre: pd.DataFrame, assessed: str = "QA", by: str | None = "modality"):
    """Per-fibre scatter of the ground truth's vs the assessed annotation's ring percentages.

    Left: AoB mass missed %, right: AiB membrane included %, matched fibres only, one colour
    per ``by`` group, with Pearson r (the paper's r_AoB and r_AiB) in the legend and the
    identity line.

    Parameters
    ----------
    per_fibre : DataFrame
        :func:`nclsm_utils.metrics.evaluate` tables concatenated (``matched``,
        ``gt_mass_missed``, ``pred_mass_missed``, ``gt_membrane_included``,
        ``pred_membrane_included``) with an optional ``by`` column.
    assessed : str
        Name of the assessed side for the axis labels (``QA`` or a method).
    """
    import seaborn as sns

    plt = _plt()
    table = per_fibre[per_fibre["matched"].astype(bool)] if "matched" in per_fibre else per_fibre
    groups = [(None, table)] if not by or by not in table else list(table.groupby(by, sort=False))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    panels = (("mass_missed", "AoB: mass-marker positive pixels missed (%)", "r_AoB"),
              ("membrane_included", "AiB: membrane-marker positive pixels included (%)", "r_AiB"))
    palette = sns.color_palette(n_colors=max(1, len(groups)))
    for ax, (column, title, r_name) in zip(axes, panels):
        x_name, y_name = f"gt_{column}", f"pred_{column}"
        values = []
        for colour, (name, group) in zip(palette, groups):
            r = _pearson(group[x_name], group[y_name])
            label = f"{name + ': ' if name is not None else ''}{r_name} = {r:.2f} (n = {len(group)})"
            ax.scatter(group[x_name], group[y_name], s=12, alpha=0.7, color=colour, label=label,
                       edgecolors="none")
            values.append(group[[x_name, y_name]].to_numpy(float))
        stacked = np.concatenate(values) if values else np.zeros((0, 2))
        stacked = stacked[np.isfinite(stacked).all(axis=1)]
        if stacked.size:
            lo, hi = float(stacked.min()), float(stacked.max())
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=0.8, ls="--")
        ax.set_xlabel("ground truth (%)")
        ax.set_ylabel(f"{assessed} (%)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def iou_histogram(per_fibre: pd.DataFrame, by: str | None = None, thresholds=(0.80, 0.90, 0.95)):
    """Histogram of the IoU of matched fibres, with the A% thresholds marked."""
    import seaborn as sns

    plt = _plt()
    table = per_fibre[per_fibre["matched"].astype(bool)] if "matched" in per_fibre else per_fibre
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    if len(table):
        sns.histplot(data=table, x="iou", hue=by if by in table else None, bins=40,
                     binrange=(max(0.0, float(table["iou"].min()) - 0.01), 1.0),
                     element="step", ax=ax)
    for t in thresholds:
        ax.axvline(t, color="0.4", lw=0.8, ls=":")
    ax.set_xlabel("IoU of matched fibres")
    ax.set_title(f"IoU of {len(table)} matched fibres")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- segmentation
def fibres_by_iou(image: np.ndarray, gt: np.ndarray, per_fibre: pd.DataFrame | None,
                  cmap: str = "viridis") -> np.ndarray:
    """RGB image with every ground-truth fibre filled by the colour of its IoU (grey: missed)."""
    import matplotlib

    rgb = np.array(image[..., :3], dtype=np.float32, copy=True)
    if per_fibre is None or per_fibre.empty or gt.max() == 0:
        return rgb.astype(np.uint8)
    lookup = np.full(int(gt.max()) + 1, np.nan)
    ids = per_fibre["gt_id"].to_numpy(int)
    valid = ids <= gt.max()
    lookup[ids[valid]] = per_fibre["iou"].to_numpy(float)[valid]
    values = lookup[gt]
    colours = matplotlib.colormaps[cmap](np.clip((np.nan_to_num(values) - 0.5) / 0.5, 0, 1))[..., :3]
    fibre = gt > 0
    missed = fibre & ~(np.nan_to_num(values) > 0)
    hit = fibre & ~missed
    rgb[hit] = 0.35 * rgb[hit] + 0.65 * 255 * colours[hit]
    rgb[missed] = 0.35 * rgb[missed] + 0.65 * 128
    return np.clip(rgb, 0, 255).astype(np.uint8)


def segmentation_overlay(image: np.ndarray, gt: np.ndarray, pred: np.ndarray,
                         per_fibre: pd.DataFrame | None = None, title: str = "",
                         max_side: int = 800):
    """Two panels: the image with ground-truth (cyan) and predicted (magenta) contours, and the
    ground-truth fibres coloured by their IoU with the matched prediction."""
    plt = _plt()
    step = stride_for(image.shape, max_side)
    small = np.ascontiguousarray(image[::step, ::step, :3])
    gt_s, pred_s = gt[::step, ::step], pred[::step, ::step]
    left = draw_contours(draw_contours(small, gt_s, COLOURS["gt"]), pred_s, COLOURS["pred"])
    right = fibres_by_iou(small, gt_s, per_fibre)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6))
    axes[0].imshow(left)
    axes[0].set_title("ground truth (cyan) and prediction (magenta)", fontsize=10)
    image_right = axes[1].imshow(right)
    axes[1].set_title("ground-truth fibres by IoU (grey: missed)", fontsize=10)
    import matplotlib as mpl

    mappable = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(0.5, 1.0), cmap="viridis")
    fig.colorbar(mappable, ax=axes[1], fraction=0.04, label="IoU")
    del image_right
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def choose_region(labels: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """A ``size`` x ``size`` window ``(r0, r1, c0, c1)`` centred on the fibre closest to the
    centre of the labelled area (whole image when it is smaller)."""
    height, width = labels.shape[:2]
    if height <= size and width <= size:
        return 0, height, 0, width
    rows, cols = np.nonzero(labels[::4, ::4])
    if rows.size:
        r, c = int(np.median(rows)) * 4, int(np.median(cols)) * 4
    else:
        r, c = height // 2, width // 2
    r0 = int(np.clip(r - size // 2, 0, max(0, height - size)))
    c0 = int(np.clip(c - size // 2, 0, max(0, width - size)))
    return r0, min(height, r0 + size), c0, min(width, c0 + size)


def method_overlays(image: np.ndarray, gt: np.ndarray, predictions: dict, region=None,
                    size: int = 320, ncols: int = 3, title: str = ""):
    """The same region for every method: image, ground truth (cyan) and prediction (magenta).

    ``predictions`` maps method names to label images (None or missing: panel says so).
    """
    plt = _plt()
    r0, r1, c0, c1 = region if region is not None else choose_region(gt, size)
    crop = image[r0:r1, c0:c1, :3]
    gt_crop = gt[r0:r1, c0:c1]
    panels = [("ground truth", None)] + list(predictions.items())
    ncols = max(1, min(ncols, len(panels)))
    nrows = int(math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.7 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, labels) in zip(axes.ravel(), panels):
        if name == "ground truth":
            ax.imshow(draw_contours(crop, gt_crop, COLOURS["gt"]))
        elif labels is None:
            ax.imshow(crop)
            ax.text(0.5, 0.5, "no prediction", transform=ax.transAxes, ha="center",
                    va="center", color="w", fontsize=11,
                    bbox={"facecolor": "k", "alpha": 0.6})
        else:
            shown = draw_contours(crop, gt_crop, COLOURS["gt"])
            ax.imshow(draw_contours(shown, labels[r0:r1, c0:c1], COLOURS["pred"]))
        ax.set_title(name, fontsize=10)
    fig.suptitle(title or f"rows {r0}-{r1}, columns {c0}-{c1}: ground truth cyan, "
                          "prediction magenta", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- comparison
def summary_bars(table: pd.DataFrame, columns=("mean IoU", "r_AoB", "r_AiB"), label: str = "method"):
    """Bars of a few Table III columns per row (rows with NaN are left empty)."""
    import seaborn as sns

    plt = _plt()
    columns = [c for c in columns if c in table]
    long = table[[label, *columns]].melt(id_vars=label, var_name="metric", value_name="value")
    fig, ax = plt.subplots(figsize=(7, 3.2))
    sns.barplot(data=long, x="metric", y="value", hue=label, ax=ax)
    ax.set_xlabel("")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    return fig


def forest_plot(table: pd.DataFrame, columns=("mean IoU", "r_AoB", "r_AiB", "A%(IoU>0.90)",
                                                "F1@0.5"), label: str = "method"):
    """Each metric's value per row (method) with its 95 % interval, one panel per metric.

    ``table`` has the metric columns and their ``<metric> CI low`` / ``CI high`` columns
    (Table III as :func:`nclsm_utils.report.tables.table3` writes it); rows without a value are
    left out of that panel, and a value without an interval is drawn as a bare point.
    """
    plt = _plt()
    columns = [c for c in columns if c in table]
    fig, axes = plt.subplots(1, len(columns), figsize=(2.9 * len(columns), 0.45 * len(table) + 1.4),
                             sharey=True, squeeze=False)
    names = list(table[label].astype(str))
    for ax, column in zip(axes.ravel(), columns):
        low = table.get(f"{column} CI low", pd.Series(np.nan, index=table.index)).astype(float)
        high = table.get(f"{column} CI high", pd.Series(np.nan, index=table.index)).astype(float)
        value = table[column].astype(float)
        for y, (v, lo, hi) in enumerate(zip(value, low, high)):
            if not np.isfinite(v):
                continue
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([lo, hi], [y, y], color="0.3", lw=2, solid_capstyle="butt")
            ax.plot([v], [y], "o", color=f"C{y % 10}", ms=6)
        ax.set_yticks(range(len(names)), names)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_title(column, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("value and 95 % bootstrap interval", fontsize=10)
    fig.tight_layout()
    return fig


def recall_by_decile(deciles: pd.DataFrame, properties=("mass", "area")):
    """Recall per decile of fibre brightness and size, one line per method with its 95 %
    interval band (:func:`nclsm_utils.metrics.recall.recall_by_decile` rows of each property)."""
    plt = _plt()
    titles = {"mass": "mean mass signal (decile; 1 = darkest)",
              "area": "fibre area (decile; 1 = smallest)"}
    properties = [p for p in properties if (deciles["property"] == p).any()]
    fig, axes = plt.subplots(1, max(len(properties), 1), figsize=(5.2 * max(len(properties), 1), 3.3),
                             sharey=True, squeeze=False)
    for ax, prop in zip(axes.ravel(), properties):
        part = deciles[deciles["property"] == prop]
        for i, (method, group) in enumerate(part.groupby("method", sort=False)):
            ax.fill_between(group["decile"], group["recall CI low"], group["recall CI high"],
                            color=f"C{i % 10}", alpha=0.15, lw=0)
            ax.plot(group["decile"], group["recall"], "o-", color=f"C{i % 10}", ms=4,
                    label=str(method))
        ax.set_xlabel(titles.get(prop, prop))
        ax.set_xticks(sorted(part["decile"].unique()))
        ax.grid(alpha=0.3)
    axes.ravel()[0].set_ylabel("recall (IoU >= 0.5)")
    axes.ravel()[0].set_ylim(0, 1.02)
    axes.ravel()[-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def instance_curves(metrics: pd.DataFrame, columns=("AP", "f1", "PQ"), hue: str = "method"):
    """AP, F1 and PQ over the IoU thresholds, one line per method.

    ``metrics`` is a long table: :data:`nclsm_utils.metrics.INSTANCE_COLUMNS` plus ``hue``.
    """
    import seaborn as sns

    plt = _plt()
    columns = [c for c in columns if c in metrics]
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.6), squeeze=False)
    for ax, column in zip(axes.ravel(), columns):
        if len(metrics):
            sns.lineplot(data=metrics, x="thresh", y=column, hue=hue, marker="o", ax=ax,
                         legend=column == columns[-1])
        ax.set_xlabel("IoU threshold")
        ax.set_ylabel({"f1": "F1"}.get(column, column))
        ax.set_ylim(-0.02, 1.02)
        ax.set_title({"AP": "AP = TP / (TP + FP + FN)", "f1": "F1", "PQ": "panoptic quality"}
                     .get(column, column), fontsize=10)
    if len(metrics) and axes.ravel()[-1].get_legend() is not None:
        axes.ravel()[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def morphology_distributions(per_fibre: pd.DataFrame, features=("area", "circularity", "solidity",
                                                                  "eccentricity", "feret_diameter_min",
                                                                  "shape_index"),
                             by: str = "source", order=None):
    """Box plots of per-fibre morphology per source (``ground truth`` and each method)."""
    import seaborn as sns

    plt = _plt()
    features = [f for f in features if f in per_fibre]
    ncols = min(3, max(1, len(features)))
    nrows = int(math.ceil(len(features) / ncols)) or 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.2 * nrows), squeeze=False)
    order = order or list(dict.fromkeys(per_fibre[by])) if len(per_fibre) else []
    for ax in axes.ravel()[len(features):]:
        ax.axis("off")
    for ax, feature in zip(axes.ravel(), features):
        if len(per_fibre):
            sns.boxplot(data=per_fibre, x=by, y=feature, order=order, ax=ax, fliersize=1.5,
                        hue=by, hue_order=order, legend=False)
        ax.set_xlabel("")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.set_title(feature, fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- synthetic vs real
def _outlined(image: np.ndarray, labels: np.ndarray, colour=COLOURS["gt"]) -> np.ndarray:
    """A copy of ``image`` with the mask outline (``find_boundaries``, inner) in ``colour``."""
    from skimage.segmentation import find_boundaries

    rgb = np.array(image[..., :3], dtype=np.uint8, copy=True)
    rgb[find_boundaries(labels, mode="inner") & (np.asarray(labels) > 0)] = colour
    return rgb


def real_vs_synthetic_figure(real_image: np.ndarray, real_labels: np.ndarray, synthetic_pairs,
                             n: int = 3, size: int = 128, real_title: str = "real NCL-SM (IF, left half)"):
    """The real image beside ``n`` synthetic sections at the same fibre size and crop size.

    Each synthetic section is rescaled with :func:`nclsm_utils.report.calibration.at_diameter` so its
    median fibre diameter equals the real one; every panel is then a square crop of the same
    side (``size``, or less when an image is smaller), centred on the labelled area. Top row:
    the images; bottom row: the same crops with the mask outline (cyan).

    Parameters
    ----------
    real_image, real_labels : arrays
        The real image and its instance mask as they may be shown (the caller passes the
        real panel's LEFT half only: ``realcheck.real_left_half()``).
    synthetic_pairs : sequence
        ``(image, labels)`` or ``(title, image, labels)`` per synthetic section (full size).
    n : int
        How many synthetic sections to show (the first ``n``).
    """
    from .calibration import at_diameter
    from ..core.realpanel import median_diameter

    plt = _plt()
    diameter = median_diameter(real_labels)
    panels = [(real_title, np.asarray(real_image)[..., :3], np.asarray(real_labels))]
    for i, pair in enumerate(list(synthetic_pairs)[:n]):
        title, image, labels = pair if len(pair) == 3 else (f"synthetic {i + 1}", *pair)
        small, small_labels = at_diameter(image, labels, diameter)
        panels.append((f"synthetic {title}", small, small_labels))
    side = min([size] + [min(labels.shape) for _, _, labels in panels])
    ncols = len(panels)
    fig, axes = plt.subplots(2, ncols, figsize=(2.7 * ncols, 5.6), squeeze=False)
    for col, (title, image, labels) in enumerate(panels):
        r0, r1, c0, c1 = choose_region(labels, side)
        crop, crop_labels = image[r0:r1, c0:c1], labels[r0:r1, c0:c1]
        axes[0, col].imshow(crop, interpolation="nearest")
        axes[0, col].set_title(title, fontsize=9)
        axes[1, col].imshow(_outlined(crop, crop_labels), interpolation="nearest")
        for row in (0, 1):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
    axes[0, 0].set_ylabel("image", fontsize=9)
    axes[1, 0].set_ylabel("with the mask outline", fontsize=9)
    fig.suptitle(f"{side} x {side} px crops, median fibre diameter {diameter:.1f} px in every "
                 "panel", fontsize=10)
    fig.tight_layout()
    return fig


def _profile_rows(comparison: pd.DataFrame, channel: str) -> pd.DataFrame:
    pattern = rf"^{channel}_profile_([+-]?\d+(?:\.\d+)?)$"
    steps = comparison["statistic"].str.extract(pattern, expand=False)
    rows = comparison[steps.notna()].assign(distance=steps.dropna().astype(float))
    return rows.sort_values("distance")


def calibration_profile_figure(comparison, synthetic=None):
    """Membrane (R) and mass (G) profiles across the annotated fibre edge: real vs synthetic.

    Parameters
    ----------
    comparison : DataFrame or dict
        :func:`nclsm_utils.report.calibration.compare`'s table (columns ``statistic``, ``real``,
        ``synthetic_median``, ``synthetic_p10``, ``synthetic_p90``); or the real statistics
        dict, with ``synthetic`` the list of synthetic statistics dicts (or their frame).

    The x axis is the signed distance from the annotated edge in fibre diameters (negative:
    inside the fibre); the real profile is a black line, the synthetic median a coloured line
    with its 10-90 % band.
    """
    if not isinstance(comparison, pd.DataFrame):
        from .calibration import compare

        if synthetic is None:
            raise ValueError("pass compare()'s table, or the real statistics and the synthetic "
                             "statistics (synthetic=...)")
        records = synthetic.to_dict("records") if isinstance(synthetic, pd.DataFrame) \
            else list(synthetic)
        comparison = compare(comparison, records)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, channel, name, colour in ((axes[0], "R", "membrane marker (R)", "tab:red"),
                                      (axes[1], "G", "mitochondrial mass (G)", "tab:green")):
        rows = _profile_rows(comparison, channel)
        x = rows["distance"].to_numpy(float)
        if len(rows):
            ax.fill_between(x, rows["synthetic_p10"].to_numpy(float),
                            rows["synthetic_p90"].to_numpy(float), color=colour, alpha=0.2,
                            lw=0, label="synthetic 10-90 %")
            ax.plot(x, rows["synthetic_median"].to_numpy(float), color=colour, marker="o",
                    ms=3, label="synthetic median")
            ax.plot(x, rows["real"].to_numpy(float), color="k", marker="s", ms=3.5,
                    label="real (left half)")
        ax.axvline(0, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel("distance from the fibre edge (x diameter; < 0 inside)")
        ax.set_ylabel("mean level (8-bit)")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
