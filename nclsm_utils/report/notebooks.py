"""The notebook batch: the one notebook list, planning, the run manifest, papermill runs.

:data:`NOTEBOOKS` is the one ordered table of the notebooks a batch run executes (in
dependency order). A notebook is executed with papermill from ``notebooks/<name>.ipynb``
into ``reports/<name>.ipynb``; a ``per_method`` notebook is executed once per method into
``reports/<name>_<method>.ipynb`` with the papermill parameter ``method`` set. Each notebook
gets only the run parameters its cell tagged ``parameters`` declares (``data``,
``workdir``, ``reports``, ``quick``, ``methods``, ``method``), plus any extra
``-p NAME VALUE`` the user passes; a name that no notebook declares is an error raised before
anything runs.

Skip when up to date: every job's key is a hash of its parameters, the notebook's source
(cell types and sources, not outputs), a fingerprint of the input data (file names, sizes and
modification times), a fingerprint of the ``nclsm_utils`` sources and the keys of the jobs
it needs. The key of each finished job is stored in ``reports/run_manifest.json`` (written
atomically after every notebook); a job whose key and output are unchanged is skipped.
A failing notebook stops the batch with a :class:`NotebookFailed` naming the notebook, the
cell and the error; the reports already written stay, the partial output is kept in
``reports/logs/<job>.failed.ipynb`` and the next run resumes at the failed job.

Concurrent batches (``workers > 1``, ``nclsm run --workers N``): up to N notebooks run at
once, each in its own kernel, in dependency order (:func:`next_jobs`). A per-method notebook
that will train a network (:func:`trains_a_network`) runs alone: PyTorch and TensorFlow
already use every core, and two trainings side by side only slow each other down. One local
Dask cluster of N single-threaded processes serves the whole batch (the synthetic default
data are written by its workers, and the segment notebooks send their per-section tasks to
it through ``$NCLSM_SCHEDULER``). The outputs are byte-identical to a serial run: every
notebook and every fit runs exactly as it would alone (``benchmarks/bench_report.py``).

Example
-------
>>> from nclsm_utils.report.notebooks import run_notebooks
>>> result = run_notebooks("data/synthetic", reports="reports",
...                        methods=["mitocyto"], quick=True)         # doctest: +SKIP
>>> [(job.name, job.status) for job in result.jobs]                  # doctest: +SKIP
[('01_dataset', 'ran'), ('02_annotation_quality', 'ran'), ('03_segment_mitocyto', 'ran'), ...]
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..core import manifest as manifest_file
from ..core.errors import NclsmError
from ..segmenters.base import BENCHMARK_METHODS, budget_name
from ..core.workdir import default_workdir

log = logging.getLogger(__name__)

#: The methods of Table III, in its row order; the default of ``nclsm run``.
DEFAULT_METHODS = BENCHMARK_METHODS
MANIFEST_NAME = "run_manifest.json"
LOG_DIR = "logs"
KERNEL_NAME = "python3"


@dataclass(frozen=True)
class NotebookEntry:
    """One row of :data:`NOTEBOOKS`.

    name : notebook stem in ``notebooks/``.
    per_method : executed once per method (parameter ``method``) into ``<name>_<method>``.
    needs : names of earlier entries whose outputs this notebook reads (their job keys
        enter this notebook's key, so it reruns when they do).
    optional : skipped (with a log line) when the notebook file does not exist yet.
    title : page title on the site.
    trains : a per-method notebook that trains its method's network when no model is cached
        (in a concurrent batch such a job runs alone: training already uses every core).
    reads : files in the reports folder that the notebook shows when present but no notebook
        of the batch writes (e.g. a benchmark's table); their sizes and modification times
        enter the key, so the notebook reruns when one appears or changes.
    """

    name: str
    per_method: bool = False
    needs: tuple[str, ...] = ()
    optional: bool = False
    title: str = ""
    trains: bool = False
    reads: tuple[str, ...] = ()


#: The per-method segmentation notebook and the comparison notebook (the site links them).
SEGMENT, COMPARE = "03_segment", "04_compare"

#: The notebooks of a batch run, in dependency order. Adding a notebook is one line here.
NOTEBOOKS: tuple[NotebookEntry, ...] = (
    NotebookEntry("01_dataset", title="Dataset"),
    NotebookEntry("02_annotation_quality", title="Annotation quality"),
    NotebookEntry(SEGMENT, per_method=True, trains=True, title="Segment"),
    NotebookEntry(COMPARE, needs=(SEGMENT,), title="Compare methods"),
    NotebookEntry("05_curation", needs=(SEGMENT,), optional=True, title="Curation"),
    NotebookEntry("06_explore", needs=(SEGMENT,), optional=True, title="Explore"),
    NotebookEntry("07_synthetic_vs_real", reads=("real_transfer.csv",), title="Synthetic vs real"),
    NotebookEntry("08_paper_reproduction", optional=True, title="Paper reproduction"),
)


class PipelineError(NclsmError, ValueError):
    """Base of the batch-run errors (the CLI prints them as one clear message)."""


class RunError(PipelineError):
    """A batch run cannot start (unknown parameter, unknown method, missing notebook)."""


class NotebookFailed(PipelineError):
    """A notebook raised an error; names the notebook, the cell and the error."""

    def __init__(self, job: str, source: Path, cell: str, error: str, partial: Path | None,
                 log_file: Path | None):
        self.job, self.source, self.cell, self.error = job, Path(source), cell, error
        self.partial, self.log_file = partial, log_file
        where = f"partial output {partial}" if partial else "no partial output"
        super().__init__(f"notebook {job} ({self.source.name}) failed in {cell}: {error} "
                         f"[{where}; log {log_file}]")




# ---------------------------------------------------------------------------- locations
def project_root() -> Path:
    """The folder holding ``notebooks/`` and ``_quarto.yml``: the working directory when it
    has them, else the checkout this package was installed from."""
    cwd = Path.cwd()
    if (cwd / "notebooks").is_dir() and (cwd / "_quarto.yml").is_file():
        return cwd
    here = Path(__file__).resolve().parents[2]   # the checkout (nclsm_utils/report/..)
    if (here / "notebooks").is_dir():
        return here
    return cwd


def notebooks_dir() -> Path:
    """``<project root>/notebooks`` (the ``nclsm`` command takes ``$NCLSM_NOTEBOOKS``
    instead when set, and passes it as ``source_dir``)."""
    return project_root() / "notebooks"


def job_slug(method: str) -> str:
    """File-name-safe form of a method name (``external:/a/b`` -> ``external-b``).

    >>> job_slug("unet"), job_slug("external:/data/ilastik masks/")
    ('unet', 'external-ilastik-masks')
    """
    if method.startswith("external:"):
        method = "external-" + Path(method.split(":", 1)[1]).expanduser().resolve().name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", method).strip("-") or "method"


# ---------------------------------------------------------------------------- fingerprints
def notebook_source_hash(path) -> str:
    """Hash of a notebook's cells (type, source and tags), ignoring outputs and metadata."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [(c.cell_type, c.source, sorted(c.get("metadata", {}).get("tags", [])))
             for c in nb.cells]
    return manifest_file.sha(cells)[:16]


def data_fingerprint(root) -> str:
    """Hash of the dataset's files (relative path, size, modification time) and YAML files."""
    root = Path(root)
    entries = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts):
            stat = path.stat()
            entries.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    return manifest_file.sha(entries)[:16]


