"""Bootstrap intervals and paired comparisons (nclsm_utils.metrics.uncertainty) on known cases."""
import numpy as np
import pandas as pd
import pytest

from nclsm_utils import metrics
from nclsm_utils.metrics import uncertainty as unc


def _fibres(section, ious, gt_mem=None, pred_mem=None, gt_mass=None, pred_mass=None):
    n = len(ious)
    rng = np.random.default_rng(len(section) + n)
    gt_mem = rng.uniform(0, 60, n) if gt_mem is None else np.asarray(gt_mem, float)
    gt_mass = rng.uniform(0, 10, n) if gt_mass is None else np.asarray(gt_mass, float)
    return pd.DataFrame({
        "section": section, "gt_id": np.arange(1, n + 1), "pred_id": np.arange(1, n + 1),
        "matched": True, "iou": np.asarray(ious, float),
        "gt_membrane_included": gt_mem,
        "pred_membrane_included": gt_mem + 5 if pred_mem is None else pred_mem,
        "gt_mass_missed": gt_mass,
        "pred_mass_missed": gt_mass * 0.5 if pred_mass is None else pred_mass, "n_pred": n})


def test_a_constant_has_a_zero_width_interval():
    table = pd.concat([_fibres("a", [0.9] * 20), _fibres("b", [0.9] * 30)])
    low, high = unc.paper_metric_intervals(table)["mean IoU"]
    assert low == high == pytest.approx(0.9)
    assert unc.paper_metric_intervals(table)["A%(IoU>0.80)"] == (100.0, 100.0)


def test_resampling_is_within_sections():
    # constant within each section, different between them: stratified resampling keeps
    # each section's share, so the mean is fixed (a pooled resampling would spread it)
    table = pd.concat([_fibres("a", [0.9] * 10), _fibres("b", [0.7] * 30)])
    low, high = unc.paper_metric_intervals(table)["mean IoU"]
    assert low == pytest.approx(0.75) and high == pytest.approx(0.75)


def test_seeded_bounds_are_reproducible_and_bracket_the_value():
    rng = np.random.default_rng(1)
    table = pd.concat([_fibres("a", rng.uniform(0.6, 1.0, 50)),
                       _fibres("b", rng.uniform(0.7, 1.0, 50))])
    got = unc.paper_metric_intervals(table)
    assert got == unc.paper_metric_intervals(table)      # seeded
    point = metrics.summarise(table).iloc[0]
    for name in ("mean IoU", "A%(IoU>0.90)", "r_AoB", "r_AiB"):
        low, high = got[name]
        assert low <= point[name] <= high, name
    low, high = got["mean IoU"]
    assert (round(low, 3), round(high, 3)) == (0.811, 0.849)
    # r of exact linear relations is 1 in every resample
    assert got["r_AiB"] == pytest.approx((1.0, 1.0))
    assert got["r_AoB"] == pytest.approx((1.0, 1.0))
    # a different seed moves the bounds a little, not the point
    other = unc.paper_metric_intervals(table, seed=5)["mean IoU"]
    assert other != got["mean IoU"] and abs(other[0] - low) < 0.01


def test_unmatched_fibres_are_not_resampled_and_empty_is_nan():
    table = _fibres("a", [0.8, 0.9, 0.0])
    table.loc[2, "matched"] = False
    low, high = unc.paper_metric_intervals(table)["mean IoU"]
    assert 0.8 <= low <= high <= 0.9
    none = table.assign(matched=False)
    assert np.isnan(unc.paper_metric_intervals(none)["mean IoU"]).all()


def test_tile_counts_add_up_to_the_instance_metrics(tiny_root):
    from nclsm_utils.dataset import Dataset

    section = Dataset(tiny_root).sections()[0]
    gt = section.mask("myofibres")
    pred = np.where(gt % 3 == 0, 0, gt)                   # a third of the fibres missed
    pred[:20, :20] = pred.max() + 1                      # one false positive
    counts = unc.tile_counts(gt, pred, thresholds=(0.5,))
    reference = metrics.instance_metrics(gt, pred, [0.5]).iloc[0]
    assert counts["tp"].sum() == reference["tp"]
    assert counts["fp"].sum() == reference["fp"]
    assert counts["fn"].sum() == reference["fn"]
    assert len(counts) == unc.TILES ** 2


