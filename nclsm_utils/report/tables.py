"""The NCL-SM paper's tables: I (annotation counts), II (QA vs GT), III (methods vs GT)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from ..metrics.uncertainty import (INSTANCE_CI, ci_columns, instance_intervals, paper_metric_intervals,
                          tile_counts)
from ..segmenters.base import BENCHMARK_METHODS, method_label  # noqa: F401 - method_label re-exported
from ..core.imaging import label_values
from ..core.workdir import MissingPrediction, Workdir

#: Paper metrics and instance metrics that get a 95 % bootstrap interval in Tables II and III
#: (MF-A is a count and gets none).
PAPER_CI_METRICS = ("r_AoB", "r_AiB", "mean IoU", "A%(IoU>0.80)", "A%(IoU>0.90)",
                    "A%(IoU>0.95)")
INSTANCE_CI_METRICS = tuple(column for column, _, _ in INSTANCE_CI)

TABLE1_COLUMNS = ["technique", "sections", "myofibres", "analysable", "non-transverse",
                  "freezing artefact", "folded regions"]


def count_labels(labels: np.ndarray) -> int:
    """Number of distinct non-zero labels in a label image.

    >>> count_labels(np.array([[0, 3, 3], [7, 0, 1]]))
    3
    """
    return int(np.count_nonzero(label_values(labels)))


def count_regions(mask: np.ndarray) -> int:
    """Number of 8-connected regions of the non-zero pixels of a mask.

    >>> count_regions(np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1]]))
    2
    """
    _, n = ndimage.label(mask > 0, structure=np.ones((3, 3), bool))
    return int(n)


def section_counts(section) -> dict:
    """Table I counts of one section; a missing role counts as NaN (reported, not guessed)."""
    def labels_of(role):
        return count_labels(section.mask(role)) if section.has(role) else np.nan

    return {
        "technique": section.modality,
        "section": section.id,
        "myofibres": labels_of("myofibres"),
        "analysable": labels_of("analysable"),
        "non-transverse": labels_of("ntm"),
        "freezing artefact": labels_of("fam"),
        "folded regions": count_regions(section.mask("fr")) if section.has("fr") else np.nan,
    }


def table1_per_section(dataset) -> pd.DataFrame:
    """One row of Table I counts per section of ``dataset`` (a :class:`~nclsm_utils.dataset.Dataset`)."""
    return pd.DataFrame([section_counts(s) for s in dataset.sections()])


def table1(dataset=None, per_section: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table I: sections and annotation counts per technique (IMC, IF) and in total.

    Parameters
    ----------
    dataset : Dataset, optional
        Counted section by section when ``per_section`` is not given.
    per_section : DataFrame, optional
        Output of :func:`table1_per_section`.

    Returns
    -------
    DataFrame
        Columns :data:`TABLE1_COLUMNS`; one row per technique present plus ``Total``.
        Counts are integers; a class whose masks are missing for every section is NaN.
    """
    if per_section is None:
        per_section = table1_per_section(dataset)
    count_columns = TABLE1_COLUMNS[2:]
    rows = []
    for technique, group in per_section.groupby("technique", sort=False):
        row = {"technique": technique, "sections": len(group)}
        row.update({c: group[c].sum(min_count=1) for c in count_columns})
        rows.append(row)
    order = {"IMC": 0, "IF": 1}
    rows.sort(key=lambda r: order.get(r["technique"], 9))
    total = {"technique": "Total", "sections": len(per_section)}
    total.update({c: per_section[c].sum(min_count=1) for c in count_columns})
    rows.append(total)
    table = pd.DataFrame(rows, columns=TABLE1_COLUMNS)
    for column in count_columns:
        if table[column].notna().all():
            table[column] = table[column].astype(int)
    return table


def class_proportions(table: pd.DataFrame) -> pd.DataFrame:
    """Percent of myofibres that are analysable, NTM and FAM, per Table I row."""
    out = table[["technique"]].copy()
    for column in ("analysable", "non-transverse", "freezing artefact"):
        out[f"{column} %"] = 100.0 * table[column] / table["myofibres"]
    return out


# ---------------------------------------------------------------------------- Table II
import logging  # noqa: E402 - appended section of the module

