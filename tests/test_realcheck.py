"""The "Synthetic vs real" page's library: realcheck (statistics of every section at the real
fibre diameter, the calibration table and its reading, the real-image check table) and its two
figures in plots. Only the LEFT half of the real panel is ever read (x < LEFT_HALF_X)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from nclsm_utils.report import calibration
from nclsm_utils.report import plots
from nclsm_utils.report import realcheck
from nclsm_utils.core import realpanel  # noqa: E402
from nclsm_utils.dataset import Dataset  # noqa: E402

REAL_D = calibration.REAL_TARGETS["diameter_px"]


@pytest.fixture(scope="module")
def tiny(tiny_root):
    return Dataset(tiny_root)


@pytest.fixture(scope="module")
def real(panel):   # the shared fixture skips when the figure is missing
    return realcheck.real_left_half()


# ---------------------------------------------------------------------------- statistics
def test_synthetic_statistics_of_two_tiny_sections(tiny):
    sections = tiny.sections(ids=["P01", "S10"])
    stats = realcheck.synthetic_statistics(sections, diameter=REAL_D)
    assert len(stats) == 2
    assert stats["section"].tolist() == ["IMC/P01", "IF/S10"]
    assert stats["modality"].tolist() == ["IMC", "IF"]
    assert np.allclose(stats["diameter_px"], REAL_D, rtol=0.05), stats["diameter_px"]
    assert (stats["fibres"] >= 5).all()
    # the row is image_statistics of the section shrunk by at_diameter, value for value
    section = sections[1]
    image, labels = calibration.at_diameter(section.image(), section.mask("myofibres"), REAL_D)
    expected = calibration.image_statistics(image, labels)
    row = stats.iloc[1]
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, nan_ok=True), key
    # another requested diameter is met as well
    bigger = realcheck.synthetic_statistics(sections[:1], diameter=24.0)
    assert bigger["diameter_px"].iloc[0] == pytest.approx(24.0, rel=0.05)


def test_synthetic_statistics_of_a_dataset_path(tiny_root):
    stats = realcheck.synthetic_statistics(tiny_root)
    assert stats["section"].tolist() == ["IMC/P01", "IMC/P02", "IF/S10", "IF/S11"]
    assert realcheck.is_synthetic(tiny_root) and realcheck.is_synthetic(Dataset(tiny_root))


def test_section_pairs_alternate_modalities(tiny):
    pairs = realcheck.section_pairs(tiny, n=3)
    assert [title for title, _, _ in pairs] == ["IMC/P01", "IF/S10", "IMC/P02"]
    for _, image, labels in pairs:
        assert image.shape == (*labels.shape, 3) and labels.max() > 0
    assert len(realcheck.section_pairs(tiny, n=9)) == 4


def test_calibration_table_and_reading():
    real = {"source": "text", "diameter_px": 16.0, "fibres": 100.0, "a": 5.0, "b": 50.0}
    synthetic = pd.DataFrame({"section": [f"IMC/P{i}" for i in range(5)],
                              "diameter_px": [16.0] * 5, "fibres": [10.0] * 5,
                              "a": [1.0, 2.0, 3.0, 4.0, 6.0], "b": [1.0, 2.0, 3.0, 4.0, 5.0]})
    table = realcheck.calibration_table(synthetic, real)
    assert table["statistic"].tolist() == ["a", "b"]          # scale statistics left out
    row = table.set_index("statistic").loc["a"]
    assert row["synthetic_median"] == 3.0
    assert row["synthetic_p10"] == pytest.approx(1.4) and row["synthetic_p90"] == pytest.approx(5.2)
    assert table["within"].tolist() == [True, False]
    assert realcheck.calibration_reading(table, 5) == (
        "For 1 of 2 statistics (50 %) the real value lies inside the synthetic 10-90 % range "
        "of the 5 sections.")
    # the default real values are REAL_TARGETS
    default = realcheck.calibration_table([{k: v for k, v in calibration.REAL_TARGETS.items()
                                            if k != "source"}])
    assert "diameter_px" not in set(default["statistic"]) and default["within"].all()
    assert len(default) == len(calibration.REAL_TARGETS) - 3


# ---------------------------------------------------------------------------- real-image check
def _transfer_csv(path):
    pd.DataFrame({
        "case": ["real-left", "synthetic-control", "real-right", "s11-geometry"],
        "method": ["mitocyto", "mitocyto", "mitocyto", "unet"],
        "source": ["automatic", "automatic", "automatic", ""],
        "modality": ["IF"] * 4,
        "n_gt": [255, 171, 250, 488], "n_pred": [180, 55, 200, 651],
        "F1@0.5": [0.795, 0.283, 0.5, 0.762], "F1@0.75": [0.74, 0.23, 0.4, 0.75],
        "F1@0.9": [0.193, 0.027, 0.1, 0.534], "mean IoU": [0.845, 0.791, 0.8, 0.913],
        "predict_s": [2.0, 0.06, 2.0, 8.0], "note": ["", "", "", "x"],
    }).to_csv(path, index=False)


def test_load_transfer_table(tmp_path):
    assert realcheck.load_transfer_table(tmp_path) is None
    _transfer_csv(tmp_path / "real_transfer.csv")
    table = realcheck.load_transfer_table(tmp_path)
    # the right half is held out: its row is never shown
    assert table["case"].tolist() == ["real-left", "synthetic-control", "s11-geometry"]
    # the columns present, in TRANSFER_COLUMNS' order (this file predates the intervals)
    assert list(table.columns) == [c for c in realcheck.TRANSFER_COLUMNS if "CI" not in c]
    assert table["n_gt"].tolist() == [255, 171, 488]
    assert table["F1@0.5"].tolist() == [0.795, 0.283, 0.762]
    assert table["method"].tolist() == ["mitocyto", "mitocyto", "unet"]
    assert table["source"].tolist() == ["automatic", "automatic", ""]   # no NaN shown
    everything = realcheck.load_transfer_table(tmp_path, columns=None)
    assert "predict_s" in everything and len(everything) == 3


def test_transfer_reading():
    missing = realcheck.transfer_reading(None)
    assert "python benchmarks/bench_real_transfer.py" in missing and "make report" in missing
    table = pd.DataFrame({"case": ["real-left", "s11-geometry"], "method": ["a", "a"]})
    text = realcheck.transfer_reading(table)
    assert "one real section at reduced resolution" in text
    assert "`real-left`" in text and "`s11-geometry`" in text and "synthetic-control" not in text


# ---------------------------------------------------------------------------- the real half
def test_real_left_half_is_the_left_half_only(real):
    panel = realpanel.load_panel()
    assert real.image.shape == (364, realpanel.LEFT_HALF_X, 3)
    assert np.array_equal(real.image, panel.image[:, :realpanel.LEFT_HALF_X])
    assert np.array_equal(real.labels, panel.labels[:, :realpanel.LEFT_HALF_X])
    assert real.diameter == pytest.approx(REAL_D, abs=1e-3)   # what REAL_TARGETS measured


def test_real_left_half_without_the_figure(tmp_path):
    assert realcheck.real_left_half(tmp_path / "no_figure.png") is None


# ---------------------------------------------------------------------------- figures
def test_real_vs_synthetic_figure(real, tiny):
    pairs = realcheck.section_pairs(tiny, n=3)
    fig = plots.real_vs_synthetic_figure(real.image, real.labels, pairs, n=2, size=64)
    axes = np.array(fig.axes).reshape(2, 3)
    titles = [ax.get_title() for ax in axes[0]]
    assert titles == ["real NCL-SM (IF, left half)", "synthetic IMC/P01", "synthetic IF/S10"]
    shown = [[ax.get_images()[0].get_array() for ax in row] for row in axes]
    assert all(np.asarray(a).shape == (64, 64, 3) for row in shown for a in row)
    cyan = np.array(plots.COLOURS["gt"], np.uint8)
    for top, bottom in zip(*shown):
        outline = (np.asarray(bottom) != np.asarray(top)).any(-1)
        assert 0.02 < outline.mean() < 0.5                          # the mask outline only
        assert (np.asarray(bottom)[outline] == cyan).all()
    # crops smaller than requested when an image is: the side of the smallest shrunk section
    fig = plots.real_vs_synthetic_figure(real.image, real.labels, pairs, n=3, size=500)
    sides = {np.asarray(ax.get_images()[0].get_array()).shape[:2] for ax in fig.axes}
    smallest = min(min(calibration.at_diameter(image, labels, real.diameter)[1].shape)
                   for _, image, labels in pairs)
    assert sides == {(smallest, smallest)} and smallest < 200
    import matplotlib.pyplot as plt

    plt.close("all")


def test_calibration_profile_figure():
    real = {k: v for k, v in calibration.REAL_TARGETS.items() if k != "source"}
    lower = {k: v * 0.5 for k, v in real.items()}
    upper = {k: v * 1.5 for k, v in real.items()}
    table = calibration.compare(calibration.REAL_TARGETS, [lower, real, upper])
    fig = plots.calibration_profile_figure(table)
    assert [ax.get_title() for ax in fig.axes] == ["membrane marker (R)", "mitochondrial mass (G)"]
    for ax, channel in zip(fig.axes, "RG"):
        lines = {line.get_label(): line for line in ax.get_lines()}
        x, y = lines["real (left half)"].get_data()
        assert np.allclose(x, calibration.PROFILE_STEPS)
        expected = [real[f"{channel}_profile_{s:+.2f}"] for s in calibration.PROFILE_STEPS]
        assert np.allclose(y, expected)
        assert np.allclose(lines["synthetic median"].get_data()[1], expected, atol=1e-3)
        band = ax.collections[0].get_paths()[0].vertices[:, 1]    # the 10-90 % band
        assert band.min() == pytest.approx(0.6 * min(expected), abs=1e-2)
        assert band.max() == pytest.approx(1.4 * max(expected), abs=1e-2)
    # real statistics + synthetic list give the same figure data
    again = plots.calibration_profile_figure(calibration.REAL_TARGETS, [lower, real, upper])
    assert np.allclose(again.axes[0].get_lines()[1].get_data()[1],
                       fig.axes[0].get_lines()[1].get_data()[1])
    with pytest.raises(ValueError, match="synthetic"):
        plots.calibration_profile_figure(calibration.REAL_TARGETS)
    import matplotlib.pyplot as plt

    plt.close("all")
