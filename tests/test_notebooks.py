"""The notebooks and the batch runner: every notebook of the run table executes with papermill
in quick mode on a tiny synthetic dataset and writes finite tables; up-to-date notebooks are
skipped; a failure stops the batch with the notebook, cell and error and the next run resumes;
an unknown parameter is reported before anything runs.

Methods are limited to mitocyto (no training) to keep this file to a couple of minutes.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat")
papermill = pytest.importorskip("papermill")

from nclsm_utils.report import notebooks as nb_batch  # noqa: E402
from nclsm_utils.report import pipeline  # noqa: E402
from nclsm_utils.dataset import Dataset  # noqa: E402
from nclsm_utils.report.notebooks import (NOTEBOOKS, NotebookEntry, NotebookFailed,  # noqa: E402
                                   RunError, run_notebooks)
from nclsm_utils.synth import SynthConfig, write_dataset  # noqa: E402
from nclsm_utils.report.tables import TABLE3_COLUMNS, TABLE3_METHODS, table1  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
METHODS = ["mitocyto"]


@pytest.fixture(scope="module", autouse=True)
def stable_code_fingerprint():
    """Other work may edit nclsm_utils while the tests run; the skip logic is tested with a
    fixed library fingerprint (the real one hashes the package sources)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(pipeline, "code_fingerprint", lambda: "fixed-for-tests")
    yield
    patch.undo()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebooks")
    data = write_dataset(root / "tiny", SynthConfig.preset("tiny"), seed=0)
    return root, Path(data)


@pytest.fixture(scope="module")
def batch(tiny):
    root, data = tiny
    result = run_notebooks(data, reports=root / "reports", workdir=root / "work", methods=METHODS,
                           quick=True, progress=False)
    return root, data, result


def present_entries():
    return [e for e in NOTEBOOKS if (NOTEBOOK_DIR / f"{e.name}.ipynb").is_file()]


def executed(reports: Path, name: str):
    return nbformat.read(str(reports / f"{name}.ipynb"), as_version=4)


def errors_in(nb) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


# ---------------------------------------------------------------------------- sources
def _sync_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sync_notebooks",
                                                  ROOT / "scripts" / "sync_notebooks.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _cells(nb):
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


def test_every_notebook_has_a_jupytext_source_and_matches_it():
    """Each notebooks/NN_name.ipynb is written from NN_name.py (jupytext percent format):
    converting the source gives the notebook's cells, sources and tags."""
    import jupytext

    sources = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
    notebooks = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert [p.stem for p in sources] == [p.stem for p in notebooks]
    assert {e.name for e in NOTEBOOKS} <= {p.stem for p in notebooks}
    for source in sources:
        converted = jupytext.read(source, fmt="py:percent")
        stored = nbformat.read(str(source.with_suffix(".ipynb")), as_version=4)
        assert _cells(converted) == _cells(stored), (
            f"{source.with_suffix('.ipynb').name} differs from {source.name}: "
            "run python scripts/sync_notebooks.py")
        assert stored.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert _sync_script().main(["--check"]) == 0, "run python scripts/sync_notebooks.py"


def test_sync_check_fails_when_a_source_is_edited(tmp_path):
    import shutil

    for path in NOTEBOOK_DIR.glob("01_dataset.*"):
        shutil.copy(path, tmp_path / path.name)
    script = _sync_script()
    assert script.main(["--check", "--dir", str(tmp_path)]) == 0
    source = tmp_path / "01_dataset.py"
    source.write_text(source.read_text().replace("# # Dataset overview", "# # Dataset overview!"))
    assert script.main(["--check", "--dir", str(tmp_path)]) == 1
    assert script.main(["--dir", str(tmp_path)]) == 0
    assert "# Dataset overview!" in (tmp_path / "01_dataset.ipynb").read_text()


