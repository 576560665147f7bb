"""The bad-input corpus: every broken input gives a clear message that names the file.

Each case damages a copy of the tiny synthetic NCL-SM (IMC P01/P02, IF S10/S11; test split
P02, S11) or builds the bad array directly, and checks the message of the layer that meets
it first (reader, data layer, metrics) and of a batch run (the bad section is reported with
the file's path, the other sections complete).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from nclsm_utils import metrics
from nclsm_utils.dataset import Dataset, as_labels
from nclsm_utils.runner import run_methods
from nclsm_utils.core.io import DataError, read_array
from nclsm_utils.metrics.morphology import shape_features
from nclsm_utils.runner import run_method

MASKS = "Mask_All_Myofibres"


@pytest.fixture
def data(tiny_root, tmp_path) -> Path:
    """A private copy of the tiny dataset to damage."""
    return Path(shutil.copytree(tiny_root, tmp_path / "data"))


def run(data: Path, workdir: Path, sections=("P02", "S11")):
    return run_methods(["mitocyto"], data, sections=list(sections), workdir=workdir,
                       progress=False)["mitocyto"]


def only_error(result, key: str) -> str:
    assert list(result.errors) == [key], result.errors
    others = {"IMC/P02", "IF/S11"} - {key}
    assert set(result.tables) == others          # the other section completed
    return result.errors[key]


# ------------------------------------------------------------------------------ folders, paths
def test_missing_role_folder(data, tmp_path):
    shutil.rmtree(data / "IMC" / MASKS)
    report = Dataset(data).check()
    problems = " ".join(report.loc[report["modality"] == "IMC", "problems"])
    assert f"{data / 'IMC'}/: no folder for required role 'myofibres'" in problems
    assert report.loc[report["modality"] == "IF", "ok"].all()
    message = only_error(run(data, tmp_path / "work"), "IMC/P02")
    assert "no 'myofibres' file" in message and str(data / "IMC") in message


def test_missing_image_folder(data, tmp_path):
    shutil.rmtree(data / "IF" / "Images")
    message = only_error(run(data, tmp_path / "work"), "IF/S11")
    assert "no 'image' file" in message and str(data / "IF") in message


def test_data_path_that_does_not_exist(tmp_path, capsys):
    from nclsm_utils.cli import main

    missing = tmp_path / "no-such-folder"
    with pytest.raises(DataError, match=f"{missing}: data folder not found"):
        run_methods(["mitocyto"], missing, workdir=tmp_path / "work", progress=False)
    assert main(["segment", "--method", "mitocyto", "--data", str(missing),
                 "--workdir", str(tmp_path / "work")]) == 2
    assert f"{missing}: data folder not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no IMC/ or IF/ folder inside"):
        Dataset(empty)


def test_unknown_method(tiny_root, tmp_path, capsys):
    from nclsm_utils.cli import main

    with pytest.raises(ValueError, match="unknown segmentation method 'segment-anything'") as info:
        run_methods(["mitocyto", "segment-anything"], tiny_root, workdir=tmp_path,
                    progress=False)
    assert "mitocyto" in str(info.value) and "external:<folder>" in str(info.value)
    assert not (tmp_path / "results" / "mitocyto").exists()   # failed before any work
    assert main(["segment", "--method", "segment-anything", "--data", str(tiny_root),
                 "--workdir", str(tmp_path), "--workers", "2"]) == 2
    assert "segment-anything" in capsys.readouterr().err


def test_output_folder_that_is_not_writable(tiny_root, tmp_path, capsys):
    from nclsm_utils.cli import main

    # tests run as root, where chmod does not stop writes: a folder under a regular file
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    workdir = blocker / "out"
    with pytest.raises(OSError, match="cannot create the output folder") as info:
        run_methods(["mitocyto"], tiny_root, workdir=workdir, progress=False)
    assert str(workdir / "results") in str(info.value)
    code = main(["segment", "--method", "mitocyto", "--data", str(tiny_root),
                 "--workdir", str(workdir)])
    assert code == 2
    assert str(workdir / "results") in capsys.readouterr().err


# ------------------------------------------------------------------------------ sizes, dtypes
def test_image_mask_size_mismatch(data, tmp_path):
    mask_path = data / "IF" / MASKS / "S11.tiff"
    tifffile.imwrite(mask_path, tifffile.imread(mask_path)[:-16])
    report = Dataset(data).check()
    problems = report.loc[report["section"] == "S11", "problems"].iloc[0]
    # the myofibre mask is the section's reference size: the other roles' files are named
    assert f"{data / 'IF' / 'Images' / 'S11.tiff'}: shape (256, 256) differs from the " \
        "section's (240, 256)" in problems
    message = only_error(run(data, tmp_path / "work"), "IF/S11")
    assert str(mask_path) in message and "shape" in message


@pytest.mark.filterwarnings("ignore:r_A.B is undefined")      # no matched fibre: NaN, said
def test_empty_mask_evaluates_to_an_empty_table(data, tmp_path):
    gt = np.zeros((40, 40), np.uint16)
    pred = np.zeros((40, 40), np.uint32)
    pred[5:15, 5:15] = 7
    table = metrics.evaluate(gt, pred, np.zeros((40, 40, 3), np.uint8), half_width=2)
    assert len(table) == 0 and list(table.columns) == metrics.PER_FIBRE_COLUMNS
    assert table.dtypes.to_dict() == metrics._PER_FIBRE_DTYPES
    # a section whose ground truth is empty: no crash, an empty table, the others scored
    mask_path = data / "IMC" / MASKS / "P02.tiff"
    tifffile.imwrite(mask_path, np.zeros_like(tifffile.imread(mask_path)))
    for result in (run_method("mitocyto", data, workdir=tmp_path / "a", progress=False),
                   run(data, tmp_path / "b")):
        assert result.ok and len(result.tables["IMC/P02"]) == 0
        assert len(result.tables["IF/S11"]) > 0
        row = result.summary.iloc[0]
        assert row["TS"] == "P02, S11" and row["errors"] == 0
        assert row["MF-A"] == result.tables["IF/S11"]["matched"].sum()
    only = run_method("mitocyto", data, sections=["P02"], workdir=tmp_path / "c",
                      progress=False)
    assert only.ok and only.summary.iloc[0]["MF-A"] == 0


@pytest.mark.parametrize("kind", ["float", "rgb"])
def test_float_and_colour_masks(data, tmp_path, kind):
    mask_path = data / "IMC" / MASKS / "P02.tiff"
    labels = tifffile.imread(mask_path)
    if kind == "float":
        bad = labels.astype(np.float32) + 0.5
        expected = "non-integer float values"
    else:
        bad = np.stack([labels % 256] * 3, axis=-1).astype(np.uint8)
        expected = "got a colour image"
    tifffile.imwrite(mask_path, bad)
    with pytest.raises(DataError, match=expected) as info:
        Dataset(data).section("P02").mask()
    assert str(mask_path) in str(info.value)
    message = only_error(run(data, tmp_path / "work"), "IMC/P02")
    assert str(mask_path) in message and expected in message


def test_integral_float_mask_is_read_as_labels(tiny_root, tmp_path):
    labels = Dataset(tiny_root).section("P02").mask()
    path = tmp_path / "float.tiff"
    tifffile.imwrite(path, labels.astype(np.float32))
    read = as_labels(read_array(path), path)
    assert np.issubdtype(read.dtype, np.integer) and np.array_equal(read, labels)


def test_nan_image(data, tmp_path):
    image_path = data / "IF" / "Images" / "S11.tiff"
    image = tifffile.imread(image_path).astype(np.float32)
    image[10:20, 10:20, 0] = np.nan
    tifffile.imwrite(image_path, image, photometric="rgb")
    with pytest.raises(DataError, match="NaN") as info:
        Dataset(data).section("S11").image()
    assert str(image_path) in str(info.value)
    message = only_error(run(data, tmp_path / "work"), "IF/S11")
    assert str(image_path) in message and "NaN" in message


# ------------------------------------------------------------------------------ corrupt files
@pytest.mark.parametrize("role_folder", ["Images", MASKS])
def test_truncated_tiff(data, tmp_path, role_folder):
    path = data / "IMC" / role_folder / "P02.tiff"
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as info:
        read_array(path)
    assert str(path) in str(info.value)
    report = Dataset(data).check()
    assert str(path) in report.loc[report["section"] == "P02", "problems"].iloc[0]
    message = only_error(run(data, tmp_path / "work"), "IMC/P02")
    assert str(path) in message and "truncated" in message


def test_truncated_png(data, tmp_path):
    import imageio.v3 as iio

    tiff = data / "IF" / "Images" / "S11.tiff"
    png = tiff.with_suffix(".png")
    iio.imwrite(png, tifffile.imread(tiff))
    tiff.unlink()
    assert Dataset(data).section("S11").image().shape[-1] == 3     # a good PNG is read
    content = png.read_bytes()
    png.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as info:
        read_array(png)
    assert str(png) in str(info.value)
    message = only_error(run(data, tmp_path / "work"), "IF/S11")
    assert str(png) in message


def test_not_an_image_file(tmp_path):
    path = tmp_path / "mask.tiff"
    path.write_text("this is a text file with a .tiff name")
    with pytest.raises(DataError, match="cannot read the file") as info:
        read_array(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------ label values
def _relabel(labels: np.ndarray) -> tuple[np.ndarray, dict]:
    """Non-contiguous uint32 labels far above 65,535 (up to ~4.29e9)."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    new = (4_294_967_295 - 7919 * np.arange(len(ids))[::-1]).astype(np.uint32)
    lookup = dict(zip(ids.tolist(), new.tolist()))
    out = np.zeros(labels.shape, np.uint32)
    for old, value in lookup.items():
        out[labels == old] = value
    return out, lookup


