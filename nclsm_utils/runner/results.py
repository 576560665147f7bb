"""What a run leaves: the run result, one section's evaluation, the summary and the files.

Files written under ``workdir``, each atomically (paths: :class:`nclsm_utils.core.workdir.Workdir`):

* ``models/<name>-<key>/``                 the fitted model (trainable methods, by
  :mod:`nclsm_utils.segmenters.base`)
* ``predictions/<name>/<modality>_<id>.tiff``  cached label images (by the segmenter)
* ``results/<method>/<modality>_<id>.csv``  per-fibre paper metrics of each section
  (:func:`nclsm_utils.metrics.evaluate` plus ``method``, ``modality``, ``section`` columns)
* ``results/<method>_summary.csv``          the one-row summary of the latest run
  (:attr:`RunResult.summary`)
* ``results/<method>_instance.csv``         standard instance metrics per section and IoU
  threshold (:func:`nclsm_utils.metrics.instance_metrics`, when it can run); a run replaces
  the rows of its sections and keeps the others

``<method>`` is the method's label: its name, or ``external-<folder name>`` for external
masks.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import one_line
from ..core.io import DataError, write_csv
from ..segmenters.base import SegmenterError, method_label  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run of one method did (:func:`nclsm_utils.runner.run_method`).

    Attributes
    ----------
    method : str
        The method's label (result folder name).
    source : str
        How the method got its model: ``automatic``, ``pretrained``, ``trained``,
        ``fine-tuned``, ``external``.
    tables : dict
        Section key (``IMC/P02``) -> per-fibre DataFrame.
    summary : DataFrame
        One row: ``method``, ``source``, ``TS`` (the evaluated section ids), the paper summary
        columns of :func:`nclsm_utils.metrics.summarise` and, when available, pooled instance
        metrics ``AP@0.5``, ``F1@0.5``, ``PQ@0.5``, ``AP@[.5:.95]``; ``errors`` (count).
    errors : dict
        Section key -> one-line message for every section that failed.
    instance : DataFrame or None
        Instance metrics per section and threshold of this run plus the pooled rows
        (``section == "all"``).
    paths : dict
        Section key -> per-fibre csv written.
    """

    method: str
    source: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    errors: dict[str, str] = field(default_factory=dict)
    instance: pd.DataFrame | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors




def _choose_sections(dataset, split: str, sections) -> list:
    if sections is None:
        chosen = dataset.sections(split=split)
        if not chosen:
            raise DataError(f"{dataset.root}: no sections in the {split!r} split")
        return chosen
    chosen = [dataset.section(str(s)) for s in sections]
    for section in chosen:
        if section.split == "train":
            log.warning("section %s is in the train split; its scores are not a test result",
                        section.key)
    return chosen


def evaluate_section(segmenter, section, label: str, force: bool = False):
    """Predict (cached) and evaluate one section: the per-section step of :func:`run_method`
    and of the Dask tasks (:mod:`nclsm_utils.runner`).

    Returns
    -------
    (table, instance, note)
        The per-fibre table (:func:`nclsm_utils.metrics.evaluate`) with ``method``,
        ``modality``, ``section`` columns first; the section's instance metrics
        (:func:`nclsm_utils.metrics.instance_metrics`, with ``section`` and ``modality``
        columns) or None; ``note``, why instance metrics are missing ('' when present).

    Raises
    ------
    Exception
        Whatever fails for this section (bad file, shape mismatch, ...).
    """
    from .. import metrics

    pred = segmenter.predict_section(section, force=force)
    gt = section.mask("myofibres")
    if pred.shape != gt.shape:
        raise DataError(f"{section.path('myofibres')}: prediction of {label} has shape "
                        f"{pred.shape}, the section's mask {gt.shape}")
    image = section.image() if section.has("image") else None
    table = metrics.evaluate(gt, pred, image, half_width=section.half_width)
    del image
    table.insert(0, "section", section.id)
    table.insert(0, "modality", section.modality)
    table.insert(0, "method", label)
    instance, note = None, ""
    try:
        instance = metrics.instance_metrics(gt, pred).assign(section=section.id,
                                                             modality=section.modality)
    except Exception as error:  # noqa: BLE001 - the paper metrics still stand
        note = one_line(error)
    return table, instance, note


def _merge_instance_csv(path: Path, rows: pd.DataFrame | None, failed=()) -> None:
    """Write per-section instance metrics, keeping the rows of sections not in this run (a run
    on a subset of sections must not lose the others' rows, as with the per-fibre csvs)."""
    parts = [] if rows is None else [rows]
    drop = set(failed)
    if rows is not None:
        drop |= set(zip(rows["modality"], rows["section"].astype(str)))
    if path.is_file():
        try:
            old = pd.read_csv(path, dtype={"section": str, "modality": str})
        except Exception as error:  # noqa: BLE001 - an unreadable file is replaced
            log.warning("%s: unreadable (%s); rewriting it", path, error)
        else:
            if {"section", "modality"} <= set(old.columns):
                keep = [(m, sec) not in drop and sec != "all"
                        for m, sec in zip(old["modality"], old["section"].astype(str))]
                parts.insert(0, old[keep])
    if parts:
        write_csv(path, pd.concat(parts, ignore_index=True))


def _summary(result: RunResult, metrics, chosen, instance_tables) -> pd.DataFrame:
    done = [s for s in chosen if s.key in result.tables]
    head = {"method": result.method, "source": result.source,
            "TS": ", ".join(s.id for s in done)}
    if result.tables:
        summary = metrics.summarise(list(result.tables.values()))
    else:
        summary = pd.DataFrame([{c: math.nan for c in getattr(metrics, "SUMMARY_COLUMNS",
                                                                ["MF-A", "mean IoU"])}])
    for i, (name, value) in enumerate(head.items()):
        summary.insert(i, name, value)
    if instance_tables:
        pooled = metrics.aggregate_instance_metrics(instance_tables).set_index("thresh")

        def at(column, thresh):
            matches = pooled.index[np.isclose(pooled.index, thresh)]
            return float(pooled.loc[matches[0], column]) if len(matches) else math.nan

        summary["AP@0.5"] = at("AP", 0.5)
        summary["F1@0.5"] = at("f1", 0.5)
        summary["PQ@0.5"] = at("PQ", 0.5)
        summary["AP@[.5:.95]"] = float(pooled["AP"].mean())
    summary["errors"] = len(result.errors)
    return summary