def code_fingerprint() -> str:
    """Hash of the ``nclsm_utils`` sources (a code change reruns the notebooks)."""
    package = Path(__file__).resolve().parents[1]   # nclsm_utils/
    digest = hashlib.sha1()
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def reads_fingerprint(reports, names) -> dict:
    """Size and modification time of each file ``names`` in ``reports`` (None when absent)."""
    out = {}
    for name in names:
        path = Path(reports) / name
        if path.is_file():
            stat = path.stat()
            out[name] = (stat.st_size, stat.st_mtime_ns)
        else:
            out[name] = None
    return out


# ---------------------------------------------------------------------------- planning
@dataclass
class Job:
    """One notebook execution of a batch run."""

    name: str                  # output stem: 01_dataset, 03_segment_unet ...
    entry: NotebookEntry
    source: Path
    output: Path
    parameters: dict
    key: str = ""
    status: str = "pending"    # pending | skipped | ran | failed
    seconds: float = 0.0
    error: str = ""
    exclusive: bool = False    # runs alone in a concurrent batch (it trains a network)


@dataclass
class RunResult:
    """What :func:`run_notebooks` did."""

    jobs: list[Job]
    reports: Path
    manifest: Path
    data: Path
    failed: NotebookFailed | None = None

    @property
    def ok(self) -> bool:
        return self.failed is None

    def summary(self) -> str:
        counts = {s: sum(j.status == s for j in self.jobs) for s in ("ran", "skipped", "failed")}
        return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing to do"