log = logging.getLogger(__name__)


def _chosen_sections(dataset, sections=None) -> list:
    """Sections of ``dataset`` from ids and/or :class:`~nclsm_utils.dataset.Section` objects."""
    if sections is None:
        return dataset.sections()
    if isinstance(sections, str):
        sections = [sections]
    objects = [s for s in sections if not isinstance(s, str)]
    ids = [s for s in sections if isinstance(s, str)]
    chosen = {s.key: s for s in objects}
    if ids:
        chosen.update({s.key: s for s in dataset.sections(ids=ids)})
    order = {"IMC": 0, "IF": 1}
    return sorted(chosen.values(), key=lambda s: (order.get(s.modality, 9), s.id))


def section_per_fibre(section, pred_labels: np.ndarray) -> pd.DataFrame:
    """Per-fibre paper metrics of ``pred_labels`` against one section's ground truth.

    Reads the section's ``myofibres`` mask and ``image`` (when present) and evaluates with
    the section's ring half-width (2 for IMC, 6 for IF).

    Returns
    -------
    DataFrame
        ``modality``, ``section`` then :data:`nclsm_utils.metrics.PER_FIBRE_COLUMNS`.
    """
    from ..metrics import evaluate

    gt = section.mask("myofibres")
    image = section.image() if section.has("image") else None
    table = evaluate(gt, pred_labels, image, half_width=section.half_width)
    table.insert(0, "section", section.id)
    table.insert(0, "modality", section.modality)
    return table


def qa_per_fibre(dataset, sections=None) -> pd.DataFrame:
    """Per-fibre metrics of the QA duplicate annotations (role ``qa``) against the ground truth.

    Parameters
    ----------
    dataset : Dataset
    sections : list of str or Section, optional
        Default: every section. Sections without a QA mask are left out (logged).

    Returns
    -------
    DataFrame
        :func:`section_per_fibre` tables of the sections with a QA mask, concatenated
        (one section in memory at a time).
    """
    from ..metrics import PER_FIBRE_COLUMNS

    tables = []
    for section in _chosen_sections(dataset, sections):
        if not section.has("qa"):
            log.debug("%s: no QA mask, left out of the QA rows", section.key)
            continue
        tables.append(section_per_fibre(section, section.mask("qa")))
    if not tables:
        return pd.DataFrame(columns=["modality", "section", *PER_FIBRE_COLUMNS])
    return pd.concat(tables, ignore_index=True)


def summary_row(per_fibre: pd.DataFrame, name: str, intervals: bool = True) -> pd.DataFrame:
    """One-row table: ``method`` name, ``TS`` (section ids used), the paper summary columns
    and, with ``intervals``, their 95 % bootstrap intervals (``<metric> CI low`` / ``CI high``
    for :data:`PAPER_CI_METRICS`; :func:`nclsm_utils.metrics.uncertainty.paper_metric_intervals`:
    matched fibres resampled within sections)."""
    from ..metrics import SUMMARY_COLUMNS, summarise

    if len(per_fibre):
        summary = summarise(per_fibre)
        ids = list(dict.fromkeys(per_fibre["section"])) if "section" in per_fibre else []
    else:
        summary = pd.DataFrame([{c: np.nan for c in SUMMARY_COLUMNS}])
        ids = []
    summary.insert(0, "TS", ", ".join(str(i) for i in ids))
    summary.insert(0, "method", name)
    if intervals:
        found = paper_metric_intervals(per_fibre) if len(per_fibre) else {}
        for metric in PAPER_CI_METRICS:
            low, high = found.get(metric, (np.nan, np.nan))
            for column, value in zip(ci_columns(metric), (low, high)):
                summary[column] = value
    return summary


def qa_row(dataset, sections=None, name: str = "QA") -> pd.DataFrame:
    """The QA row (duplicate annotation vs ground truth) pooled over a chosen set of sections.

    Only GT fibres the QA annotation matched count in MF-A and the ratios (the QA masks
    hold a small subset of the fibres); ``detected %`` is therefore small.

    Parameters
    ----------
    dataset : Dataset
    sections : list of str or Section, optional
        e.g. the Table III test sections ``["P02", "P06"]``; default every section with a
        QA mask.
    name : str
        Value of the ``method`` column.

    Returns
    -------
    DataFrame
        One row: ``method``, ``TS`` and :data:`nclsm_utils.metrics.SUMMARY_COLUMNS`.
    """
    return summary_row(qa_per_fibre(dataset, sections), name)


