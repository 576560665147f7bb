"""Determinism: the same seed and inputs give byte-identical files.

The tiny synthetic NCL-SM is generated twice with the same seed into two folders; Table I,
Table II and a mitocyto run are computed on each copy, written to two folders and compared
byte for byte. Table I and II are also computed in a fresh interpreter with another
``PYTHONHASHSEED`` (set and dict orders must not leak into the tables).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nclsm_utils.dataset import Dataset
from nclsm_utils.core.io import write_csv
from nclsm_utils.runner import run_method
from nclsm_utils.synth import SynthConfig, write_dataset
from nclsm_utils.report.tables import table1, table2

ROOT = Path(__file__).resolve().parents[1]


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny dataset generated twice with seed 0."""
    base = tmp_path_factory.mktemp("twins")
    return tuple(write_dataset(base / name, SynthConfig.preset("tiny"), seed=0, progress=False)
                 for name in ("a", "b"))


def test_synthetic_data_is_byte_identical_for_the_same_seed(twins, tmp_path):
    a, b = twins
    content = files(a)
    assert sum(name.endswith(".tiff") for name in content) == 4 * 9     # 4 sections, 9 roles
    assert content == files(b)
    other = write_dataset(tmp_path / "c", SynthConfig.preset("tiny"), seed=1, progress=False)
    assert files(other)["IMC/Images/P02.tiff"] != content["IMC/Images/P02.tiff"]


def _tables(root: Path, out: Path) -> dict[str, bytes]:
    dataset = Dataset(root)
    write_csv(out / "table1.csv", table1(dataset))
    write_csv(out / "table2.csv", table2(dataset))
    return files(out)


def test_table1_and_table2_csvs_are_byte_identical(twins, tmp_path):
    first = _tables(twins[0], tmp_path / "first")
    second = _tables(twins[1], tmp_path / "second")
    assert sorted(first) == ["table1.csv", "table2.csv"]
    assert first == second
    # a fresh interpreter with another hash seed writes the same bytes
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[3]); "
            "from tests.test_determinism import _tables; _tables(Path(sys.argv[1]), "
            "Path(sys.argv[2]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(twins[1]), str(tmp_path / "third"),
                    str(ROOT)], env=env, check=True, capture_output=True, timeout=300)
    assert files(tmp_path / "third") == first


def test_run_method_tables_are_byte_identical(twins, tmp_path):
    outputs = []
    for root, name in zip(twins, ("first", "second")):
        workdir = tmp_path / name
        result = run_method("mitocyto", root, workdir=workdir, progress=False)
        assert result.ok
        outputs.append({k: v for k, v in files(workdir / "results").items()
                        if k.endswith(".csv")})
        outputs.append({k: v for k, v in files(workdir / "predictions").items()
                        if k.endswith(".tiff")})
    assert "mitocyto_summary.csv" in outputs[0] and "mitocyto/IMC_P02.csv" in outputs[0]
    assert "mitocyto_instance.csv" in outputs[0]
    assert outputs[0] == outputs[2]          # per-fibre, summary and instance csvs
    assert outputs[1] == outputs[3]          # the predicted label images


def test_synthetic_data_written_by_two_processes_is_byte_identical(twins, tmp_path, monkeypatch):
    parallel = write_dataset(tmp_path / "parallel", SynthConfig.preset("tiny"), seed=0,
                             progress=False, workers=2)
    assert files(parallel) == files(twins[0])
    # where processes cannot start, the sections are written here instead (same bytes)
    import concurrent.futures

    from concurrent.futures.process import BrokenProcessPool

    class Broken:
        def __init__(self, *args, **kwargs):
            raise BrokenProcessPool("no processes here")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Broken)
    fallback = write_dataset(tmp_path / "fallback", SynthConfig.preset("tiny"), seed=0,
                             progress=False, workers=2)
    assert files(fallback) == files(twins[0])


def test_unguarded_script_writes_the_dataset_once(tmp_path):
    """A script without a __main__ guard: the spawned workers re-run its top level, stop at
    write_dataset, and the script's own process writes the sections (once, not per worker)."""
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from nclsm_utils.synth import SynthConfig, write_dataset
        print("top level", flush=True)
        write_dataset({str(tmp_path / "out")!r}, SynthConfig.preset("tiny"), seed=0,
                      progress=False, workers=2)
        print("written", flush=True)
    """))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("written") == 1          # the workers never finish a dataset
    assert run.stdout.count("top level") >= 2        # they did re-run the script's top
    assert "writing them in this process" in run.stderr
    assert len(list((tmp_path / "out").rglob("*.tiff"))) > 0