def declared_parameters(path) -> dict:
    """Parameters declared in a notebook's cell tagged ``parameters`` (papermill's inspector)."""
    import papermill

    pm_logger = logging.getLogger("papermill")
    level = pm_logger.level
    pm_logger.setLevel(logging.WARNING)  # the inspector logs "Input Notebook: ..." at INFO
    try:
        return papermill.inspect_notebook(str(path))
    finally:
        pm_logger.setLevel(level)


def _check_methods(methods) -> list[str]:
    from ..segmenters import known_methods

    known = [m for m in known_methods() if not m.endswith("<folder>")]
    bad = [m for m in methods if not (m.startswith("external:") or m in known)]
    if bad:
        raise RunError(f"unknown method(s) {', '.join(map(repr, bad))}; known methods: "
                       f"{', '.join(known_methods())}")
    return list(methods)


def plan_run(data, reports="reports", workdir=None, methods=DEFAULT_METHODS, quick: bool = False,
             force: bool = False, parameters: dict | None = None, notebooks=None,
             source_dir=None) -> list[Job]:
    """The jobs of a batch run, with their parameters and keys; nothing is executed.

    Parameters
    ----------
    data : path-like
        Dataset root (NCL-SM or synthetic, with ``IMC/`` and/or ``IF/``).
    reports : path-like
        Where executed notebooks, tables, logs and the manifest go.
    workdir : path-like, optional
        Models, predictions and per-fibre results (default: ``data``'s parent for the
        synthetic default, else ``data``'s folder ``data/`` beside the reports).
    methods : sequence of str
        Methods of the per-method notebooks (and the ``methods`` parameter).
    quick : bool or str
        The training budget (:data:`~nclsm_utils.segmenters.base.BUDGETS`; True is
        ``"quick"``, False ``"report"``): passed as ``budget`` to the notebooks that declare
        it, and as ``quick`` (True for the ``quick`` budget) to those that declare that.
    force : bool
        Rerun every notebook (see :func:`run_notebooks`); model and prediction caches are
        kept unless ``parameters={"force": True}``.
    parameters : dict, optional
        Extra papermill parameters; each name must be declared by at least one notebook.
    notebooks : sequence of str, optional
        Restrict the run to these entries of :data:`NOTEBOOKS` (by name).
    source_dir : path-like, optional
        Folder of the notebook sources (default :func:`notebooks_dir`).

    Raises
    ------
    RunError
        Unknown parameter, unknown method, unknown or missing notebook.
    """
    source_dir = Path(source_dir) if source_dir is not None else notebooks_dir()
    data = Path(data).resolve()
    reports = Path(reports).resolve()
    workdir = Path(workdir).resolve() if workdir is not None else default_workdir(data)
    methods = _check_methods(list(methods or ()))
    extra = dict(parameters or {})
    entries = list(NOTEBOOKS)
    if notebooks:
        names = {e.name for e in entries}
        unknown = [n for n in notebooks if n not in names]
        if unknown:
            raise RunError(f"unknown notebook(s) {unknown}; the run table has: "
                           f"{', '.join(sorted(names))}")
        entries = [e for e in entries if e.name in notebooks]
    present = []
    for entry in entries:
        path = source_dir / f"{entry.name}.ipynb"
        if not path.is_file():
            if entry.optional:
                log.info("notebook %s not present yet: skipped", path)
                continue
            raise RunError(f"notebook {path} not found (listed in nclsm_utils.report.notebooks.NOTEBOOKS)")
        present.append((entry, path))
    if not present:
        raise RunError(f"no notebooks to run in {source_dir}")

    declared = {}
    for entry, path in present:
        params = declared_parameters(path)
        if not params:
            raise RunError(f"{path}: no cell tagged 'parameters'; papermill needs one")
        if entry.per_method and "method" not in params:
            raise RunError(f"{path}: a per-method notebook must declare a 'method' parameter")
        declared[entry.name] = params
    known = sorted(set().union(*declared.values()))
    unknown = sorted(set(extra) - set(known))
    if unknown:
        raise RunError(f"unknown parameter(s) {', '.join(map(repr, unknown))}: no notebook "
                       f"declares them; known parameters: {', '.join(known)}")
    if any(e.per_method for e, _ in present) and not methods:
        raise RunError("no methods given for the per-method notebooks")

    # ``force`` reruns the notebooks; it is not passed on (``-p force true`` also refits and
    # re-predicts the cached models and predictions)
    budget = budget_name(quick)
    common = {"data": str(data), "workdir": str(workdir), "reports": str(reports),
              "quick": budget == "quick", "budget": budget, "methods": list(methods)}
    data_fp = data_fingerprint(data)
    code_fp = code_fingerprint()
    keys_by_entry: dict[str, list[str]] = {}
    jobs: list[Job] = []
    for entry, path in present:
        source_hash = notebook_source_hash(path)
        variants = [(f"{entry.name}_{job_slug(m)}", {"method": m}) for m in methods] \
            if entry.per_method else [(entry.name, {})]
        for name, own in variants:
            params = {k: v for k, v in {**common, **extra, **own}.items() if k in declared[entry.name]}
            if entry.per_method:
                params["method"] = own["method"]
            key_params = {k: v for k, v in params.items() if k != "force"}
            needs = {n: keys_by_entry.get(n, []) for n in entry.needs}
            payload = {"source": source_hash, "params": key_params, "data": data_fp,
                       "code": code_fp, "needs": needs}
            if entry.reads:
                payload["reads"] = reads_fingerprint(reports, entry.reads)
            key = manifest_file.sha(payload)[:20]
            jobs.append(Job(name, entry, path, reports / f"{name}.ipynb", params, key))
            keys_by_entry.setdefault(entry.name, []).append(key)
    return jobs


