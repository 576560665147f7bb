"""Shared fixtures: the real NCL-SM sample folder and a tiny synthetic dataset."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "ncl-sm-sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not SAMPLE.is_dir():
        pytest.skip(f"real NCL-SM sample folder not found at {SAMPLE}")
    return SAMPLE


@pytest.fixture(scope="session")
def panel():
    """The real overview figure's panel A and registered panel B (``realpanel.load_panel``);
    tests look at its LEFT half only."""
    from nclsm_utils.core import realpanel

    if not realpanel.FIGURE.is_file():
        pytest.skip(f"the NCL-SM overview figure is missing: {realpanel.FIGURE}")
    return realpanel.load_panel()


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A tiny synthetic NCL-SM (2 IMC + 2 IF sections), generated once per test session."""
    from nclsm_utils.synth import SynthConfig, write_dataset

    return write_dataset(tmp_path_factory.mktemp("tiny") / "synthetic", SynthConfig.preset("tiny"),
                         seed=0, progress=False)



def pytest_runtest_setup(item):
    """`nclsm run --scheduler/--workers` export NCLSM_SCHEDULER/NCLSM_WORKERS for the notebook
    kernels; a test that ran the CLI in-process must not leak them into later tests (this runs
    before any fixture, module-scoped ones included)."""
    import os

    os.environ.pop("NCLSM_SCHEDULER", None)
    os.environ.pop("NCLSM_WORKERS", None)