def test_sources_are_clean():
    for entry in present_entries():
        nb = nbformat.read(str(NOTEBOOK_DIR / f"{entry.name}.ipynb"), as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{entry.name}: expected one cell tagged 'parameters'"
        assert nb.metadata["kernelspec"]["name"] == "python3"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
            f"{entry.name} is stored with outputs"
        assert "data" in papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{entry.name}.ipynb"))


def test_segment_notebook_declares_method():
    params = papermill.inspect_notebook(str(NOTEBOOK_DIR / "03_segment.ipynb"))
    assert params["method"]["default"].strip("'\"") == "mitocyto"
    assert {"data", "workdir", "quick", "force", "scheduler", "workers"} <= set(params)


# ---------------------------------------------------------------------------- the batch
def test_every_notebook_ran_without_errors(batch):
    root, _, result = batch
    reports = root / "reports"
    assert result.ok
    names = [j.name for j in result.jobs]
    expected = []
    for entry in present_entries():
        expected += [f"{entry.name}_{m}" for m in METHODS] if entry.per_method else [entry.name]
    assert names == expected
    assert all(j.status == "ran" for j in result.jobs)
    for job in result.jobs:
        nb = executed(reports, job.name)
        assert errors_in(nb) == [], job.name
        assert (reports / "logs" / f"{job.name}.log").is_file()
        # the run's parameter cells are kept in the file but marked off the site's pages
        parameter_cells = [c for c in nb.cells if {"parameters", "injected-parameters"}
                           & set(c.metadata.get("tags", []))]
        assert len(parameter_cells) >= 1, job.name
        assert all("remove-cell" in c.metadata["tags"] for c in parameter_cells), job.name
    manifest = json.loads((reports / "run_manifest.json").read_text())
    assert {n: r["status"] for n, r in manifest["jobs"].items()} == {n: "ok" for n in names}
    assert manifest["last_run"]["status"] == "ok"


def test_tables_are_written_with_finite_numbers(batch):
    root, data, _ = batch
    reports = root / "reports"
    t1 = pd.read_csv(reports / "table1.csv")
    expected = table1(Dataset(data))
    assert t1["technique"].tolist() == ["IMC", "IF", "Total"]
    assert t1["myofibres"].tolist() == expected["myofibres"].tolist()
    assert (t1["myofibres"] > 0).all()

    t2 = pd.read_csv(reports / "table2.csv")
    assert t2["method"].tolist() == ["QA-IMC", "QA-IF"]
    assert np.isfinite(t2[["MF-A", "mean IoU"]].to_numpy(float)).all()
    assert (t2["mean IoU"] > 0.8).all()

    t3 = pd.read_csv(reports / "table3.csv")
    assert list(t3.columns) == TABLE3_COLUMNS
    assert t3["method"].tolist() == [*TABLE3_METHODS, "QA"]
    row = t3.set_index("method").loc["mitocyto"]
    numbers = ["MF-A", "r_AoB", "r_AiB", "mean IoU", "A%(IoU>0.80)", "A%(IoU>0.90)",
               "A%(IoU>0.95)", "AP@0.5", "AP@0.75", "F1@0.5", "PQ"]
    assert np.isfinite(row[numbers].to_numpy(float)).all(), row
    assert row["MF-A"] > 0 and 0 < row["mean IoU"] <= 1 and 0 <= row["AP@0.5"] <= 1
    assert row["TS"] == "P02, S11"  # the tiny dataset's test split
    # every interval brackets its value (issue 16): mitocyto's and QA's paper metrics,
    # mitocyto's instance metrics, and Table II's
    for metric in ("mean IoU", "r_AoB", "r_AiB", "A%(IoU>0.90)", "F1@0.5", "PQ"):
        low, high = row[f"{metric} CI low"], row[f"{metric} CI high"]
        assert low <= row[metric] <= high, metric
    for _, qa_row in t2.iterrows():
        assert qa_row["mean IoU CI low"] <= qa_row["mean IoU"] <= qa_row["mean IoU CI high"]
    pairwise = pd.read_csv(reports / "table3_pairwise.csv")
    assert list(pairwise.columns)[:3] == ["method_a", "method_b", "metric"]
    assert len(pairwise) == 0          # one method: no pair
    qa = t3.set_index("method").loc["QA"]
    assert np.isfinite(qa[["MF-A", "mean IoU"]].to_numpy(float)).all()
    for method in TABLE3_METHODS[1:]:  # not run here: the row says why
        assert "not run" in t3.set_index("method").loc[method, "note"]


def test_notebook_outputs_show_tables_and_figures(batch):
    reports = batch[0] / "reports"

    def kinds(nb):
        return [key for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                for key in o.get("data", {})]

    for name in ("01_dataset", "02_annotation_quality", "03_segment_mitocyto", "04_compare",
                 "07_synthetic_vs_real"):
        found = kinds(executed(reports, name))
        assert "image/png" in found, f"{name} shows no figure"
        assert "text/html" in found, f"{name} shows no table"
    text = json.dumps(executed(reports, "04_compare"))
    assert "Mann" in text or "p_value" in text
    assert "AP@0.75" in text


def _page_text(nb) -> str:
    """Markdown cells and the text/markdown, text/html and stream outputs of a notebook."""
    parts = [c.source for c in nb.cells if c.cell_type == "markdown"]
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            parts.append(output.get("text", ""))
            data = output.get("data", {})
            parts += [data.get("text/markdown", ""), data.get("text/html", "")]
    return " ".join(" ".join(parts).split())   # whitespace normalised


def test_synthetic_vs_real_page(batch):
    """07: the calibration table of every section against the real left half, its reading,
    the crops and profile figures, and how to produce the real-image check (not run here)."""
    from nclsm_utils.report import realcheck
    from nclsm_utils.core import realpanel

    root, data, _ = batch
    reports = root / "reports"
    nb = executed(reports, "07_synthetic_vs_real")
    text = _page_text(nb)
    assert "one real NCL-SM section (IF)" in text and "left half" in text
    assert "right half is held out" in text
    table = pd.read_csv(reports / "calibration.csv")
    expected = realcheck.calibration_table(realcheck.synthetic_statistics(data))
    pd.testing.assert_frame_equal(table, expected, check_exact=False, atol=1e-9)
    assert "R_profile_+0.06" in set(table["statistic"]) and "fibres" not in set(table["statistic"])
    assert realcheck.calibration_reading(table, 4) in text   # the tiny data has 4 sections
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
                  for o in c.get("outputs", []))
    assert figures == (2 if realpanel.FIGURE.is_file() else 1)  # crops (needs the figure), profiles
    assert "python benchmarks/bench_real_transfer.py" in text   # no real_transfer.csv here


