"""The dark-fibre benchmark's set: its generator makes near-black fibres, in the share and at
the levels the benchmark states (benchmarks/bench_dark_fibres.py)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_dark_fibres",
                                              ROOT / "benchmarks" / "bench_dark_fibres.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_the_set_has_at_least_ten_percent_near_black_fibres_with_normal_membranes():
    from scipy import ndimage

    from nclsm_utils.metrics.recall import fibre_detection, relative_to_section
    from nclsm_utils.synth.writer import generate_section

    config = bench.dark_set_config()
    parts, membranes = [], []
    for index, (modality, section_id) in enumerate(config.section_ids()[6:10]):
        out = generate_section(section_id, modality, config, seed=bench.SEED, index=index)
        gt, image = out["myofibres"], out["image"]
        table = fibre_detection(gt, gt, image).assign(section=section_id)
        ring = ndimage.grey_dilation(gt, size=5) * (gt == 0)
        table["membrane"] = ndimage.mean(image[..., 0], ring, table["gt_id"])
        parts.append(table)
    table = relative_to_section(pd.concat(parts, ignore_index=True))
    dark = table["rel_mass"] < bench.NEAR_BLACK
    assert dark.mean() >= 0.10, dark.mean()
    assert dark.groupby(table["section"]).mean().min() >= 0.08
    assert table.loc[dark, "mass"].max() < 15        # near black in G (8-bit)
    assert table.loc[dark, "mass"].mean() < 10
    # their membranes are there: the median dark fibre's ring is as red as the others'
    assert table.loc[dark, "membrane"].median() > 0.6 * table.loc[~dark, "membrane"].median()


def test_summary_counts_and_recalls():
    table = pd.DataFrame({"section": ["a"] * 5 + ["b"] * 5,
                          "rel_mass": [0.05, 0.1, 1, 1, 1, 0.1, 1, 1, 1, 1],
                          "detected": [False, True, True, True, True, False, True, True, True,
                                       False]})
    row = bench.summary(table)
    assert row["fibres"] == 10 and row["near black"] == 3
    assert np.isclose(row["recall near black"], 1 / 3)
    assert np.isclose(row["recall others"], 6 / 7)


def test_seed_option_scores_another_training(tmp_path):
    assert bench.parse_args(["--seed", "2"]).seed == 2
    assert bench.parse_args([]).seed is None
    plain = bench.make_segmenter("stardist", tmp_path)
    seeded = bench.make_segmenter("stardist", tmp_path, 2)
    assert plain.params.seed == 0 and seeded.params.seed == 2
    assert plain.model_key() != seeded.model_key()


def test_budget_option_scores_the_models_of_that_budget(tmp_path):
    assert bench.parse_args([]).budget == "report"
    report = bench.make_segmenter("cellpose", tmp_path)
    full = bench.make_segmenter("cellpose", tmp_path, budget="full")
    assert report.budget == "report" and full.budget == "full"
    assert (full.params.n_epochs, full.params.bsize) == (2000, 224)
    assert report.model_key() != full.model_key()
