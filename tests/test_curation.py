"""Tests of nclsm_utils.curation: FR / NTM / FAM classifiers, analysable mask, evaluation."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nclsm_utils import curation as C
from nclsm_utils.curation import (FAM_FEATURES, NTM_FEATURES, ArraySection, CurationModels,
                                  CurationParams, FibreClassifier, FoldedRegionClassifier,
                                  NotTrainedError, class_flags, classify_fibres, curate,
                                  evaluate_curation, fam_features, masks_from_table,
                                  match_fibres, ntm_features, prf, train_models)
from nclsm_utils.synth import SynthConfig, generate_section

#: Small, fast parameters for the tests (same code paths as the defaults).
FAST = CurationParams().quick()


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def fam_sections():
    """Three tiny IMC sections with many freezing artefacts and folded regions."""
    config = SynthConfig.preset("tiny")
    config.fam_fraction = 0.3
    config.fr_probability = 1.0
    return [ArraySection(generate_section(f"P0{i}", "IMC", config, seed=i), "IMC", f"P0{i}")
            for i in range(1, 4)]


@pytest.fixture(scope="module")
def tiny_models(tiny_root, tmp_path_factory):
    from nclsm_utils.dataset import Dataset

    workdir = tmp_path_factory.mktemp("curation-work")
    dataset = Dataset(tiny_root)
    models = train_models(dataset.sections(split="train"), workdir=workdir, params=FAST)
    return dataset, workdir, models


def _hand_labels():
    labels = np.zeros((40, 60), np.uint16)
    labels[2:12, 2:12] = 1
    labels[2:12, 20:30] = 2
    labels[20:30, 2:12] = 3
    labels[20:30, 20:30] = 4
    labels[20:38, 40:58] = 7
    return labels


# ---------------------------------------------------------------------------- small pieces
def test_prf_values():
    assert prf(8, 2, 2) == (0.8, 0.8, 0.8)
    assert prf(0, 3, 0)[2] == 0.0
    assert all(np.isnan(v) for v in prf(0, 0, 0))


def test_class_flags_with_own_ids_or_binary_mask():
    labels = _hand_labels()
    binary = np.zeros_like(labels)
    binary[2:12, 2:12] = 1          # fibre 1 fully inside
    binary[20:26, 20:30] = 1        # fibre 4 60 % inside
    binary[20:22, 40:58] = 1        # fibre 7 11 % inside
    flags = class_flags(labels, binary * 9)   # the class mask's own id 9
    assert flags.to_dict() == {1: True, 2: False, 3: False, 4: True, 7: False}


def test_moment_axis_ratio_matches_regionprops(fam_sections):
    from skimage.measure import regionprops

    labels = fam_sections[0].mask("myofibres")
    props = regionprops(labels)
    ours = C.moment_axis_ratio(labels, np.array([p.label for p in props]))
    expected = np.array([p.axis_major_length / p.axis_minor_length for p in props])
    np.testing.assert_allclose(ours, expected, rtol=1e-9)


def test_match_fibres_iou_rule():
    gt = _hand_labels()
    pred = np.zeros_like(gt)
    pred[2:12, 3:13] = 5            # IoU with 1 = 90 / 110
    pred[20:30, 20:24] = 6          # IoU with 4 = 0.4: no match
    table = match_fibres(gt, pred, rule="iou").set_index("gt_id")
    assert table.loc[1, "pred_id"] == 5
    assert table.loc[1, "iou"] == pytest.approx(90 / 110)
    assert table.loc[4, "pred_id"] == 0 and table.loc[2, "pred_id"] == 0
    centroid = match_fibres(gt, pred, rule="centroid").set_index("gt_id")
    assert centroid.loc[1, "pred_id"] == 5
    with pytest.raises(ValueError, match="centroid"):
        match_fibres(gt, pred, rule="nearest")


# ---------------------------------------------------------------------------- features
def test_fam_features_higher_for_fam_fibres(fam_sections):
    section = fam_sections[0]
    labels = section.mask("myofibres")
    table = fam_features(section.image(), labels)
    is_fam = class_flags(labels, section.mask("fam")).to_numpy()
    assert is_fam.sum() >= 3 and (~is_fam).sum() >= 10
    dark = table["dark_frac_50"].to_numpy()
    holes = table["hole_area_frac"].to_numpy()
    # leopard-spot holes: every FAM fibre darker than any other fibre, by a wide margin
    assert dark[is_fam].min() > 3 * np.nanmax(dark[~is_fam])
    assert np.median(dark[is_fam]) > 0.15
    assert np.median(holes[is_fam]) > 5 * np.nanquantile(holes[~is_fam], 0.9)


def test_fam_features_of_large_fibres_are_measured_reduced(fam_sections):
    # fibres 64-96 px across (j-fold section) and the same section enlarged twice more
    # (128-192 px: reduced by 2 before measuring) give the same features
    section = fam_sections[0]
    labels, image = section.mask("myofibres"), section.image()
    diameter = C.fibre_diameter(labels)
    j = int(np.ceil(64 / diameter))
    assert 64 <= j * diameter < 96

    def enlarge(array, k):
        return np.repeat(np.repeat(array, k, axis=0), k, axis=1)

    native = fam_features(enlarge(image, j).astype(np.float32), enlarge(labels, j), j * diameter)
    reduced = fam_features(enlarge(image, 2 * j), enlarge(labels, 2 * j), 2 * j * diameter)
    assert len(native) == len(np.unique(labels)) - 1 == 18
    pd.testing.assert_frame_equal(reduced, native, rtol=1e-5)


def test_fam_classifier_generalises_to_another_section(fam_sections):
    tables = []
    for section in fam_sections:
        labels = section.mask("myofibres")
        table = fam_features(section.image(), labels)
        table["target"] = class_flags(labels, section.mask("fam")).to_numpy()
        tables.append(table)
    train = pd.concat(tables[:2], ignore_index=True)
    clf = FibreClassifier("FAM", FAM_FEATURES, seed=0, n_estimators=100).fit(train, train["target"])
    predicted = clf.predict(tables[2])
    truth = tables[2]["target"].to_numpy()
    tp = int((predicted & truth).sum())
    f1 = prf(tp, int((predicted & ~truth).sum()), int((~predicted & truth).sum()))[2]
    assert f1 >= 0.8


def test_features_of_empty_and_one_fibre_masks():
    image = np.zeros((30, 30, 3), np.uint8)
    empty = np.zeros((30, 30), np.uint16)
    fam = fam_features(image, empty)
    ntm = ntm_features(empty)
    assert len(fam) == 0 and list(fam.columns) == ["label", *FAM_FEATURES]
    assert len(ntm) == 0 and set(NTM_FEATURES) <= set(ntm.columns)
    one = empty.copy()
    one[5:20, 8:25] = 3
    image[5:20, 8:25, 1] = 120
    fam = fam_features(image, one)
    ntm = ntm_features(one)
    assert fam["label"].tolist() == [3] and ntm["label"].tolist() == [3]
    assert fam.loc[0, "relative_area"] == 1.0 and fam.loc[0, "dark_frac_50"] == 0.0
    assert ntm.loc[0, "Fiber_Area"] == 255 and not ntm.loc[0, "skipped"]
    # a tiny fibre: skipped by the published script, NaN features, flagged NTM by the rule
    one[0:1, 0:2] = 4
    ntm = ntm_features(one).set_index("label")
    assert ntm.loc[4, "skipped"] and np.isnan(ntm.loc[4, "Convexity"]) and ntm.loc[4, "ntm_rule"]
    fam = fam_features(image, one).set_index("label")
    assert np.isnan(fam.loc[4, "dark_frac_50"])


def test_classifier_handles_nan_features_and_one_class():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})
    target = table["a"] > 0.5
    table.loc[::5, "b"] = np.nan
    table.loc[3, "a"] = np.inf
    clf = FibreClassifier("X", ["a", "b"], n_estimators=20).fit(table, target)
    queries = pd.DataFrame({"a": [np.nan, 2.0, -2.0], "b": [np.nan, np.nan, 0.0]})
    proba = clf.predict_proba(queries)
    assert proba.shape == (3,) and np.isfinite(proba).all()
    assert clf.predict(queries)[1] and not clf.predict(queries)[2]
    constant = FibreClassifier("X", ["a", "b"]).fit(table, np.zeros(40, bool))
    assert constant.predict(queries).tolist() == [False, False, False]
    assert clf.predict(queries.iloc[:0]).shape == (0,)


def test_untrained_classifiers_raise_clear_errors(fam_sections):
    section = fam_sections[0]
    with pytest.raises(NotTrainedError, match="FAM classifier is not trained"):
        FibreClassifier("FAM", FAM_FEATURES).predict(pd.DataFrame({c: [1.0] for c in FAM_FEATURES}))
    with pytest.raises(NotTrainedError, match="FR classifier is not trained"):
        FoldedRegionClassifier().predict(section.image(), 34.0)
    with pytest.raises(NotTrainedError, match="not trained"):
        curate(section, models=CurationModels())
    with pytest.raises(NotTrainedError, match="trained models"):
        curate(section, models=None)


# ---------------------------------------------------------------------------- folded regions
def test_fr_classifier_iou_on_a_generated_section(fam_sections):
    clf = FoldedRegionClassifier(FAST).fit(fam_sections[:2])
    section = fam_sections[2]
    predicted = clf.predict(section.image(), C.fibre_diameter(section.mask("myofibres")))
    truth = section.mask("fr") > 0
    assert predicted.shape == truth.shape and predicted.dtype == bool
    iou = (predicted & truth).sum() / (predicted | truth).sum()
    assert iou >= 0.7


def test_fr_features_shape_and_tiles_agree(fam_sections, monkeypatch):
    from nclsm_utils.curation import classifiers as CC   # defines and reads FR_TILE

    working, factor = C.working_image(fam_sections[0].image(), 32.0)
    assert factor == 1.0
    features = C.fr_pixel_features(working)
    assert features.shape == working.shape[:2] + (len(C.fr_feature_names()),)
    assert np.isfinite(features).all()
    clf = FoldedRegionClassifier(FAST).fit(fam_sections[:2])
    whole = clf.predict_proba(fam_sections[2].image(), 34.0)
    monkeypatch.setattr(CC, "FR_TILE", 64)     # tiles with margins give the same map
    tiled = clf.predict_proba(fam_sections[2].image(), 34.0)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


# ---------------------------------------------------------------------------- analysable mask
def test_analysable_is_myofibres_minus_flagged_exactly():
    labels = _hand_labels()
    fr = np.zeros(labels.shape, bool)
    fr[18:40, 38:60] = True
    table = pd.DataFrame({
        "label": [1, 2, 3, 4, 7],
        "fr": [False, False, False, False, True],
        "ntm": [False, True, False, True, False],
        "ntm_rule": [True, False, False, False, True],
        "fam": [False, False, True, True, True],
    })
    masks = masks_from_table(labels, table, fr)
    expected = np.where(labels == 1, 1, 0)
    np.testing.assert_array_equal(masks["analysable"], expected)
    assert sorted(np.unique(masks["ntm"])) == [0, 2, 4]
    assert sorted(np.unique(masks["fam"])) == [0, 3]          # 4 is NTM first, 7 is in FR
    assert sorted(np.unique(masks["fr_fibres"])) == [0, 7]
    assert sorted(np.unique(masks["ntm_rule"])) == [0, 1]
    assert masks["fr"].dtype == np.uint8 and masks["fr"].sum() == fr.sum()
    assert set(np.unique(masks["am_vs_nam"])) == {0, 1, 2}
    assert (masks["am_vs_nam"] == 1).sum() == (labels == 1).sum()
    rule = masks_from_table(labels, table, fr, ntm_column="ntm_rule")
    assert sorted(np.unique(rule["analysable"])) == [0, 2]    # 1 rule-NTM, 3/4 FAM, 7 FR


def test_curate_removes_every_flagged_fibre(tiny_models):
    dataset, _, models = tiny_models
    section = dataset.section("P02")
    masks = curate(section, models=models)
    labels = section.mask("myofibres")
    assert set(C.CURATED_ROLES) == set(masks)
    removed = (masks["fr_fibres"] > 0) | (masks["ntm"] > 0) | (masks["fam"] > 0)
    np.testing.assert_array_equal(masks["analysable"], np.where(removed, 0, labels))
    assert masks["analysable"].dtype == labels.dtype
    # ids that fit in 16 bits are kept in 16 bits; larger ids in the labels' own type
    wide = C.masks_from_table(labels.astype(np.uint32), C.classify_fibres(
        section, models=models)[0], masks["fr"])
    assert wide["analysable"].dtype == np.uint16 and wide["am_vs_nam"].dtype == np.uint8
    np.testing.assert_array_equal(wide["analysable"], masks["analysable"])
    big = np.where(labels > 0, labels.astype(np.uint32) + 70_000, 0)
    table = pd.DataFrame({"label": np.unique(big)[1:], "fr": False, "ntm": False,
                          "ntm_rule": False, "fam": False})
    assert C.masks_from_table(big, table, masks["fr"])["analysable"].dtype == np.uint32
    # signed labels (a label image read from a figure, for one) give unsigned masks
    signed = C.masks_from_table(labels.astype(np.int32), table.assign(label=table["label"]
                                                                       - 70_000), masks["fr"])
    assert signed["analysable"].dtype == np.uint16
    np.testing.assert_array_equal(signed["analysable"], labels)


def test_classify_empty_mask(tiny_models):
    dataset, _, models = tiny_models
    section = dataset.section("P02")
    empty = np.zeros(section.shape(), np.uint32)
    table, fr = classify_fibres(section, empty, models)
    assert len(table) == 0 and fr.shape == empty.shape
    masks = curate(section, empty, models)
    assert not masks["analysable"].any()


# ---------------------------------------------------------------------------- models
def test_models_cached_reloadable_and_seeded(tiny_models, tmp_path):
    dataset, workdir, models = tiny_models
    folder = C.models_dir(workdir, dataset.sections(split="train"), FAST)
    assert folder.parent.name == "models" and folder.name.startswith("curation-")
    files = {p.name for p in folder.iterdir()}
    assert {"model.json", "ntm.joblib", "fam.joblib", "fr.joblib"} <= files
    meta = json.loads((folder / "model.json").read_text())
    assert meta["params"]["seed"] == 0 and meta["info"]["train"] == ["IF/S10", "IMC/P01"]
    again = train_models(dataset.sections(split="train"), workdir=workdir, params=FAST)
    assert again.path == folder
    section = dataset.section("P02")
    first, fr_first = classify_fibres(section, models=models)
    second, fr_second = classify_fibres(section, models=again)
    pd.testing.assert_frame_equal(first, second)
    np.testing.assert_array_equal(fr_first, fr_second)
    # the same seed retrained from scratch gives the same models
    fresh = train_models(dataset.sections(split="train"), workdir=tmp_path, params=FAST)
    pd.testing.assert_frame_equal(first, classify_fibres(section, models=fresh)[0])
    # the FR classifier trained with the others (image read once per section) is the one
    # FoldedRegionClassifier.fit trains on its own
    alone = FoldedRegionClassifier(FAST).fit(dataset.sections(split="train"))
    assert alone.n_samples == models.fr.n_samples > 0
    image = section.image()
    np.testing.assert_array_equal(alone.predict_proba(image, 34.0),
                                  models.fr.predict_proba(image, 34.0))
    other = C.models_dir(workdir, dataset.sections(split="train"), CurationParams(seed=1))
    assert other != folder
    with pytest.raises(Exception, match="no curation models"):
        CurationModels.load(tmp_path / "nothing")


# ---------------------------------------------------------------------------- evaluation
def test_evaluate_curation_with_ground_truth_myofibres(tiny_models):
    dataset, workdir, models = tiny_models
    result = evaluate_curation(dataset, "gt", workdir=workdir, models=models, write=True)
    classes = result["classes"]
    pooled = classes[classes["section"] == "all"].set_index("class")
    assert set(pooled.index) == {"NTM (curation)", "NTM (rule)", "NTM (learned)", "FAM",
                                 "analysable"}
    # the decision the curation took: the rule on IF (exactly the IF labels' definition)
    per_section = classes.set_index(["section", "class"])
    assert per_section.loc[("S11", "NTM (curation)"), "f1"] == \
        per_section.loc[("S11", "NTM (rule)"), "f1"]
    assert per_section.loc[("P02", "NTM (curation)"), "f1"] == \
        per_section.loc[("P02", "NTM (learned)"), "f1"]
    definitions = result["definitions"].set_index(["modality", "class"])
    assert definitions.loc[("IF", "NTM"), "definition"] == "rule"
    assert definitions.loc[("IMC", "NTM"), "definition"] == "learned"
    assert "x 0.133" in definitions.loc[("IF", "NTM"), "scale"]      # tiny preset: 48 / 360
    assert (pooled["tp"] + pooled["fn"] == pooled["gt_positive"]).all()
    assert (pooled["fn_undetected"] == 0).all()            # GT myofibres: all detected
    assert pooled.loc["NTM (curation)", "f1"] >= 0.6          # learned on IMC, rule on IF
    assert pooled.loc["analysable", "f1"] >= 0.6
    counts = result["counts"].set_index(["section", "class"])
    for section in ("P02", "S11"):
        assert counts.loc[(section, "myofibres"), "predicted"] == \
            counts.loc[(section, "myofibres"), "ground_truth"]
    summary = result["paper_summary"].set_index("modality")
    assert summary.loc["all", "mean IoU"] == 1.0          # kept GT fibres are exact
    paper = result["paper"]
    assert summary.loc["all", "MF-A"] == paper["matched"].sum()
    assert result["errors"].empty
    fr = result["fr"].set_index("section")
    assert 0.0 <= fr.loc["all", "iou"] <= 1.0
    out = workdir / "curation" / "gt"
    for name in ("classes.csv", "fr.csv", "counts.csv", "paper.csv", "paper_summary.csv"):
        assert (out / name).is_file()
    assert (out / "analysable" / "IMC_P02.tiff").is_file()


def test_evaluate_curation_with_predicted_myofibres(tiny_models):
    from nclsm_utils.core.io import write_tiff

    dataset, workdir, models = tiny_models
    section = dataset.section("P02")
    gt = section.mask("myofibres").astype(np.uint32)
    ids = np.unique(gt)[1:]
    # a "prediction": GT relabelled (reversed ids) with the first fibre missed
    lookup = np.zeros(gt.max() + 1, np.uint32)
    lookup[ids] = ids[::-1] + 100
    pred = lookup[gt]
    pred[gt == ids[0]] = 0
    write_tiff(workdir / "predictions" / "fake" / "IMC_P02.tiff", pred)
    result = evaluate_curation(dataset, "fake", workdir=workdir, models=models)
    # S11 has no cached prediction: reported, not fatal
    assert result["errors"]["section"].tolist() == ["S11"]
    assert "nclsm segment" in result["errors"]["error"].iloc[0]
    gt_fibres = result["gt_fibres"].set_index("gt_id")
    assert gt_fibres.loc[ids[0], "pred_id"] == 0
    assert gt_fibres.loc[ids[1], "pred_id"] == lookup[ids[1]]
    reference = evaluate_curation(dataset, "gt", workdir=workdir, models=models)
    ref = reference["gt_fibres"].query("section == 'P02'").set_index("gt_id")
    kept = ids[1:]
    # same pixels, other ids: the same decisions for every detected fibre
    for column in ("ntm", "fam", "ntm_rule"):
        assert (gt_fibres.loc[kept, column] == ref.loc[kept, column]).all()
    assert result["paper_summary"].set_index("modality").loc["all", "mean IoU"] == 1.0


def test_cli_curate(tiny_models, capsys):
    from nclsm_utils.cli import main

    dataset, workdir, _ = tiny_models
    code = main(["curate", "--data", str(dataset.root), "--workdir", str(workdir),
                 "--seed", "0", "--quick"])      # the fixture's cached models
    out = capsys.readouterr().out
    assert code == 0
    assert "FAM" in out and "folded regions: pixel IoU" in out
    assert (workdir / "curation" / "gt" / "classes.csv").is_file()
    code = main(["curate", "--data", str(dataset.root), "--workdir", str(workdir),
                 "--method", "nothing-cached", "--quick"])
    assert code == 1
    assert "nclsm segment --method nothing-cached" in capsys.readouterr().err


def test_cross_validate_fam(fam_sections):
    tables = []
    for section in fam_sections:
        tables.append(C.training_tables(section)["fam"])
    table = pd.concat(tables, ignore_index=True)
    cv = C.cross_validate(table, "fam", FAST, n_splits=3)
    assert cv["fold"].tolist() == ["0", "1", "2", "all"]
    pooled = cv.set_index("fold").loc["all"]
    assert pooled["positive"] == table["target"].sum()
    assert pooled["f1"] >= 0.8


def test_evaluate_curation_methods_here_and_on_two_dask_workers(tiny_models, monkeypatch):
    from nclsm_utils.curation import evaluate_curation_methods

    monkeypatch.delenv("NCLSM_SCHEDULER", raising=False)
    monkeypatch.delenv("NCLSM_WORKERS", raising=False)
    dataset, workdir, models = tiny_models
    reference = evaluate_curation(dataset, "gt", workdir=workdir, models=models)
    here, failed = evaluate_curation_methods(dataset, ["gt", "nosuchtool"], workdir=workdir,
                                             models=models)
    assert list(here) == ["gt", "nosuchtool"] and failed == {}
    # a method without predictions: every section reported, as evaluate_curation does
    assert here["nosuchtool"]["errors"]["section"].tolist() == ["P02", "S11"]
    on_dask, failed = evaluate_curation_methods(dataset, ["gt", "nosuchtool"],
                                                workdir=workdir, models=models, workers=2)
    assert failed == {}
    for name in ("classes", "fr", "counts", "paper", "paper_summary", "gt_fibres"):
        pd.testing.assert_frame_equal(here["gt"][name], reference[name])
        pd.testing.assert_frame_equal(on_dask["gt"][name], reference[name])
    # a method that cannot be curated at all is reported by name, the others are kept
    _, failed = evaluate_curation_methods(dataset, ["gt"], workdir=workdir, models=models,
                                          split="nosuchsplit")
    assert list(failed) == ["gt"] and "nosuchsplit" in failed["gt"]


def test_working_image_enlarges_at_most_twice(caplog):
    from nclsm_utils.curation.classifiers import MAX_WORKING_ENLARGEMENT, working_image

    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    working, factor = working_image(image, 4.0)     # specks: 8x would be asked for
    assert factor == MAX_WORKING_ENLARGEMENT == 2.0 and working.shape == (100, 140, 2)
    assert "enlarges the image 2x, not 8.0x" in caplog.text
    assert working_image(image, 64.0)[0].shape == (25, 35, 2)