def _reference_tile_counts(gt, pred, thresholds, tiles):
    """tile_counts as stardist.matching and scipy.ndimage.center_of_mass give it."""
    from scipy import ndimage
    from stardist.matching import matching

    def tile_of(labels):
        ids = np.unique(labels)
        ids = ids[ids > 0]
        centres = ndimage.center_of_mass(np.ones_like(labels, np.uint8), labels, ids)
        return {int(i): min(int(r * tiles / labels.shape[0]), tiles - 1) * tiles
                + min(int(c * tiles / labels.shape[1]), tiles - 1) for i, (r, c) in zip(ids, centres)}

    gt_tile, pred_tile = tile_of(gt), tile_of(pred)
    rows = []
    for thresh in thresholds:
        tp, fp, fn = (np.zeros(tiles * tiles, int) for _ in range(3))
        sum_iou = np.zeros(tiles * tiles)
        done_gt, done_pred = set(), set()
        result = matching(gt, pred, thresh=thresh, report_matches=True)
        for (g, p), score in zip(result.matched_pairs, result.matched_scores):
            if score >= thresh:
                tp[gt_tile[g]] += 1
                sum_iou[gt_tile[g]] += score
                done_gt.add(g)
                done_pred.add(p)
        for g, t in gt_tile.items():
            fn[t] += g not in done_gt
        for p, t in pred_tile.items():
            fp[t] += p not in done_pred
        rows.append(pd.DataFrame({"tile": np.arange(tiles * tiles), "thresh": float(thresh),
                                  "tp": tp, "fp": fp, "fn": fn, "sum_iou": sum_iou}))
    return pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tile_counts_are_stardist_matching_per_centroid_tile(seed):
    from skimage.segmentation import expand_labels

    rng = np.random.default_rng(seed)
    gt = np.zeros((90, 130), np.uint16)
    gt[rng.integers(0, 90, 40), rng.integers(0, 130, 40)] = np.arange(1, 41)
    gt = expand_labels(gt, 6)
    # a prediction: some fibres shifted, some split in two (IoU ties near 0.5), specks
    pred = np.roll(gt, rng.integers(-2, 3, 2), axis=(0, 1)).astype(np.uint32) * 3
    pred[(pred % 2 == 0) & (np.arange(130) % 2 == 0)] += 1
    pred[rng.integers(0, 90, 30), rng.integers(0, 130, 30)] = 500 + np.arange(30)
    got = unc.tile_counts(gt, pred, thresholds=(0.3, 0.5, 0.75), tiles=3)
    pd.testing.assert_frame_equal(got, _reference_tile_counts(gt, pred, (0.3, 0.5, 0.75), 3))


def test_instance_intervals_from_tiles():
    # two sections of 4 tiles; every tile 3 TP 1 FN: F1 = 6/7 in every resample
    tiles = [pd.DataFrame({"tile": range(4), "thresh": 0.5, "tp": 3, "fp": 0, "fn": 1,
                           "sum_iou": 2.7}) for _ in range(2)]
    got = unc.instance_intervals(tiles)
    assert got["F1@0.5"] == pytest.approx((6 / 7, 6 / 7))
    assert got["AP@0.5"] == pytest.approx((0.75, 0.75))
    assert got["PQ"] == pytest.approx((0.9 * 3 / 3.5, 0.9 * 3 / 3.5))
    assert np.isnan(got["AP@0.75"]).all()               # no counts at 0.75
    varied = [pd.DataFrame({"tile": range(4), "thresh": 0.5, "tp": [4, 2, 3, 3],
                            "fp": [0, 2, 1, 1], "fn": [0, 1, 1, 2], "sum_iou": 0.0})]
    low, high = unc.instance_intervals(varied)["F1@0.5"]
    assert low < 2 * 12 / (24 + 4 + 4) < high


def test_holm_matches_the_textbook_example():
    assert unc.holm([0.01, 0.04, 0.03, 0.005]).round(3).tolist() == [0.03, 0.06, 0.06, 0.02]
    assert np.isnan(unc.holm([np.nan, 0.2])[0]) and unc.holm([np.nan, 0.2])[1] == 0.2