def test_large_non_contiguous_uint32_labels(data, tiny_root, tmp_path):
    section = Dataset(tiny_root).section("P02")
    gt = section.mask()
    pred = gt.copy()
    pred[:, 1:][gt[:, 1:] != gt[:, :-1]] = 0
    big_gt, gt_map = _relabel(gt)
    big_pred, pred_map = _relabel(pred)
    assert big_gt.dtype == np.uint32 and big_gt.max() > 4_000_000_000
    image = section.image()
    small = metrics.evaluate(gt, pred, image, half_width=2)
    big = metrics.evaluate(big_gt, big_pred, image, half_width=2)
    assert big["gt_id"].tolist() == [gt_map[i] for i in small["gt_id"]]
    assert big["pred_id"].tolist() == [pred_map.get(i, 0) for i in small["pred_id"]]
    ids = ["gt_id", "pred_id"]
    pd.testing.assert_frame_equal(big.drop(columns=ids), small.drop(columns=ids))
    features = shape_features(gt)
    big_features = shape_features(big_gt)
    assert big_features["label"].tolist() == [gt_map[i] for i in features["label"]]
    pd.testing.assert_frame_equal(big_features.drop(columns="label"),
                                  features.drop(columns="label"))
    # a dataset whose ground truth uses such labels scores the same
    tifffile.imwrite(data / "IMC" / MASKS / "P02.tiff", big_gt)
    reference = run(tiny_root, tmp_path / "a").tables["IMC/P02"]
    relabelled = run(data, tmp_path / "b").tables["IMC/P02"]
    assert relabelled["gt_id"].tolist() == [gt_map[i] for i in reference["gt_id"]]
    pd.testing.assert_frame_equal(relabelled.drop(columns="gt_id"),
                                  reference.drop(columns="gt_id"))