def test_synthetic_vs_real_shows_the_real_image_check_and_reruns_when_it_changes(tiny, tmp_path):
    """With reports/real_transfer.csv present the page shows it (never a right-half row), and
    a new or changed csv reruns the notebook (its size and time enter the job key)."""
    _, data = tiny
    reports = tmp_path / "reports"
    reports.mkdir()
    name = "07_synthetic_vs_real"

    def key():
        return {j.name: j.key for j in nb_batch.plan_run(data, reports=reports, methods=METHODS)}

    before = key()
    pd.DataFrame({"case": ["real-left", "synthetic-control", "real-right"],
                  "method": ["mitocyto"] * 3, "n_gt": [255, 171, 250], "n_pred": [180, 55, 9],
                  "F1@0.5": [0.7954, 0.2832, 0.1111], "mean IoU": [0.8448, 0.7909, 0.5]}
                 ).to_csv(reports / "real_transfer.csv", index=False)
    after = key()
    assert after[name] != before[name]
    assert {n: k for n, k in after.items() if n != name} == \
        {n: k for n, k in before.items() if n != name}
    result = run_notebooks(data, reports=reports, methods=METHODS, notebooks=[name],
                           progress=False)
    assert [(j.name, j.status) for j in result.jobs] == [(name, "ran")]
    nb = executed(reports, name)
    assert errors_in(nb) == []
    text = _page_text(nb)
    assert "one real section at reduced resolution" in text
    assert "real-left" in text and "synthetic-control" in text and "0.795" in text
    assert "real-right" not in text                                 # the right half is held out
    assert "has not been run" not in text
    again = run_notebooks(data, reports=reports, methods=METHODS, notebooks=[name],
                          progress=False)
    assert [j.status for j in again.jobs] == ["skipped"]