# ---------------------------------------------------------------------------- manifest
def read_manifest(reports) -> dict:
    """The batch's manifest ``<reports>/run_manifest.json`` (:func:`nclsm_utils.core.manifest.read`;
    section ``jobs``)."""
    return manifest_file.read(Path(reports) / MANIFEST_NAME, ("jobs",))


def write_manifest(reports, manifest: dict) -> Path:
    """Replace the batch's manifest (locked, atomic: :func:`nclsm_utils.core.manifest.write`)."""
    return manifest_file.write(Path(reports) / MANIFEST_NAME, manifest)


def is_up_to_date(job: Job, manifest: dict) -> bool:
    record = manifest.get("jobs", {}).get(job.name)
    return bool(record and record.get("status") == "ok" and record.get("key") == job.key
                and job.output.is_file())


# ---------------------------------------------------------------------------- execution
def _failure(job: Job, error, partial: Path | None, log_file: Path) -> NotebookFailed:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError):
        first = next((line for line in (error.source or "").splitlines() if line.strip()), "")
        cell = f"cell In [{error.exec_count}] (`{first.strip()[:80]}`)"
        message = f"{error.ename}: {str(error.evalue).strip()}"
    else:
        cell = "kernel start-up" if "kernel" in type(error).__name__.lower() else "execution"
        message = f"{type(error).__name__}: {error}"
    return NotebookFailed(job.name, job.source, cell, message, partial, log_file)


