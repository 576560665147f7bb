"""Recompute the NCL-SM paper's published numbers from the public repository's sample data.

The paper's code repository (github.com/atifkhanncl/NCL-SM, MIT) ships real material under
``sample_data/``; :func:`reproduce` recomputes every published number that material allows
and says, row by row, whether ours agrees:

========================  =====================================================================
check                     what is compared
========================  =====================================================================
``qa_pair <S>``           the published per-fibre csv of section S row by row against ours
                          (``evaluate(..., definition="published")``: the notebook's OpenCV
                          contours): ``Fibre_GT``, ``Fibre_Assess``, both totals equal and
                          ``IoU_Score_Assess_GT`` within 1e-9 in every row; needs both masks
``gt_contours <S>``       without the QA mask: the csv's ``Total_GTcontours`` and its
                          ``Fibre_GT`` column against our contours of the ground truth
``table2 QA-IF <metric>`` Table II's QA-IF row (S11 and S60 together: MF-A 23, r_AoB 0.92,
                          r_AiB 0.94, mean IoU 0.96, A% 100 / 100 / 74) from the published
                          per-fibre csvs, at the paper's precision
``shape_features <S>``    the published NTM shape features of every fibre of each
                          ground-truth mask present (integers exactly, ratios within 1e-6)
``ntm_rule flags``        the published NTM rule over every published IF row vs the
                          published flags
``ntm_rule count``        its count vs Table I's 10,744 (only with all 19 IF sections)
``time <S>``              our time for a QA pair's rows vs the published notebook's log
                          (36 min 53 s for S11's 489 fibres, 22 min 56 s for S60's 586);
                          informative, never a mismatch
========================  =====================================================================

A missing file skips only its rows, with a note; ``match`` is True/False for a comparison
and None for a skipped or informative row.

Example
-------
>>> table = reproduce("NCL-SM")                        # doctest: +SKIP
>>> table[["check", "published", "recomputed", "match"]]  # doctest: +SKIP
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.io import DataError

#: The published numbers (NCL-SM paper, Tables I and II; the published notebook's log).
PUBLISHED_QA_IF = {"MF-A": 23, "r_AoB": 0.92, "r_AiB": 0.94, "mean IoU": 0.96,
                   "A%(IoU>0.80)": 100.0, "A%(IoU>0.90)": 100.0, "A%(IoU>0.95)": 74.0}
#: Decimals the paper prints for each Table II value.
PUBLISHED_DIGITS = {"MF-A": 0, "r_AoB": 2, "r_AiB": 2, "mean IoU": 2, "A%(IoU>0.80)": 0,
                    "A%(IoU>0.90)": 0, "A%(IoU>0.95)": 0}
PUBLISHED_NTM_IF = 10744
PUBLISHED_IF_SECTIONS = 19
PUBLISHED_S11_SECONDS = 36 * 60 + 53
#: The published notebook's logged time per QA section (its progress bar over the GT fibres).
PUBLISHED_SECONDS = {"S11": PUBLISHED_S11_SECONDS, "S60": 22 * 60 + 56}
#: Largest IoU difference of a row that still counts as equal to the published csv.
IOU_TOLERANCE = 1e-9
QA_SECTIONS = ("S11", "S60")

#: The paper's published rows of Tables II and III (real NCL-SM; Table III on the IMC
#: sections P02 and P06, mitocyto *with manual corrections*), for display beside ours.
PUBLISHED_ROWS = [
    {"table": "II", "row": "QA-IMC", "sections": "IMC QA sections", "MF-A": 53,
     "r_AoB": 0.99, "r_AiB": 0.77, "mean IoU": 0.96, "A%(IoU>0.80)": 100.0,
     "A%(IoU>0.90)": 100.0, "A%(IoU>0.95)": 77.4},
    {"table": "II", "row": "QA-IF", "sections": "S11, S60", **PUBLISHED_QA_IF},
    {"table": "III", "row": "mitocyto (with manual corrections)", "sections": "P02, P06",
     "MF-A": 1040, "r_AoB": 0.90, "r_AiB": -0.15, "mean IoU": 0.91, "A%(IoU>0.80)": 95.24,
     "A%(IoU>0.90)": 74.0, "A%(IoU>0.95)": 11.3},
    {"table": "III", "row": "QA", "sections": "P02, P06", "MF-A": 26, "r_AoB": 0.96,
     "r_AiB": 0.72, "mean IoU": 0.95, "A%(IoU>0.80)": 100.0, "A%(IoU>0.90)": 100.0,
     "A%(IoU>0.95)": 61.5},
]


def published_rows(table: str | None = None) -> pd.DataFrame:
    """The paper's published rows (:data:`PUBLISHED_ROWS`), of Table ``"II"`` or ``"III"``
    or both.

    >>> published_rows("III")["row"].tolist()
    ['mitocyto (with manual corrections)', 'QA']
    """
    frame = pd.DataFrame(PUBLISHED_ROWS)
    return frame if table is None else frame[frame["table"] == table].reset_index(drop=True)


#: Files of the repository's ``sample_data/`` (relative to the repository root).
LAYOUT = {
    "gt": "sample_data/sample_IF_groundtruth_masks/{section}.tiff",
    "qa": "sample_data/sample_assess_masks/{section}.tiff",
    "image": "sample_data/sample_IF_images/{section}.png",
    "per_fibre": "sample_data/sample_ouputs/quality_metrics_csvs/{section}.csv",
    "features": "sample_data/sample_ouputs/NTM_csvs/all_Myofibres_Calculations_QIF.csv",
    "ntm_flags": "sample_data/sample_ouputs/NTM_csvs/NTM_detection.csv",
}
COLUMNS = ["check", "published", "recomputed", "match", "detail"]
#: Shape-feature columns compared exactly and within 1e-6.
EXACT = ["Fiber_on_Border", "Fiber_Area", "Fiber_Perimeter", "Fiber_Width_Ellipse",
         "Fiber_Length_Ellipse", "Fiber_Width_Bbox", "Fiber_Length_Bbox"]
FLOATS = ["Convexity", "Aspect_Ratio_Ellipse", "lengthsquared_by_Area_Ellipse",
          "Aspect_Ratio_Bbox", "lengthsquared_by_area_Bbox",
          "Fiber_Perimeter_by_Rectangular_Perimeter"]


def sample_path(repo, role: str, section: str = "") -> Path:
    """Path of a sample file of the repository checkout ``repo`` (see :data:`LAYOUT`).

    >>> sample_path("NCL-SM", "per_fibre", "S11").as_posix()
    'NCL-SM/sample_data/sample_ouputs/quality_metrics_csvs/S11.csv'
    """
    return Path(repo) / LAYOUT[role].format(section=section)


def _row(check, published, recomputed, match, detail="") -> dict:
    return {"check": check, "published": published, "recomputed": recomputed,
            "match": match, "detail": detail}


def _skip(check, published, missing) -> dict:
    names = ", ".join(str(p) for p in missing)
    return _row(check, published, None, None, f"skipped: {names} missing")


def _labels(path: Path) -> np.ndarray:
    from ..core.dataset import as_labels
    from ..core.io import read_array

    return as_labels(read_array(path), path)


# ---------------------------------------------------------------------------- the checks
def compare_rows(ours: pd.DataFrame, published: pd.DataFrame,
                 tolerance: float = IOU_TOLERANCE) -> pd.Series:
    """Which rows of a published per-fibre csv ours reproduces exactly.

    Parameters
    ----------
    ours : DataFrame
        :func:`nclsm_utils.metrics.evaluate` with ``definition="published"``.
    published : DataFrame
        :func:`nclsm_utils.metrics.read_per_fibre_csv` of the published csv.
    tolerance : float
        Largest IoU difference that counts as equal.

    Returns
    -------
    Series of bool
        One entry per published row (in file order): True when ours has a row at the same
        position with the same ``gt_id`` (``Fibre_GT``), ``pred_id`` (``Fibre_Assess``),
        ``n_gt`` and ``n_pred`` (the totals) and an IoU within ``tolerance``.

    Examples
    --------
    >>> ours = pd.DataFrame({"gt_id": [1, 2], "pred_id": [2, 0], "n_gt": 2, "n_pred": 2,
    ...                      "iou": [0.9, 0.0]})
    >>> compare_rows(ours, ours.assign(iou=[0.9 + 1e-12, 0.0])).tolist()
    [True, True]
    >>> compare_rows(ours, ours.assign(pred_id=[1, 0])).tolist()
    [False, True]
    """
    n = min(len(ours), len(published))
    equal = np.zeros(len(published), bool)
    a, b = ours.iloc[:n], published.iloc[:n]
    same = np.ones(n, bool)
    for column in ("gt_id", "pred_id", "n_gt", "n_pred"):
        same &= a[column].to_numpy(np.int64) == b[column].to_numpy(np.int64)
    same &= np.abs(a["iou"].to_numpy(float) - b["iou"].to_numpy(float)) <= tolerance
    equal[:n] = same
    return pd.Series(equal, index=published.index, name="equal")


def qa_pair_rows(repo, section: str) -> list[dict]:
    """The published per-fibre csv of one QA pair, row by row, against ours, and our time.

    Ours is :func:`nclsm_utils.metrics.evaluate` with ``definition="published"`` (the
    notebook's contours, centroid rule and filled-contour IoU); a row agrees when
    :func:`compare_rows` says so, and the check agrees when every row does and the row
    counts are equal. Without the QA mask, the ground-truth side alone is compared
    (:func:`gt_contour_rows`). The ring percentages need the section image, which the
    repository does not ship, and are not compared.
    """
    from ..metrics import evaluate, read_per_fibre_csv

    gt_path, qa_path = sample_path(repo, "gt", section), sample_path(repo, "qa", section)
    csv_path = sample_path(repo, "per_fibre", section)
    check = f"qa_pair {section}"
    missing = [p for p in (gt_path, qa_path, csv_path) if not p.is_file()]
    if missing:
        rows = [_skip(check, "per-fibre rows", missing)]
        if gt_path.is_file() and csv_path.is_file():
            rows += gt_contour_rows(repo, section)
        return rows
    published = read_per_fibre_csv(csv_path)
    gt, qa = _labels(gt_path), _labels(qa_path)
    start = time.perf_counter()
    ours = evaluate(gt, qa, definition="published")
    seconds = time.perf_counter() - start
    equal = compare_rows(ours, published)
    n_equal, n_pub = int(equal.sum()), len(published)
    both = min(len(ours), n_pub)
    worst = float(np.max(np.abs(ours["iou"].to_numpy(float)[:both]
                                - published["iou"].to_numpy(float)[:both]))) if both else 0.0
    detail = (f"{n_pub} rows compared (Fibre_GT, Fibre_Assess, both totals equal, IoU within "
              f"{IOU_TOLERANCE:g}): {n_equal} equal; {int(ours['matched'].sum())} matched by "
              f"us, {int(published['matched'].sum())} published; largest IoU difference "
              f"{worst:.2e}")
    if len(ours) != n_pub:
        detail += f"; we find {len(ours)} GT contours"
    if n_equal < n_pub:
        first = [int(i) for i in np.flatnonzero(~equal.to_numpy())[:5]]
        detail += f"; first differing rows (Fibre_GT): {first}"
    rows = [_row(check, f"{n_pub} rows, {int(published['matched'].sum())} matched",
                 f"{n_equal} of {n_pub} rows equal", bool(n_equal == n_pub == len(ours)),
                 detail)]
    if section in PUBLISHED_SECONDS:
        rows.append(_row(f"time {section}", f"{PUBLISHED_SECONDS[section]} s (published "
                         "notebook)", f"{seconds:.1f} s", None,
                         f"our contours, matches and IoUs of all {len(ours)} rows (the "
                         "published time also covers the ring percentages, which need the "
                         "section image)"))
    return rows


def gt_contour_rows(repo, section: str) -> list[dict]:
    """The ground-truth side of a published per-fibre csv when the QA mask is missing:
    ``Total_GTcontours`` and the ``Fibre_GT`` column against our contours of the ground
    truth (:func:`nclsm_utils.metrics.published_contours`)."""
    from ..metrics import published_contours, read_per_fibre_csv

    published = read_per_fibre_csv(sample_path(repo, "per_fibre", section))
    ours = published_contours(_labels(sample_path(repo, "gt", section)))
    totals = sorted(set(published["n_gt"].tolist()))
    ids_ok = published["gt_id"].tolist() == list(range(1, len(ours) + 1))
    ok = totals == [len(ours)] and ids_ok
    return [_row(f"gt_contours {section}", f"{totals[0] if len(totals) == 1 else totals} GT "
                 "contours", f"{len(ours)} GT contours", bool(ok),
                 f"Total_GTcontours of all {len(published)} rows and Fibre_GT 0..{len(ours) - 1} "
                 f"in order: {'equal' if ok else 'differ'} (the QA mask is needed for the "
                 "other columns)")]


def table2_rows(repo) -> list[dict]:
    """Table II's QA-IF row from the published per-fibre csvs of S11 and S60."""
    from ..metrics import read_per_fibre_csv, summarise

    paths = [sample_path(repo, "per_fibre", s) for s in QA_SECTIONS]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        return [_skip(f"table2 QA-IF {name}", value, missing)
                for name, value in PUBLISHED_QA_IF.items()]
    summary = summarise([read_per_fibre_csv(p) for p in paths]).iloc[0]
    rows = []
    for name, value in PUBLISHED_QA_IF.items():
        digits = PUBLISHED_DIGITS[name]
        ours = round(float(summary[name]), digits)
        rows.append(_row(f"table2 QA-IF {name}", value, ours,
                         math.isclose(ours, float(value), abs_tol=10 ** -digits / 2 + 1e-9),
                         f"unrounded {float(summary[name]):.4f}"))
    return rows


def _published_features(repo) -> pd.DataFrame | None:
    path = sample_path(repo, "features")
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except Exception as error:  # noqa: BLE001 - pandas raises several types
        raise DataError(f"{path}: cannot read the csv ({type(error).__name__}: {error})") from error
    if "NTM" not in table:
        flags = sample_path(repo, "ntm_flags")
        if flags.is_file():
            extra = pd.read_csv(flags)
            keys = [k for k in ("FileName", "Fibre_ID") if k in extra and k in table]
            if "NTM" in extra and keys:
                table = table.merge(extra[keys + ["NTM"]], on=keys, how="left")
    return table


def shape_feature_rows(repo, published: pd.DataFrame | None) -> list[dict]:
    """Shape features of each ground-truth mask present vs the published rows."""
    from ..metrics.morphology import shape_features

    if published is None:
        return [_skip("shape_features", "published shape features",
                      [sample_path(repo, "features")])]
    rows = []
    folder = sample_path(repo, "gt", "x").parent
    masks = sorted(folder.glob("*.tiff")) if folder.is_dir() else []
    if not masks:
        return [_skip("shape_features", "published shape features", [folder])]
    for path in masks:
        section = path.stem
        theirs = published[published["FileName"].astype(str) == section]
        theirs = theirs.set_index("Fibre_ID").sort_index()
        check = f"shape_features {section}"
        if theirs.empty:
            rows.append(_row(check, "no published rows", None, None,
                             f"skipped: {section} is not in the published csv"))
            continue
        ours = shape_features(_labels(path)).set_index("label").sort_index()
        if ours.index.tolist() != theirs.index.tolist():
            rows.append(_row(check, f"{len(theirs)} fibres", f"{len(ours)} fibres", False,
                             "different fibre ids"))
            continue
        exact_bad = [c for c in EXACT if c in theirs and c in ours and
                     not (ours[c].to_numpy() == theirs[c].to_numpy()).all()]
        worst = max((float(np.max(np.abs(ours[c].to_numpy(float) - theirs[c].to_numpy(float))))
                     for c in FLOATS if c in theirs and c in ours), default=0.0)
        ok = not exact_bad and worst <= 1e-6
        rows.append(_row(check, f"{len(theirs)} fibres", f"{len(ours)} fibres", ok,
                         f"integers differ in: {', '.join(exact_bad) or 'none'}; largest "
                         f"ratio difference {worst:.1e}"))
    return rows


def ntm_rows(repo, published: pd.DataFrame | None) -> list[dict]:
    """The published NTM rule over the published IF rows vs their flags and Table I."""
    from ..metrics.morphology import _as_bool, ntm_rule

    if published is None:
        return [_skip("ntm_rule count", PUBLISHED_NTM_IF, [sample_path(repo, "features")])]
    flags = ntm_rule(published)
    n_sections = published["FileName"].nunique()
    rows = []
    if "NTM" in published:
        theirs = _as_bool(published["NTM"])
        agree = int((theirs == flags).sum())
        rows.append(_row("ntm_rule flags", f"{int(theirs.sum())} flagged",
                         f"{int(flags.sum())} flagged", agree == len(flags),
                         f"agrees on {agree} of {len(flags)} fibres"))
    if n_sections == PUBLISHED_IF_SECTIONS:
        rows.append(_row("ntm_rule count", PUBLISHED_NTM_IF, int(flags.sum()),
                         int(flags.sum()) == PUBLISHED_NTM_IF,
                         f"{len(flags)} fibres of {n_sections} IF sections (Table I)"))
    else:
        rows.append(_row("ntm_rule count", PUBLISHED_NTM_IF, int(flags.sum()), None,
                         f"not compared: the file has {n_sections} of the "
                         f"{PUBLISHED_IF_SECTIONS} IF sections"))
    return rows


def reproduce(repo) -> pd.DataFrame:
    """Every check of the module docstring on a checkout of the NCL-SM code repository.

    Parameters
    ----------
    repo : path-like
        The repository root (holding ``sample_data/``).

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS`: ``check``, ``published``, ``recomputed``, ``match``
        (True/False; None when skipped or informative) and ``detail``.

    Raises
    ------
    DataError
        ``repo`` is not a folder with ``sample_data/``, or a file cannot be read.
    """
    repo = Path(repo)
    if not (repo / "sample_data").is_dir():
        raise DataError(f"{repo}: no sample_data/ folder; pass a checkout of "
                        "https://github.com/atifkhanncl/NCL-SM (git clone it on a connected "
                        "machine and copy it here)")
    rows = []
    for section in QA_SECTIONS:
        rows += qa_pair_rows(repo, section)
    rows += table2_rows(repo)
    published = _published_features(repo)
    rows += shape_feature_rows(repo, published)
    rows += ntm_rows(repo, published)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["match"] = table["match"].astype(object)
    return table


def disagreements(table: pd.DataFrame) -> int:
    """How many rows compared a number and disagree (the CLI's exit status is 1 then)."""
    return int(sum(1 for m in table["match"] if m is False))