def test_second_run_skips_up_to_date_notebooks(batch):
    root, data, first = batch
    before = {j.name: (root / "reports" / f"{j.name}.ipynb").stat().st_mtime_ns for j in first.jobs}
    again = run_notebooks(data, reports=root / "reports", workdir=root / "work", methods=METHODS,
                          quick=True, progress=False)
    assert [j.status for j in again.jobs] == ["skipped"] * len(first.jobs)
    after = {j.name: (root / "reports" / f"{j.name}.ipynb").stat().st_mtime_ns for j in again.jobs}
    assert before == after


def test_plain_papermill_runs_the_segment_notebook(batch, tmp_path, monkeypatch):
    """`papermill notebooks/03_segment.ipynb out.ipynb -p method ...` (papermill's own command
    line, run in-process; the predictions cached by the batch make it quick)."""
    from click.testing import CliRunner
    from papermill.cli import papermill as papermill_cli

    root, data, _ = batch
    out = tmp_path / "out.ipynb"
    monkeypatch.chdir(ROOT)
    done = CliRunner().invoke(papermill_cli, [
        "notebooks/03_segment.ipynb", str(out), "-p", "method", "mitocyto", "-p", "data",
        str(data), "-p", "workdir", str(root / "work"), "-p", "reports", str(tmp_path),
        "-p", "quick", "True", "--no-progress-bar", "-k", "python3"])
    assert done.exit_code == 0, done.output[-2000:]
    nb = nbformat.read(str(out), as_version=4)
    assert errors_in(nb) == []
    assert "mitocyto" in json.dumps(nb)


def test_segment_notebook_runs_its_sections_on_dask(batch, tmp_path, monkeypatch):
    """`-p workers 2`: the notebook's sections go to a local Dask cluster, same tables."""
    from click.testing import CliRunner
    from papermill.cli import papermill as papermill_cli

    root, data, _ = batch
    serial = {p.name: pd.read_csv(p) for p in (root / "work" / "results" / "mitocyto").glob("*.csv")}
    assert serial
    workdir = tmp_path / "work"
    shutil.copytree(root / "work" / "predictions", workdir / "predictions")  # no re-prediction
    out = tmp_path / "dask.ipynb"
    monkeypatch.chdir(ROOT)
    done = CliRunner().invoke(papermill_cli, [
        "notebooks/03_segment.ipynb", str(out), "-p", "method", "mitocyto", "-p", "data",
        str(data), "-p", "workdir", str(workdir), "-p", "reports", str(tmp_path),
        "-p", "quick", "True", "-p", "workers", "2", "--no-progress-bar", "-k", "python3"])
    assert done.exit_code == 0, done.output[-2000:]
    assert errors_in(nbformat.read(str(out), as_version=4)) == []
    for name, table in serial.items():
        pd.testing.assert_frame_equal(pd.read_csv(workdir / "results" / "mitocyto" / name), table)


# ---------------------------------------------------------------------------- bad input
def test_unknown_parameter_is_reported_before_anything_runs(tiny, tmp_path):
    _, data = tiny
    reports = tmp_path / "reports"
    with pytest.raises(RunError, match="unknown parameter.*'no_such_parameter'.*known parameters"):
        run_notebooks(data, reports=reports, workdir=tmp_path / "work", methods=METHODS,
                      parameters={"no_such_parameter": 1}, progress=False)
    assert not reports.exists()