def execute_job(job: Job, log_dir: Path, kernel_name: str = KERNEL_NAME,
                timeout: float | None = None) -> None:
    """Execute one job with papermill into ``job.output`` (atomically).

    The notebook runs in its source folder (so relative defaults work as in JupyterLab)
    with the kernel ``kernel_name``; the cells' outputs go to ``<log_dir>/<job>.log``.
    Raises :class:`NotebookFailed`.
    """
    import papermill

    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"{job.name}.log"
    job.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = job.output.with_name(f".{job.output.stem}.running.ipynb")
    pm_logger = logging.getLogger("papermill")
    start = time.perf_counter()
    with open(log_file, "w") as stream:
        stream.write(f"# {job.name}: {job.source} -> {job.output}\n"
                     f"# parameters: {json.dumps(job.parameters, default=str)}\n"
                     f"# key: {job.key}\n# started: {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        stream.flush()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        old_propagate, old_level = pm_logger.propagate, pm_logger.level
        pm_logger.addHandler(handler)
        pm_logger.propagate = False
        pm_logger.setLevel(logging.INFO)
        try:
            papermill.execute_notebook(
                str(job.source), str(tmp), parameters=job.parameters, kernel_name=kernel_name,
                cwd=str(job.source.parent), progress_bar=False, log_output=True,
                execution_timeout=timeout,
                # the kernel's own start-up warnings (plain-TCP transport) would break the bar
                extra_arguments=["--IPKernelApp.log_level=ERROR"])
        except Exception as error:  # noqa: BLE001 - every failure stops the batch, reported
            job.seconds = time.perf_counter() - start
            partial = None
            if tmp.is_file():
                partial = log_dir / f"{job.name}.failed.ipynb"
                os.replace(tmp, partial)
            failure = _failure(job, error, partial, log_file)
            stream.write(f"\n# FAILED after {job.seconds:.1f} s: {failure}\n")
            raise failure from error
        finally:
            pm_logger.removeHandler(handler)
            pm_logger.propagate, pm_logger.level = old_propagate, old_level
        mark_parameter_cells_removed(tmp)
        os.replace(tmp, job.output)
        job.seconds = time.perf_counter() - start
        stream.write(f"\n# finished in {job.seconds:.1f} s\n")


def mark_parameter_cells_removed(path) -> int:
    """Tag the parameter cells of executed notebook ``path`` ``remove-cell`` (Quarto leaves
    such cells out of a page; the nbconvert fallback does the same); returns how many.

    Papermill's cells (``parameters``, ``injected-parameters``) are how a run was made, not
    part of the page a reader sees; the notebook file keeps them.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    count = 0
    for cell in nb.cells:
        tags = list((cell.get("metadata") or {}).get("tags") or [])
        if {"parameters", "injected-parameters"} & set(tags) and "remove-cell" not in tags:
            cell.setdefault("metadata", {})["tags"] = [*tags, "remove-cell"]
            count += 1
    if count:
        nbformat.write(nb, str(path))
    return count


def _kernel_env() -> None:
    """Make the kernel a child of this interpreter: jupyter_client maps a kernelspec's
    ``python`` to ``sys.executable``; put this interpreter's folder first on PATH for specs
    that name ``python3``, and this checkout on PYTHONPATH when the package is not installed."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if not path.split(os.pathsep)[:1] == [bindir]:
        os.environ["PATH"] = bindir + os.pathsep + path
    package_parent = str(Path(__file__).resolve().parents[2])
    current = os.environ.get("PYTHONPATH", "")
    if package_parent not in current.split(os.pathsep):
        os.environ["PYTHONPATH"] = package_parent + (os.pathsep + current if current else "")


def run_notebooks(data, reports="reports", workdir=None, methods=DEFAULT_METHODS,
                  quick: bool = False, force: bool = False, parameters: dict | None = None,
                  notebooks=None, source_dir=None, progress: bool = True,
                  kernel_name: str = KERNEL_NAME, raise_on_failure: bool = True,
                  scheduler=None, workers: int = 1) -> RunResult:
    """Execute the notebooks of :data:`NOTEBOOKS` with papermill into ``reports``.

    Parameters are those of :func:`plan_run`; ``progress`` shows a tqdm bar. Jobs whose key
    matches the manifest and whose output exists are skipped unless ``force``.

    scheduler : str, Client or cluster, optional
        A Dask scheduler for the segment notebooks' per-section tasks (its address is given
        to the kernels as ``$NCLSM_SCHEDULER``).
    workers : int
        Up to this many notebooks run at once (each in a kernel of its own, in dependency
        order; a notebook that trains a network runs alone, since training already uses
        every core). Without ``scheduler``, ``workers > 1`` also starts one local Dask
        cluster of ``workers`` single-threaded processes for the whole batch. The outputs
        are the same as with ``workers=1``.

    Returns
    -------
    RunResult
        The jobs with their status (``ran``, ``skipped``, ``failed``, ``pending``).

    Raises
    ------
    RunError
        Before anything runs: unknown parameter / method / notebook.
    NotebookFailed
        When a notebook fails (``raise_on_failure``; else returned in ``result.failed``).
        Reports already written are kept (in a concurrent batch the notebooks already
        running finish first); the next run resumes at this notebook.
    DistributedError
        The scheduler cannot be reached or the local cluster cannot start.
    """
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    workers = max(1, int(workers or 1))
    jobs = plan_run(data, reports=reports, workdir=workdir, methods=methods, quick=quick,
                    force=force, parameters=parameters, notebooks=notebooks,
                    source_dir=source_dir)
    reports = Path(reports).resolve()
    reports.mkdir(parents=True, exist_ok=True)
    log_dir = reports / LOG_DIR
    manifest = read_manifest(reports)
    manifest.update({"version": 1, "data": str(Path(data).resolve()),
                     "workdir": str(Path(workdir).resolve() if workdir is not None
                                    else default_workdir(data)),
                     "methods": list(methods or ()), "quick": budget_name(quick) == "quick",
                     "budget": budget_name(quick)})
    manifest["last_run"] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "jobs": [j.name for j in jobs], "status": "running",
                            "workers": workers}
    write_manifest(reports, manifest)
    _kernel_env()
    result = RunResult(jobs, reports, reports / MANIFEST_NAME, Path(data).resolve())
    todo = []
    for job in jobs:
        if not force and is_up_to_date(job, manifest):
            job.status = "skipped"
            log.info("%s: up to date, skipped", job.name)
        else:
            todo.append(job)
    bar = tqdm(total=len(jobs), desc="notebooks", unit="nb", disable=not progress,
               initial=len(jobs) - len(todo))

    def finished(job: Job, failure: NotebookFailed | None) -> None:
        _record_job(job, failure, manifest, reports, log_dir)
        if failure is not None and result.failed is None:
            result.failed = failure
        bar.update(1)

    with logging_redirect_tqdm(), bar, _batch_dask(scheduler, workers, todo) as client:
        if workers > 1 and len(todo) > 1:
            for job in todo:
                job.exclusive = trains_a_network(job)
            # on this machine's own cluster a job that runs alone runs as in a serial batch:
            # its kernel has every core and the model it just trained (sending its sections
            # to worker processes would only make them load the model again)
            from ..runner.cluster import SCHEDULER_ENV

            alone = {SCHEDULER_ENV: None} if _runs_here(client) else {}
            _run_concurrently(todo, workers, log_dir, kernel_name, finished, bar, alone)
        else:
            for job in todo:
                if result.failed is not None:
                    break
                bar.set_postfix_str(job.name)
                log.info("%s: running %s", job.name, job.source.name)
                try:
                    execute_job(job, log_dir, kernel_name=kernel_name)
                except NotebookFailed as failure:
                    finished(job, failure)
                else:
                    finished(job, None)
        if result.failed is None:
            manifest["last_run"]["status"] = "ok"
            manifest["last_run"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            write_manifest(reports, manifest)
    if result.failed is not None and raise_on_failure:
        raise result.failed
    return result


def _record_job(job: Job, failure: NotebookFailed | None, manifest: dict, reports: Path,
                log_dir: Path) -> None:
    """Record a finished job in the manifest (written at once, atomically)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    if failure is None:
        job.status = "ran"
        manifest["jobs"][job.name] = {
            "status": "ok", "key": job.key, "source": str(job.source),
            "output": job.output.name, "parameters": job.parameters,
            "seconds": round(job.seconds, 1), "finished": stamp,
            "log": str(log_dir / f"{job.name}.log")}
    else:
        job.status, job.error = "failed", str(failure)
        manifest["jobs"][job.name] = {
            "status": "failed", "key": job.key, "source": str(job.source),
            "error": failure.error, "cell": failure.cell, "seconds": round(job.seconds, 1),
            "finished": stamp, "log": str(failure.log_file)}
        if manifest["last_run"]["status"] == "running":
            manifest["last_run"]["status"] = f"failed at {job.name}"
    write_manifest(reports, manifest)


# ---------------------------------------------------------------------------- concurrent batch
def _job_budget(params: dict) -> str:
    """A job's training budget: its ``budget`` parameter, else ``quick`` (True: ``quick``)."""
    if params.get("budget"):
        return budget_name(params["budget"])
    return budget_name(bool(params.get("quick")))


def trains_a_network(job: Job) -> bool:
    """Whether ``job`` will train a network: a per-method job of a trainable method with no
    cached model (or ``-p force true``). When that cannot be told, True (it then runs alone)."""
    if not job.entry.trains:
        return False
    params = job.parameters
    method = str(params.get("method", ""))
    if method.startswith("external:"):
        return False
    if params.get("force"):
        return True
    try:
        from ..core.dataset import Dataset
        from ..segmenters.base import get_segmenter

        segmenter = get_segmenter(method, workdir=params.get("workdir", "data"),
                                  budget=_job_budget(params))
        dataset = Dataset(params["data"])
        return not segmenter.has_cached_model(dataset.sections(split="train"),
                                              dataset.sections(split="validation"))
    except Exception as error:  # noqa: BLE001 - only a scheduling hint
        log.debug("%s: cannot tell whether it trains (%s); it runs alone", job.name, error)
        return True


@contextlib.contextmanager
def _batch_dask(scheduler, workers: int, todo):
    """One Dask cluster for the whole batch: a LocalCluster of ``workers`` processes when no
    scheduler is given and ``workers > 1``; its address goes to the kernels as
    ``$NCLSM_SCHEDULER`` (so no notebook starts a cluster of its own)."""
    if not todo or (scheduler is None and workers <= 1):
        yield None
        return
    from ..runner.cluster import (SCHEDULER_ENV, WORKERS_ENV, dask_client, environment_kept,
                          scheduler_address)

    with dask_client(scheduler, workers) as client, \
            environment_kept({SCHEDULER_ENV: scheduler_address(client), WORKERS_ENV: None}):
        yield client


def _runs_here(client) -> bool:
    """Whether ``client``'s workers are processes of this machine (a LocalCluster)."""
    from distributed import LocalCluster

    return isinstance(getattr(client, "cluster", None), LocalCluster)


def _execute_in_child(job: Job, log_dir: Path, kernel_name: str,
                      environment: dict | None = None) -> dict:
    """:func:`execute_job` in a pool process, with ``environment`` changes for its kernel
    (see :func:`nclsm_utils.runner.cluster.environment_kept`); the outcome as a plain dict
    (picklable)."""
    from ..runner.cluster import environment_kept

    try:
        with environment_kept(environment):
            execute_job(job, log_dir, kernel_name=kernel_name)
    except NotebookFailed as failure:
        return {"seconds": job.seconds, "failure": (
            failure.job, str(failure.source), failure.cell, failure.error,
            str(failure.partial) if failure.partial else None,
            str(failure.log_file) if failure.log_file else None)}
    return {"seconds": job.seconds, "failure": None}


def next_jobs(pending: list, running: list, slots: int) -> list:
    """The jobs to start now, in table order: those whose ``needs`` are all finished, at most
    ``slots`` of them; a job with ``exclusive`` set starts only when nothing else runs, and
    nothing starts beside it.

    ``pending`` and ``running`` are lists of :class:`Job`.
    """
    if any(job.exclusive for job in running):
        return []
    unfinished = {job.entry.name for job in [*pending, *running]}
    ready = [job for job in pending if not (set(job.entry.needs) & unfinished)]
    light = [job for job in ready if not job.exclusive][:max(0, slots - len(running))]
    if light:
        return light
    if ready and not running:
        return ready[:1]
    return []


def _run_concurrently(todo, workers: int, log_dir: Path, kernel_name: str, finished,
                      bar, alone_environment: dict | None = None) -> None:
    """Run ``todo`` up to ``workers`` at a time in a process pool (see :func:`next_jobs`);
    after a failure no new job starts and the running ones finish. ``alone_environment``:
    environment changes for the kernels of exclusive jobs."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pending, running, failed = list(todo), {}, False
    context = multiprocessing.get_context("spawn")  # no fork of a process with Dask threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        while pending or running:
            if not failed:
                for job in next_jobs(pending, list(running.values()), workers):
                    pending.remove(job)
                    log.info("%s: running %s%s", job.name, job.source.name,
                             " (alone: it trains a network)" if job.exclusive else "")
                    environment = alone_environment if job.exclusive else None
                    running[pool.submit(_execute_in_child, job, log_dir, kernel_name,
                                        environment)] = job
            if not running:
                break
            bar.set_postfix_str(", ".join(job.name for job in running.values()))
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                try:
                    outcome = future.result()
                except Exception as error:  # noqa: BLE001 - the pool process died
                    outcome = {"seconds": 0.0, "failure": (
                        job.name, str(job.source), "execution",
                        f"{type(error).__name__}: {error}", None, str(log_dir / f"{job.name}.log"))}
                job.seconds = outcome["seconds"]
                failure = outcome["failure"]
                if failure is not None:
                    name, source, cell, error, partial, log_file = failure
                    failure = NotebookFailed(name, Path(source), cell, error,
                                             Path(partial) if partial else None,
                                             Path(log_file) if log_file else None)
                    failed = True
                finished(job, failure)