def test_pairwise_comparisons_find_a_real_difference_only():
    rng = np.random.default_rng(0)
    base = [_fibres(s, rng.uniform(0.7, 0.95, 60)) for s in ("a", "b")]
    better = [t.assign(iou=t["iou"] + 0.05) for t in base]
    same = [t.assign(iou=t["iou"] + rng.normal(0, 0.01, len(t))) for t in base]
    table = unc.pairwise_comparisons({"x": pd.concat(base), "y": pd.concat(better),
                                      "z": pd.concat(same)}, metrics=("IoU",))
    assert list(table.columns) == unc.PAIRWISE_COLUMNS
    xy = table[(table.method_a == "x") & (table.method_b == "y")].iloc[0]
    assert xy["difference"] == pytest.approx(-0.05)
    assert xy["CI low"] == pytest.approx(-0.05) and xy["CI high"] == pytest.approx(-0.05)
    assert xy["better"] == "y" and bool(xy["distinguishable"])
    xz = table[(table.method_a == "x") & (table.method_b == "z")].iloc[0]
    assert xz["CI low"] < 0 < xz["CI high"] and not bool(xz["distinguishable"])
    assert xz["n fibres"] == 120
    assert (table["holm p"] >= table["wilcoxon p"]).all()


def test_pairwise_uses_fibres_both_matched_and_errors_lower_is_better():
    a = _fibres("s", [0.9, 0.8, 0.7, 0.6], gt_mem=[10, 20, 30, 40], pred_mem=[10, 20, 30, 40])
    b = _fibres("s", [0.9, 0.8, 0.7, 0.6], gt_mem=[10, 20, 30, 40], pred_mem=[15, 25, 35, 45])
    b.loc[3, "matched"] = False
    table = unc.pairwise_comparisons({"a": a, "b": b}, metrics=("membrane error",))
    row = table.iloc[0]
    assert row["n fibres"] == 3 and row["difference"] == pytest.approx(-5.0)
    assert row["better"] == "a"


def test_seeds_train_again_and_table3_reports_the_spread(tiny_root, tmp_path):
    from nclsm_utils.report import tables
    from nclsm_utils.dataset import Dataset
    from nclsm_utils.report.pipeline import segment_method

    dataset = Dataset(tiny_root)
    work = tmp_path / "work"
    # the U-Net: a quick Cellpose or StarDist training from scratch matches too few fibres
    result, record = segment_method("unet", dataset, workdir=work, quick=True, seeds=2,
                                    progress=False)
    assert record["status"] == "ok" and record["seeds"] == {"1": "ok"}
    assert (tables.seed_workdir(work, 1) / "results" / "unet").is_dir()

    def trained(folder):
        return sorted(p.name for p in (folder / "models").glob("unet-*")
                      if not p.name.startswith("unet-pretrained"))

    models, seed_models = trained(work), trained(tables.seed_workdir(work, 1))
    assert len(models) == len(seed_models) == 1 and models != seed_models   # another seed
    table = tables.table3(dataset, methods=["unet"], workdir=work, seeds=2)
    row = table.set_index("method").loc["unet"]
    assert row["seeds"] == 2
    mean, sd, low, high = (row[c] for c in tables.seed_columns("mean IoU"))
    assert low <= mean <= high and sd >= 0
    assert low <= row["mean IoU"] <= high          # seed 0 is one of the seeds
    # mitocyto is not trained: one run stands for every seed
    _, record = segment_method("mitocyto", dataset, workdir=work, seeds=3, progress=False)
    assert list(record["seeds"]) == ["1"] and record["seeds"]["1"].startswith("not trained")
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        segment_method("mitocyto", dataset, workdir=work, seeds=0, progress=False)


def test_ranking_sentence_breaks_a_tie_by_the_pair_itself(tmp_path):
    """Two methods that each beat the same two others distinguishably: the one with the
    better mean IoU on their own pair is named, not the first by name (the fresh-clone
    report of 3a4a760: cellpose and unet, unet ahead by 0.010, not distinguishable)."""
    import pandas as pd

    from nclsm_utils.report.site import ranking_sentence

    rows = [("cellpose", "mitocyto", "cellpose", True), ("cellpose", "stardist", "cellpose", True),
            ("cellpose", "unet", "unet", False), ("mitocyto", "stardist", "stardist", True),
            ("mitocyto", "unet", "unet", True), ("stardist", "unet", "unet", True)]
    path = tmp_path / "table3_pairwise.csv"
    pd.DataFrame([{"method_a": a, "method_b": b, "metric": "IoU", "better": w,
                   "distinguishable": d} for a, b, w, d in rows]).to_csv(path, index=False)
    text = ranking_sentence(path)
    assert "**unet** has the best per-fibre IoU, but it cannot be told apart from cellpose" in text
