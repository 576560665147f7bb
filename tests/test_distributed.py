"""Dask batch runs, the run manifest, resume after a kill, failing sections.

On the tiny synthetic NCL-SM (IMC P01/P02, IF S10/S11; test split P02, S11) with mitocyto
(no training) and external masks (the ground truth, or a perturbed copy), both cheap.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from nclsm_utils.dataset import Dataset
from nclsm_utils.runner.cluster import DistributedError, dask_client, dask_settings
from nclsm_utils.runner import (MethodRun, manifest_path, read_manifest, run_method,
                                run_methods)

ROOT = Path(__file__).resolve().parents[1]
ALL = ["P01", "P02", "S10", "S11"]


def result_files(workdir: Path) -> dict[str, bytes]:
    """The tables a run leaves in ``results/`` (csv only: run records hold timings)."""
    root = Path(workdir) / "results"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.csv"))}


@pytest.fixture(scope="module")
def masks(tiny_root, tmp_path_factory) -> Path:
    """External masks: each section's ground truth with every fibre eroded by one pixel in
    one direction (so IoU < 1 and the instance metrics are not trivial)."""
    folder = tmp_path_factory.mktemp("external") / "eroded"
    folder.mkdir()
    for section in Dataset(tiny_root).sections():
        gt = section.mask("myofibres").astype(np.uint32)
        pred = gt.copy()
        pred[:, 1:][gt[:, 1:] != gt[:, :-1]] = 0
        tifffile.imwrite(folder / f"{section.modality}_{section.id}.tiff", pred)
    return folder


@pytest.fixture(scope="module")
def serial(tiny_root, masks, tmp_path_factory) -> Path:
    """The reference: ``run_method`` (the library's serial path) for both methods."""
    workdir = tmp_path_factory.mktemp("serial")
    for method in ("mitocyto", f"external:{masks}"):
        result = run_method(method, tiny_root, sections=ALL, workdir=workdir, progress=False)
        assert result.ok
    return workdir


# ------------------------------------------------------------------------------ in process
def test_serial_run_methods_equals_run_method_byte_for_byte(tiny_root, masks, serial, tmp_path):
    runs = run_methods(["mitocyto", f"external:{masks}"], tiny_root, sections=ALL,
                       workdir=tmp_path, progress=False)
    assert list(runs) == ["mitocyto", f"external:{masks}"]
    mito = runs["mitocyto"]
    assert isinstance(mito, MethodRun) and mito.ok and not mito.error
    assert sorted(mito.ran) == sorted(["IMC/P01", "IMC/P02", "IF/S10", "IF/S11"])
    assert mito.reused == []
    assert list(mito.tables) == ["IMC/P01", "IMC/P02", "IF/S10", "IF/S11"]   # sections' order
    assert mito.summary.iloc[0]["TS"] == "P01, P02, S10, S11"
    assert runs[f"external:{masks}"].method == "external-eroded"
    assert result_files(tmp_path) == result_files(serial)
    # the run manifest: one record per per-fibre csv, with input and parameter hashes
    manifest = read_manifest(tmp_path)
    assert manifest_path(tmp_path) == tmp_path / "results" / "manifest.json"
    record = manifest["outputs"]["mitocyto/IMC_P02.csv"]
    assert record["section"] == "IMC/P02" and record["rows"] == len(mito.tables["IMC/P02"])
    assert set(record["inputs"]) == {"image", "myofibres"}
    assert len(record["params"]) == 12 and len(record["key"]) == 20
    import hashlib

    csv = tmp_path / "results" / "mitocyto" / "IMC_P02.csv"
    assert record["sha1"] == hashlib.sha1(csv.read_bytes()).hexdigest()
    status = json.loads((tmp_path / "results" / "mitocyto_run.json").read_text())
    assert status["status"] == "ok" and status["sections"] == sorted(mito.tables)


def test_rerun_redoes_only_what_is_missing_or_stale(tiny_root, masks, serial, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_root, data)
    methods = ["mitocyto", f"external:{masks}"]
    work = tmp_path / "work"
    run_methods(methods, data, sections=ALL, workdir=work, progress=False)
    again = run_methods(methods, data, sections=ALL, workdir=work, progress=False)
    assert all(r.ran == [] and len(r.reused) == 4 for r in again.values())
    assert result_files(work) == result_files(serial)
    # a deleted output and an edited output are redone, nothing else
    (work / "results" / "mitocyto" / "IF_S10.csv").unlink()
    edited = work / "results" / "external-eroded" / "IMC_P01.csv"
    edited.write_text(edited.read_text().replace("True", "False"))
    again = run_methods(methods, data, sections=ALL, workdir=work, progress=False)
    assert again["mitocyto"].ran == ["IF/S10"]
    assert again[f"external:{masks}"].ran == ["IMC/P01"]
    assert result_files(work) == result_files(serial)
    # a changed input (the S11 ground truth) redoes S11 for every method
    mask_path = Dataset(data).section("S11").path("myofibres")
    gt = tifffile.imread(mask_path)
    gt[gt == gt.max()] = 0
    tifffile.imwrite(mask_path, gt, compression="zlib")
    again = run_methods(methods, data, sections=ALL, workdir=work, progress=False)
    assert [r.ran for r in again.values()] == [["IF/S11"], ["IF/S11"]]
    assert again["mitocyto"].tables["IF/S11"]["n_gt"].iloc[0] == len(np.unique(gt)) - 1
    # changed parameters redo the method's sections; force redoes everything
    again = run_methods(["mitocyto"], data, sections=["P02"], workdir=work, progress=False,
                        params={"mitocyto": {"target_diameter": 30.0}})
    assert again["mitocyto"].ran == ["IMC/P02"]
    forced = run_methods(["mitocyto"], data, sections=["P02"], workdir=work, progress=False,
                         force=True)
    assert forced["mitocyto"].ran == ["IMC/P02"]


def test_failing_section_is_reported_and_the_others_complete(tiny_root, masks, tmp_path, caplog):
    import shutil

    folder = tmp_path / "partial"
    shutil.copytree(masks, folder)
    (folder / "IF_S10.tiff").unlink()
    work = tmp_path / "work"
    stale = work / "results" / "external-partial" / "IF_S10.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("gt_id,pred_id,matched,iou\n1,1,True,1.0\n")   # an earlier run's table
    with caplog.at_level(logging.ERROR, logger="nclsm_utils.runner.engine"):
        runs = run_methods([f"external:{folder}", "mitocyto"], tiny_root, sections=ALL,
                           workdir=work, progress=False)
    partial = runs[f"external:{folder}"]
    assert list(partial.errors) == ["IF/S10"]
    assert "IF_S10" in partial.errors["IF/S10"] or "S10" in partial.errors["IF/S10"]
    assert sorted(partial.tables) == ["IF/S11", "IMC/P01", "IMC/P02"]
    assert partial.summary.iloc[0]["errors"] == 1
    assert not stale.exists()                               # no stale table passes for new
    assert runs["mitocyto"].ok and len(runs["mitocyto"].tables) == 4
    # the failure is repeated at the end of the log, after the last task
    last = [r.getMessage() for r in caplog.records][-1]
    assert "IF/S10 failed" in last
    status = json.loads((work / "results" / "external-partial_run.json").read_text())
    assert status["status"] == "partial" and "IF/S10" in status["errors"]
    # the instance csv holds the three good sections
    instance = pd.read_csv(work / "results" / "external-partial_instance.csv")
    assert sorted(set(instance["section"])) == ["P01", "P02", "S11"]


def test_a_method_that_cannot_run_does_not_stop_the_others(tiny_root, tmp_path, monkeypatch):
    from nclsm_utils.segmenters import base

    class Broken(base.REGISTRY["mitocyto"]):
        name = "broken"

        def fit(self, train_sections, workdir=None, force=False):
            raise base.PretrainedUnavailable("weights not cached and no network")

    monkeypatch.setitem(base.REGISTRY, "broken", Broken)
    runs = run_methods(["broken", "mitocyto"], tiny_root, workdir=tmp_path, progress=False)
    assert "broken cannot run" in runs["broken"].error and "no network" in runs["broken"].error
    assert runs["broken"].tables == {}
    assert runs["mitocyto"].ok and sorted(runs["mitocyto"].tables) == ["IF/S11", "IMC/P02"]
    assert json.loads((tmp_path / "results" / "broken_run.json").read_text())["status"] == \
        "failed"
    with pytest.raises(base.SegmenterError, match="broken cannot run"):
        run_methods(["broken"], tiny_root, workdir=tmp_path, progress=False, strict=True)


def test_dask_settings_and_environment(monkeypatch):
    monkeypatch.setenv("NCLSM_SCHEDULER", "tcp://ignored:1")      # the library never reads it
    assert dask_settings() == (None, 1)
    assert dask_settings("tcp://h:8786", 3) == ("tcp://h:8786", 3)
    environ = {"NCLSM_SCHEDULER": "tcp://h:8786", "NCLSM_WORKERS": "4"}
    assert dask_settings(None, None, environ) == ("tcp://h:8786", 4)
    assert dask_settings("tcp://x:1", 2, environ) == ("tcp://x:1", 2)
    with pytest.raises(ValueError, match="NCLSM_WORKERS"):
        dask_settings(None, None, {"NCLSM_WORKERS": "many"})


# ------------------------------------------------------------------------------ kill, resume
#: In the child process, the engine's per-output recorder is wrapped so that the process
#: SIGKILLs itself after recording ``KILL_AFTER`` outputs (a test hook kept in the tests).
KILL_AFTER = 3
_KILLING = """
import os, signal
from nclsm_utils.runner import engine
record, done = engine._record_success, []
def killing(*args, **kwargs):
    record(*args, **kwargs)
    done.append(1)
    if len(done) >= {n}:
        os.kill(os.getpid(), signal.SIGKILL)
engine._record_success = killing
"""


def _batch_command(data: Path, masks: Path, workdir: Path) -> list[str]:
    code = (_KILLING.format(n=KILL_AFTER) + "from nclsm_utils.runner import run_methods\n"
            f"run_methods(['mitocyto', 'external:{masks}'], {str(data)!r}, "
            f"sections={ALL!r}, workdir={str(workdir)!r}, progress=False)\n")
    return [sys.executable, "-c", code]


def test_killed_batch_resumes_to_the_uninterrupted_tables(tiny_root, masks, serial, tmp_path):
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    killed = subprocess.run(_batch_command(tiny_root, masks, work), env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]     # SIGKILL mid-batch
    manifest = read_manifest(work)
    assert len(manifest["outputs"]) == 3                       # 3 of 8 outputs recorded
    done = sorted(manifest["outputs"])
    assert not (work / "results" / "mitocyto_summary.csv").exists()
    assert not list((work / "results").rglob(".*.tmp*"))       # no half-written file left
    # resume (here, in this process): only the 5 missing outputs are computed
    runs = run_methods(["mitocyto", f"external:{masks}"], tiny_root, sections=ALL,
                       workdir=work, progress=False)
    reused = sorted(f"{r.method}/{k.replace('/', '_')}.csv" for r in runs.values()
                    for k in r.reused)
    assert reused == done                                       # the finished ones are kept
    assert sum(len(r.ran) for r in runs.values()) == 5          # only the rest is redone
    assert result_files(work) == result_files(serial)           # byte for byte
    status = json.loads((work / "results" / "mitocyto_run.json").read_text())
    assert status["status"] == "ok" and len(status["sections"]) == 4


# ------------------------------------------------------------------------------ Dask
def test_dask_local_cluster_two_workers_equals_serial(tiny_root, masks, serial, tmp_path):
    runs = run_methods(["mitocyto", f"external:{masks}"], tiny_root, sections=ALL,
                       workdir=tmp_path, workers=2, progress=False)
    assert all(r.ok and len(r.ran) == 4 for r in runs.values())
    assert list(runs["mitocyto"].tables) == ["IMC/P01", "IMC/P02", "IF/S10", "IF/S11"]
    assert result_files(tmp_path) == result_files(serial)


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as local:
        yield local


@pytest.mark.slow
def test_scheduler_address_cli_and_notebook_entry(tiny_root, masks, serial, cluster, tmp_path,
                                                  capsys, monkeypatch):
    from nclsm_utils.cli import main
    from nclsm_utils.report.pipeline import segment_method

    address = cluster.scheduler_address
    runs = run_methods(["mitocyto"], tiny_root, sections=ALL, workdir=tmp_path / "a",
                       scheduler=address, progress=False)
    assert runs["mitocyto"].ok
    reference = {k: v for k, v in result_files(serial).items() if k.startswith("mitocyto")}
    assert result_files(tmp_path / "a") == reference
    # the CLI: nclsm segment --scheduler ADDRESS
    code = main(["segment", "--method", "mitocyto", "--data", str(tiny_root), "--sections",
                 *ALL, "--workdir", str(tmp_path / "b"), "--scheduler", address])
    assert code == 0 and "mean IoU" in capsys.readouterr().out
    assert result_files(tmp_path / "b") == reference
    # the notebooks' entry point, with the scheduler from the environment (nclsm run)
    monkeypatch.setenv("NCLSM_SCHEDULER", address)
    scheduler, workers = dask_settings(None, None, os.environ)
    result, record = segment_method("mitocyto", Dataset(tiny_root), sections=ALL,
                                    workdir=tmp_path / "c", progress=False,
                                    scheduler=scheduler, workers=workers)
    assert record["status"] == "ok" and isinstance(result, MethodRun)
    assert result_files(tmp_path / "c") == reference


def test_unreachable_scheduler_is_a_clear_error(tiny_root, tmp_path, capsys):
    import dask

    from nclsm_utils.cli import main

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(DistributedError, match="tcp://127.0.0.1:9"):
            with dask_client("tcp://127.0.0.1:9"):
                pass
        code = main(["segment", "--method", "mitocyto", "--data", str(tiny_root),
                     "--workdir", str(tmp_path), "--scheduler", "tcp://127.0.0.1:9"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot connect to the Dask scheduler at 'tcp://127.0.0.1:9'" in err


def test_local_cluster_keeps_this_process_environment_and_writes_identical_data(tiny_root,
                                                                                tmp_path):
    """Starting worker processes sets OMP_NUM_THREADS=1 (and more) in the parent; a notebook
    kernel started after it would then train with one thread: a different, slower model."""
    import dask

    from nclsm_utils.synth import SynthConfig, write_dataset

    before = dict(os.environ)
    with dask_client(None, 2) as client:
        assert dict(os.environ) == before
        # the quiet settings reach the workers (an idle cluster: ~2 % of a core, not ~13 %)
        settings = client.run(lambda: (dask.config.get("distributed.worker.profile.enabled"),
                                       dask.config.get("distributed.admin.tick.interval")))
        assert list(settings.values()) == [(False, "1s")] * 2
        out = write_dataset(tmp_path / "synthetic", SynthConfig.preset("tiny"), seed=0,
                            progress=False, client=client)
    assert dict(os.environ) == before
    files = sorted(p.relative_to(tiny_root) for p in tiny_root.rglob("*") if p.is_file())
    assert len(files) > 30
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for name in files:
        assert (out / name).read_bytes() == (tiny_root / name).read_bytes(), name
