"""`nclsm reproduce` (nclsm_utils.report.reproduce) on the real sample files laid out as a copy of
the paper's code repository, and on small made-up QA pairs."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from nclsm_utils.report import reproduce as rep
from nclsm_utils.cli import main
from nclsm_utils.core.io import DataError


def _link(target, link):
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


@pytest.fixture(scope="module")
def repo(sample_dir, tmp_path_factory):
    """``sample_data/`` of the public repository with what ../shared holds (S11's ground
    truth, S11's published per-fibre csv, the IF shape-feature csv of 18 sections)."""
    root = tmp_path_factory.mktemp("NCL-SM")
    _link(sample_dir / "S11_groundtruth_mask.tiff", rep.sample_path(root, "gt", "S11"))
    _link(sample_dir / "S11_qa_vs_groundtruth_per_fibre.csv",
          rep.sample_path(root, "per_fibre", "S11"))
    _link(sample_dir / "IF_fibre_shape_features_ntm.csv", rep.sample_path(root, "features"))
    return root


@pytest.fixture(scope="module")
def table(repo):
    return rep.reproduce(repo)


def test_real_sample_rows(table):
    rows = table.set_index("check")
    shape = rows.loc["shape_features S11"]
    assert shape["match"] is True and shape["recomputed"] == "488 fibres"
    assert "integers differ in: none" in shape["detail"]
    flags = rows.loc["ntm_rule flags"]
    assert flags["match"] is True and flags["recomputed"] == "10698 flagged"
    assert "agrees on 26871 of 26871" in flags["detail"]
    count = rows.loc["ntm_rule count"]    # 18 of 19 sections: not compared with 10,744
    assert count["match"] is None and count["recomputed"] == 10698
    assert "18 of the 19" in count["detail"]
    # no QA masks, no S60 csv: those rows are skipped, each naming the missing file
    for check in ("qa_pair S11", "qa_pair S60", "table2 QA-IF MF-A", "table2 QA-IF r_AoB"):
        assert rows.loc[check, "match"] is None
        assert rows.loc[check, "detail"].startswith("skipped:") and "missing" in \
            rows.loc[check, "detail"]
    assert "sample_assess_masks/S11.tiff" in rows.loc["qa_pair S11", "detail"]
    assert "quality_metrics_csvs/S60.csv" in rows.loc["table2 QA-IF MF-A", "detail"]
    assert rep.disagreements(table) == 0
    assert list(table.columns) == rep.COLUMNS


def test_cli_json_and_exit_status(repo, table, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(rep, "reproduce", lambda path: table)   # computed once above
    assert main(["reproduce", "--ncl-sm-repo", str(repo), "--json",
                 "--out", str(tmp_path / "out")]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert {"check", "published", "recomputed", "match", "detail"} == set(payload["rows"][0])
    checks = {r["check"]: r for r in payload["rows"]}
    assert checks["shape_features S11"]["match"] is True
    assert checks["ntm_rule count"]["match"] is None
    assert (tmp_path / "out" / "reproduction.csv").is_file()
    wrong = table.copy()
    wrong.loc[0, "match"] = False
    monkeypatch.setattr(rep, "reproduce", lambda path: wrong)
    assert main(["reproduce", "--ncl-sm-repo", str(repo)]) == 1
    assert "1 disagree" in capsys.readouterr().out


def test_not_a_repository_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="no sample_data/ folder.*git clone"):
        rep.reproduce(tmp_path)


def _published_csv(per_fibre: pd.DataFrame, path) -> None:
    """Our per-fibre table written in the published notebook's csv format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({
        "Fibre_GT": per_fibre["gt_id"] - 1,
        "Fibre_Assess": [str(p - 1) if m else "not_found"
                         for p, m in zip(per_fibre["pred_id"], per_fibre["matched"])],
        "Total_GTcontours": len(per_fibre), "Total_Assess_contours": per_fibre["n_pred"],
        "IoU_Score_Assess_GT": per_fibre["iou"],
        "GT_proportion_membrane_included": 50.0, "GT_proportion_mito_mass_missed": 5.0,
        "Assess_proportion_membrane_included": 50.0,
        "Assess_proportion_mito_mass_missed": 5.0}).to_csv(path, index=False)


def test_qa_pair_and_table2_on_a_made_up_pair(tmp_path):
    from nclsm_utils.core.io import write_tiff
    from nclsm_utils.metrics import evaluate

    gt = np.zeros((60, 60), np.uint16)
    gt[5:25, 5:25], gt[5:25, 35:55], gt[35:55, 5:25] = 1, 2, 3
    qa = np.zeros_like(gt)
    qa[6:25, 5:25], qa[5:25, 36:55] = 1, 2          # fibre 3 not annotated
    write_tiff(rep.sample_path(tmp_path, "gt", "S11"), gt)
    write_tiff(rep.sample_path(tmp_path, "qa", "S11"), qa)
    ours = evaluate(gt, qa, definition="published")
    _published_csv(ours, rep.sample_path(tmp_path, "per_fibre", "S11"))
    rows = pd.DataFrame(rep.qa_pair_rows(tmp_path, "S11")).set_index("check")
    pair = rows.loc["qa_pair S11"]
    assert pair["match"] == True and pair["published"] == "3 rows, 2 matched"  # noqa: E712
    assert pair["recomputed"] == "3 of 3 rows equal"
    assert "largest IoU difference 0.00e+00" in pair["detail"]
    assert rows.loc["time S11", "match"] is None
    # a published IoU that differs by more than 1e-9 is a disagreement, naming the row
    tampered = ours.assign(iou=ours["iou"] + np.where(ours["matched"], 2e-9, 0))
    _published_csv(tampered, rep.sample_path(tmp_path, "per_fibre", "S11"))
    row = rep.qa_pair_rows(tmp_path, "S11")[0]
    assert row["match"] is False and row["recomputed"] == "1 of 3 rows equal"
    assert "first differing rows (Fibre_GT): [0, 1]" in row["detail"]
    # so is a published row with another assessed fibre (label-based IoUs are not equal)
    _published_csv(evaluate(gt, qa, match="pred_centroid"),
                   rep.sample_path(tmp_path, "per_fibre", "S11"))
    assert rep.qa_pair_rows(tmp_path, "S11")[0]["match"] is False
    # Table II's QA-IF row from two csvs: made-up numbers disagree with the paper's
    _published_csv(ours, rep.sample_path(tmp_path, "per_fibre", "S60"))
    table2 = pd.DataFrame(rep.table2_rows(tmp_path)).set_index("check")
    assert table2.loc["table2 QA-IF MF-A", "recomputed"] == 4
    assert table2.loc["table2 QA-IF MF-A", "match"] == False  # noqa: E712
    assert table2.loc["table2 QA-IF mean IoU", "published"] == 0.96


def test_gt_side_is_compared_without_the_qa_mask(tmp_path):
    from nclsm_utils.core.io import write_tiff
    from nclsm_utils.metrics import evaluate

    gt = np.zeros((40, 40), np.uint16)
    gt[5:15, 5:15], gt[20:30, 20:30] = 3, 8
    write_tiff(rep.sample_path(tmp_path, "gt", "S11"), gt)
    _published_csv(evaluate(gt, gt, definition="published"),
                   rep.sample_path(tmp_path, "per_fibre", "S11"))
    rows = pd.DataFrame(rep.qa_pair_rows(tmp_path, "S11")).set_index("check")
    assert rows.loc["qa_pair S11", "match"] is None
    assert "sample_assess_masks/S11.tiff missing" in rows.loc["qa_pair S11", "detail"]
    assert rows.loc["gt_contours S11", "match"] == True  # noqa: E712
    assert rows.loc["gt_contours S11", "recomputed"] == "2 GT contours"
    gt[33:36, 2:5] = 1                                # a third fibre the csv does not have
    write_tiff(rep.sample_path(tmp_path, "gt", "S11"), gt)
    assert rep.gt_contour_rows(tmp_path, "S11")[0]["match"] is False


# ---------------------------------------------------------------------------- the whole repository
@pytest.fixture(scope="module")
def full_run(ncl_sm_repo, tmp_path_factory):
    """`nclsm reproduce --json` on every file ../shared holds, laid out as the repository."""
    import contextlib
    import io
    import time

    out = tmp_path_factory.mktemp("reproduction")
    buffer = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(buffer):
        status = main(["reproduce", "--ncl-sm-repo", str(ncl_sm_repo), "--json",
                       "--out", str(out)])
    seconds = time.perf_counter() - start
    return status, json.loads(buffer.getvalue())["rows"], seconds, out


def test_whole_reproduction_agrees_on_every_compared_number(full_run):
    status, rows, seconds, out = full_run
    assert status == 0 and seconds < 60
    compared = [r for r in rows if r["match"] is not None]
    assert len(compared) >= 12 and all(r["match"] is True for r in compared)
    checks = {r["check"]: r for r in rows}
    s60 = checks["qa_pair S60"]
    assert s60["published"] == "586 rows, 13 matched"
    assert s60["recomputed"] == "586 of 586 rows equal"
    assert s60["detail"].startswith("586 rows compared") and "586 equal" in s60["detail"]
    assert checks["qa_pair S11"]["match"] is None     # S11's QA mask is not public
    assert checks["gt_contours S11"]["recomputed"] == "489 GT contours"
    for name, value in rep.PUBLISHED_QA_IF.items():
        assert checks[f"table2 QA-IF {name}"]["match"] is True
        assert checks[f"table2 QA-IF {name}"]["recomputed"] == value
    assert checks["ntm_rule count"]["recomputed"] == 10744
    assert checks["ntm_rule count"]["match"] is True
    assert checks["ntm_rule flags"]["detail"] == "agrees on 27455 of 27455 fibres"
    assert checks["shape_features S60"]["recomputed"] == "584 fibres"
    assert checks["time S60"]["match"] is None
    written = pd.read_csv(out / "reproduction.csv")
    assert written["check"].tolist() == [r["check"] for r in rows]