def table2(dataset, sections=None, per_fibre: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table II: QA duplicate annotations vs ground truth, one row per modality.

    Parameters
    ----------
    dataset : Dataset
    sections : list of str or Section, optional
        Restrict to these sections; default every section that has a QA mask.
    per_fibre : DataFrame, optional
        :func:`qa_per_fibre` of the same sections, when already computed (the rows are then
        summarised from it instead of scoring every section again).

    Returns
    -------
    DataFrame
        Rows ``QA-IMC`` and ``QA-IF`` (modalities with at least one QA mask), columns
        ``method``, ``TS`` and :data:`nclsm_utils.metrics.SUMMARY_COLUMNS`. The paper
        reports MF-A 53 / 23, mean IoU 0.96 / 0.96 for IMC / IF.
    """
    chosen = [s for s in _chosen_sections(dataset, sections) if s.has("qa")]
    rows = []
    for modality in ("IMC", "IF"):
        subset = [s for s in chosen if s.modality == modality]
        if not subset:
            continue
        if per_fibre is None:
            rows.append(qa_row(dataset, subset, name=f"QA-{modality}"))
        else:
            ids = {str(s.id) for s in subset}
            rows.append(summary_row(per_fibre[(per_fibre["modality"] == modality)
                                              & per_fibre["section"].astype(str).isin(ids)],
                                    f"QA-{modality}"))
    if not rows:
        from ..metrics import SUMMARY_COLUMNS

        log.warning("no section has a QA mask (role 'qa'); Table II is empty")
        return pd.DataFrame(columns=["method", "TS", *SUMMARY_COLUMNS])
    return pd.concat(rows, ignore_index=True)


# ---------------------------------------------------------------------------- Table III
# Methods vs ground truth on the same test sections, from the files `nclsm run` (notebook
# 03_segment, i.e. nclsm_utils.runner.run_method) leaves under <workdir>/results/:
# <label>/<modality>_<id>.csv per-fibre tables, <label>_instance.csv instance metrics per
# section, <label>_summary.csv and <label>_run.json (status, written by
# nclsm_utils.report.pipeline.segment_method).

#: The method rows of Table III, in order (the QA row follows them).
TABLE3_METHODS = BENCHMARK_METHODS
#: Columns of :func:`table3`.
#: The interval columns of Table III (``<metric> CI low`` / ``CI high``), after ``note``.
TABLE3_CI_COLUMNS = [c for m in (*PAPER_CI_METRICS, *INSTANCE_CI_METRICS) for c in ci_columns(m)]
TABLE3_COLUMNS = ["method", "TS", "MF-A", "r_AoB", "r_AiB", "mean IoU", "A%(IoU>0.80)",
                  "A%(IoU>0.90)", "A%(IoU>0.95)", "AP@0.5", "AP@0.75", "F1@0.5", "PQ",
                  "source", "note", *TABLE3_CI_COLUMNS]


def _read_json(path):
    import json

    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def method_results(method: str, sections, workdir="data") -> dict:
    """What a method left for ``sections`` under ``<workdir>/results``.

    Returns
    -------
    dict
        ``label``; ``tables`` section key -> per-fibre DataFrame; ``instance`` pooled instance
        metrics over those sections (DataFrame, one row per IoU threshold, or None);
        ``missing`` section ids without a per-fibre table; ``status`` the run record (dict
        or None); ``source``; ``note`` why the row is incomplete or empty ('' when complete).
    """
    from ..metrics import aggregate_instance_metrics, read_per_fibre_table

    label = method_label(method)
    work = Workdir(workdir)
    status = _read_json(work.run_record(label))
    tables, missing = {}, []
    for section in sections:
        path = work.result_table(label, section.modality, section.id)
        if path.is_file():
            tables[section.key] = read_per_fibre_table(path)
        else:
            missing.append(section.id)
    instance = None
    inst_path = work.instance_path(label)
    if tables and inst_path.is_file():
        frame = pd.read_csv(inst_path, dtype={"section": str})
        keys = {(s.modality, s.id) for s in sections if s.key in tables}
        rows = frame[[(m, str(i)) in keys for m, i in zip(frame["modality"], frame["section"].astype(str))]]
        if len(rows) and rows[["modality", "section"]].drop_duplicates().shape[0] == len(keys):
            instance = aggregate_instance_metrics([g for _, g in rows.groupby(["modality", "section"])])
    source = (status or {}).get("source", "")
    summary_path = work.summary_path(label)
    if not source and summary_path.is_file():
        summary = pd.read_csv(summary_path)
        if "source" in summary and len(summary):
            source = str(summary["source"].iloc[0])
    notes = []
    if status and status.get("status") == "failed":
        notes.append(f"could not run: {status.get('error', 'unknown error')}")
    elif not tables:
        notes.append("not run: no results in " + str(work.results_dir(label)))
    if tables and missing:
        errors = (status or {}).get("errors", {}) or {}
        detail = "; ".join(f"{k}: {v}" for k, v in errors.items())
        notes.append(f"no results for {', '.join(missing)}" + (f" ({detail})" if detail else ""))
    if tables and instance is None:
        notes.append("instance metrics unavailable")
    if status and tables and status.get("budget") and ("train" in source or "fine" in source):
        notes.append(_budget_note(label, status["budget"]))
    elif status and status.get("quick") and tables and ("train" in source or "fine" in source):
        notes.append("quick mode (short training)")
    return {"label": label, "tables": tables, "instance": instance, "missing": missing,
            "status": status, "source": source, "note": "; ".join(notes)}


def _budget_note(method: str, budget: str) -> str:
    """``budget <name>: <training length>`` of a trained method (from its params)."""
    try:
        from ..segmenters import get_segmenter

        return f"budget {budget}: {get_segmenter(method, budget=budget).params.training_length()}"
    except Exception:  # noqa: BLE001 - an external or unknown method: the budget alone
        return f"budget {budget}"


def _at(instance, column: str, thresh: float) -> float:
    if instance is None or not len(instance):
        return np.nan
    match = instance[np.isclose(instance["thresh"].astype(float), thresh)]
    return float(match[column].iloc[0]) if len(match) else np.nan


def table3_row(method: str, sections, workdir="data", intervals: bool = True) -> dict:
    """One Table III row (a dict of :data:`TABLE3_COLUMNS`) from a method's results; with
    ``intervals`` the bootstrap intervals too (else those columns are NaN)."""
    from ..metrics import summarise

    found = method_results(method, sections, workdir)
    row = {c: np.nan for c in TABLE3_COLUMNS}
    row.update(method=found["label"], source=found["source"], note=found["note"],
               TS=", ".join(s.id for s in sections if s.key in found["tables"]))
    if found["tables"]:
        summary = summarise(list(found["tables"].values())).iloc[0]
        for column in TABLE3_COLUMNS[2:9]:
            if column in summary:
                row[column] = summary[column]
        instance = found["instance"]
        row.update({"AP@0.5": _at(instance, "AP", 0.5), "AP@0.75": _at(instance, "AP", 0.75),
                    "F1@0.5": _at(instance, "f1", 0.5), "PQ": _at(instance, "PQ", 0.5)})
        bounds = paper_metric_intervals(list(found["tables"].values())) if intervals else {}
        if intervals and instance is not None:
            bounds.update(instance_intervals(method_tile_counts(method, [
                s for s in sections if s.key in found["tables"]], workdir)))
        for metric, (low, high) in bounds.items():
            if metric in PAPER_CI_METRICS or metric in INSTANCE_CI_METRICS:
                row.update(zip(ci_columns(metric), (low, high)))
    return row


def table3_pairwise(dataset, methods=TABLE3_METHODS, workdir="data", split: str = "test",
                    sections=None) -> pd.DataFrame:
    """Every pair of methods of Table III compared on the ground-truth fibres both matched.

    Per fibre: IoU, and the absolute errors of the membrane-included and mass-missed
    percentages against the ground truth's; the mean difference with a 95 % bootstrap
    interval (fibres resampled within sections), the Wilcoxon signed-rank p-value and its
    Holm adjustment over all rows (:func:`nclsm_utils.metrics.uncertainty.pairwise_comparisons`).

    Returns
    -------
    DataFrame
        :data:`nclsm_utils.metrics.uncertainty.PAIRWISE_COLUMNS`; methods without results are left
        out.
    """
    from ..metrics.uncertainty import pairwise_comparisons

    chosen = dataset.sections(split=split) if sections is None else \
        [dataset.section(str(s)) if isinstance(s, str) else s for s in sections]
    per_fibre = {}
    for method in methods:
        found = method_results(method, chosen, workdir)
        if found["tables"]:
            per_fibre[found["label"]] = pd.concat(
                [t.assign(section=key) for key, t in found["tables"].items()], ignore_index=True)
    return pairwise_comparisons(per_fibre)


def with_intervals(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A display copy of Table II or III: each metric with an interval shown as
    ``value [low, high]`` (text), the interval columns dropped.

    >>> t = pd.DataFrame({"method": ["a"], "mean IoU": [0.8712],
    ...                   "mean IoU CI low": [0.86], "mean IoU CI high": [0.881]})
    >>> with_intervals(t).to_dict("records")
    [{'method': 'a', 'mean IoU': '0.871 [0.860, 0.881]'}]
    """
    out = table.copy()
    for column in list(table.columns):
        low, high = ci_columns(column)
        if low not in table or high not in table:
            continue
        # percentages with one decimal, the rest with `digits`
        fmt = "{:.1f}" if column.startswith("A%") else "{:.%df}" % digits

        def show(v, lo, hi, fmt=fmt):
            if not np.isfinite(v):
                return "–"
            text = fmt.format(v)
            if np.isfinite(lo) and np.isfinite(hi):
                text += f" [{fmt.format(lo)}, {fmt.format(hi)}]"
            return text

        out[column] = [show(float(v), float(lo), float(hi)) for v, lo, hi in
                       zip(table[column], table[low], table[high])]
        out = out.drop(columns=[low, high])
    return out


def method_tile_counts(method: str, sections, workdir="data") -> list:
    """Per-tile TP/FP/FN of a method's cached predictions (:func:`nclsm_utils.metrics.uncertainty.
    tile_counts`), one table per section that has a prediction; the instance metrics'
    intervals resample these tiles."""
    out = []
    for section in sections:
        pred = load_prediction(method, section, workdir)
        if pred is None:
            continue
        out.append(tile_counts(section.mask("myofibres"), pred))
    return out


#: Table III metrics that get the spread across training seeds (``nclsm run --seeds N``).
SEED_METRICS = ("mean IoU", "r_AoB", "r_AiB", "A%(IoU>0.90)", "F1@0.5")


def seed_workdir(workdir, k: int):
    """Work directory of training seed number ``k``: ``workdir`` itself for 0, else
    ``<workdir>/seeds/seed<k>`` (its own models, predictions and results).

    >>> str(seed_workdir("data", 0)), str(seed_workdir("data", 2))
    ('data', 'data/seeds/seed2')
    """
    return Workdir(workdir).seed(k).root


def seed_columns(metric: str) -> list[str]:
    """Names of a metric's across-seed columns: mean, sd, min and max over the seeds.

    >>> seed_columns("mean IoU")
    ['mean IoU seeds mean', 'mean IoU seeds sd', 'mean IoU seeds min', 'mean IoU seeds max']
    """
    return [f"{metric} seeds {s}" for s in ("mean", "sd", "min", "max")]


def seed_spread(method: str, sections, workdir="data", seeds: int = 1) -> dict:
    """Across-seed statistics of a method's Table III metrics (:data:`SEED_METRICS`).

    Reads each seed's results (:func:`seed_workdir`); a seed without results is left out.

    Returns
    -------
    dict
        ``seeds`` (how many seeds had results) and, per metric, the
        :func:`seed_columns` values (sd with ``ddof=1``; NaN with one seed).
    """
    values = {m: [] for m in SEED_METRICS}
    n = 0
    for k in range(max(1, int(seeds))):
        found = table3_row(method, sections, seed_workdir(workdir, k), intervals=False)
        if not found["TS"]:
            continue
        n += 1
        for metric in SEED_METRICS:
            values[metric].append(float(found[metric]))
    out = {"seeds": n}
    for metric, got in values.items():
        got = np.asarray(got, float)
        stats_ = (got.mean(), got.std(ddof=1) if got.size > 1 else np.nan, got.min(), got.max()) \
            if got.size else (np.nan,) * 4
        out.update(zip(seed_columns(metric), map(float, stats_)))
    return out


def table3(dataset, methods=TABLE3_METHODS, workdir="data", split: str = "test",
           sections=None, qa: bool = True, seeds: int = 1) -> pd.DataFrame:
    """Table III: each method and the QA duplicate annotation vs the ground truth.

    Parameters
    ----------
    dataset : Dataset
    methods : sequence of str
        Methods of this run. Every method of :data:`TABLE3_METHODS` gets a row; one not in
        ``methods`` or without results says why in ``note``; further methods (``unet2``,
        ``external:<folder>``) follow them.
    workdir : path-like
        Where ``results/`` is (as for :func:`nclsm_utils.runner.run_method`).
    split, sections
        The sections scored (default: the test split). Every row uses the same sections;
        ``TS`` lists the ones a row has results for.
    qa : bool
        Add the QA row (:func:`qa_row` on the sections that have QA masks).
    seeds : int
        With > 1 (``nclsm run --seeds N``): a ``seeds`` column and, for
        :data:`SEED_METRICS`, the mean, sd, min and max over the training seeds
        (:func:`seed_spread`) beside the first seed's value and interval.

    Returns
    -------
    DataFrame
        Columns :data:`TABLE3_COLUMNS`: the paper's MF-A, r_AoB, r_AiB, mean IoU and A%
        (strict IoU > 0.80 / 0.90 / 0.95) over matched fibres, and the standard AP
        (TP / (TP + FP + FN)) at IoU 0.5 and 0.75, F1 at 0.5 and panoptic quality (PQ) at
        0.5, pooled over sections; ``source`` (automatic, pretrained, trained, fine-tuned,
        external) and ``note``.
    """
    chosen = dataset.sections(split=split) if sections is None else \
        [dataset.section(str(s)) if isinstance(s, str) else s for s in sections]
    methods = list(methods)
    labels = {method_label(m) for m in methods}
    rows = []
    for method in list(TABLE3_METHODS) + [m for m in methods if method_label(m) not in TABLE3_METHODS]:
        if method_label(method) not in labels:
            row = {c: np.nan for c in TABLE3_COLUMNS}
            row.update(method=method, TS="", source="",
                       note="not run in this report (not among the methods asked for)")
        else:
            row = table3_row(method, chosen, workdir)
        rows.append(row)
    if qa:
        rows.append(_qa_table3_row(dataset, chosen))
    columns = list(TABLE3_COLUMNS)
    if int(seeds) > 1:
        columns += ["seeds", *(c for m in SEED_METRICS for c in seed_columns(m))]
        for row in rows:
            if row["method"] != "QA" and row.get("TS"):
                row.update(seed_spread(row["method"], [s for s in chosen if s.id in
                                                       row["TS"].split(", ")], workdir, seeds))
    table = pd.DataFrame(rows, columns=columns)
    table["MF-A"] = table["MF-A"].astype("Int64") if table["MF-A"].notna().any() else table["MF-A"]
    return table


def _qa_table3_row(dataset, sections) -> dict:
    row = {c: np.nan for c in TABLE3_COLUMNS}
    with_qa = [s for s in sections if s.has("qa")]
    row.update(method="QA", source="duplicate annotation", TS=", ".join(s.id for s in with_qa),
               note="second annotator on a subset of fibres; AP/F1/PQ not applicable")
    if not with_qa:
        row["note"] = "no QA masks on these sections"
        return row
    builder = globals().get("qa_row")  # Table II's QA row builder, defined in this module
    if builder is None:
        row["note"] = "QA row unavailable (tables.qa_row missing)"
        return row
    found = builder(dataset, with_qa)
    found = found.iloc[0] if isinstance(found, pd.DataFrame) else pd.Series(found)
    for column in TABLE3_COLUMNS[2:9] + TABLE3_CI_COLUMNS:
        if column in found:
            row[column] = found[column]
    return row


def load_prediction(method: str, section, workdir="data"):
    """A method's cached label image of ``section`` (None when it has none)."""
    if str(method).startswith("external:"):
        from ..segmenters import get_segmenter

        try:
            return get_segmenter(str(method), workdir=workdir).predict_section(section)
        except Exception as error:  # noqa: BLE001 - shown as a missing panel
            import logging

            logging.getLogger(__name__).info("%s %s: no prediction (%s)", method, section.key,
                                             error)
            return None
    try:
        return Workdir(workdir).load_prediction(method_label(method), section)
    except MissingPrediction:
        return None


def instance_curves(dataset, methods, workdir="data", split: str = "test", sections=None) -> pd.DataFrame:
    """Pooled instance metrics per IoU threshold for each method with results (long table,
    :data:`nclsm_utils.metrics.INSTANCE_COLUMNS` plus ``method``)."""
    chosen = dataset.sections(split=split) if sections is None else list(sections)
    parts = []
    for method in methods:
        found = method_results(method, chosen, workdir)
        if found["instance"] is not None:
            parts.append(found["instance"].assign(method=found["label"]))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["method", "thresh"])


