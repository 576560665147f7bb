"""Evaluation of the curation: per-class scores, FR IoU, Table I counts and paper metrics.

Also grouped cross-validation of the fibre classifiers and the per-method Dask fan-out
(:func:`evaluate_curation_methods`).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.io import DataError, write_csv, write_text, write_tiff
from ..core.imaging import label_values
from ..core.workdir import MissingPrediction, Workdir
from .classifiers import CurationParams, FibreClassifier
from .features import FAM_FEATURES, NTM_FEATURES, _check_mask, class_flags, fibre_diameter
from .models import (CurationModels, classify_fibres, definitions_table, masks_from_table,
                     ntm_definition, section_ntm_scale, train_models)

log = logging.getLogger(__package__)  # the package's logger (nclsm_utils.curation)

#: Classes scored by :func:`evaluate_curation` (per-fibre table column -> ground-truth role).
CLASS_COLUMNS = {"ntm_used": "ntm", "ntm_rule": "ntm", "ntm": "ntm", "fam": "fam",
                 "analysable": "analysable"}
#: Names of the classes in the evaluation tables.
CLASS_NAMES = {"ntm_used": "NTM (curation)", "ntm_rule": "NTM (rule)",
               "ntm": "NTM (learned)", "fam": "FAM", "analysable": "analysable"}


# ============================================================================ evaluation
def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 (NaN when undefined).

    >>> prf(8, 2, 2)
    (0.8, 0.8, 0.8)
    """
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    if tp == 0 and (fp or fn):
        f1 = 0.0
    else:
        f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else math.nan
    return precision, recall, f1


