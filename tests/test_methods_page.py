"""The Methods page's generated description of every Table III row, and the budgets."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from nclsm_utils.cli import build_parser
from nclsm_utils.report.methods import manifest_budget, methods_fragment
from nclsm_utils.report.site import ranking_sentence
from nclsm_utils.segmenters import get_segmenter
from nclsm_utils.segmenters.base import BENCHMARK_METHODS, budget_name


def test_methods_fragment_lists_every_row_with_weights_training_and_steps(tmp_path):
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "results" / "stardist+refine_run.json").write_text(json.dumps(
        {"source": "stardist trained from scratch (no weights on disk) + toolkit "
                   "post-processing"}))
    text = methods_fragment({"budget": "report", "workdir": str(work),
                             "methods": list(BENCHMARK_METHODS)})
    assert "Training budget of this report: **report**" in text
    for method in BENCHMARK_METHODS:
        assert f"### {method}\n" in text
    cellpose = text.split("### cellpose\n")[1].split("###")[0]
    assert "120 epochs of cellpose.train.train_seg (train_seg's default: 2000)" in cellpose
    assert "membrane." not in cellpose                       # nothing of the toolkit's
    refine = text.split("### stardist+refine\n")[1]
    assert "source (this run): stardist trained from scratch" in refine
    order = [refine.index(f"`membrane.{step}") for step in
             ("refine_to_membrane", "grow_and_trim", "split_on_faint_membrane",
              "separate_touching")]
    assert order == sorted(order)
    assert "fill_area = 40.72" in refine and "keep_seedless = True" in refine
    assert "drop_background_objects" not in refine           # off by default
    full = methods_fragment({"budget": "full", "workdir": str(work), "methods": []})
    assert "2000 epochs of cellpose.train.train_seg" in full
    assert "400 epochs x 100 steps of StarDist2D.train" in full


def test_budgets_everywhere():
    assert manifest_budget({"quick": True}) == "quick" and manifest_budget({}) == "report"
    assert budget_name("FULL") == "full"
    with pytest.raises(ValueError, match="budget"):
        budget_name("long")
    for command in (["run"], ["report"], ["segment", "--method", "unet", "--data", "d"],
                    ["predict", "--method", "unet", "--image", "i", "--out", "o"]):
        args = build_parser().parse_args(command + ["--budget", "full"])
        assert args.budget == "full"
    assert get_segmenter("stardist", budget="quick").params.epochs == 2
    assert get_segmenter("unet", budget="full").params == get_segmenter("unet").params


def test_ranking_sentence_leaves_out_a_method_that_matched_nothing(tmp_path):
    path = tmp_path / "pairs.csv"
    pd.DataFrame([
        {"method_a": "unet", "method_b": "cellpose", "metric": "IoU", "better": None,
         "n fibres": 0, "distinguishable": False},
        {"method_a": "unet", "method_b": "stardist", "metric": "IoU", "better": "unet",
         "n fibres": 50, "distinguishable": True},
    ]).to_csv(path, index=False)
    text = ranking_sentence(path)
    assert "**unet**" in text and "distinguishably better" in text
    assert "not compared: cellpose (no matched fibre)" in text


def test_table3_note_says_the_budget_and_training_length():
    from nclsm_utils.report.tables import _budget_note

    assert _budget_note("cellpose", "report") == (
        "budget report: 120 epochs of cellpose.train.train_seg (train_seg's default: 2000)")
    assert _budget_note("stardist+refine", "full").startswith(
        "budget full: 400 epochs x 100 steps of StarDist2D.train")
    assert _budget_note("external:/nowhere", "report") == "budget report"