def test_unknown_method_is_reported_before_anything_runs(tiny, tmp_path):
    _, data = tiny
    with pytest.raises(RunError, match="unknown method.*'nosuchnet'.*known methods"):
        run_notebooks(data, reports=tmp_path / "reports", methods=["nosuchnet"], progress=False)
    assert not (tmp_path / "reports").exists()


def test_cli_reports_an_unknown_parameter(tiny, tmp_path, capsys):
    from nclsm_utils.cli import main

    _, data = tiny
    code = main(["run", "--data", str(data), "--reports", str(tmp_path / "r"), "--methods",
                 "mitocyto", "-p", "nope", "1", "--no-progress"])
    assert code == 2
    assert "unknown parameter(s) 'nope'" in capsys.readouterr().err


def _toy_notebook(path: Path, body: str, parameters: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i}"
    nbformat.write(nb, str(path))


def test_failure_stops_the_batch_keeps_reports_and_the_next_run_resumes(tiny, tmp_path,
                                                                         monkeypatch):
    _, data = tiny
    source = tmp_path / "nbs"
    source.mkdir()
    _toy_notebook(source / "n1.ipynb", "from pathlib import Path\n"
                  "Path(reports, 'n1.txt').write_text('one')", "data = None\nreports = None")
    _toy_notebook(source / "n2.ipynb", "if fail:\n    raise ValueError('boom in n2')\n"
                  "print('n2 ok')", "data = None\nfail = False")
    _toy_notebook(source / "n3.ipynb", "print('n3 ok')", "data = None")
    monkeypatch.setattr(nb_batch, "NOTEBOOKS", (NotebookEntry("n1"), NotebookEntry("n2"),
                                                NotebookEntry("n3", needs=("n2",))))
    reports = tmp_path / "reports"
    with pytest.raises(NotebookFailed) as info:
        run_notebooks(data, reports=reports, methods=[], parameters={"fail": True},
                      source_dir=source, progress=False)
    failure = info.value
    assert failure.job == "n2"
    assert "In [" in failure.cell and "if fail:" in failure.cell
    assert failure.error == "ValueError: boom in n2"
    assert "n2" in str(failure) and "boom in n2" in str(failure)
    assert (reports / "n1.ipynb").is_file() and (reports / "n1.txt").is_file()
    assert not (reports / "n2.ipynb").exists() and not (reports / "n3.ipynb").exists()
    assert failure.partial is not None and failure.partial.is_file()
    assert "boom in n2" in failure.log_file.read_text()
    manifest = json.loads((reports / "run_manifest.json").read_text())
    # no notebook declares `workdir`: the manifest (and the site) still name the default one
    assert manifest["workdir"] == str(pipeline.default_workdir(data))
    assert manifest["jobs"]["n1"]["status"] == "ok"
    assert manifest["jobs"]["n2"]["status"] == "failed"
    assert manifest["last_run"]["status"] == "failed at n2"

    resumed = run_notebooks(data, reports=reports, methods=[], parameters={"fail": False},
                            source_dir=source, progress=False)
    assert [(j.name, j.status) for j in resumed.jobs] == [("n1", "skipped"), ("n2", "ran"),
                                                           ("n3", "ran")]
    assert "n2 ok" in json.dumps(nbformat.read(str(reports / "n2.ipynb"), as_version=4))

    # an upstream change reruns what needs it
    _toy_notebook(source / "n2.ipynb", "print('n2 changed')", "data = None\nfail = False")
    third = run_notebooks(data, reports=reports, methods=[], source_dir=source, progress=False)
    assert [(j.name, j.status) for j in third.jobs] == [("n1", "skipped"), ("n2", "ran"),
                                                         ("n3", "ran")]


def test_job_slug_and_default_workdir(tmp_path):
    assert nb_batch.job_slug("stardist") == "stardist"
    assert nb_batch.job_slug(f"external:{tmp_path / 'ilastik out'}") == "external-ilastik-out"
    assert pipeline.default_workdir(Path("/x/data/synthetic")) == Path("/x/data")
    assert pipeline.default_workdir(Path("/x/data/NCL-SM")) == Path("/x/data")


