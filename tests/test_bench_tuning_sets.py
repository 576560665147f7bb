"""benchmarks/bench_tuning_sets.py: the hard sets' looks and the pooled scores."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from nclsm_utils.dataset import Dataset
from nclsm_utils.metrics.paper import MetricWarning
from nclsm_utils.synth import appearance

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_tuning_sets.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_tuning_sets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(tiny_root):
    return Dataset(tiny_root)


def test_hard_looks_redraw_after_the_default_draw_and_are_restored(bench):
    default = appearance.Appearance.draw(np.random.default_rng(7), 0.6)
    with bench._looks("hard4003"):
        hard = appearance.Appearance.draw(np.random.default_rng(7), 0.6)
    # the default draw first, the same generator redrawing four fields after it
    assert hard.membrane_sigma == default.membrane_sigma and hard.blur == default.blur
    assert 40 <= hard.jpeg_quality <= 65 and 0.35 <= hard.grain_amplitude <= 0.6
    assert 1.0 <= hard.debris <= 2.0 and 0.05 <= hard.gap_mass <= 0.1
    with bench._looks("hard4002"):
        coarse = appearance.Appearance.draw(np.random.default_rng(7), 0.6)
    assert 1.5 <= coarse.coarsen <= 2.5 and coarse.membrane_dropout >= 0.25
    assert 0.06 <= coarse.gap_mass <= 0.12
    # restored: the same draw as before the blocks, digit for digit
    assert appearance.Appearance.draw(np.random.default_rng(7), 0.6) == default
    with bench._looks("seed2027"):
        assert appearance.Appearance.draw(np.random.default_rng(7), 0.6) == default


class _Truth:
    """A 'segmenter' that returns the ground truth (or nothing)."""

    def __init__(self, sections, empty=False):
        self.by_shape = {s.image().shape: s.mask("myofibres") for s in sections}
        self.empty = empty

    def predict(self, image, modality):
        mask = self.by_shape[image.shape]
        return np.zeros_like(mask) if self.empty else mask


def test_score_set_pools_f1_and_mean_iou_over_sections(bench, tiny):
    sections = tiny.sections(ids=["P01", "S10"])   # one IMC, one IF: different shapes
    n_gt = sum(len(np.unique(s.mask("myofibres"))) - 1 for s in sections)
    perfect = bench.score_set(_Truth(sections), sections)
    assert perfect["sections"] == 2 and perfect["n_gt"] == perfect["n_pred"] == n_gt
    assert perfect["F1@0.5"] == pytest.approx(1.0) and perfect["mean IoU"] == pytest.approx(1.0)
    assert perfect["recall"] == perfect["recall darkest tenth"] == 1.0
    with pytest.warns(MetricWarning, match="is undefined"):   # nothing matched: no r_AoB, r_AiB
        none = bench.score_set(_Truth(sections, empty=True), sections)
    assert none["n_pred"] == 0 and none["F1@0.5"] == 0.0 and none["mean IoU"] == 0.0
    assert none["recall"] == none["recall darkest tenth"] == 0.0


def test_dark_tuning_set_uses_the_dark_benchmark_generator_with_its_own_seed(bench):
    import bench_dark_fibres

    config = bench_dark_fibres.dark_set_config()
    assert config.look_overrides == {"dark_fraction": 0.15, "dark_level": 0.03}
    assert "dark6001" in bench.SETS and bench_dark_fibres.SEED == 5001