def match_fibres(gt: np.ndarray, pred: np.ndarray, rule: str = "centroid") -> pd.DataFrame:
    """Match ground-truth fibres to predicted fibres.

    ``rule="centroid"``: the paper's rule (:func:`nclsm_utils.metrics.evaluate`: the predicted
    fibre containing the GT fibre's centroid); ``"iou"``: the predicted fibre with IoU > 0.5
    (unique when it exists). Returns ``gt_id``, ``pred_id`` (0 = none) and ``iou``.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if rule == "centroid":
        from ..metrics import evaluate

        table = evaluate(gt, pred)
        return table[["gt_id", "pred_id", "iou"]].reset_index(drop=True)
    if rule != "iou":
        raise ValueError(f"rule must be 'centroid' or 'iou', got {rule!r}")
    gt_ids = label_values(gt)
    gt_ids = gt_ids[gt_ids > 0]
    if gt_ids.size == 0:
        return pd.DataFrame({"gt_id": pd.Series([], dtype="int64"),
                             "pred_id": pd.Series([], dtype="int64"),
                             "iou": pd.Series([], dtype="float64")})
    both = (gt > 0) & (pred > 0)
    pairs = pd.DataFrame({"gt_id": gt[both].astype(np.int64),
                          "pred_id": pred[both].astype(np.int64)})
    inter = pairs.value_counts().rename("inter").reset_index()
    gt_area = pd.Series(np.bincount(gt.ravel().astype(np.int64)))
    pred_area = pd.Series(np.bincount(pred.ravel().astype(np.int64)))
    inter["iou"] = inter["inter"] / (gt_area[inter["gt_id"]].to_numpy()
                                     + pred_area[inter["pred_id"]].to_numpy() - inter["inter"])
    best = inter[inter["iou"] > 0.5].sort_values("iou", ascending=False).drop_duplicates("gt_id")
    out = pd.DataFrame({"gt_id": gt_ids.astype(np.int64)}).merge(
        best[["gt_id", "pred_id", "iou"]], on="gt_id", how="left")
    out["pred_id"] = out["pred_id"].fillna(0).astype(np.int64)
    out["iou"] = out["iou"].fillna(0.0)
    return out


def _gt_classes(section, gt_labels: np.ndarray, overlap: float) -> pd.DataFrame:
    ids = label_values(gt_labels)
    out = pd.DataFrame({"gt_id": ids[ids > 0].astype(np.int64)})
    for role in ("ntm", "fam", "analysable"):
        if section.has(role):
            out[f"gt_{role}"] = class_flags(gt_labels, section.mask(role), overlap).to_numpy()
        else:
            out[f"gt_{role}"] = np.nan
    return out


def evaluate_section(section, models: CurationModels, myofibres: np.ndarray | None = None,
                     match: str = "centroid", ntm: str = "auto",
                     with_image_metrics: bool = True, scale: float | None = None) -> dict:
    """Curate one section and score it against its ground-truth masks.

    The folded-region mask is predicted at the fibre size of the section's ground-truth
    myofibres for every method (it depends on the image alone), so a segmenter's wrong
    object sizes change its fibres' classes, not where the folded regions are.

    Returns a dict with ``masks`` (:func:`curate`), ``fibres`` (per predicted fibre:
    the classification plus the matched GT fibre's classes), ``gt_fibres`` (per GT fibre:
    its classes and the matched predicted fibre's decisions), ``fr`` (one row: pixel
    counts and IoU), ``counts`` (Table I counts, predicted and ground truth) and
    ``paper`` (the per-fibre paper metrics of the analysable mask vs the analysable GT).
    """
    from ..metrics import evaluate
    from ..report.tables import count_labels, count_regions

    image = section.image()
    gt_labels = section.mask("myofibres")
    use_gt = myofibres is None
    labels = gt_labels if use_gt else _check_mask(myofibres, image)
    # folded regions are found in the image at the section's own fibre size (that of its
    # ground truth), whatever a segmenter's objects measure
    fr_mask = models.fr.predict(image, fibre_diameter(gt_labels, section.modality))
    table, fr_mask = classify_fibres(section, labels, models, image=image, fr_mask=fr_mask,
                                     scale=scale)
    used = ntm_definition(section.modality, ntm)
    # the NTM decision that removes fibres: the rule or the learned one (ntm_definition)
    table["ntm_used"] = table["ntm" if used == "learned" else "ntm_rule"]
    masks = masks_from_table(labels, table, fr_mask,
                             ntm_column="ntm" if used == "learned" else "ntm_rule")
    overlap = models.params.class_overlap
    gt_classes = _gt_classes(section, gt_labels, overlap)
    if use_gt:
        matches = pd.DataFrame({"gt_id": gt_classes["gt_id"], "pred_id": gt_classes["gt_id"],
                                "iou": 1.0})
    else:
        matches = match_fibres(gt_labels, labels, match)
    decisions = table[["label", "fr", "ntm_used", "ntm_rule", "ntm", "fam", "analysable"]].rename(
        columns={"label": "pred_id"})
    gt_fibres = gt_classes.merge(matches, on="gt_id", how="left").merge(
        decisions, on="pred_id", how="left")
    gt_fibres["pred_id"] = gt_fibres["pred_id"].fillna(0).astype(np.int64)
    gt_fibres["matched"] = gt_fibres["pred_id"] > 0
    for column in ("fr", "ntm_used", "ntm_rule", "ntm", "fam", "analysable"):
        gt_fibres[column] = gt_fibres[column].fillna(False).astype(bool)
    matched_pred = set(gt_fibres.loc[gt_fibres["matched"], "pred_id"].tolist())
    fibres = table.copy()
    fibres["matched_gt"] = fibres["label"].isin(matched_pred)
    gt_fibres.insert(0, "section", section.id)
    gt_fibres.insert(0, "modality", section.modality)
    fibres.insert(0, "section", section.id)
    fibres.insert(0, "modality", section.modality)

    gt_fr = section.mask("fr") > 0 if section.has("fr") else None
    fr_row = {"modality": section.modality, "section": section.id,
              "pred_pixels": int(fr_mask.sum()),
              "gt_pixels": int(gt_fr.sum()) if gt_fr is not None else np.nan}
    if gt_fr is not None:
        inter = int((gt_fr & fr_mask).sum())
        union = int((gt_fr | fr_mask).sum())
        fr_row.update(intersection=inter, union=union,
                      iou=inter / union if union else np.nan)
    else:
        fr_row.update(intersection=np.nan, union=np.nan, iou=np.nan)

    def gt_count(role):
        return count_labels(section.mask(role)) if section.has(role) else np.nan

    counts = []
    for name, predicted, truth in (
            ("myofibres", count_labels(labels), count_labels(gt_labels)),
            ("analysable", count_labels(masks["analysable"]), gt_count("analysable")),
            ("non-transverse", count_labels(masks["ntm"]), gt_count("ntm")),
            ("freezing artefact", count_labels(masks["fam"]), gt_count("fam")),
            ("folded regions", count_regions(masks["fr"]),
             count_regions(section.mask("fr")) if section.has("fr") else np.nan)):
        counts.append({"modality": section.modality, "section": section.id, "class": name,
                       "predicted": predicted, "ground_truth": truth})
    paper = pd.DataFrame()
    if section.has("analysable"):
        gt_am = section.mask("analysable")
        if with_image_metrics:
            paper = evaluate(gt_am, masks["analysable"], image, section.half_width
                             if hasattr(section, "half_width") else _half_width(section.modality))
        else:
            paper = evaluate(gt_am, masks["analysable"])
        paper.insert(0, "section", section.id)
        paper.insert(0, "modality", section.modality)
    return {"masks": masks, "fibres": fibres, "gt_fibres": gt_fibres,
            "fr": pd.DataFrame([fr_row]), "counts": pd.DataFrame(counts), "paper": paper}


def _definitions(sections, ntm: str = "auto", scale: float | None = None) -> pd.DataFrame:
    """:func:`definitions_table` of each modality among ``sections`` (its first section's scale)."""
    rows, seen = [], set()
    for section in sections:
        if section.modality in seen:
            continue
        seen.add(section.modality)
        rows.append(definitions_table(section.modality, ntm, section_ntm_scale(section, scale)))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _half_width(modality: str) -> int:
    from ..core.dataset import HALF_WIDTH

    return HALF_WIDTH.get(modality, 2)


def class_scores(gt_fibres: pd.DataFrame, fibres: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-class precision / recall / F1, per section and pooled (``section == "all"``).

    Over the ground-truth fibres: a GT fibre of a class is a true positive when its matched
    predicted fibre is flagged, a false negative otherwise (also when the segmenter did not
    detect it: ``fn_undetected`` counts those); a GT fibre outside the class whose matched
    predicted fibre is flagged is a false positive.
    ``unmatched_flagged`` counts flagged predicted fibres matched by no GT fibre (spurious
    fibres; not in the precision), from ``fibres`` when given.
    """
    rows = []
    groups = [((m, s), g) for (m, s), g in gt_fibres.groupby(["modality", "section"], sort=False)]
    groups.append((("all", "all"), gt_fibres))
    for (modality, section_id), group in groups:
        for column, role in CLASS_COLUMNS.items():
            truth_col = f"gt_{role}"
            if truth_col not in group or group[truth_col].isna().all():
                continue
            truth = group[truth_col].astype(bool).to_numpy()
            pred = group[column].astype(bool).to_numpy()
            tp = int((truth & pred).sum())
            fp = int((~truth & pred).sum())
            fn = int((truth & ~pred).sum())
            precision, recall, f1 = prf(tp, fp, fn)
            detected = group["matched"].astype(bool).to_numpy() if "matched" in group \
                else np.ones(len(group), bool)
            row = {"modality": modality, "section": section_id, "class": CLASS_NAMES[column],
                   "gt_positive": int(truth.sum()), "pred_positive": int(pred.sum()),
                   "tp": tp, "fp": fp, "fn": fn, "fn_undetected": int((truth & ~detected).sum()),
                   "precision": precision, "recall": recall, "f1": f1}
            if fibres is not None and column in fibres:
                chosen = fibres if section_id == "all" else fibres[
                    (fibres["modality"] == modality) & (fibres["section"] == section_id)]
                row["unmatched_flagged"] = int((chosen[column].astype(bool)
                                                & ~chosen["matched_gt"]).sum())
            rows.append(row)
    return pd.DataFrame(rows)


def fr_scores(fr_rows: pd.DataFrame) -> pd.DataFrame:
    """FR pixel IoU per section plus the pooled row (``section == "all"``) over sections
    with ground-truth folded regions; ``false_positive_pixels`` on sections without."""
    table = fr_rows.copy()
    has_fr = table["gt_pixels"].fillna(0) > 0
    pooled = table[has_fr]
    inter = float(pooled["intersection"].sum())
    union = float(pooled["union"].sum())
    total = {"modality": "all", "section": "all", "pred_pixels": int(table["pred_pixels"].sum()),
             "gt_pixels": float(table["gt_pixels"].sum()), "intersection": inter, "union": union,
             "iou": inter / union if union else np.nan,
             "sections_with_fr": int(has_fr.sum())}
    table["sections_with_fr"] = has_fr.astype(int)
    table["false_positive_pixels"] = np.where(has_fr, np.nan, table["pred_pixels"])
    total["false_positive_pixels"] = float(table.loc[~has_fr, "pred_pixels"].sum())
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def counts_table(counts: pd.DataFrame) -> pd.DataFrame:
    """Add per-modality and total rows (``section == "all"``) to per-section Table I counts."""
    parts = [counts]
    for modality, group in counts.groupby("modality", sort=False):
        summed = group.groupby("class", sort=False)[["predicted", "ground_truth"]].sum(min_count=1)
        parts.append(summed.reset_index().assign(modality=modality, section="all"))
    summed = counts.groupby("class", sort=False)[["predicted", "ground_truth"]].sum(min_count=1)
    parts.append(summed.reset_index().assign(modality="all", section="all"))
    out = pd.concat(parts, ignore_index=True)[["modality", "section", "class", "predicted",
                                               "ground_truth"]]
    out["difference"] = out["predicted"] - out["ground_truth"]
    return out


def paper_summary(paper: pd.DataFrame) -> pd.DataFrame:
    """Paper summary (:func:`nclsm_utils.metrics.summarise`) per modality and overall."""
    from ..metrics import summarise

    if paper.empty:
        return pd.DataFrame()
    rows = []
    for modality, group in list(paper.groupby("modality", sort=False)) + [("all", paper)]:
        summary = summarise(group)
        summary.insert(0, "sections", ", ".join(dict.fromkeys(group["section"])))
        summary.insert(0, "modality", modality)
        rows.append(summary)
    return pd.concat(rows, ignore_index=True)


# ============================================================================ cross-validation
def cross_validate(tables: pd.DataFrame, kind: str = "fam", params: CurationParams | None = None,
                   n_splits: int = 5) -> pd.DataFrame:
    """Grouped (by section) cross-validation of the FAM or NTM fibre classifier.

    Parameters
    ----------
    tables : DataFrame
        Concatenated :func:`training_tables` tables of one kind (``section`` and ``target``
        columns), e.g. of the train and validation splits.
    kind : {"fam", "ntm"}
    n_splits : int
        Folds (at most the number of sections); sections are never split across folds.

    Returns
    -------
    DataFrame
        One row per fold and a pooled row (``fold == "all"``): ``sections``, ``positive``,
        ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``.
    """
    from sklearn.model_selection import GroupKFold

    params = params or CurationParams()
    if kind not in ("fam", "ntm"):
        raise ValueError(f"kind must be 'fam' or 'ntm', got {kind!r}")
    features = FAM_FEATURES if kind == "fam" else NTM_FEATURES
    threshold = params.fam_threshold if kind == "fam" else params.ntm_threshold
    groups = tables["section"].to_numpy()
    n_splits = min(n_splits, len(np.unique(groups)))
    if n_splits < 2:
        raise ValueError("cross-validation needs fibres from at least two sections")
    y = tables["target"].astype(bool).to_numpy()
    predicted = np.zeros(len(y), bool)
    rows = []
    for fold, (train, test) in enumerate(GroupKFold(n_splits=n_splits).split(tables, y, groups)):
        clf = FibreClassifier(kind.upper(), features, seed=params.seed,
                              n_estimators=params.n_estimators,
                              min_samples_leaf=params.min_samples_leaf, threshold=threshold,
                              n_jobs=params.n_jobs)
        clf.fit(tables.iloc[train], y[train])
        predicted[test] = clf.predict(tables.iloc[test])
        if kind == "ntm" and "skipped" in tables:
            predicted[test] |= tables["skipped"].iloc[test].astype(bool).to_numpy()
        tp = int((y[test] & predicted[test]).sum())
        fp = int((~y[test] & predicted[test]).sum())
        fn = int((y[test] & ~predicted[test]).sum())
        rows.append({"fold": str(fold), "sections": ", ".join(sorted(set(groups[test]))),
                     "positive": int(y[test].sum()), "tp": tp, "fp": fp, "fn": fn,
                     **dict(zip(("precision", "recall", "f1"), prf(tp, fp, fn)))})
    tp, fp, fn = (int((y & predicted).sum()), int((~y & predicted).sum()),
                  int((y & ~predicted).sum()))
    rows.append({"fold": "all", "sections": f"{len(np.unique(groups))} sections",
                 "positive": int(y.sum()), "tp": tp, "fp": fp, "fn": fn,
                 **dict(zip(("precision", "recall", "f1"), prf(tp, fp, fn)))})
    return pd.DataFrame(rows)


def load_myofibres(section, method: str, workdir="data") -> np.ndarray | None:
    """Myofibres of ``method`` for ``section``: None for ``"gt"`` (ground truth), else the
    cached prediction ``<workdir>/predictions/<method>/<modality>_<id>.tiff`` (or the masks
    of ``external:<folder>``)."""
    from ..core.dataset import as_labels

    if method == "gt":
        return None
    if method.startswith("external:"):
        from ..segmenters import get_segmenter

        return get_segmenter(method, workdir=workdir).predict_section(section)
    work = Workdir(workdir)
    path = work.prediction_path(method, section.modality, section.id)
    try:
        labels = as_labels(work.load_prediction(method, section), path)
    except MissingPrediction as error:
        raise MissingPrediction(f"{error} (or use --method gt for the ground-truth "
                                "myofibres)") from None
    expected = tuple(section.shape())
    if labels.shape != expected:
        raise DataError(f"{path}: prediction shape {labels.shape} does not match section "
                        f"{section.key} {expected}")
    return labels


def evaluate_curation_methods(dataset, methods, workdir="data", split: str = "test",
                              models: CurationModels | None = None, scheduler=None,
                              workers: int | None = None, **options) -> tuple[dict, dict]:
    """:func:`evaluate_curation` for several methods, one Dask task per method when a
    scheduler is given or ``workers > 1`` (callers resolve ``$NCLSM_SCHEDULER`` with
    :func:`nclsm_utils.runner.cluster.dask_settings`); else one after the other here.

    Parameters
    ----------
    dataset : Dataset
    methods : sequence of str
        ``"gt"`` and/or segmentation methods with cached predictions.
    models : CurationModels, optional
        Default: :func:`train_models` on the train split (cached), trained here once.
    options
        Passed to :func:`evaluate_curation` (``match``, ``ntm``, ``write``, ``params``).

    Returns
    -------
    (results, errors)
        ``results``: method -> the dict of tables :func:`evaluate_curation` returns (in the
        order of ``methods``); ``errors``: method -> ``"ErrorType: message"`` for a method
        that could not be curated at all (e.g. no cached predictions). The tables are the
        same wherever the tasks run.
    """
    from ..runner.cluster import dask_client, dask_settings

    methods = list(dict.fromkeys(str(m) for m in methods))
    if models is None:
        models = train_models(dataset.sections(split="train"), workdir=workdir,
                              params=options.get("params"))
    root = str(Path(dataset.root).resolve())
    workdir = str(Path(workdir).resolve())
    args = [(root, dict(dataset.role_overrides), dict(dataset.splits), method, workdir, split,
             options) for method in methods]
    scheduler, workers = dask_settings(scheduler, workers)
    with dask_client(scheduler, workers) as client:
        if client is None:
            outcomes = [_curate_method(*a, models=models, dataset=dataset) for a in args]
        else:
            shared = client.scatter(models, broadcast=True)
            futures = [client.submit(_curate_method, *a, models=shared, pure=False)
                       for a in args]
            outcomes = client.gather(futures)
    results = {m: out for m, (out, error) in zip(methods, outcomes) if error is None}
    errors = {m: error for m, (out, error) in zip(methods, outcomes) if error is not None}
    return results, errors


def _curate_method(root, roles, splits, method, workdir, split, options, models, dataset=None):
    """One method's :func:`evaluate_curation` (on a worker: the dataset is opened there);
    ``(result, None)`` or ``(None, "ErrorType: message")``."""
    from ..core.dataset import Dataset

    try:
        dataset = dataset or Dataset(root, roles=roles or None, splits=splits)
        return evaluate_curation(dataset, method, workdir=workdir, split=split, models=models,
                                 **options), None
    except Exception as error:  # noqa: BLE001 - reported per method, the others go on
        return None, f"{type(error).__name__}: {' '.join(str(error).split())}"


def evaluate_curation(dataset, method: str = "gt", workdir="data", split: str = "test",
                      models: CurationModels | None = None,
                      params: CurationParams | None = None, match: str = "centroid",
                      ntm: str = "auto", write: bool = False, progress: bool = False,
                      scale: float | None = None) -> dict[str, pd.DataFrame]:
    """Curate a split with ground-truth or predicted myofibres and score it.

    Parameters
    ----------
    dataset : Dataset
    method : str
        ``"gt"`` (ground-truth myofibres) or a segmentation method whose predictions are
        cached in ``<workdir>/predictions/<method>/`` (by ``nclsm segment``).
    workdir : path-like
        Holds ``models/`` and ``predictions/``; curated masks and tables go to
        ``<workdir>/curation/<method>/`` when ``write``.
    split : str
        Sections to curate (``test`` by default; ``all`` for every section).
    models : CurationModels, optional
        Default: :func:`train_models` on the dataset's train split (cached).
    match : {"centroid", "iou"}
        How predicted fibres are matched to GT fibres (ignored for ``"gt"``).
    ntm : {"auto", "learned", "rule"}
        Which NTM decision removes fibres from the analysable mask (``"auto"``: the
        published rule for IF at the dataset's scale, the learned classifier for IMC; see
        :func:`~nclsm_utils.curation.models.ntm_definition`).
    scale : float, optional
        NCL-SM IF pixels to the sections' pixels, for the published NTM rule (default:
        :func:`~nclsm_utils.curation.models.section_ntm_scale`: a synthetic dataset's own
        scale, 1 for real NCL-SM).
    write : bool
        Write the curated masks (``<role>/<modality>_<id>.tiff``) and the tables (csv).

    Returns
    -------
    dict of tidy DataFrames
        ``classes`` (per class and section, plus pooled rows: tp/fp/fn, precision, recall,
        F1), ``fr`` (FR pixel IoU per section plus pooled), ``counts`` (Table I counts,
        predicted vs ground truth, per section, modality and total), ``paper`` (per-fibre
        paper metrics of the analysable mask vs the analysable GT), ``paper_summary``
        (per modality and overall), ``fibres`` (per predicted fibre decisions),
        ``gt_fibres`` (per GT fibre classes and matched decisions), ``errors`` (sections
        that failed, with the message), ``definitions`` (which definition each class used
        per modality, and at what scale: :func:`~nclsm_utils.curation.models.definitions_table`).
    """
    from tqdm.auto import tqdm

    if split == "all":
        sections = dataset.sections()
    else:
        sections = dataset.sections(split=split)
    if not sections:
        raise DataError(f"{dataset.root}: no sections in the {split!r} split")
    if models is None:
        models = train_models(dataset.sections(split="train"), workdir=workdir, params=params)
    out_dir = Path(workdir) / "curation" / method.replace(":", "-").replace("/", "-")
    parts: dict[str, list] = {k: [] for k in ("fibres", "gt_fibres", "fr", "counts", "paper")}
    errors = []
    for section in tqdm(sections, desc=f"curate {method}", disable=not progress):
        try:
            myofibres = load_myofibres(section, method, workdir)
            result = evaluate_section(section, models, myofibres, match=match, ntm=ntm,
                                      scale=scale)
        except (DataError, ValueError, OSError) as error:
            log.error("%s: curation failed: %s", section.key, error)
            errors.append({"modality": section.modality, "section": section.id,
                           "error": f"{type(error).__name__}: {error}"})
            continue
        for key in parts:
            parts[key].append(result[key])
        if write:
            for role in ("fr", "fr_fibres", "ntm", "ntm_rule", "fam", "analysable", "am_vs_nam"):
                write_tiff(out_dir / role / f"{section.modality}_{section.id}.tiff",
                           result["masks"][role])
            write_csv(out_dir / "fibres" / f"{section.modality}_{section.id}.csv",
                      result["fibres"])
    frames = {k: (pd.concat(v, ignore_index=True) if v else pd.DataFrame())
              for k, v in parts.items()}
    result = {
        "classes": class_scores(frames["gt_fibres"], frames["fibres"]) if len(frames["gt_fibres"])
        else pd.DataFrame(),
        "fr": fr_scores(frames["fr"]) if len(frames["fr"]) else pd.DataFrame(),
        "counts": counts_table(frames["counts"]) if len(frames["counts"]) else pd.DataFrame(),
        "paper": frames["paper"],
        "paper_summary": paper_summary(frames["paper"]),
        "fibres": frames["fibres"],
        "gt_fibres": frames["gt_fibres"],
        "errors": pd.DataFrame(errors, columns=["modality", "section", "error"]),
        "definitions": _definitions(sections, ntm, scale),
    }
    for frame in ("classes", "paper_summary"):
        if len(result[frame]):
            result[frame].insert(0, "method", method)
    if write:
        for name in ("classes", "fr", "counts", "paper", "paper_summary", "gt_fibres", "errors",
                     "definitions"):
            write_csv(out_dir / f"{name}.csv", result[name])
        write_text(out_dir / "models.json", json.dumps(
            {"models": str(models.path) if models.path else None, "params": models.params.key(),
             "info": models.info, "method": method, "split": split, "match": match, "ntm": ntm},
            indent=2, default=str))
    return result


# ============================================================================ real figure
def figure_curation_scores(models: CurationModels, path=None, ntm: str = "learned",
                           missing_ok: bool = False) -> pd.DataFrame:
    """Curation of the NCL-SM overview figure's section scored against its own panels C-F,
    on the LEFT half only (``x < 240`` px; the right half is held out and never scored).

    Panels A (image) and B (instance mask) go through :func:`classify_fibres` and
    :func:`masks_from_table` as any section does; the truth is panel C (FAM), D (NTM), E
    (folded region) and F (analysable) read by
    :func:`nclsm_utils.core.realpanel.load_curation_labels`. A fibre is scored in the half
    its centroid lies in (the panel letter excluded, as :func:`~nclsm_utils.core.realpanel.half_of`).

    Parameters
    ----------
    models : CurationModels
        Trained curation models (the report's, from the synthetic train split).
    path : path-like, optional
        The figure (default :data:`nclsm_utils.core.realpanel.FIGURE`).
    ntm : {"learned", "rule"}
        The NTM definition scored as curation's decision. Panel D marks elongated and
        partial fibres that the published IF rule never flags, i.e. NTM as annotated (as in
        IMC), so the default is the learned classifier; the rule's row is shown beside it at
        the figure's fibre-size scale (its median fibre diameter over
        :data:`~nclsm_utils.metrics.morphology.NTM_REFERENCE_DIAMETER`).
    missing_ok : bool
        Without the figure, return an empty table (logged) instead of raising
        :class:`~nclsm_utils.core.io.DataError`.

    Returns
    -------
    DataFrame
        One row per score: ``item`` (NTM, NTM (rule), FAM, FR fibres, analysable fibres, FR
        pixels, analysable mask), ``definition``, ``scale``, ``truth`` and ``predicted`` counts (fibres or
        pixels), ``tp``/``fp``/``fn``, ``precision``, ``recall``, ``f1`` (per fibre; for the
        analysable mask the instance F1 at IoU 0.5 and its mean matched IoU in ``iou``) and
        ``iou`` (FR pixel IoU; NaN when neither truth nor prediction has FR pixels).
    """
    from ..core.realpanel import FIGURE, LEFT_HALF_X, half_of, load_curation_labels, load_panel
    from ..metrics.instance import instance_metrics
    from ..metrics.morphology import NTM_REFERENCE_DIAMETER
    from .models import ArraySection

    if ntm not in ("learned", "rule"):
        raise ValueError(f"ntm must be 'learned' or 'rule', got {ntm!r}")
    try:
        panel = load_panel(path or FIGURE)
    except DataError as error:
        if not missing_ok:
            raise
        log.warning("%s", error)
        return pd.DataFrame(columns=["half", "item", "definition", "scale", "truth",
                                     "predicted", "tp", "fp", "fn", "precision", "recall",
                                     "f1", "iou"])
    truth = load_curation_labels(panel)
    labels = panel.labels
    diameter = panel.median_diameter
    scale = diameter / NTM_REFERENCE_DIAMETER
    section = ArraySection({"image": panel.image, "myofibres": labels}, "IMC", "figure",
                           ntm_scale=scale)
    table, fr_mask = classify_fibres(section, models=models)
    masks = masks_from_table(labels, table, fr_mask,
                             ntm_column="ntm" if ntm == "learned" else "ntm_rule")
    fibres = truth.fibres.set_index("label")
    left = fibres.index[fibres["half"] == "left"].to_numpy(np.int64)
    decided = table.set_index("label").reindex(left).fillna(False)
    ntm_used = "ntm" if ntm == "learned" else "ntm_rule"

    def row(item, definition, scale_text, pred, gt) -> dict:
        pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
        tp, fp, fn = int((pred & gt).sum()), int((pred & ~gt).sum()), int((~pred & gt).sum())
        precision, recall, f1 = prf(tp, fp, fn)
        return {"item": item, "definition": definition, "scale": scale_text,
                "truth": int(gt.sum()), "predicted": int(pred.sum()), "tp": tp, "fp": fp,
                "fn": fn, "precision": precision, "recall": recall, "f1": f1, "iou": np.nan}

    fibre_scale = f"{diameter:.1f} px fibres"
    # per-fibre rows score each classifier's own decision (as evaluate_curation does); the
    # analysable rows are the workflow's result (FR, then NTM, then FAM removed)
    analysable = np.isin(left, label_values(masks["analysable"]))
    rows = [
        row("NTM", ntm, "scale-free features" if ntm == "learned" else f"rule x {scale:.3f}",
            decided[ntm_used], fibres.loc[left, "ntm"]),
        row("NTM (rule)", "rule", f"published rule x {scale:.3f} ({fibre_scale})",
            decided["ntm_rule"], fibres.loc[left, "ntm"]),
        row("FAM", "learned", f"features relative to {fibre_scale}", decided["fam"],
            fibres.loc[left, "fam"]),
        row("FR fibres", "learned", fibre_scale, decided["fr"], fibres.loc[left, "fr"]),
        row("analysable fibres", "FR, NTM, FAM removed", fibre_scale, analysable,
            fibres.loc[left, "analysable"]),
    ]
    columns = np.arange(labels.shape[1]) < LEFT_HALF_X
    gt_fr, pred_fr = truth.fr[:, columns], np.asarray(fr_mask, bool)[:, columns]
    inter, union = int((gt_fr & pred_fr).sum()), int((gt_fr | pred_fr).sum())
    rows.append({"item": "FR (pixels)", "definition": "learned", "scale": fibre_scale,
                 "truth": int(gt_fr.sum()), "predicted": int(pred_fr.sum()),
                 "tp": inter, "fp": int(pred_fr.sum()) - inter, "fn": int(gt_fr.sum()) - inter,
                 "precision": np.nan, "recall": np.nan, "f1": np.nan,
                 "iou": inter / union if union else np.nan})
    gt_am = half_of(truth.analysable, "left")
    pred_am = half_of(masks["analysable"].astype(np.int64), "left")
    scores = instance_metrics(gt_am, pred_am, [0.5]).iloc[0]
    rows.append({"item": "analysable mask (F1@0.5)", "definition": "paper metrics",
                 "scale": fibre_scale, "truth": int(scores["n_true"]),
                 "predicted": int(scores["n_pred"]), "tp": int(scores["tp"]),
                 "fp": int(scores["fp"]), "fn": int(scores["fn"]),
                 "precision": float(scores["precision"]), "recall": float(scores["recall"]),
                 "f1": float(scores["f1"]), "iou": float(scores["mean_matched_score"])})
    out = pd.DataFrame(rows)
    out.insert(0, "half", "left")
    return out