def test_a_method_that_cannot_run_is_recorded_and_explained_in_table3(tiny, tmp_path):
    from nclsm_utils.report import tables

    _, data = tiny
    dataset = Dataset(data)
    missing = f"external:{tmp_path / 'no_such_masks'}"
    result, record = pipeline.segment_method(missing, dataset, workdir=tmp_path / "work",
                                             progress=False)
    assert result is None
    assert record["status"] == "failed" and "not found" in record["error"]
    assert (tmp_path / "work" / "results" / "external-no_such_masks_run.json").is_file()
    t3 = tables.table3(dataset, methods=["mitocyto", missing], workdir=tmp_path / "work")
    assert t3["method"].tolist() == [*TABLE3_METHODS, "external-no_such_masks", "QA"]
    notes = t3.set_index("method")["note"]
    assert notes["external-no_such_masks"].startswith("could not run: ")
    assert "not found" in notes["external-no_such_masks"]
    assert notes["mitocyto"].startswith("not run: no results")
    assert notes["cellpose"].startswith("not run in this report")


# ---------------------------------------------------------------------------- concurrent batch
def _job(name, needs=(), exclusive=False):
    entry = NotebookEntry(name.split(":")[0], needs=needs)
    job = nb_batch.Job(name, entry, Path(f"{name}.ipynb"), Path(f"out/{name}.ipynb"), {})
    job.exclusive = exclusive
    return job


def test_next_jobs_respects_needs_slots_and_exclusive_jobs():
    a, b, c = _job("01"), _job("02"), _job("03:m")
    train1, train2 = _job("03:cellpose", exclusive=True), _job("03:unet", exclusive=True)
    d, e = _job("04", needs=("03",)), _job("05", needs=("03",))
    pending = [a, b, c, train1, train2, d, e]
    # light jobs first, in table order, as many as there are slots
    assert nb_batch.next_jobs(pending, [], 2) == [a, b]
    assert nb_batch.next_jobs(pending[1:], [a], 2) == [b]
    assert nb_batch.next_jobs([c, train1, train2, d, e], [a, b], 2) == []      # no free slot
    # a training job waits until nothing runs, then starts alone
    assert nb_batch.next_jobs([train1, train2, d, e], [c], 2) == []
    assert nb_batch.next_jobs([train1, train2, d, e], [], 2) == [train1]
    assert nb_batch.next_jobs([train2, d, e], [train1], 2) == []               # nothing beside it
    # 04/05 need every 03 job finished
    assert nb_batch.next_jobs([d, e], [train2], 2) == []
    assert nb_batch.next_jobs([d, e], [], 2) == [d, e]
    assert nb_batch.next_jobs([d, e], [], 1) == [d]


def test_trains_a_network_is_false_without_a_training_notebook(tiny):
    _, data = tiny
    job = nb_batch.plan_run(data, methods=["mitocyto"], quick=True)
    flags = {j.name: nb_batch.trains_a_network(j) for j in job}
    assert flags["03_segment_mitocyto"] is False and not any(flags.values())


def test_two_worker_batch_writes_the_serial_tables(batch):
    root, data, serial = batch
    reports, work = root / "reports-dask", root / "work-dask"
    result = run_notebooks(data, reports=reports, workdir=work, methods=METHODS, quick=True,
                           progress=False, workers=2)
    assert result.ok and all(j.status == "ran" for j in result.jobs)
    names = sorted(p.name for p in (root / "reports").glob("*.csv"))
    assert "table3.csv" in names and names == sorted(p.name for p in reports.glob("*.csv"))
    for name in names:
        assert (reports / name).read_bytes() == (root / "reports" / name).read_bytes(), name
    manifest = json.loads((reports / "run_manifest.json").read_text())
    assert manifest["last_run"]["workers"] == 2 and manifest["last_run"]["status"] == "ok"
    # the kernels were given the batch's cluster (and no worker count of their own)
    segment = executed(reports, "03_segment_mitocyto")
    assert not errors_in(segment)
    assert "NCLSM_SCHEDULER" not in os.environ and "NCLSM_WORKERS" not in os.environ
    # up to date: a second two-worker run skips everything
    again = run_notebooks(data, reports=reports, workdir=work, methods=METHODS, quick=True,
                          progress=False, workers=2)
    assert {j.status for j in again.jobs} == {"skipped"}


