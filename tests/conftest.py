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


#: ../shared/ncl-sm-sample files at their place in the public NCL-SM repository (S11's QA
#: mask and the section images are not in the public copy at hand).
REPOSITORY_LAYOUT = {
    "sample_data/sample_IF_groundtruth_masks/S11.tiff": "S11_groundtruth_mask.tiff",
    "sample_data/sample_IF_groundtruth_masks/S60.tiff": "S60_groundtruth_mask.tiff",
    "sample_data/sample_assess_masks/S60.tiff": "S60_qa_mask.tiff",
    "sample_data/sample_ouputs/quality_metrics_csvs/S11.csv": "S11_qa_vs_groundtruth_per_fibre.csv",
    "sample_data/sample_ouputs/quality_metrics_csvs/S60.csv": "S60_qa_vs_groundtruth_per_fibre.csv",
    "sample_data/sample_ouputs/NTM_csvs/all_Myofibres_Calculations_QIF.csv":
        "IF_all_myofibres_shape_features.csv",
    "sample_data/sample_ouputs/NTM_csvs/NTM_detection.csv": "IF_NTM_detection.csv",
}


@pytest.fixture(scope="session")
def ncl_sm_repo(sample_dir, tmp_path_factory) -> Path:
    """A checkout of the paper's code repository as far as ../shared holds it: every file of
    :data:`REPOSITORY_LAYOUT`, linked at its repository path."""
    import os

    root = tmp_path_factory.mktemp("repository") / "NCL-SM"
    for link, target in REPOSITORY_LAYOUT.items():
        if not (sample_dir / target).is_file():
            pytest.skip(f"{sample_dir / target} is missing")
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(sample_dir / target, root / link)
    return root


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