def morphology_comparison(dataset, methods, workdir="data", split: str = "test", sections=None,
                          min_area: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-fibre morphology of the ground truth and of each method's predictions, and the
    Mann-Whitney comparison of every method with the ground truth.

    Returns
    -------
    per_fibre : DataFrame
        :func:`nclsm_utils.metrics.morphology.fibre_morphology` rows with ``source`` (``ground truth``
        or the method) and ``section``.
    tests : DataFrame
        :func:`nclsm_utils.metrics.morphology.compare_morphology` rows with ``method`` first.
    """
    from ..metrics.morphology import compare_morphology, fibre_morphology

    chosen = dataset.sections(split=split) if sections is None else list(sections)
    parts = []
    for section in chosen:
        parts.append(fibre_morphology(section.mask("myofibres"), min_area=min_area)
                     .assign(source="ground truth", section=section.id))
        for method in methods:
            pred = load_prediction(method, section, workdir)
            if pred is not None:
                parts.append(fibre_morphology(pred, min_area=min_area)
                             .assign(source=method_label(method), section=section.id))
    per_fibre = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["source"])
    gt = per_fibre[per_fibre["source"] == "ground truth"].drop(columns=["source", "section"])
    tests = []
    for method in dict.fromkeys(per_fibre["source"]):
        if method == "ground truth":
            continue
        own = per_fibre[per_fibre["source"] == method].drop(columns=["source", "section"])
        tests.append(compare_morphology(own, gt).assign(method=method))
    tests = pd.concat(tests, ignore_index=True) if tests else pd.DataFrame(columns=["method", "feature"])
    tests = tests[["method"] + [c for c in tests.columns if c != "method"]]
    return per_fibre, tests


def recall_by_fibre(dataset, methods, workdir="data", split: str = "test",
                    sections=None) -> pd.DataFrame:
    """Every ground-truth fibre of the chosen sections, per method: its size, brightness and
    whether the method detected it (:func:`nclsm_utils.metrics.recall.fibre_detection`), with
    ``rel_mass`` and ``rel_area`` relative to the section's median fibre.

    Feed it to :func:`nclsm_utils.metrics.recall.recall_by_decile` and
    :func:`~nclsm_utils.metrics.recall.lowest_decile_gap`. Methods without cached predictions
    are left out.
    """
    from ..metrics.recall import fibre_detection, relative_to_section

    chosen = dataset.sections(split=split) if sections is None else list(sections)
    parts = []
    for section in chosen:
        gt = section.mask("myofibres")
        image = None
        for method in methods:
            pred = load_prediction(method, section, workdir)
            if pred is None:
                continue
            if image is None:
                image = section.image()
            parts.append(fibre_detection(gt, pred, image)
                         .assign(method=method_label(method), section=section.key))
    if not parts:
        return pd.DataFrame(columns=["method", "section", "gt_id", "area", "mass", "best_iou",
                                     "detected", "rel_mass", "rel_area"])
    return relative_to_section(pd.concat(parts, ignore_index=True))
