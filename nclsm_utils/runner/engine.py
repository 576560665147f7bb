"""The one engine: fit, predict, score and summarise methods over sections; resumable.

:func:`run_methods` runs several methods, :func:`run_method` one (the same code). Serial is
the same code with no Dask client; a cluster spreads the (method, section) tasks:

1. each method is fitted once, in this (the client) process: a trainable method trains or
   loads its cached model under ``<workdir>/models/``;
2. one task per (method, section) predicts the section (cached under
   ``<workdir>/predictions/``) and evaluates it (per-fibre paper metrics and instance
   metrics). On a cluster, every worker loads the cached model once and never trains;
3. the client writes each section's per-fibre table as soon as its task finishes and
   records it in the run manifest ``<workdir>/results/manifest.json``; at the end it writes
   each method's summary, instance-metrics csv and run record exactly as ``run_method``
   does.

Where the tasks run:

* ``workers=1`` and no ``scheduler`` (default): in this process, one after the other;
* ``workers=N > 1``: a :class:`distributed.LocalCluster` of N single-threaded worker
  processes, started and stopped by the call;
* ``scheduler="tcp://host:8786"``: an existing Dask scheduler (its workers must import
  ``nclsm_utils`` and see ``dataset_root`` and ``workdir`` at the same paths); also a
  :class:`distributed.Client` or a cluster object (``LocalCluster``,
  ``dask_jobqueue.SLURMCluster``), which is used and left running.

The tables are the same wherever the tasks run: every section is evaluated by the same code
and the per-section tables are pooled in the sections' order, not in the order the tasks
finish (``tests/test_distributed.py`` compares a two-worker run with ``run_method`` byte by
byte).

Resume
------
Every per-fibre csv has a manifest record with the hashes of what made it: the section's
input files (content SHA-1 of the image and myofibre mask, and of an external method's mask
file), the method's parameter/model key (:meth:`Segmenter.cache_key`), the code of the
metrics and segmenter modules, and the csv's own SHA-1. A record is written only after its
csv, both atomically, so after a kill (or a crash, or Ctrl-C) the next call redoes only the
sections whose csv is missing, changed or stale (an input, a parameter or the code changed)
and reads the others back. ``force=True`` redoes everything. A failing section does not stop
the others: its error is in ``RunResult.errors``, in the run record and in the log at the end.

Scripts that start a local cluster (``workers > 1``) must guard their entry point with
``if __name__ == "__main__":``: the worker processes are spawned and import the main module
(notebooks and the ``nclsm`` command need nothing).

Example
-------
>>> from nclsm_utils.runner import run_method, run_methods
>>> run_method("mitocyto", "data/synthetic").summary                    # doctest: +SKIP
>>> runs = run_methods(["mitocyto", "unet"], "data/synthetic", workers=2)   # doctest: +SKIP
>>> runs["mitocyto"].summary                                                # doctest: +SKIP
>>> runs = run_methods(["mitocyto"], "data/synthetic",
...                    scheduler="tcp://head-node:8786")                   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core import manifest as manifest_file
from .cluster import dask_client
from ..core.io import DataError, write_csv, write_text
from ..segmenters.base import (Segmenter, SegmenterError, budget_name, get_segmenter,
                               method_label)
from ..core.workdir import Workdir
from ..core.errors import one_line
from .results import (RunResult, _choose_sections, _merge_instance_csv, _summary,
                      evaluate_section)

log = logging.getLogger(__name__)

#: Modules whose source enters every output's key (a change there recomputes the tables).
_CODE_MODULES = ("nclsm_utils.metrics", "nclsm_utils.segmenters.base", "nclsm_utils.runner",
                 "nclsm_utils.core.dataset", "nclsm_utils.core.imaging")


@dataclass
class MethodRun(RunResult):
    """A :class:`~nclsm_utils.runner.RunResult` plus what the batch did.

    Extra attributes
    ----------------
    ran : list of str
        Section keys computed in this call.
    reused : list of str
        Section keys whose up-to-date per-fibre csv was read back from an earlier run.
    error : str
        Why the method could not run at all ('' when it ran).
    seconds : float
        Wall time of the method's fit plus its share of the batch.
    """

    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


# ---------------------------------------------------------------------------- hashing
def code_fingerprint(segmenter=None) -> str:
    """SHA-1 (16 hex) of the sources that make a per-fibre table: metrics, the segmenter base,
    run and data modules, this module and the segmenter's own module."""
    import importlib

    names = list(_CODE_MODULES)
    if segmenter is not None:
        names.append(type(segmenter).__module__)
    digest = hashlib.sha1()
    for name in sorted(set(names)):
        module = importlib.import_module(name)
        source = getattr(module, "__file__", None)
        if not source or not Path(source).is_file():
            continue
        # a package (nclsm_utils.metrics) counts with every module in it
        files = (sorted(Path(source).parent.rglob("*.py")) if hasattr(module, "__path__")
                 else [Path(source)])
        for path in files:
            digest.update(f"{name}:{path.name}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------- manifest
_SECTIONS = ("outputs", "files")


def manifest_path(workdir) -> Path:
    """``<workdir>/results/manifest.json``."""
    return Workdir(workdir).results_manifest


def read_manifest(workdir) -> dict:
    """The run manifest of ``workdir`` (an empty one when missing or unreadable)."""
    return manifest_file.read(manifest_path(workdir), _SECTIONS)


def update_manifest(workdir, outputs: dict | None = None, files: dict | None = None,
                    remove=()) -> Path:
    """Merge output records (and the digest cache) into the manifest; written atomically."""
    path = manifest_path(workdir)
    manifest_file.update(path, _SECTIONS, remove={"outputs": list(remove)},
                         outputs=outputs or {}, files=files or {})
    return path


# ---------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class SectionTask:
    """Everything a worker needs to predict and evaluate one section (picklable)."""

    method: str
    label: str
    params: object
    quick: bool
    workdir: str
    root: str
    roles: dict
    splits: dict
    section: str
    force: bool
    state: dict          # the client's fitted state: key, diameters, train keys, source
    token: str           # one per run_methods call: a worker reloads models once per call


def worker_cache() -> dict:
    """The cache of the Dask worker running this task (datasets and fitted segmenters, keyed
    by the call token), kept on the worker object; a fresh dict outside a worker. There is no
    module-level state: an in-process run passes its segmenters and dataset explicitly."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):   # not in a Dask worker
        return {}
    cache = getattr(worker, "_nclsm_cache", None)
    if cache is None:
        cache = worker._nclsm_cache = {}
    return cache


def _worker_dataset(task: SectionTask, cache: dict):
    from ..core.dataset import Dataset

    key = ("dataset", task.token)
    if key not in cache:
        cache[key] = Dataset(task.root, roles=task.roles or None, splits=task.splits)
    return cache[key]


def _worker_segmenter(task: SectionTask, dataset, cache: dict):
    """The fitted segmenter of ``task`` in this worker: built once per call and method, with
    the client's fitted state; a trainable method only loads the client's cached model."""
    key = ("segmenter", task.token, task.method)
    if key in cache:
        return cache[key]
    for stale in [k for k in cache if k[1] != task.token]:
        del cache[stale]  # a new call: models of earlier calls may have been refitted
    segmenter = get_segmenter(task.method, params=task.params, workdir=task.workdir,
                              quick=task.quick)
    segmenter.diameters = dict(task.state["diameters"])
    train = [s for s in dataset.sections(split="train")]
    if sorted(s.key for s in train) != list(task.state["train"]):
        raise SegmenterError(f"{task.label}: this worker sees other training sections in "
                             f"{task.root} than the client; workers must see the same data")
    if segmenter.trainable:
        segmenter.train_ids = list(task.state["train"])
        marker = segmenter.model_dir / "model.json"
        if not marker.is_file():
            raise SegmenterError(f"{task.label}: fitted model {marker} not found on this worker; "
                                 "the workdir must be on a file system the workers share")
    segmenter.fit(train, force=False, **_validation(segmenter, dataset))
    if segmenter.cache_key() != task.state["key"]:
        raise SegmenterError(f"{task.label}: the worker's model key {segmenter.cache_key()} "
                             f"differs from the client's {task.state['key']}; the workers need "
                             "the same nclsm_utils and package versions as the client")
    cache[key] = segmenter
    return segmenter


def _validation(segmenter, dataset) -> dict:
    """``fit``'s ``validation`` keyword for a method that uses the validation split
    (``uses_validation``), else nothing (a user's segmenter may not take it)."""
    if getattr(segmenter, "uses_validation", False):
        return {"validation": dataset.sections(split="validation")}
    return {}


def run_section_task(task: SectionTask, segmenter=None, dataset=None) -> dict:
    """Run one :class:`SectionTask` (in a Dask worker, or in this process with the fitted
    ``segmenter`` and the ``dataset`` passed in).

    Returns a dict: ``table`` (DataFrame or None), ``instance`` (DataFrame or None),
    ``note``, ``error`` ('' or a one-line message), ``fatal`` (the method cannot run at all),
    ``seconds``.
    """
    start = time.perf_counter()
    out = {"section": task.section, "table": None, "instance": None, "note": "", "error": "",
           "fatal": False}
    try:
        if segmenter is None or dataset is None:
            cache = worker_cache()
            dataset = _worker_dataset(task, cache)
            segmenter = _worker_segmenter(task, dataset, cache)
        section = dataset.section(task.section)
        out["table"], out["instance"], out["note"] = evaluate_section(
            segmenter, section, task.label, force=task.force)
    except SegmenterError as error:
        out.update(error=one_line(error), fatal=True)
    except Exception as error:  # noqa: BLE001 - one bad section must not stop the others
        out["error"] = one_line(error)
    out["seconds"] = time.perf_counter() - start
    return out


# ---------------------------------------------------------------------------- the batch
@dataclass
class _Plan:
    method: str
    segmenter: object
    label: str
    result: MethodRun
    chosen: list
    state: dict
    code: str
    keys: dict = field(default_factory=dict)       # section key -> input/param key
    records: dict = field(default_factory=dict)    # section key -> manifest record
    tables: dict = field(default_factory=dict)     # section key -> DataFrame
    instance: dict = field(default_factory=dict)   # section key -> DataFrame or None
    fatal: str = ""


def _output_name(label: str, section) -> str:
    return Workdir.result_name(label, section.modality, section.id)


def _read_table(path: Path) -> pd.DataFrame:
    """A per-fibre csv written by this module, read back with the dtypes ``evaluate`` gives."""
    from ..metrics import _PER_FIBRE_DTYPES

    # exact float round trip: pandas >= 3 by default, older pandas with "round_trip"
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    table = pd.read_csv(path, dtype={"method": str, "modality": str, "section": str}, **exact)
    return table.astype({c: t for c, t in _PER_FIBRE_DTYPES.items() if c in table.columns})


def _instance_from_records(rows, columns):
    if rows is None:
        return None
    return pd.DataFrame(rows, columns=columns)


def _up_to_date(record, key: str, path: Path) -> bool:
    if not record or record.get("key") != key or not path.is_file():
        return False
    try:
        return manifest_file.sha1_file(path) == record.get("sha1")
    except OSError:
        return False


def run_methods(methods, dataset_root, split: str = "test", workdir="data", scheduler=None,
                workers: int = 1, quick: bool = False, sections=None, force: bool = False,
                params: dict | None = None, roles=None, progress: bool = True,
                strict: bool = False) -> dict[str, MethodRun]:
    """Fit, predict and evaluate several methods, optionally on a Dask cluster; resumable.

    Parameters
    ----------
    methods : str, Segmenter or a sequence of them
        Registered names (``mitocyto``, ``cellpose``, ...), ``external:<folder>`` or
        constructed segmenters (run with their own params; keyed by their label).
    dataset_root : path-like or Dataset
        The NCL-SM (or synthetic) folder.
    split : str
        Sections to run when ``sections`` is None (default ``test``).
    workdir : path-like
        Models, predictions, ``results/`` and the manifest go here (shared by the workers).
    scheduler : str, Client or cluster, optional
        A Dask scheduler address (``tcp://host:8786``), Client or cluster object.
    workers : int
        Without ``scheduler``: 1 runs in this process, N > 1 starts a LocalCluster of N
        single-threaded worker processes.
    quick : bool or str
        The training budget: True / False or a name of
        :data:`~nclsm_utils.segmenters.base.BUDGETS` (True is ``"quick"``, a smoke run;
        False ``"report"``).
    sections : list of str, optional
        Section ids (any split) instead of ``split``.
    force : bool
        Refit, re-predict and re-evaluate everything (ignore caches and the manifest).
    params : dict, optional
        Method name -> params dataclass or dict.
    roles : path-like or dict, optional
        Role-folder overrides (as for :class:`~nclsm_utils.dataset.Dataset`).
    progress : bool
        A tqdm bar over the tasks.
    strict : bool
        Raise :class:`SegmenterError` when a method cannot run at all (as ``run_method``
        does) instead of recording it in the result's ``error``.

    Returns
    -------
    dict
        Method (as given) -> :class:`MethodRun` (a ``RunResult``: ``tables``, ``summary``,
        ``errors``, ``instance``, ``paths``; plus ``ran``, ``reused``, ``error``).

    Raises
    ------
    ValueError
        An unknown method (before any work).
    DataError
        The data folder does not exist, has no sections in ``split``, or an unknown section.
    DistributedError
        The scheduler cannot be reached or the local cluster cannot start.
    OSError
        ``workdir`` cannot be written (the message names the folder).
    """
    from ..core.dataset import Dataset

    if isinstance(methods, str):
        methods = [methods]
    dataset = dataset_root if isinstance(dataset_root, Dataset) else Dataset(dataset_root,
                                                                             roles=roles)
    workdir = Path(workdir)
    _check_writable(Workdir(workdir).results)
    params = dict(params or {})
    segmenters = {}
    for method in methods:  # an unknown method fails here, before any work
        if isinstance(method, Segmenter):
            method.workdir = workdir
            key = method_label(method)
            params.setdefault(key, method.params)
            segmenters.setdefault(key, method)
        elif str(method) not in segmenters:
            segmenters[str(method)] = get_segmenter(str(method), params=params.get(str(method)),
                                                    workdir=workdir, quick=quick)
    if not segmenters:
        raise ValueError("no methods given")
    methods = list(segmenters)
    chosen = _choose_sections(dataset, split, sections)
    token = uuid.uuid4().hex
    with dask_client(scheduler, workers) as client:
        # the workers import and compile while this process fits (keep the futures alive)
        warming = _warm_up_workers(client, chosen, methods) if client is not None else []
        plans = _fit_and_plan(segmenters, dataset, chosen, workdir, force, strict)
        todo = [(plan, section) for plan in plans if not plan.fatal for section in chosen
                if section.key not in plan.tables]
        _run_tasks(client, plans, todo, dataset, workdir, params, quick, force, token,
                   progress, warming)
        del warming

    runs = {plan.method: _finish(plan, workdir, split, quick) for plan in plans}
    # the failures, together at the end of the log (they were also logged as they happened)
    for run in runs.values():
        for key, message in run.errors.items():
            log.error("%s %s failed: %s", run.method, key, message)
        if run.error:
            log.error("%s", run.error)
    fatal = [run.error for run in runs.values() if run.error]
    if strict and fatal:
        raise SegmenterError("; ".join(fatal))
    return runs


def run_method(method, dataset, split: str = "test", sections=None, workdir="data",
               quick: bool = False, force: bool = False, params=None, progress: bool = True,
               scheduler=None, workers: int = 1) -> MethodRun:
    """Fit ``method`` on the train split when needed, predict and evaluate sections: one
    method through :func:`run_methods` (resumable; serial unless ``scheduler``/``workers``).

    Parameters
    ----------
    method : str or Segmenter
        A registered name (``mitocyto``, ``cellpose``, ...), ``external:<folder>`` or a
        constructed segmenter.
    dataset : Dataset or path-like
    split : str
        Sections to predict when ``sections`` is None (default ``test``).
    sections : list of str, optional
        Section ids (``P02`` or ``IMC/P02``), any split.
    workdir : path-like
        Where models, predictions and results go.
    quick : bool or str
        The training budget: True / False or a name of
        :data:`~nclsm_utils.segmenters.base.BUDGETS` (True is ``"quick"``, a smoke run;
        False ``"report"``).
    force : bool
        Refit, re-predict and re-evaluate even when cached.
    params : dataclass or dict, optional
        The method's params.
    progress : bool
        A tqdm bar over the sections.
    scheduler, workers
        As for :func:`run_methods` (default: in this process).

    Returns
    -------
    MethodRun
        A failing section is recorded in ``errors`` and the others complete.

    Raises
    ------
    ValueError
        Unknown method (the message lists the known ones).
    SegmenterError
        The method cannot run at all (e.g. pretrained weights unavailable offline); one line.
    DataError
        No sections to predict, an unknown section id, or no training sections.
    """
    key = method_label(method) if isinstance(method, Segmenter) else str(method)
    runs = run_methods([method], dataset, split=split, workdir=workdir, scheduler=scheduler,
                       workers=workers, quick=quick, sections=sections, force=force,
                       params=None if params is None else {key: params}, progress=progress,
                       strict=True)
    return runs[key]


#: The keys of ``results/<label>_run.json``, in order (one schema for every writer).
RUN_RECORD_KEYS = ("method", "label", "split", "quick", "budget", "status", "source", "sections",
                   "errors", "error", "ran", "reused", "seeds", "seconds", "finished")
_RECORD_DEFAULTS = {"sections": [], "errors": {}, "error": "", "ran": [], "reused": [],
                    "seeds": {}, "source": "", "status": "failed"}


def write_run_record(workdir, label: str, record: dict) -> Path:
    """Write ``results/<label>_run.json`` with the keys :data:`RUN_RECORD_KEYS` (missing
    ones get their empty default; unknown keys are an error)."""
    unknown = set(record) - set(RUN_RECORD_KEYS)
    if unknown:
        raise ValueError(f"unknown run-record keys {sorted(unknown)}")
    full = {key: record.get(key, _RECORD_DEFAULTS.get(key)) for key in RUN_RECORD_KEYS}
    return write_text(Workdir(workdir).run_record(label), json.dumps(full, indent=2))


def _fit_and_plan(segmenters, dataset, chosen, workdir: Path, force: bool,
                  strict: bool) -> list[_Plan]:
    """Fit every method here (train or load the cached model) and read back the sections
    whose manifest record is up to date."""
    train = dataset.sections(split="train")
    manifest = read_manifest(workdir)
    digests = manifest_file.FileDigests(manifest.get("files"))
    plans: list[_Plan] = []
    for method, segmenter in segmenters.items():
        label = method_label(segmenter)
        start = time.perf_counter()
        result = MethodRun(method=label, source=segmenter.source)
        plan = _Plan(method, segmenter, label, result, chosen, {}, "")
        plans.append(plan)
        try:
            segmenter.fit(train, force=force, **_validation(segmenter, dataset))
        except (SegmenterError, DataError) as error:  # DataError: e.g. no train sections
            plan.fatal = f"{label} cannot run: {one_line(error)}"
            if strict:
                raise (DataError if isinstance(error, DataError) else SegmenterError)(
                    plan.fatal) from error
            log.error("%s", plan.fatal)
            continue
        finally:
            result.source = segmenter.source
            result.seconds = time.perf_counter() - start
        plan.state = {"key": segmenter.cache_key(), "diameters": dict(segmenter.diameters),
                      "train": sorted(s.key for s in train), "source": segmenter.source}
        plan.code = code_fingerprint(segmenter)
        for section in chosen:
            plan.keys[section.key] = _section_key(plan, section, digests)
            name = _output_name(label, section)
            path = Workdir(workdir).results / name
            record = manifest["outputs"].get(name)
            if force or not _up_to_date(record, plan.keys[section.key], path):
                continue
            try:
                plan.tables[section.key] = _read_table(path)
            except Exception as error:  # noqa: BLE001 - unreadable: recompute it
                log.warning("%s: cannot read it back (%s); recomputing", path, error)
                continue
            plan.instance[section.key] = _instance_from_records(
                record.get("instance"), record.get("instance_columns"))
            plan.records[section.key] = record
            result.reused.append(section.key)
    update_manifest(workdir, files=digests.known)
    reused = sum(len(p.result.reused) for p in plans)
    if reused:
        log.info("%d section result(s) up to date in %s are reused", reused,
                 manifest_path(workdir))
    return plans


def _run_tasks(client, plans, todo, dataset, workdir: Path, params: dict, quick: bool,
               force: bool, token: str, progress: bool, warming=()) -> None:
    """Run the (method, section) tasks here or on the cluster; record each as it finishes."""
    from tqdm.auto import tqdm

    def size(item):  # largest sections first: the slowest tasks start early
        try:
            return -int(np.prod(item[1].shape()))
        except Exception:  # noqa: BLE001 - a bad file fails in its task, with its message
            return 0

    todo = sorted(todo, key=size)
    # absolute paths: a worker's working folder need not be this process's (a notebook kernel
    # runs in notebooks/, the cluster's workers where the batch was started)
    tasks = [SectionTask(plan.method, plan.label, params.get(plan.method), quick,
                         str(Path(workdir).resolve()), str(Path(dataset.root).resolve()),
                         dict(dataset.role_overrides), dict(dataset.splits),
                         section.key, force, plan.state, token)
             for plan, section in todo]
    by_task = {(plan.method, section.key): (plan, section) for plan, section in todo}
    with tqdm(total=len(tasks), desc="sections", unit="task", disable=not progress) as bar:
        if client is None:   # in this process: the fitted segmenters, passed explicitly
            fitted = {plan.method: plan.segmenter for plan in plans}
            finished = ((task, run_section_task(task, fitted[task.method], dataset))
                        for task in tasks)
        else:
            if tasks:
                log.info("running %d task(s) on %s", len(tasks), client)
            finished = _dask_results(client, tasks, warming)
        for task, outcome in finished:
            plan, section = by_task[(task.method, task.section)]
            bar.update(1)
            bar.set_postfix_str(f"{plan.label} {section.key}")
            plan.result.seconds += outcome.get("seconds", 0.0)
            if outcome["error"]:
                if outcome["fatal"]:
                    plan.fatal = plan.fatal or f"{plan.label} cannot run: {outcome['error']}"
                _record_failure(plan, section, workdir, outcome["error"])
                continue
            _record_success(plan, section, workdir, outcome)


def _mask_dtype(section) -> str | None:
    """The dtype of a section's myofibre mask from its TIFF header (None when unknown)."""
    try:
        path = section.path("myofibres")
        if path.suffix.lower() not in (".tif", ".tiff"):
            return None
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return str(tif.series[0].dtype)
    except Exception:  # noqa: BLE001 - only a hint for the warm-up
        return None


def warm_up(mask_dtypes=(), methods=()) -> bool:
    """Pay a worker's first-call costs: imports, a tiny evaluation per mask dtype and, for
    methods that need no model, a tiny prediction. Run on every worker while the client fits
    the methods."""
    from .. import metrics

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    for dtype in dict.fromkeys(list(mask_dtypes) or ["uint16"]):
        try:
            gt = np.zeros((48, 48), dtype)
            gt[4:20, 4:20] = 1
            pred = np.zeros((48, 48), np.uint32)
            pred[6:22, 4:20] = 1
            metrics.evaluate(gt, pred, image, half_width=2)
            metrics.instance_metrics(gt, pred, [0.5])
        except Exception:  # noqa: BLE001 - an odd dtype: the tasks will say
            break
    for method in methods:
        if str(method).startswith("external:"):
            continue
        try:
            segmenter = get_segmenter(method)
            if not segmenter.trainable:
                segmenter.predict(image, modality="IMC")
        except Exception:  # noqa: BLE001 - only a warm-up
            continue
    return True


def _worker_threads(client) -> dict:
    try:
        return dict(client.nthreads())
    except Exception:  # noqa: BLE001 - a scheduler that went away: the tasks will fail
        return {}


def _warm_up_workers(client, chosen, methods) -> list:
    dtypes = [d for d in (_mask_dtype(s) for s in chosen[:8]) if d]
    futures = []
    for address in _worker_threads(client):
        try:
            futures.append(client.submit(
                warm_up, dtypes, list(methods), workers=[address], allow_other_workers=False,
                pure=False, key=f"nclsm-warm-up-{uuid.uuid4().hex}"))
        except Exception as error:  # noqa: BLE001 - an optimisation only
            log.debug("worker warm-up skipped: %s", error)
    return futures


def _dask_results(client, tasks, warming=(), warm_up_timeout: float = 300.0):
    """Run the tasks on the cluster, largest first; yield ``(task, outcome)`` as they finish
    (a lost worker or a task that raised becomes that section's error).

    Tasks are handed out as workers free up (as many in flight as the cluster has threads),
    so one slow full-size section does not hold back a queue of others behind it and every
    worker stays busy; the workers' warm-ups finish first (bounded by ``warm_up_timeout``).
    """
    from distributed import as_completed, wait

    if warming:
        try:
            wait(list(warming), timeout=warm_up_timeout)
        except Exception:  # noqa: BLE001 - TimeoutError: slow workers warm up in their tasks
            pass
    pending = list(tasks)
    pending.reverse()                     # pop() takes the largest section first
    futures: dict = {}
    queue = as_completed()

    def fill():
        capacity = max(1, sum(_worker_threads(client).values()))
        while pending and len(futures) < capacity:
            task = pending.pop()
            future = client.submit(run_section_task, task, pure=False, retries=0,
                                   key=f"nclsm-{task.label}-{task.section}-{task.token[:8]}")
            futures[future] = task
            queue.add(future)

    try:
        fill()
        for future in queue:
            task = futures.pop(future)
            try:
                outcome = future.result()
            except Exception as error:  # noqa: BLE001 - KilledWorker, unpickling ...
                outcome = {"section": task.section, "table": None, "instance": None,
                           "note": "", "fatal": False, "seconds": 0.0,
                           "error": f"task failed on the cluster: {type(error).__name__}: "
                                    f"{' '.join(str(error).split())}"}
            future.release()
            fill()                        # hand out the next task before recording this one
            yield task, outcome
    finally:
        for future in futures:
            future.cancel()


def _section_key(plan: _Plan, section, digests) -> str:
    inputs = {}
    for role in ("image", "myofibres"):
        if section.has(role):
            try:
                inputs[role] = digests(section.path(role))
            except OSError:  # vanished or unreadable: its task reports it, naming the file
                inputs[role] = "unreadable"
    finder = getattr(plan.segmenter, "find_mask", None)
    if finder is not None:  # external masks: the mask file is an input too
        try:
            inputs["external"] = digests(finder(section))
        except Exception:  # noqa: BLE001 - missing mask: the task reports it
            inputs["external"] = "missing"
    return manifest_file.sha({"inputs": inputs, "method": plan.label, "params": plan.state["key"],
                 "code": plan.code, "section": section.key})[:20]


def _record_success(plan: _Plan, section, workdir: Path, outcome: dict) -> None:
    table, instance = outcome["table"], outcome["instance"]
    name = _output_name(plan.label, section)
    path = write_csv(Workdir(workdir).results / name, table)
    record = {"method": plan.label, "section": section.key, "key": plan.keys[section.key],
              "params": plan.state["key"], "code": plan.code,
              "inputs": {r: str(section.path(r)) for r in ("image", "myofibres") if section.has(r)},
              "sha1": manifest_file.sha1_file(path), "rows": int(len(table)),
              "seconds": round(float(outcome.get("seconds", 0.0)), 3),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "instance": None if instance is None else instance.to_dict("records"),
              "instance_columns": None if instance is None else list(instance.columns),
              "instance_note": outcome.get("note", "")}
    update_manifest(workdir, outputs={name: record})
    plan.tables[section.key] = table
    plan.instance[section.key] = instance
    plan.records[section.key] = record
    plan.result.ran.append(section.key)


def _record_failure(plan: _Plan, section, workdir: Path, message: str) -> None:
    plan.result.errors[section.key] = message
    log.error("%s %s: %s", plan.label, section.key, message)
    name = _output_name(plan.label, section)
    stale = Workdir(workdir).results / name
    if stale.is_file():  # an earlier run's table would pass for this run's result
        stale.unlink()
        log.warning("%s: removed the earlier per-fibre table of %s", stale, section.key)
    update_manifest(workdir, remove=[name])


def _finish(plan: _Plan, workdir: Path, split: str, quick: bool) -> MethodRun:
    """Summary, instance csv and run record of one method, as ``run_method`` writes them."""
    from .. import metrics

    result = plan.result
    result.error = plan.fatal
    work = Workdir(workdir)
    if plan.fatal and not plan.tables and not result.errors:
        result.summary = _summary(result, metrics, plan.chosen, [])
    else:
        # the sections' order, not the tasks' finishing order: pooled sums are then the same
        ordered = [s for s in plan.chosen if s.key in plan.tables]
        result.tables = {s.key: plan.tables[s.key] for s in ordered}
        result.paths = {s.key: work.results / _output_name(plan.label, s) for s in ordered}
        instance_tables = [plan.instance[s.key] for s in ordered
                           if plan.instance.get(s.key) is not None]
        result.summary = _summary(result, metrics, plan.chosen, instance_tables)
        write_csv(work.summary_path(plan.label), result.summary)
        per_section = None
        if instance_tables:
            per_section = pd.concat(instance_tables, ignore_index=True)
            per_section.insert(0, "method", plan.label)
            pooled = metrics.aggregate_instance_metrics(instance_tables).assign(
                section="all", modality="all")
            pooled.insert(0, "method", plan.label)
            result.instance = pd.concat([per_section, pooled], ignore_index=True)
        failed = {tuple(key.split("/", 1)) for key in result.errors}
        if instance_tables or failed:
            _merge_instance_csv(work.instance_path(plan.label), per_section, failed)
    status = "failed" if plan.fatal and not result.tables else (
        "ok" if not result.errors and not plan.fatal else "partial")
    record = {"method": plan.method, "label": plan.label, "split": split,
              "quick": budget_name(quick) == "quick", "budget": budget_name(quick),
              "sections": sorted(result.tables), "errors": dict(result.errors),
              "error": plan.fatal, "source": result.source, "status": status,
              "ran": sorted(result.ran), "reused": sorted(result.reused),
              "seconds": round(result.seconds, 1),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_run_record(workdir, plan.label, record)
    return result


def _check_writable(folder: Path) -> None:
    """Create ``folder`` or raise an OSError naming it (a path under a file, no permission)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(error.errno, f"{folder}: cannot create the output folder "
                                   f"({error.strerror}); choose a writable --workdir") from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OSError(13, f"{folder}: the output folder is not writable; choose another "
                          "--workdir")


__all__ = ["run_method", "run_methods", "MethodRun", "SectionTask", "run_section_task",
           "read_manifest", "update_manifest", "manifest_path", "code_fingerprint",
           "write_run_record", "RUN_RECORD_KEYS"]
