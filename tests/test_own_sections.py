"""`nclsm predict` on a researcher's own microscope files: formats, channels, pixel size, the
exports for Fiji and QuPath (label TIFF, ImageJ ROI set, GeoJSON, per-fibre CSV, overlay) and
batches."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage

from nclsm_utils.cli import main
from nclsm_utils.core import io as core_io
from nclsm_utils.core.io import DataError, check_memory, read_array, read_microscope, read_shape
from nclsm_utils.export import (FIBRE_COLUMNS, OutputPaths, fibre_polygons, fibre_table,
                                overlay_image, write_geojson, write_roi_set)
from nclsm_utils.synth import SynthConfig, generate_section

CHANNEL_NAMES = ["DAPI", "MHC", "laminin", "COX"]


def run_cli(args, capsys):
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def section():
    """A default-preset IMC section in the calibrated look (384 x 384 px, 120 fibres; mitocyto
    finds 116 at --fibre-diameter 30.5, F1@0.5 0.97)."""
    import dataclasses

    config = dataclasses.replace(SynthConfig.preset("default"), randomise=False)
    return generate_section("P90", "IMC", config, seed=0)


def four_channels(rgb: np.ndarray) -> np.ndarray:
    """(4, H, W) uint16: DAPI and MHC noise, laminin = membrane (R), COX = mass (G)."""
    rng = np.random.default_rng(3)
    noise = rng.integers(0, 4000, (2,) + rgb.shape[:2], dtype=np.uint16)
    return np.concatenate([noise, np.moveaxis(rgb[..., :2].astype(np.uint16) * 200, -1, 0)])


def write_ome(path, channels_first, pixel_size=0.5, names=None):
    metadata = {"axes": "CYX"}
    if pixel_size is not None:
        metadata.update(PhysicalSizeX=pixel_size, PhysicalSizeY=pixel_size)
    if names is not None:
        metadata["Channel"] = {"Name": list(names)}
    tifffile.imwrite(path, channels_first, metadata=metadata)
    return path


def outputs(folder, stem) -> OutputPaths:
    return OutputPaths.for_image(folder / f"{stem}.tif", folder)


# ------------------------------------------------------------------------- pixel size
def test_ome_pixel_size_gives_areas_in_um2_and_resolution_tags(tmp_path, capsys, tiny_root,
                                                                section):
    (tmp_path / "ome").mkdir()
    (tmp_path / "plain").mkdir()
    ome = write_ome(tmp_path / "ome" / "sec.ome.tif", np.moveaxis(section["image"][..., :2], -1, 0))
    plain = tmp_path / "plain" / "sec.tif"
    tifffile.imwrite(plain, section["image"])
    common = ["--method", "mitocyto", "--fibre-diameter", 30.5, "--data", tiny_root,
              "--workdir", tmp_path / "work"]
    code, out, err = run_cli(["--image", ome, "--out", tmp_path / "a", *common], capsys)
    assert code == 0, err
    code, _, err = run_cli(["--image", plain, "--out", tmp_path / "b", "--pixel-size", 0.5,
                            *common], capsys)
    assert code == 0, err
    first = pd.read_csv(outputs(tmp_path / "a", "sec").table)
    second = pd.read_csv(outputs(tmp_path / "b", "sec").table)
    labels = tifffile.imread(outputs(tmp_path / "a", "sec").labels)
    counts = np.bincount(labels.ravel())
    assert len(first) == int(labels.max()) > 100                    # 116 measured
    np.testing.assert_array_equal(first["area_px"], counts[first["id"]])
    np.testing.assert_array_equal(first["area_um2"], first["area_px"] * 0.25)
    columns = list(FIBRE_COLUMNS) + ["touches_border", "ntm_rule"]  # the channels differ
    pd.testing.assert_frame_equal(first[columns], second[columns])  # metadata == --pixel-size
    # ImageJ resolution tags: 2 pixels per micrometre
    with tifffile.TiffFile(outputs(tmp_path / "a", "sec").labels) as tif:
        assert tif.is_imagej and tif.imagej_metadata["unit"] == "um"
        assert tif.pages[0].tags["XResolution"].value == (2, 1)
    summary = pd.read_csv(tmp_path / "a" / "nclsm_summary.csv")
    assert summary["median_area_um2"].iloc[0] == pytest.approx(first["area_um2"].median())
    # no pixel size anywhere: a micrometre option is refused, naming the fix
    code, _, err = run_cli(["--image", plain, "--out", tmp_path / "c", "--method", "mitocyto",
                            "--fibre-diameter-um", 15, "--data", tiny_root], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{plain}: --fibre-diameter-um needs the pixel size" in err and "--pixel-size" in err
    # ... while --fibre-diameter-um with the metadata's 0.5 um equals --fibre-diameter 30.5 px
    code, _, err = run_cli(["--image", ome, "--out", tmp_path / "d", "--method", "mitocyto",
                            "--fibre-diameter-um", 15.25, "--data", tiny_root,
                            "--workdir", tmp_path / "work"], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(tifffile.imread(outputs(tmp_path / "d", "sec").labels), labels)


def test_pixel_size_from_imagej_and_centimetre_tags(tmp_path):
    rgb = np.zeros((32, 40, 3), np.uint8)
    tifffile.imwrite(tmp_path / "ij.tif", np.moveaxis(rgb, -1, 0), imagej=True,
                     resolution=(4.0, 4.0), metadata={"axes": "CYX", "unit": "micron"})
    tifffile.imwrite(tmp_path / "cm.tif", rgb, resolution=(1e4 / 0.65, 1e4 / 0.65),
                     resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "inch.tif", rgb, resolution=(72, 72), resolutionunit="INCH")
    assert read_microscope(tmp_path / "ij.tif").pixel_size == 0.25
    assert read_microscope(tmp_path / "ij.tif").channels.shape == (32, 40, 3)
    assert read_microscope(tmp_path / "cm.tif").pixel_size == pytest.approx(0.65, rel=1e-6)
    assert read_microscope(tmp_path / "inch.tif").pixel_size is None   # a screen resolution


# ------------------------------------------------------------------------- ROI set, GeoJSON
def test_roi_set_and_geojson_give_back_the_fibres(tmp_path, section):
    import roifile
    import shapely
    from skimage.draw import polygon as fill_polygon

    labels = section["myofibres"]
    ids = np.unique(labels)[1:]
    table = fibre_table(labels, pixel_size=0.5)
    polygons = fibre_polygons(labels)
    write_roi_set(tmp_path / "rois.zip", polygons)
    write_geojson(tmp_path / "fibres.geojson", polygons, table)

    rois = roifile.roiread(tmp_path / "rois.zip")
    assert len(rois) == len(ids) == 120
    ious = []
    for roi in rois:
        label = int(roi.name.split("-")[1])
        filled = np.zeros(labels.shape, bool)
        for ring in roi.coordinates(multi=True):                  # composite: even-odd
            x, y = np.asarray(ring, float).T
            part = np.zeros(labels.shape, bool)
            part[fill_polygon(y - 0.5, x - 0.5, labels.shape)] = True   # pixel centres inside
            filled ^= part
        truth = labels == label
        ious.append((filled & truth).sum() / (filled | truth).sum())
    assert min(ious) >= 0.98                                       # measured: all 1.0
    assert sum(roi.composite for roi in rois) == 16                # parts touching at corners

    collection = json.loads((tmp_path / "fibres.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    shapes = {f["properties"]["fibre_id"]: shapely.geometry.shape(f["geometry"])
              for f in collection["features"]}
    assert sorted(shapes) == ids.tolist()
    counts = np.bincount(labels.ravel())
    areas = np.array([shapes[i].area for i in ids])
    np.testing.assert_allclose(areas, counts[ids], rtol=0.01)      # measured: exact
    first = collection["features"][0]["properties"]
    assert first["objectType"] == "annotation"
    assert first["measurements"]["area_um2"] == counts[first["fibre_id"]] * 0.25


# ------------------------------------------------------------------------- channels
def test_four_channels_need_the_flags_and_names_work(tmp_path, capsys, tiny_root, section):
    path = write_ome(tmp_path / "four.ome.tif", four_channels(section["image"]),
                     names=CHANNEL_NAMES)
    common = ["--method", "mitocyto", "--image", path, "--fibre-diameter", 30.5,
              "--data", tiny_root, "--workdir", tmp_path / "work"]
    code, _, err = run_cli([*common, "--out", tmp_path / "none"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--membrane-channel" in err and "--mass-channel" in err and "2 = laminin" in err
    assert not (tmp_path / "none" / "four_labels.tif").exists()

    code, _, err = run_cli([*common, "--out", tmp_path / "index", "--membrane-channel", 2,
                            "--mass-channel", 3], capsys)
    assert code == 0, err
    code, _, err = run_cli([*common, "--out", tmp_path / "name", "--membrane-channel",
                            "laminin", "--mass-channel", "cox"], capsys)
    assert code == 0, err
    by_index = tifffile.imread(tmp_path / "index" / "four_labels.tif")
    by_name = tifffile.imread(tmp_path / "name" / "four_labels.tif")
    np.testing.assert_array_equal(by_index, by_name)
    # the membrane channel is the RGB image's R: the same fibres as the RGB file
    rgb_path = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb_path, section["image"])
    code, _, err = run_cli(["--method", "mitocyto", "--image", rgb_path, "--fibre-diameter",
                            30.5, "--data", tiny_root, "--workdir", tmp_path / "work",
                            "--out", tmp_path / "rgb"], capsys)
    assert code == 0, err
    from nclsm_utils.metrics import instance_metrics

    rgb_labels = tifffile.imread(tmp_path / "rgb" / "rgb_labels.tif")
    assert int(by_name.max()) > 100
    assert instance_metrics(rgb_labels, by_name, [0.5]).iloc[0]["f1"] > 0.9
    # the CSV has each input channel's mean and median, from the stored values
    table = pd.read_csv(tmp_path / "name" / "four_fibres.csv")
    channels = four_channels(section["image"])
    first = int(table["id"].iloc[0])
    for index, name in enumerate(CHANNEL_NAMES):
        values = channels[index][by_name == first]
        assert table[f"mean_{name}"].iloc[0] == pytest.approx(values.mean())
        assert table[f"median_{name}"].iloc[0] == np.median(values)
    # unknown names are refused naming the file's channels
    code, _, err = run_cli([*common, "--out", tmp_path / "bad", "--membrane-channel", "WGA"],
                           capsys)
    assert code == 2 and "no channel named 'WGA'" in err and "3 = COX" in err


def test_bioio_reads_ome_tiff_like_tifffile(tmp_path, section):
    pytest.importorskip("bioio")
    pytest.importorskip("bioio_ome_tiff")
    path = write_ome(tmp_path / "four.ome.tif", four_channels(section["image"]),
                     names=CHANNEL_NAMES)
    direct, through = read_microscope(path), read_microscope(path, reader="bioio")
    assert through.channel_names == tuple(CHANNEL_NAMES) == direct.channel_names
    assert through.pixel_size == 0.5 == direct.pixel_size
    np.testing.assert_array_equal(through.channels, direct.channels)
    assert through.channel_index("COX") == 3


def test_stacks_and_vendor_formats_are_refused_clearly(tmp_path, monkeypatch):
    stack = tmp_path / "z.ome.tif"
    tifffile.imwrite(stack, np.zeros((3, 2, 32, 32), np.uint16), metadata={"axes": "ZCYX"})
    with pytest.raises(DataError, match=r"3 planes along Z\); save one plane"):
        read_microscope(stack)
    czi = tmp_path / "section.czi"
    czi.write_bytes(b"not a czi file")
    with pytest.raises(DataError, match=r"section.czi: .*bioio-czi"):
        read_microscope(czi)


# ------------------------------------------------------------------------- big images
def test_memory_cap_replaces_the_pixel_limit(tmp_path, monkeypatch):
    import imageio.v3 as iio

    path = tmp_path / "small.png"
    iio.imwrite(path, np.zeros((40, 50, 3), np.uint8))
    assert check_memory(path, (40, 50, 3), np.uint8) == 6000
    monkeypatch.setattr(core_io, "available_memory", lambda: 5000)
    for read in (read_array, read_microscope):
        with pytest.raises(DataError, match=r"small.png: decoding this 40 x 50 image needs "
                                            r"0\.00 GiB of memory"):
            read(path)
    monkeypatch.undo()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(path.read_bytes()[:60])
    for read in (read_array, read_microscope):
        with pytest.raises(DataError, match="truncated or corrupt"):
            read(corrupt)


@pytest.mark.slow
def test_png_larger_than_pillows_limit_is_read(tmp_path, monkeypatch):
    """12272 x 15129 RGB (185,663,088 pixels, S11's size) > Pillow's 178,956,970 refusal."""
    import cv2
    from PIL import Image

    from nclsm_utils.core.dataset import Dataset
    from nclsm_utils.segmenters.apply import read_rgb_image

    # Pillow's own default (mitocyto lifts it for the whole process when it is imported)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(1024 * 1024 * 1024 // 4 // 3))
    height, width = 12272, 15129
    assert height * width > 2 * Image.MAX_IMAGE_PIXELS
    folder = tmp_path / "ncl" / "IF" / "Images"
    folder.mkdir(parents=True)
    path = folder / "S99.png"
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[::97, :, 0] = 255
    rgb[5000:5100, 7000:7200, 1] = 90
    assert cv2.imwrite(str(path), rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 1])
    limit = Image.MAX_IMAGE_PIXELS
    assert read_shape(path) == (height, width, 3)
    image = read_array(path)
    assert image.shape == (height, width, 3) and int(image[97, 3, 0]) == 255
    assert int(image[5050, 7100, 1]) == 90
    del image
    section = Dataset(tmp_path / "ncl").sections()[0]             # the dataset loader
    image = section.image()
    assert image.shape == (height, width, 3) and int(image[5050, 7100, 1]) == 90
    del image
    image = read_rgb_image(path)                                  # nclsm predict's reader
    assert image.shape == (height, width, 3) and int(image[194, 0, 0]) == 255
    assert Image.MAX_IMAGE_PIXELS == limit                        # restored


# ------------------------------------------------------------------------- batch
def test_batch_loads_the_model_once_skips_done_and_reports_a_corrupt_file(
        tmp_path, capsys, monkeypatch, tiny_root, section):
    from nclsm_utils.segmenters.base import Segmenter

    fits = []
    original = Segmenter.fit

    def counted(self, *args, **kwargs):
        fits.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "fit", counted)
    images = tmp_path / "images"
    images.mkdir()
    image = section["image"]
    tifffile.imwrite(images / "a.tif", image)
    tifffile.imwrite(images / "b.tif", np.ascontiguousarray(image[:, ::-1]))
    import imageio.v3 as iio

    iio.imwrite(images / "c.png", np.ascontiguousarray(image[::-1]))
    args = ["--method", "mitocyto", "--image", images, "--fibre-diameter", 30.5,
            "--data", tiny_root, "--workdir", tmp_path / "work", "--out", tmp_path / "out"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert fits == ["mitocyto"]                                    # loaded once for 3 images
    for stem in "abc":
        paths = outputs(tmp_path / "out", stem)
        assert paths.done()
    summary = pd.read_csv(tmp_path / "out" / "nclsm_summary.csv")
    assert summary["status"].tolist() == ["done"] * 3
    counts = [int(tifffile.imread(outputs(tmp_path / "out", s).labels).max()) for s in "abc"]
    assert summary["fibres"].tolist() == counts and min(counts) > 100
    assert "3 of 3 image(s)" in out

    # rerun: all skipped, nothing fitted, outputs untouched
    stamp = outputs(tmp_path / "out", "a").labels.stat().st_mtime_ns
    fits.clear()
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and fits == [] and out.count("skipped") == 3
    assert outputs(tmp_path / "out", "a").labels.stat().st_mtime_ns == stamp
    summary = pd.read_csv(tmp_path / "out" / "nclsm_summary.csv")
    assert summary["status"].tolist() == ["skipped"] * 3 and summary["fibres"].tolist() == counts

    # a corrupt file among them (a glob this time, --force): reported, the others go on
    (images / "broken.tif").write_bytes(b"II*\x00garbage")
    code, out, err = run_cli([*args[:3], str(images / "*.*"), *args[4:], "--force"], capsys)
    assert code == 1
    assert f"{images / 'broken.tif'}: cannot read the file" in err
    assert "1 of 4 image(s) failed" in err
    summary = pd.read_csv(tmp_path / "out" / "nclsm_summary.csv")
    assert summary["status"].tolist() == ["done", "done", "failed", "done"]
    assert outputs(tmp_path / "out", "a").labels.stat().st_mtime_ns != stamp   # redone
    assert not outputs(tmp_path / "out", "broken").labels.exists()


# ------------------------------------------------------------------------- per-fibre table
def synthetic_fibres() -> tuple[np.ndarray, np.ndarray]:
    """Rotated ellipses of several sizes, some cut by the image border; two channels."""
    from skimage.draw import ellipse

    rng = np.random.default_rng(11)
    labels = np.zeros((160, 200), np.uint16)
    centres = [(20, 30), (60, 100), (120, 160), (150, 40), (80, 190), (5, 150), (110, 60)]
    for label, (r, c) in enumerate(centres, start=1):
        rr, cc = ellipse(r, c, rng.uniform(6, 18), rng.uniform(6, 25), labels.shape,
                         rotation=rng.uniform(0, np.pi))
        labels[rr, cc] = label
    channels = rng.integers(0, 4096, labels.shape + (2,)).astype(np.uint16)
    return labels, channels


def brute_force_feret(mask: np.ndarray) -> tuple[float, float]:
    """Max and min Feret diameter of the pixels' edge midpoints, over all pairs / 0.01-degree
    caliper angles (given skimage's convex image, this is skimage's definition)."""
    rows, cols = np.nonzero(mask)
    points = np.concatenate([np.stack([rows + dr, cols + dc], 1)
                             for dr, dc in ((-0.5, 0), (0.5, 0), (0, -0.5), (0, 0.5))])
    diff = points[:, None, :] - points[None, :, :]
    feret_max = float(np.sqrt((diff ** 2).sum(-1)).max())
    angles = np.deg2rad(np.arange(0, 180, 0.01))
    widths = [np.ptp(points @ np.array([np.cos(a), np.sin(a)])) for a in angles]
    return feret_max, float(min(widths))


def test_fibre_table_matches_regionprops_and_brute_force():
    from skimage.measure import regionprops

    from nclsm_utils.metrics.morphology import ntm_rule, shape_features

    labels, channels = synthetic_fibres()
    table = fibre_table(labels, channels, ["laminin", "COX"], pixel_size=0.5)
    assert list(table.columns[:len(FIBRE_COLUMNS)]) == list(FIBRE_COLUMNS)
    props = {p.label: p for p in regionprops(labels)}
    assert table["id"].tolist() == sorted(props) == list(range(1, 8))
    features = shape_features(labels)
    ntm = dict(zip(features["label"], ntm_rule(features)))
    for row in table.itertuples():
        p = props[row.id]
        assert row.area_px == p.area and row.area_um2 == p.area * 0.25
        assert (row.centroid_y_px, row.centroid_x_px) == p.centroid
        assert row.centroid_x_um == p.centroid[1] * 0.5
        assert row.eccentricity == pytest.approx(p.eccentricity, abs=1e-12)
        feret_max, feret_min = brute_force_feret(p.image_convex)
        assert row.feret_max_px == pytest.approx(feret_max, rel=1e-9)
        assert row.feret_min_px == pytest.approx(feret_min, rel=1e-4)
        assert row.feret_max_px == pytest.approx(p.feret_diameter_max, rel=1e-9)
        assert row.perimeter_px == pytest.approx(p.perimeter, rel=1e-9)
        mask = labels == row.id
        assert row.mean_laminin == pytest.approx(channels[..., 0][mask].mean())
        assert row.median_COX == np.median(channels[..., 1][mask])
        rmin, cmin, rmax, cmax = p.bbox
        assert row.touches_border == (rmin == 0 or cmin == 0 or rmax == 160 or cmax == 200)
        assert row.ntm_rule == bool(ntm.get(row.id, False))
    assert table["touches_border"].sum() >= 2 and table["ntm_rule"].sum() >= 1
    # without a pixel size the micrometre columns are empty
    assert fibre_table(labels)["area_um2"].isna().all()


def test_overlay_is_downsampled_with_outlines(section):
    labels = np.kron(section["myofibres"], np.ones((6, 6), np.uint16))     # 2304 x 2304
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    out = overlay_image(rgb, labels)
    assert out.shape == (1152, 1152, 3)                            # factor 2: <= 2048 px
    outline = (out == (0, 255, 255)).all(-1)
    assert 0.02 < outline.mean() < 0.2 and (out[~outline] == 0).all()
