"""The report: default data, the notebook batch, the site; and one method's run record.

``make report`` calls :func:`build_report` = :func:`resolve_data` +
:func:`nclsm_utils.report.notebooks.run_notebooks` + :func:`nclsm_utils.report.site.build_site`. The batch
itself (the one notebook list, planning, the run manifest, papermill) is
:mod:`nclsm_utils.report.notebooks`; its names are importable from here too, as before.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..core.dataset import Dataset, find_ncl_sm
from .notebooks import (DEFAULT_METHODS, KERNEL_NAME, LOG_DIR, MANIFEST_NAME,  # noqa: F401
                        NOTEBOOKS, Job, NotebookEntry, NotebookFailed, PipelineError, RunError,
                        RunResult, code_fingerprint, data_fingerprint, declared_parameters,
                        execute_job, is_up_to_date, job_slug, next_jobs, notebook_source_hash,
                        notebooks_dir, plan_run, project_root, read_manifest, reads_fingerprint,
                        run_notebooks, trains_a_network, write_manifest)
from ..core.workdir import SYNTHETIC_DIR, default_workdir  # noqa: F401

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- default data
def resolve_data(data_dir="data", seed: int = 0, preset: str = "default", client=None) -> Path:
    """The dataset root to use: NCL-SM found in ``data_dir``, else the synthetic default.

    The synthetic dataset is generated into ``data_dir/synthetic`` when missing (idempotent;
    by the workers of ``client``, a Dask client, when given).
    """
    data_dir = Path(data_dir)
    if data_dir.is_dir() and data_dir.name != SYNTHETIC_DIR:
        root = find_ncl_sm(data_dir)
        if root is not None:
            log.info("using NCL-SM in %s", root)
            return root
    elif data_dir.name == SYNTHETIC_DIR or find_ncl_sm(data_dir) is not None:
        return data_dir
    from ..synth import SynthConfig, default_workers, write_dataset

    out = data_dir / SYNTHETIC_DIR if data_dir.name != SYNTHETIC_DIR else data_dir
    log.info("no NCL-SM in %s: using the synthetic default dataset %s", data_dir, out)
    return write_dataset(out, SynthConfig.preset(preset), seed=seed, client=client,
                         workers=default_workers())


def open_notebook(data="data", reports="reports"):
    """What every notebook does first: the dataset (:func:`resolve_data`) and the reports
    folder (created), with pandas showing up to 30 columns at 3 decimals.

    Returns
    -------
    (Dataset, Path)
    """
    import pandas as pd

    pd.set_option("display.max_columns", 30)
    pd.set_option("display.precision", 3)
    reports = Path(reports)
    reports.mkdir(parents=True, exist_ok=True)
    return Dataset(resolve_data(data)), reports


def method_list(methods) -> list[str]:
    """A notebook's ``methods`` parameter as a list: a list as it is, ``"a,b"`` split.

    >>> method_list("mitocyto, unet"), method_list(["cellpose"])
    (['mitocyto', 'unet'], ['cellpose'])
    """
    if isinstance(methods, str):
        return [m.strip() for m in methods.split(",") if m.strip()]
    return list(methods)


# ---------------------------------------------------------------------------- one method
def segment_method(method: str, dataset, split: str = "test", workdir="data", quick: bool = False,
                   force: bool = False, sections=None, progress: bool = True,
                   scheduler=None, workers=None, seeds: int = 1):
    """Fit, predict and evaluate one method (:func:`nclsm_utils.runner.run_method`, on Dask
    when ``scheduler`` or ``workers`` > 1 say so) and
    record how it went in ``<workdir>/results/<label>_run.json``
    (:func:`nclsm_utils.runner.write_run_record`).

    A method that cannot run at all (missing weights offline, a missing optional package, no
    training sections) does not raise: the record says why and Table III shows it.

    With ``seeds`` > 1 a trained method is trained and scored again with training seeds
    ``seed + 1`` ... ``seed + seeds - 1``, each in its own work directory
    (:func:`nclsm_utils.report.tables.seed_workdir`: ``<workdir>/seeds/seed<k>/``, models cached
    there), one after the other; Table III then reports the spread across seeds. A method
    without training (mitocyto, external masks) runs once.

    Returns
    -------
    (RunResult or None, dict)
        The run's result (None when the method could not run) and the status record:
        ``method``, ``label``, ``status`` (``ok``, ``partial`` or ``failed``), ``source``,
        ``error``, ``errors`` (per section), ``sections``, ``quick``, ``budget``, ``seconds``.

    ``quick``: the training budget, True / False or a name of
    :data:`~nclsm_utils.segmenters.base.BUDGETS` (True is ``"quick"``, False ``"report"``).
    """
    from ..runner.cluster import dask_settings
    from ..core.io import DataError
    from ..runner import run_method, write_run_record
    from ..segmenters.base import SegmenterError, budget_name, method_label

    if int(seeds) < 1:
        raise RunError(f"seeds must be >= 1, got {seeds}")
    label = method_label(method)
    start = time.perf_counter()
    budget = budget_name(quick)
    record = {"method": str(method), "label": label, "split": split, "quick": budget == "quick",
              "budget": budget, "sections": [], "errors": {}, "error": "", "source": ""}
    result = None
    try:
        # Dask (scheduler address, or workers > 1; the notebook resolves $NCLSM_SCHEDULER,
        # which `nclsm run --workers/--scheduler` sets to its batch's cluster): the same
        # tables, resumable per section
        scheduler, workers = dask_settings(scheduler, workers)
        result = run_method(method, dataset, split=split, sections=sections, workdir=workdir,
                            quick=quick, force=force, progress=progress, scheduler=scheduler,
                            workers=workers)
    except (SegmenterError, DataError, ImportError) as error:
        text = " ".join(str(error).split())
        record.update(status="failed", error=text if isinstance(error, (SegmenterError, DataError))
                      else f"{type(error).__name__}: {text}")
        log.error("%s could not run: %s", label, record["error"])
    else:
        record.update(status="ok" if result.ok else "partial", source=result.source,
                      errors=dict(result.errors), sections=sorted(result.tables),
                      ran=sorted(result.ran), reused=sorted(result.reused))
    if result is not None and int(seeds) > 1:
        record["seeds"] = _other_seeds(method, dataset, split, workdir, quick, force, sections,
                                       progress, int(seeds))
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_run_record(workdir, label, record)
    return result, record


def _other_seeds(method, dataset, split, workdir, quick, force, sections, progress,
                 seeds: int) -> dict:
    """Train and score a trained method with seeds 1 .. seeds-1 (see :func:`segment_method`);
    returns ``{"<k>": status}`` (``ok``, ``partial``, ``failed: ...`` or ``not trained``)."""
    import dataclasses

    from ..runner import run_method
    from ..segmenters import get_segmenter
    from .tables import seed_workdir

    out = {}
    for k in range(1, seeds):
        folder = seed_workdir(workdir, k)
        segmenter = get_segmenter(str(method), workdir=folder, quick=quick)
        if not segmenter.trainable:
            out[str(k)] = "not trained: one run stands for every seed"
            break
        segmenter.params = dataclasses.replace(segmenter.params,
                                               seed=int(segmenter.params.seed) + k)
        try:
            result = run_method(segmenter, dataset, split=split, sections=sections,
                                workdir=folder, force=force, progress=progress)
        except Exception as error:  # noqa: BLE001 - seed 0's results stand; say why
            out[str(k)] = "failed: " + " ".join(str(error).split())
            log.error("%s seed %d: %s", method, k, out[str(k)])
            continue
        out[str(k)] = "ok" if result.ok else "partial"
        log.info("%s seed %d: %s (%s)", method, k, out[str(k)], folder)
    return out


# ---------------------------------------------------------------------------- report
def resolve_and_run(data_dir="data", scheduler=None, workers: int = 1,
                    **run_options) -> RunResult:
    """:func:`resolve_data` then :func:`run_notebooks` on the dataset it gives, with one Dask
    cluster for both when ``workers > 1`` or a ``scheduler`` is given (the synthetic default
    data are then written by its workers). ``run_options``: those of :func:`run_notebooks`.
    """
    from ..runner.cluster import dask_client

    workers = max(1, int(workers or 1))
    with dask_client(scheduler, workers) as client:
        root = resolve_data(data_dir, client=client)
        return run_notebooks(root, scheduler=client, workers=workers, **run_options)


def build_report(data_dir="data", reports_dir="reports", quick: bool = False,
                 force: bool = False, scheduler=None, workers: int = 1,
                 ncl_sm_repo=None, source_dir=None) -> Path:
    """Build the report: default data when needed, every notebook, the site.

    ``scheduler`` / ``workers``: see :func:`run_notebooks` (``workers=2``: two notebooks at a
    time and a two-process local Dask cluster; the same outputs). ``ncl_sm_repo``: a
    checkout of the paper's code repository; the "Paper reproduction" page then recomputes
    its published numbers (:mod:`nclsm_utils.report.reproduce`). ``source_dir``: the notebook
    sources (default :func:`nclsm_utils.report.notebooks.notebooks_dir`).

    Returns the path of ``_site/index.html``. A failing notebook raises
    :class:`NotebookFailed` (the reports already written stay; a rerun resumes).
    """
    from .site import build_site

    reports = Path(reports_dir)
    parameters = {"ncl_sm_repo": str(Path(ncl_sm_repo).resolve())} if ncl_sm_repo else None
    result = resolve_and_run(data_dir, scheduler=scheduler, workers=workers, reports=reports,
                             quick=quick, force=force, parameters=parameters,
                             source_dir=source_dir)
    log.info("notebooks: %s (reports in %s)", result.summary(), reports)
    site = build_site(reports_dir=reports)
    if site.note:
        log.warning(site.note)
    return site.index

