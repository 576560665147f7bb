"""`nclsm predict`: segmenting any RGB image (input conversions, fibre-size estimate, scaling).

The numbers asserted here were measured on the synthetic renderer of this commit and are
asserted with a margin (see each test).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage.segmentation import find_boundaries

from nclsm_utils.cli import main
from nclsm_utils.core.io import DataError
from nclsm_utils.metrics import instance_metrics
from nclsm_utils.segmenters.apply import (GREY_MESSAGE, as_rgb_uint8, estimate_fibre_diameter,
                                          predict_image, read_rgb_image, stretch_to_uint8)
from nclsm_utils.synth import SynthConfig, generate_section


def true_diameter(labels: np.ndarray) -> float:
    """Median equivalent diameter of an instance mask (how the segmenters measure fibres)."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.median(2 * np.sqrt(areas / np.pi)))


def boundary_image(labels: np.ndarray) -> np.ndarray:
    """R = 255 on the label boundaries, G = 150 inside fibres, 0 elsewhere."""
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0][find_boundaries(labels)] = 255
    rgb[..., 1][labels > 0] = 150
    return rgb


def thin_line_image(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Thin membrane lines inside each fibre's edge, dark gaps between fibres, blur and shot
    noise, stretched 5-95 % (the look the synthetic renderer is moving to)."""
    rng = np.random.default_rng(seed)
    carved = labels.copy()
    carved[find_boundaries(labels, mode="inner")] = 0              # 1-px dark gaps
    line = find_boundaries(carved, mode="inner") & (carved > 0)
    membrane = ndimage.gaussian_filter(line.astype(np.float32), 1.0)
    membrane = rng.poisson(membrane * 40 + 3) + rng.normal(0, 2, labels.shape)
    mass = np.where(carved > 0, 0.6, 0.0) + 0.2 * rng.random(labels.shape)
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    for c, channel in enumerate((membrane, mass)):
        lo, hi = np.percentile(channel, [5, 95])
        rgb[..., c] = np.clip((channel - lo) * 255 / (hi - lo), 0, 255).astype(np.uint8)
    return rgb


def synth_config(preset: str, randomise: bool) -> SynthConfig:
    """A preset with domain randomisation (the presets' default) or the calibrated look."""
    return dataclasses.replace(SynthConfig.preset(preset), randomise=randomise)


def sections_of(preset: str, randomise: bool):
    """The first IMC and the first IF section of a preset, as `nclsm synth --seed 0` makes them."""
    config = synth_config(preset, randomise)
    items = config.section_ids()
    for modality in ("IMC", "IF"):
        index = next(i for i, (m, _) in enumerate(items) if m == modality)
        yield modality, generate_section(items[index][1], modality, config, seed=0, index=index)


def run_cli(args, capsys):
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------- fibre diameter
@pytest.fixture(scope="module")
def imc_section():
    """A default-preset IMC section in the calibrated look (384 x 384 px, 129 fibres of median
    30.5 px, no folded region)."""
    return generate_section("P90", "IMC", synth_config("default", randomise=False), seed=0)


@pytest.mark.parametrize("randomise", [True, False], ids=["randomised", "calibrated"])
@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_estimate_fibre_diameter_within_25_percent(preset, randomise):
    """Estimate / true median equivalent diameter, measured on seeds 0 and 1 (the first, third,
    ... sections of the default preset, every section of the tiny one):

    - calibrated look: 0.86-1.07 (default), 0.88-1.24 (tiny); these sections (seed 0): 0.99,
      0.93 (default IMC, IF), 1.04, 0.88 (tiny);
    - randomised looks: 0.84-1.12 (default); tiny 0.45-1.41 (4 of 8 outside +-25 %: sections
      of 10-17 annotated fibres, mostly folded tissue); these sections: 0.96, 0.90, 0.84, 1.08;
    - R = find_boundaries of the masks: 0.93-1.09; thin lines with dark gaps: 0.78-0.99.
    """
    for modality, section in sections_of(preset, randomise):
        labels = section["myofibres"]
        truth = true_diameter(labels)
        looks = [("synthetic", section["image"])]
        if not randomise:   # the same masks drawn in two more looks
            looks += [("boundaries", boundary_image(labels)),
                      ("thin lines", thin_line_image(labels))]
        for look, image in looks:
            estimate = estimate_fibre_diameter(image)
            assert 0.75 * truth <= estimate <= 1.25 * truth, (preset, modality, look, estimate,
                                                              truth)


def test_estimate_scales_with_the_image_and_shrinks_big_ones(imc_section):
    image = imc_section["image"]
    estimate = estimate_fibre_diameter(image)                   # 30.2 px, true 30.5 px
    big = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)     # 768 x 768
    assert estimate_fibre_diameter(big) == pytest.approx(2 * estimate, rel=0.1)
    # analysed shrunk by 2 (max_side 400 < 768), scaled back
    assert estimate_fibre_diameter(big, max_side=400) == pytest.approx(2 * estimate, rel=0.1)
    # the membrane channel alone works too
    assert estimate_fibre_diameter(image[..., 0]) == estimate


def test_estimate_on_the_real_s11_outlines(sample_dir):
    """The real S11 ground truth (12272 x 15129, 489 fibres of median 361.8 px) drawn as
    boundaries, subsampled 8x: estimate 45.9 px against 45.2 px."""
    full = tifffile.imread(sample_dir / "S11_groundtruth_mask.tiff")
    truth = true_diameter(full) / 8
    labels = np.ascontiguousarray(full[::8, ::8])
    del full
    assert estimate_fibre_diameter(boundary_image(labels)) == pytest.approx(truth, rel=0.1)


def test_estimate_refuses_an_image_without_membranes():
    with pytest.raises(DataError, match="--fibre-diameter"):
        estimate_fibre_diameter(np.zeros((64, 64, 3), np.uint8))


# ------------------------------------------------------------------------- input formats
def test_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((16, 20, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 255
    for name in ("rgba.tif", "rgba.png"):                        # tifffile and imageio
        path = tmp_path / name
        if name.endswith(".tif"):
            tifffile.imwrite(path, rgba)
        else:
            import imageio.v3 as iio

            iio.imwrite(path, rgba)
        image = read_rgb_image(path)
        assert image.shape == (16, 20, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image[0, 0], [10, 20, 30])


def test_uint16_is_stretched_per_channel_to_percentiles(tmp_path):
    ramp = (np.arange(256, dtype=np.uint16) * 100).reshape(16, 16)   # 0 .. 25500
    image16 = np.stack([ramp, ramp // 2, np.full_like(ramp, 7)], axis=-1)
    tifffile.imwrite(tmp_path / "16bit.tif", image16)
    image = read_rgb_image(tmp_path / "16bit.tif")
    assert image.dtype == np.uint8
    # 0.1 / 99.9 percentiles of the ramp: 25.5 and 25474.5 -> 0 and 255
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 255
    assert image[8, 0, 0] == round((12800 - 25.5) * 255 / (25474.5 - 25.5))   # 128
    np.testing.assert_array_equal(image[..., 1], image[..., 0])      # each channel its own range
    assert (image[..., 2] == 0).all()                                # constant channel -> 0
    np.testing.assert_array_equal(stretch_to_uint8(ramp), image[..., 0])


def test_two_channels_become_r_and_g(tmp_path):
    two = np.zeros((16, 16, 2), np.uint8)
    two[..., 0], two[..., 1] = 200, 60
    tifffile.imwrite(tmp_path / "two.tif", two)
    image = read_rgb_image(tmp_path / "two.tif")
    assert image.shape == (16, 16, 3)
    np.testing.assert_array_equal(image[3, 3], [200, 60, 0])


def test_channels_first_is_transposed():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    np.testing.assert_array_equal(as_rgb_uint8(np.moveaxis(rgb, -1, 0)), rgb)
    np.testing.assert_array_equal(as_rgb_uint8(rgb), rgb)            # RGB uint8 as is


@pytest.mark.parametrize("name, array, message", [
    ("grey.png", np.full((32, 32), 9, np.uint8), GREY_MESSAGE),
    ("grey1.tif", np.full((32, 32, 1), 9, np.uint8), GREY_MESSAGE),
    ("stack.tif", np.zeros((2, 32, 32, 3), np.uint8), "(2, 32, 32, 3)"),
    ("five.tif", np.zeros((32, 32, 5), np.uint8), "(32, 32, 5)"),
    ("small.tif", np.zeros((8, 40, 3), np.uint8), "too small (8 x 40"),
])
def test_bad_images_exit_2_naming_the_file(tmp_path, capsys, name, array, message):
    path = tmp_path / name
    if name.endswith(".png"):
        import imageio.v3 as iio

        iio.imwrite(path, array)
    else:
        tifffile.imwrite(path, array)
    code, out, err = run_cli(["--method", "mitocyto", "--image", path, "--out",
                              tmp_path / "mask.tiff", "--data", tmp_path], capsys)
    assert code == 2
    assert f"{path}: " in err and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mask.tiff").exists()


def test_missing_file_unknown_method_and_bad_diameter_exit_2(tmp_path, capsys, tiny_root):
    missing = tmp_path / "nope.tif"
    code, _, err = run_cli(["--method", "mitocyto", "--image", missing, "--out",
                            tmp_path / "m.tiff", "--data", tiny_root], capsys)
    assert code == 2 and f"{missing}: file not found" in err
    image = tmp_path / "ok.tif"
    tifffile.imwrite(image, boundary_image(np.kron(np.arange(16).reshape(4, 4),
                                                   np.ones((20, 20), int))))
    common = ["--image", image, "--out", tmp_path / "m.tiff", "--data", tiny_root,
              "--workdir", tmp_path / "work"]
    code, _, err = run_cli(["--method", "segment-anything", *common], capsys)
    assert code == 2 and "unknown segmentation method 'segment-anything'" in err
    code, _, err = run_cli(["--method", f"external:{tmp_path}", *common,
                            "--fibre-diameter", "20"], capsys)
    assert code == 2 and "cannot segment a new image" in err
    code, _, err = run_cli(["--method", "mitocyto", *common, "--fibre-diameter", "0"], capsys)
    assert code == 2 and "positive number of pixels" in err
    code, _, err = run_cli(["--method", "mitocyto", *common, "--fibre-diameter", "0.1"], capsys)
    assert code == 2 and "give the diameter in pixels of this image" in err
    assert not (tmp_path / "m.tiff").exists()


# ------------------------------------------------------------------------- prediction
def objects_outside_folds(labels: np.ndarray, folds: np.ndarray) -> int:
    """Objects with most of their area outside the folded regions (which are not annotated)."""
    n = int(labels.max())
    if n == 0:
        return 0
    inside = ndimage.mean(folds > 0, labels, np.arange(1, n + 1))
    return int((np.asarray(inside) < 0.5).sum())


def test_mitocyto_predicts_an_image_via_the_cli(tmp_path, capsys, tiny_root, imc_section):
    # measured: 115 objects for 129 fibres (0.89), F1@0.5 0.926, estimate 30.2 px (true 30.5);
    # calibrated look, seeds 1-5: objects outside folds 0.94-1.05 of the fibres, F1 0.84-0.91
    # (IMC), 0.80-0.97 and 0.78-0.86 (IF). mitocyto's settings were tuned on the previous
    # renderer: on some randomised looks it fails (F1 0.39 on this section randomised).
    image = tmp_path / "section.tif"
    tifffile.imwrite(image, imc_section["image"])
    out = tmp_path / "mask.tiff"
    code, stdout, _ = run_cli(["--method", "mitocyto", "--image", image, "--out", out,
                               "--modality", "IMC", "--data", tiny_root,
                               "--workdir", tmp_path / "work"], capsys)
    assert code == 0
    estimate = float(stdout.split("estimated fibre diameter: ")[1].split(" px")[0])
    truth = true_diameter(imc_section["myofibres"])
    assert estimate == pytest.approx(truth, rel=0.25)
    mask = tifffile.imread(out)
    assert mask.shape == imc_section["image"].shape[:2] and mask.dtype == np.uint16
    assert f"{int(mask.max())} objects -> {out}" in stdout
    gt = imc_section["myofibres"]
    n_true = len(np.unique(gt)) - 1
    assert 0.8 * n_true <= objects_outside_folds(mask, imc_section["fr"]) <= 1.2 * n_true
    assert instance_metrics(gt, mask, [0.5]).iloc[0]["f1"] > 0.8


def test_fibre_diameter_scales_a_2x_image_to_the_same_result(tmp_path, capsys, tiny_root,
                                                             imc_section):
    # measured (calibrated look, seeds 0-5, IMC and IF): counts at 2x within 1 of 1x
    # (116 and 116 here)
    truth = true_diameter(imc_section["myofibres"])
    small, big = tmp_path / "small.tif", tmp_path / "big.tif"
    tifffile.imwrite(small, imc_section["image"])
    tifffile.imwrite(big, np.repeat(np.repeat(imc_section["image"], 2, axis=0), 2, axis=1))
    masks = []
    for path, diameter in ((small, truth), (big, 2 * truth)):
        out = tmp_path / f"{path.stem}_mask.tiff"
        code, stdout, _ = run_cli(["--method", "mitocyto", "--image", path, "--out", out,
                                   "--fibre-diameter", diameter, "--data", tiny_root,
                                   "--workdir", tmp_path / "work"], capsys)
        assert code == 0 and "estimated" not in stdout
        masks.append(tifffile.imread(out))
    one, two = masks
    assert two.shape == (2 * one.shape[0], 2 * one.shape[1])
    assert abs(int(two.max()) - int(one.max())) <= 2
    assert instance_metrics(one, two[::2, ::2], [0.5]).iloc[0]["f1"] > 0.95


def test_predict_fibre_diameter_sets_the_working_scale(tiny_root, tmp_path, imc_section):
    from nclsm_utils.dataset import Dataset
    from nclsm_utils.segmenters import get_segmenter

    seg = get_segmenter("mitocyto", workdir=tmp_path)
    seg.fit(Dataset(tiny_root).sections(split="train"))
    image = imc_section["image"]
    fitted = seg.diameters["IMC"]
    # the keyword equal to the fitted diameter is the default scale
    np.testing.assert_array_equal(seg.predict(image, "IMC", fibre_diameter=fitted),
                                  seg.predict(image, "IMC"))
    # the library entry point gives the CLI's result
    labels = predict_image(seg, image, modality="IMC", fibre_diameter=30.5, data=tiny_root)
    assert labels.dtype == np.uint32 and labels.shape == image.shape[:2]
    assert labels.max() > 80


def test_base_predict_scales_by_target_over_fibre_diameter():
    from nclsm_utils.segmenters.base import BaseParams, Segmenter

    seen = []

    class Probe(Segmenter):
        name = "probe"

        def _predict_working(self, image, modality):
            seen.append(image.shape[:2])
            return np.ones(image.shape[:2], np.uint32)

    probe = Probe(params=BaseParams(target_diameter=36.0))
    image = np.zeros((100, 60, 3), np.uint8)
    labels = probe.predict(image, "IMC", fibre_diameter=72.0)        # scale 0.5
    assert seen[-1] == (50, 30) and labels.shape == (100, 60)
    probe.predict(image, "IMC", fibre_diameter=18.0)                 # scale 2
    assert seen[-1] == (200, 120)
    probe.diameters = {"IMC": 36.0}
    probe.predict(image, "IMC")                                      # scale_for: 1
    assert seen[-1] == (100, 60)


@pytest.mark.slow
def test_trained_method_predicts_with_its_cached_model(tmp_path, capsys, tiny_root, imc_section):
    """unet --quick trains on the tiny train split once; a second predict loads the model."""
    image = tmp_path / "section.tif"
    tifffile.imwrite(image, imc_section["image"])
    args = ["--method", "unet", "--quick", "--image", image, "--fibre-diameter",
            true_diameter(imc_section["myofibres"]), "--data", tiny_root,
            "--workdir", tmp_path / "work"]
    code, _, _ = run_cli([*args, "--out", tmp_path / "a.tiff"], capsys)
    assert code == 0
    models = sorted((tmp_path / "work" / "models").glob("unet-*/model.json"))
    assert len(models) == 1
    stamp = models[0].stat().st_mtime_ns
    code, _, _ = run_cli([*args, "--out", tmp_path / "b.tiff"], capsys)
    assert code == 0 and models[0].stat().st_mtime_ns == stamp        # not retrained
    first, second = tifffile.imread(tmp_path / "a.tiff"), tifffile.imread(tmp_path / "b.tiff")
    np.testing.assert_array_equal(first, second)
    assert instance_metrics(imc_section["myofibres"], first, [0.5]).iloc[0]["f1"] > 0.3


def test_fit_if_cached_fits_only_what_is_cached(tiny_root, tmp_path):
    from nclsm_utils.segmenters import get_segmenter
    from nclsm_utils.segmenters.apply import fit_if_cached

    mitocyto = get_segmenter("mitocyto", workdir=tmp_path)
    assert fit_if_cached(mitocyto, tiny_root) and mitocyto.fitted      # nothing to train
    unet = get_segmenter("unet", workdir=tmp_path, quick=True)
    assert not fit_if_cached(unet, tiny_root)                           # no model cached
    assert not unet.fitted and not (tmp_path / "models").exists()