def test_concurrent_batch_overlaps_jobs_stops_after_a_failure_and_resumes(tiny, tmp_path,
                                                                           monkeypatch):
    _, data = tiny
    source = tmp_path / "nbs"
    source.mkdir()
    stamp = ("import time\nfrom pathlib import Path\nstart = time.time()\ntime.sleep(2)\n"
             "Path(reports, NAME).write_text(f'{start} {time.time()}')\n")
    _toy_notebook(source / "n1.ipynb", stamp.replace("NAME", "'n1.txt'"),
                  "data = None\nreports = None")
    _toy_notebook(source / "n2.ipynb", stamp.replace("NAME", "'n2.txt'")
                  + "if fail:\n    raise ValueError('boom in n2')\n",
                  "data = None\nreports = None\nfail = False")
    _toy_notebook(source / "n3.ipynb", "print('n3 ok')", "data = None")
    monkeypatch.setattr(nb_batch, "NOTEBOOKS", (NotebookEntry("n1"), NotebookEntry("n2"),
                                                NotebookEntry("n3", needs=("n2",))))
    reports = tmp_path / "reports"
    with pytest.raises(NotebookFailed, match="boom in n2") as info:
        run_notebooks(data, reports=reports, methods=[], parameters={"fail": True},
                      source_dir=source, progress=False, workers=2)
    assert info.value.job == "n2" and info.value.partial.is_file()
    # n1 and n2 ran at the same time; n1 finished and is kept; n3 (needs n2) never started
    (s1, e1), (s2, e2) = [map(float, (reports / f"{n}.txt").read_text().split())
                          for n in ("n1", "n2")]
    assert s1 < e2 and s2 < e1
    manifest = json.loads((reports / "run_manifest.json").read_text())
    assert manifest["jobs"]["n1"]["status"] == "ok" and (reports / "n1.ipynb").is_file()
    assert manifest["jobs"]["n2"]["status"] == "failed" and "n3" not in manifest["jobs"]
    assert manifest["last_run"]["status"] == "failed at n2"
    resumed = run_notebooks(data, reports=reports, methods=[], parameters={"fail": False},
                            source_dir=source, progress=False, workers=2)
    assert [(j.name, j.status) for j in resumed.jobs] == [("n1", "skipped"), ("n2", "ran"),
                                                           ("n3", "ran")]


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="chromium is not installed (`make test` installs Debian's chromium)")
def test_site_shows_table3_with_intervals_and_the_forest_plot_in_chromium(batch, tmp_path):
    """Issue 16: the rendered comparison page, as Chromium lays it out, has Table III with
    bracketed intervals and the forest plot; the overview explains the brackets."""
    import re
    import subprocess

    from nclsm_utils.report import site

    reports = batch[0] / "reports"
    result = site.build_site(reports_dir=reports, out_dir=tmp_path / "_site", project=ROOT,
                             engine="nbconvert")
    page = tmp_path / "_site" / "reports" / "04_compare.html"
    assert page.is_file()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")

    def dom(path):
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             f"--user-data-dir={tmp_path / 'chrome'}", "--dump-dom", path.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    compare = dom(page)
    assert re.search(r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]", compare), "no interval in Table III"
    assert "bootstrap interval" in compare and "Which differences are real" in compare
    figures = re.findall(r'<img[^>]+src="data:image/png;base64,', compare)
    assert len(figures) >= 3                      # forest plot, curves, morphology, overlays
    overview = dom(result.index)
    assert "In brackets: 95 % bootstrap intervals" in overview
    # issue 17: the paper's published rows beside ours, labelled as real-NCL-SM numbers
    assert "The paper's published rows (real NCL-SM)" in overview
    assert "mitocyto (with manual corrections)" in overview and "1040" in overview


