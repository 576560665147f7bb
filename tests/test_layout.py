"""The package's shape (issue: one concept per module, imports one way, one error base)."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nclsm_utils"
MAX_LINES = 800


def test_import_layers_hold():
    """The import-linter contracts in pyproject.toml (the layers of DESIGN.md) are kept."""
    lint = pytest.importorskip("importlinter.cli")
    assert lint.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True,
                             no_logo=True) == 0


def test_no_module_is_over_800_lines():
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert len(sizes) > 40
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


ERRORS = [("io", "DataError"), ("segmenters", "SegmenterError"),
          ("segmenters", "PretrainedUnavailable"), ("curation", "CurationError"),
          ("curation", "NotTrainedError"), ("explore", "MissingPrediction"),
          ("cluster", "DistributedError"), ("pipeline", "PipelineError"),
          ("pipeline", "RunError"), ("pipeline", "NotebookFailed")]


@pytest.mark.parametrize("module, name", ERRORS)
def test_package_errors_share_one_base(module, name):
    from nclsm_utils.errors import NclsmError

    cls = getattr(importlib.import_module(f"nclsm_utils.{module}"), name)
    assert issubclass(cls, NclsmError)


def test_errors_keep_their_builtin_bases():
    from nclsm_utils.curation import CurationError
    from nclsm_utils.io import DataError
    from nclsm_utils.pipeline import PipelineError
    from nclsm_utils.segmenters import SegmenterError

    assert issubclass(DataError, ValueError) and issubclass(PipelineError, ValueError)
    assert issubclass(SegmenterError, RuntimeError) and issubclass(CurationError, RuntimeError)


def test_public_names_stay_importable():
    from nclsm_utils.dataset import Dataset  # noqa: F401
    from nclsm_utils.metrics import (evaluate, instance_metrics, read_per_fibre_csv,  # noqa: F401
                                     summarise)
    from nclsm_utils.segmenters import get_segmenter  # noqa: F401
    from nclsm_utils.synth import SynthConfig, render_image, write_dataset  # noqa: F401
    from nclsm_utils.pipeline import resolve_data, segment_method  # noqa: F401