def _grid(n: int, block: int, pitch: int) -> np.ndarray:
    """``n * n`` square fibres of ``block`` pixels side on a ``pitch`` grid, labels 1..n*n."""
    ids = np.arange(1, n * n + 1, dtype=np.uint32).reshape(n, n)
    labels = np.zeros((n * pitch, n * pitch), np.uint32)
    for dr in range(block):
        for dc in range(block):
            labels[dr::pitch, dc::pitch][:n, :n] = ids
    return labels


@pytest.mark.slow
def test_more_than_65535_labels():
    n = 257                                          # 66,049 fibres of 6 x 6 pixels
    gt = _grid(n, 6, 7)
    assert len(np.unique(gt)) - 1 == n * n > 65_535
    pred = gt.copy()
    pred[:, 5::7] = 0                                # every fibre loses a column: 6 x 5
    pred[pred > 0] += 100_000                        # and other label values
    table = metrics.evaluate(gt, pred)
    assert len(table) == n * n and table["matched"].all()
    assert (table["pred_id"] == table["gt_id"] + 100_000).all()
    assert np.allclose(table["iou"], 30 / 36)
    assert (table["gt_area"] == 36).all() and (table["pred_area"] == 30).all()
    assert (table["n_gt"] == n * n).all() and (table["n_pred"] == n * n).all()
    features = shape_features(gt)
    assert features["label"].tolist() == list(range(1, n * n + 1))
    one = shape_features(np.pad(np.ones((6, 6), np.uint8), 3))   # one fibre, off the border
    inner = features[~features["Fiber_on_Border"]].drop(columns=["label", "Fiber_on_Border"])
    expected = one.drop(columns=["label", "Fiber_on_Border"]).iloc[0]
    assert len(inner) == (n - 1) ** 2            # the first row and column touch the border
    assert (inner == expected).all().all()