def test_paper_reproduction_page_with_and_without_the_repository(batch, tmp_path, sample_dir):
    """Issue 17: without a checkout the page says how to get one and shows the published
    rows; with one (../shared laid out as the repository) it runs the checks."""
    root, data, _ = batch
    text = _page_text(executed(root / "reports", "08_paper_reproduction"))
    assert "git clone https://github.com/atifkhanncl/NCL-SM" in text
    assert "mitocyto (with manual corrections)" in text and "1040" in text
    repo = tmp_path / "NCL-SM" / "sample_data"
    links = {"sample_IF_groundtruth_masks/S11.tiff": "S11_groundtruth_mask.tiff",
             "sample_ouputs/quality_metrics_csvs/S11.csv": "S11_qa_vs_groundtruth_per_fibre.csv",
             "sample_ouputs/NTM_csvs/all_Myofibres_Calculations_QIF.csv":
                 "IF_fibre_shape_features_ntm.csv"}
    for link, target in links.items():
        (repo / link).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(sample_dir / target, repo / link)
    reports = tmp_path / "reports"
    result = run_notebooks(data, reports=reports, workdir=root / "work", methods=METHODS,
                           quick=True, notebooks=["08_paper_reproduction"],
                           parameters={"ncl_sm_repo": str(repo.parent)}, progress=False)
    assert result.ok
    checks = pd.read_csv(reports / "reproduction.csv").set_index("check")
    assert checks.loc["shape_features S11", "match"] == True  # noqa: E712
    assert checks.loc["ntm_rule flags", "match"] == True  # noqa: E712
    assert "3 numbers compared, 0 disagree" in _page_text(executed(reports,
                                                                    "08_paper_reproduction"))


def test_report_with_the_repository_shows_the_row_by_row_reproduction(tiny, tmp_path,
                                                                      ncl_sm_repo, monkeypatch):
    """`make report NCLSM_REPO=DIR` (`nclsm report --ncl-sm-repo DIR`): the Paper reproduction
    page shows the table of `nclsm reproduce`, with every row of S60's published per-fibre csv
    compared. Only that notebook runs here (the others and the site rendering are stubbed)."""
    from nclsm_utils.cli import main
    from nclsm_utils.report import reproduce, site

    root, data = tiny
    real_run = pipeline.resolve_and_run

    def only_the_reproduction_page(data_dir, **options):
        options.update(notebooks=["08_paper_reproduction"], workdir=root / "work",
                       methods=METHODS, progress=False)
        return real_run(data_dir, **options)

    monkeypatch.setattr(pipeline, "resolve_and_run", only_the_reproduction_page)
    monkeypatch.setattr(site, "build_site", lambda reports_dir: site.SiteResult(
        index=Path(reports_dir) / "index.html", engine="stub", pages=[]))
    reports = tmp_path / "reports"
    assert main(["report", "--data", str(data), "--reports", str(reports), "--quick",
                 "--ncl-sm-repo", str(ncl_sm_repo)]) == 0
    shown = pd.read_csv(reports / "reproduction.csv")
    expected = reproduce.reproduce(ncl_sm_repo)
    columns = ["check", "published", "recomputed", "match"]
    same = ~shown["check"].str.startswith("time ")       # our timing varies run to run
    assert shown.loc[same, columns].astype(str).values.tolist() == \
        expected.loc[same.to_numpy(), columns].astype(str).values.tolist()
    page = _page_text(executed(reports, "08_paper_reproduction"))
    assert "13 numbers compared, 0 disagree" in page
    assert "586 of 586 rows equal" in page and "586 rows compared" in page
