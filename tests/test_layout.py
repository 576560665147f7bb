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


ERRORS = [("core.io", "DataError"), ("segmenters", "SegmenterError"),
          ("segmenters", "PretrainedUnavailable"), ("curation", "CurationError"),
          ("curation", "NotTrainedError"), ("explore", "MissingPrediction"),
          ("core.workdir", "MissingPrediction"), ("runner.cluster", "DistributedError"),
          ("report.pipeline", "PipelineError"), ("report.pipeline", "RunError"),
          ("report.pipeline", "NotebookFailed")]


@pytest.mark.parametrize("module, name", ERRORS)
def test_package_errors_share_one_base(module, name):
    from nclsm_utils.core.errors import NclsmError

    cls = getattr(importlib.import_module(f"nclsm_utils.{module}"), name)
    assert issubclass(cls, NclsmError)


def test_errors_keep_their_builtin_bases():
    from nclsm_utils.curation import CurationError
    from nclsm_utils.core.io import DataError
    from nclsm_utils.report.pipeline import PipelineError
    from nclsm_utils.segmenters import SegmenterError

    assert issubclass(DataError, ValueError) and issubclass(PipelineError, ValueError)
    assert issubclass(SegmenterError, RuntimeError) and issubclass(CurationError, RuntimeError)


def test_public_names_stay_importable():
    from nclsm_utils.dataset import Dataset  # noqa: F401
    from nclsm_utils.metrics import (evaluate, instance_metrics, read_per_fibre_csv,  # noqa: F401
                                     summarise)
    from nclsm_utils.segmenters import get_segmenter  # noqa: F401
    from nclsm_utils.synth import SynthConfig, render_image, write_dataset  # noqa: F401
    from nclsm_utils.report.pipeline import resolve_data, segment_method  # noqa: F401

    import nclsm_utils.core.dataset
    import nclsm_utils.dataset
    assert nclsm_utils.dataset is nclsm_utils.core.dataset     # the public alias


#: The layout of ../shared/DESIGN.md: these packages exist and hold modules.
LAYOUT = ("core", "synth", "metrics", "segmenters", "runner", "curation", "report", "explore",
          "export")


def test_layout_of_design_md():
    for name in LAYOUT:
        assert (PACKAGE / name / "__init__.py").is_file(), name
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "cli.py", "dataset.py"]        # dataset.py: the alias
