"""Recall of ground-truth fibres by brightness and size (metrics.recall)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nclsm_utils.metrics import recall


def _grid_section(n_side=10, size=12, dark=(), seed=0):
    """A section of n_side^2 square fibres (gap 2 px); ``dark`` fibre ids get G = 5."""
    rng = np.random.default_rng(seed)
    side = n_side * (size + 2)
    gt = np.zeros((side, side), np.int32)
    image = np.zeros((side, side, 3), np.uint8)
    label = 0
    for r in range(n_side):
        for c in range(n_side):
            label += 1
            box = (slice(r * (size + 2), r * (size + 2) + size),
                   slice(c * (size + 2), c * (size + 2) + size))
            gt[box] = label
            image[box + (1,)] = 5 if label in dark else rng.integers(90, 140)
            image[box + (0,)] = 50
    return gt, image


def test_fibre_detection_counts_area_mass_and_detection():
    gt, image = _grid_section(dark={3, 7})
    pred = gt.copy()
    pred[np.isin(gt, [3, 7, 50])] = 0
    # fibre 60 predicted half-size: IoU 0.5 exactly is still a detection
    pred[(gt == 60)] = 0
    rows, cols = np.nonzero(gt == 60)
    pred[rows[:72], cols[:72]] = 60
    table = recall.fibre_detection(gt, pred, image)
    assert len(table) == 100 and table["gt_id"].tolist() == list(range(1, 101))
    assert (table["area"] == 144).all()
    assert table.loc[table.gt_id.isin([3, 7]), "mass"].tolist() == [5.0, 5.0]
    assert table.loc[~table.gt_id.isin([3, 7]), "mass"].between(90, 139).all()
    assert table.loc[table.gt_id == 60, "best_iou"].item() == pytest.approx(0.5)
    assert sorted(table.loc[~table.detected, "gt_id"]) == [3, 7, 50]
    assert table["detected"].sum() == 97


def _two_methods(seed=0):
    parts = []
    rng = np.random.default_rng(seed)
    for section in ("A", "B"):
        dark = set(rng.choice(np.arange(1, 101), 12, replace=False).tolist())
        gt, image = _grid_section(dark=dark, seed=len(parts))
        # "biased" misses exactly the dark fibres; "even" misses 12 fibres at random
        biased = np.where(np.isin(gt, list(dark)), 0, gt)
        random_ids = rng.choice(np.arange(1, 101), 12, replace=False)
        even = np.where(np.isin(gt, random_ids), 0, gt)
        for method, pred in (("biased", biased), ("even", even)):
            parts.append(recall.fibre_detection(gt, pred, image).assign(method=method,
                                                                          section=section))
    return recall.relative_to_section(pd.concat(parts, ignore_index=True))


def test_recall_by_decile_and_the_lowest_decile_gap():
    table = _two_methods()
    deciles = recall.recall_by_decile(table, "mass", n_resamples=500)
    biased = deciles[deciles.method == "biased"]
    # the dark fibres (24 of 200, tied) make up the lowest decile
    assert biased["fibres"].sum() == 200
    assert biased.iloc[0]["fibres"] == 24 and biased.iloc[0]["recall"] == 0.0
    assert biased.iloc[0]["high"] < 0.1  # relative mass of a dark fibre: 5 / ~115
    assert biased["recall"].iloc[-1] == 1.0
    gaps = recall.lowest_decile_gap(table, "mass", n_resamples=500).set_index("method")
    assert gaps.loc["biased", "recall"] == pytest.approx(176 / 200)
    assert gaps.loc["biased", "lowest recall"] == 0.0
    assert gaps.loc["biased", "missed more"]
    assert gaps.loc["biased", "difference CI high"] < -0.8
    assert not gaps.loc["even", "missed more"]
    assert gaps.loc["even", "recall"] == pytest.approx(176 / 200)
    low, high = gaps.loc["even", ["difference CI low", "difference CI high"]]
    assert low < 0 < high
    sentence = recall.gap_sentence(gaps.reset_index().iloc[0])
    assert sentence.startswith("biased misses the darkest tenth of fibres")
    assert "recall 0.00 against 1.00" in sentence
    even = recall.gap_sentence(gaps.reset_index().iloc[1])
    assert even.startswith("even does not measurably miss the darkest tenth")


def test_area_deciles_find_small_fibres_missed():
    gt, image = _grid_section()
    # shrink 10 fibres to 4 x 4 and let the prediction miss only those
    small = np.arange(1, 101, 10)
    for label in small:
        rows, cols = np.nonzero(gt == label)
        gt[gt == label] = 0
        gt[rows.min():rows.min() + 4, cols.min():cols.min() + 4] = label
    pred = np.where(np.isin(gt, small), 0, gt)
    table = recall.relative_to_section(
        recall.fibre_detection(gt, pred, image).assign(method="m", section="s"))
    gap = recall.lowest_decile_gap(table, "area", n_resamples=300).iloc[0]
    assert gap["lowest fibres"] == 10 and gap["lowest recall"] == 0.0 and gap["missed more"]
    assert gap["threshold"] == pytest.approx(16 / 144)


def test_recall_by_fibre_over_a_dataset_and_its_figure(tiny_root, tmp_path):
    import tifffile

    from nclsm_utils.dataset import Dataset
    from nclsm_utils.report import plots, tables

    dataset = Dataset(tiny_root)
    sections = dataset.sections()
    # the perfect prediction first: every fibre detected, and the pooled darkest decile
    perfect = tmp_path / "perfect"
    perfect.mkdir()
    for section in sections:
        tifffile.imwrite(perfect / f"{section.id}.tiff", section.mask("myofibres"))
    every = tables.recall_by_fibre(dataset, [f"external:{perfect}"], workdir=tmp_path,
                                   sections=sections)
    assert every["detected"].all() and set(every["section"]) == {s.key for s in sections}
    assert np.allclose(every.groupby("section")["rel_mass"].median(), 1.0)
    edge = recall.decile_edges(every["rel_mass"])[1]
    dark = every[every["rel_mass"] <= edge]
    assert 0.08 < len(dark) / len(every) <= 0.12
    # then one that misses exactly those fibres
    folder = tmp_path / "masks"
    folder.mkdir()
    for section in sections:
        gt = section.mask("myofibres")
        ids = dark.loc[dark["section"] == section.key, "gt_id"]
        tifffile.imwrite(folder / f"{section.id}.tiff", np.where(np.isin(gt, ids), 0, gt))
    per_fibre = tables.recall_by_fibre(dataset, [f"external:{folder}"], workdir=tmp_path,
                                       sections=sections)
    assert (~per_fibre["detected"]).sum() == len(dark)
    gap = recall.lowest_decile_gap(per_fibre, "mass", n_resamples=300).iloc[0]
    assert gap["lowest recall"] == 0.0 and gap["rest recall"] == 1.0 and gap["missed more"]
    deciles = pd.concat([recall.recall_by_decile(per_fibre, p, n_resamples=200)
                         for p in recall.PROPERTIES])
    fig = plots.recall_by_decile(deciles)
    assert len(fig.axes) == 2
    assert fig.axes[0].get_lines()[0].get_ydata()[-1] == 1.0
