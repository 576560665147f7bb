"""Segmenter registry, mitocyto, caches, tiling helpers, external masks and run_method.

Everything runs on the tiny synthetic NCL-SM (``tiny_root``: IMC P01/P02 192 px, IF S10/S11
256 px; test split P02, S11).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage

from nclsm_utils.dataset import Dataset
from nclsm_utils.core.io import DataError
from nclsm_utils.segmenters import get_segmenter, known_methods, predict_tiled
from nclsm_utils.segmenters.base import resize_labels, tile_starts
from nclsm_utils.segmenters.membrane import (drop_background_objects, grow_to_mass_edge,
                                             merge_split_fibres, refine_to_membrane,
                                             separate_touching, split_on_faint_membrane,
                                             trim_beyond_ridge)
from nclsm_utils.segmenters.mitocyto_seg import (MitocytoParams, MitocytoSettings,
                                                 _hist_percentiles, find_fibre_contours,
                                                 matched_ious, membrane_uint8, mitocyto_args,
                                                 threshold_membrane)
from nclsm_utils.runner import RunResult, run_method


@pytest.fixture(scope="module")
def tiny(tiny_root) -> Dataset:
    return Dataset(tiny_root)


# ------------------------------------------------------------------------------ registry
def test_registry_unknown_name_lists_known_methods():
    assert {"mitocyto", "external"} <= set(known_methods())
    with pytest.raises(ValueError) as info:
        get_segmenter("no-such-method")
    message = str(info.value)
    assert "no-such-method" in message and "mitocyto" in message
    assert "external:<folder>" in message


def test_get_segmenter_builds_mitocyto_and_external(tmp_path):
    seg = get_segmenter("mitocyto", workdir=tmp_path)
    assert seg.name == "mitocyto" and not seg.trainable
    assert isinstance(seg.params, MitocytoParams)
    ext = get_segmenter(f"external:{tmp_path}", workdir=tmp_path)
    assert ext.name == "external" and ext.folder == tmp_path
    assert ext.label == f"external-{tmp_path.name}"


# ------------------------------------------------------------------------------ mitocyto
@pytest.mark.parametrize("section_id", ["P02", "S11"])
def test_mitocyto_predicts_uint32_labels(tiny, tmp_path, section_id):
    section = tiny.section(section_id)
    seg = get_segmenter("mitocyto", workdir=tmp_path).fit(tiny.sections(split="train"))
    labels = seg.predict(section.image(), modality=section.modality)
    assert labels.dtype == np.uint32
    assert labels.shape == section.shape()
    n = int(labels.max())
    assert n >= 5
    assert set(np.unique(labels)) == set(range(n + 1))        # sequential 1..N
    n_gt, ious = matched_ious(section.mask(), labels)
    assert ious.size >= 0.5 * n_gt and ious.mean() > 0.7      # real fibres, not noise


def test_mitocyto_contours_are_mitocytos_own():
    """Our contour step gives exactly mitocyto.makeContours' filtered contours."""
    import mitocyto as mc

    rng = np.random.default_rng(1)
    image = np.zeros((160, 160), np.uint8)
    image[::32, :] = 200
    image[:, ::32] = 200
    image = ndimage.gaussian_filter(image, 1.0) + rng.integers(0, 20, image.shape, np.uint8)
    settings = MitocytoSettings(block_size=1.0, min_area=0.2, max_area=4.0)
    args = mitocyto_args(settings, 32.0)
    thresh = threshold_membrane(image, args["threshold"])
    assert np.array_equal(thresh, mc.makethresholded(image.copy(), False, **args["threshold"]))
    from nclsm_utils.segmenters.mitocyto_seg import filter_contours

    ours = filter_contours(find_fibre_contours(thresh), args["filter"])
    _, theirs = mc.makeContours(thresh.copy(), showedges=False, numbercontours=False,
                                colours=False, **args["filter"])
    assert len(ours) == len(theirs) >= 16
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


def test_mitocyto_args_scale_with_fibre_size():
    settings = MitocytoSettings(block_size=2.0, min_area=0.25, max_area=4.0)
    small, large = mitocyto_args(settings, 36.0), mitocyto_args(settings, 72.0)
    assert small["threshold"]["blockSize"] == 73 and large["threshold"]["blockSize"] == 145
    area = np.pi / 4 * 36.0 ** 2
    assert small["filter"]["alim"] == pytest.approx((0.25 * area, 4.0 * area))
    assert large["filter"]["alim"][0] == pytest.approx(4 * small["filter"]["alim"][0])
    assert small["filter"]["cvxlim"] == (0.75, 1.0)


def test_mitocyto_params_accept_dicts_and_change_the_cache_key(tmp_path):
    a = get_segmenter("mitocyto", workdir=tmp_path)
    b = get_segmenter("mitocyto", params={"imc": {"block_size": 9.0}}, workdir=tmp_path)
    assert isinstance(b.params.imc, MitocytoSettings) and b.params.imc.block_size == 9.0
    assert a.cache_key() != b.cache_key()
    c = get_segmenter("mitocyto", workdir=tmp_path)
    c.diameters = {"IMC": 20.0}
    assert c.cache_key() != a.cache_key()      # the working scale is part of the key


def test_membrane_uint8_matches_numpy_percentiles():
    rng = np.random.default_rng(0)
    channel = rng.integers(0, 256, (101, 67)).astype(np.uint8)
    for q in ([1.0, 99.8], [5.0, 95.0], [0.0, 100.0]):
        assert _hist_percentiles(np.bincount(channel.ravel(), minlength=256), q) == \
            pytest.approx(tuple(np.percentile(channel, q)))
    lo, hi = np.percentile(channel, [1, 99.8])
    expected = np.round(np.clip((channel - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    assert np.abs(membrane_uint8(channel).astype(int) - expected).max() <= 1
    assert membrane_uint8(channel, 0.5).shape == (50, 34)


def test_matched_ious_paper_rule():
    gt = np.zeros((20, 20), np.int32)
    gt[2:12, 2:12] = 1          # centroid (6.5, 6.5) -> pixel (6, 6)
    gt[14:18, 14:18] = 2        # not detected
    pred = np.zeros_like(gt)
    pred[4:14, 2:12] = 5
    n_gt, ious = matched_ious(gt, pred)
    assert n_gt == 2
    assert ious.tolist() == pytest.approx([80 / 120])


# ------------------------------------------------------------------------------ cache
def test_prediction_cache_is_read_back(tiny, tmp_path, monkeypatch):
    section = tiny.section("P02")
    seg = get_segmenter("mitocyto", workdir=tmp_path).fit(tiny.sections(split="train"))
    first = seg.predict_section(section)
    assert (tmp_path / "predictions" / "mitocyto" / "IMC_P02.tiff").is_file()

    def fail(*args, **kwargs):
        raise AssertionError("predict called although the prediction is cached")

    monkeypatch.setattr(seg, "predict", fail)
    second = seg.predict_section(section)
    assert second.dtype == np.uint32 and np.array_equal(first, second)
    # other params -> other cache key -> predicts again
    other = get_segmenter("mitocyto", params={"imc": {"block_size": 3.0}}, workdir=tmp_path)
    other.fit(tiny.sections(split="train"))
    monkeypatch.setattr(other, "predict", fail)
    with pytest.raises(AssertionError, match="cached"):
        other.predict_section(section)


# ------------------------------------------------------------------------------ tiling
def test_tile_starts_values():
    assert tile_starts(1000, 400, 100) == [0, 300, 600]
    assert tile_starts(300, 400, 100) == [0]
    assert tile_starts(400, 400, 100) == [0]
    assert tile_starts(1024, 512, 128) == [0, 384, 512]
    assert tile_starts(401, 400, 100) == [0, 1]


def test_resize_labels_values():
    labels = np.array([[1, 2], [3, 0]], np.uint32)
    up = resize_labels(labels, (4, 4))
    assert up.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]]
    assert up.dtype == np.uint32
    big = np.arange(16, dtype=np.uint32).reshape(4, 4)
    assert resize_labels(big, (2, 2)).tolist() == [[5, 7], [13, 15]]
    assert resize_labels(big, (4, 4)) is big
    assert resize_labels(labels, (3, 5)).shape == (3, 5)


def _disc(n: int, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n] + 0.5
    return ((yy - n / 2) ** 2 + (xx - n / 2) ** 2 < radius ** 2).astype(np.uint16)


def test_resize_labels_bilinear_vote():
    # a disc predicted at 4/3 of the image's scale and brought back (as Segmenter.predict
    # does): nearest neighbour misplaces 8 outline pixels, the bilinear vote none
    truth = _disc(36, 7.2) > 0
    disc = _disc(48, 9.6)
    assert int(((resize_labels(disc, (36, 36)) > 0) ^ truth).sum()) == 8
    voted = resize_labels(disc, (36, 36), order=1)
    assert int(((voted > 0) ^ truth).sum()) == 0
    assert voted.dtype == np.uint16
    # enlarged 10x (a full-size IF section predicted at a tenth of its size): a smoother
    # outline than the 10 x 10 pixel blocks
    small, big = _disc(12, 4.3), _disc(120, 43.0) > 0
    nearest = int(((resize_labels(small, (120, 120)) > 0) ^ big).sum())
    vote = int(((resize_labels(small, (120, 120), order=1) > 0) ^ big).sum())
    assert (nearest, vote) == (672, 648)
    # no new labels, chunking changes nothing, a shared border stays between its two labels
    two = np.zeros((30, 30), np.uint32); two[3:27, 3:15] = 7; two[3:27, 15:27] = 9
    out = resize_labels(two, (22, 22), order=1, chunk_pixels=1)
    assert set(np.unique(out)) == {0, 7, 9}
    assert np.array_equal(out, resize_labels(two, (22, 22), order=1))
    assert resize_labels(two, (30, 30), order=1) is two
    with pytest.raises(ValueError, match="order"):
        resize_labels(two, (10, 10), order=3)


# ------------------------------------------------------------------------ post-processing
def _two_fibres():
    """Two fibres (mass 0.5) 10 px wide, a 2 px membrane between them, a 6 px gap right."""
    image = np.zeros((12, 28, 2), np.float32)
    image[:, :22, 1] = 0.5                     # tissue in columns 0-21, gap 22-27
    image[:, 10:12, 0] = 1.0                   # membrane between the fibres
    image[:, 20:22, 0] = 1.0                   # membrane at the tissue edge
    labels = np.zeros((12, 28), np.int32)
    labels[4:8, 3:6] = 1                       # undersized seeds, one per fibre
    labels[4:8, 14:17] = 2
    return image, labels


def _three_detections():
    """Fibres A (columns 0-13) and B (16-29), membranes at 14-15 and 30-31, a gap at 32-39;
    A detected twice (labels 1, 4), B by a polygon crossing into A (2), one object in the gap."""
    image = np.zeros((20, 40, 2), np.float32)
    image[:, :32, 1] = 0.5
    image[:, 14:16, 0] = 1.0
    image[:, 30:32, 0] = 1.0
    labels = np.zeros((20, 40), np.int32)
    labels[3:9, 3:9] = 1
    labels[11:17, 3:9] = 4
    labels[5:15, 12:26] = 2
    labels[8:12, 34:38] = 3
    return image, labels


def test_refine_to_membrane_redraws_detections_along_the_membrane():
    image, labels = _three_detections()
    out = refine_to_membrane(labels, image, 12, erosion=1, merge_length=8, ridge=2)
    assert out.dtype == labels.dtype
    # A's two detections merged into label 1; B's polygon keeps only its own fibre; the gap
    # object had no seed; neighbours meet in the middle of the membrane (columns 14 | 15)
    assert np.unique(out).tolist() == [0, 1, 2]
    assert np.unique(out[:, :15]).tolist() == [1] and np.unique(out[:, 15:31]).tolist() == [2]
    assert int((out == 1).sum()) == 20 * 15 and int((out == 2).sum()) == 20 * 16
    assert not out[:, 31:].any()
    # without merging, A stays in two halves of 150 px each
    split = refine_to_membrane(labels, image, 12, erosion=1, merge_length=8, merge_membrane=0)
    assert np.unique(split).tolist() == [0, 1, 2, 4]
    assert int((split == 1).sum()) == 150 and int((split == 4).sum()) == 150
    assert refine_to_membrane(labels, image, 0) is labels


def test_refine_to_membrane_adds_fibres_the_detector_missed():
    """Fibre B (columns 16-29) is not detected: without fill_area it is lost; with it, its
    interior, which no detection claims, becomes an object of its own, redrawn as A is."""
    image, labels = _three_detections()
    labels[labels == 2] = 0
    lost = refine_to_membrane(labels, image, 12, erosion=1, merge_length=8, ridge=0)
    assert {int(k): int((lost == k).sum()) for k in np.unique(lost)} == {0: 540, 1: 260}
    out = refine_to_membrane(labels, image, 12, erosion=1, merge_length=8, ridge=0,
                             fill_area=50)
    # A (columns 0-12) as before; B (columns 17-28) takes the next free label above
    # labels.max() (4)
    assert {int(k): int((out == k).sum()) for k in np.unique(out)} == {0: 300, 1: 260,
                                                                       5: 240}
    assert np.unique(out[:, 17:29]).tolist() == [5] and np.array_equal(out == 1, lost == 1)
    # the gap (columns 32-39) has no interior, and B's interior is under 1000 px: nothing added
    assert not out[:, 29:].any()
    assert np.array_equal(refine_to_membrane(labels, image, 12, erosion=1, merge_length=8,
                                             ridge=0, fill_area=1000), lost)


def test_trim_beyond_ridge_takes_back_growth_past_the_membrane_only():
    """Two fibres sharing a membrane (ridge at column 12), the right one's outer membrane at
    column 25 with a mass-carrying gap beyond: growth past column 25 is taken back, the two
    neighbours' shared border is kept; fibre 1's growth to the left over flat membrane
    (columns 1-2, no ridge) loses its outer half (column 1)."""
    profile = np.zeros(32, np.float32)
    profile[10:15] = [0.3, 0.7, 1.0, 0.7, 0.3]
    profile[23:28] = [0.3, 0.7, 1.0, 0.7, 0.3]
    image = np.zeros((6, 32, 2), np.float32)
    image[..., 0] = profile
    image[..., 1] = 0.5
    before = np.zeros((6, 32), np.int32)
    before[:, 3:9], before[:, 16:21] = 1, 2
    grown = before.copy()
    grown[:, 1:12], grown[:, 12:30] = 1, 2        # 1 short of nothing, 2 past its ridge
    out = trim_beyond_ridge(before, grown, image)
    assert out.dtype == grown.dtype
    assert (out[:, :2] == 0).all() and (out[:, 2:12] == 1).all()
    assert (out[:, 12:25] == 2).all() and not out[:, 26:].any()
    # the ridge's own column 25 is a tie of the two floods, decided by their order
    assert set(np.unique(out[:, 25]).tolist()) <= {0, 2}
    # nothing grew past a ridge: unchanged; nothing at all: returned as is
    assert (trim_beyond_ridge(before, before, image) == before).all()
    empty = np.zeros_like(before)
    assert trim_beyond_ridge(empty, empty, image) is empty


def test_separate_touching_opens_a_gap_only_where_objects_meet():
    """Objects 1 and 2 share a border (columns 5 | 6), object 3 touches only the background;
    object 4 (an L) wraps around object 5, and each loses the pixels on their border."""
    labels = np.zeros((6, 24), np.uint16)
    labels[:, 0:6], labels[:, 6:10], labels[:, 12:16] = 1, 2, 3
    labels[0:2, 17:24], labels[2:6, 17:19] = 4, 4
    labels[2:6, 19:24] = 5
    out = separate_touching(labels)
    assert out.dtype == labels.dtype
    assert out[3, :16].tolist() == [1, 1, 1, 1, 1, 0, 0, 2, 2, 2, 0, 0, 3, 3, 3, 3]
    assert (out == 3).sum() == (labels == 3).sum()           # a border with background: kept
    assert out[:, 17:].tolist() == [[4, 4, 4, 4, 4, 4, 4], [4, 4, 0, 0, 0, 0, 0],
                                    [4, 0, 0, 0, 0, 0, 0], [4, 0, 0, 5, 5, 5, 5],
                                    [4, 0, 0, 5, 5, 5, 5], [4, 0, 0, 5, 5, 5, 5]]
    wide = separate_touching(labels, width=2)
    assert wide[3, :11].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 0]
    # 4 falls into pieces; its largest (the corner) is kept
    assert np.argwhere(wide == 4).tolist() == [[0, 17], [0, 18], [1, 17]]
    assert (wide == 5).sum() == 6
    assert separate_touching(labels, width=0) is labels
    empty = np.zeros_like(labels)
    assert separate_touching(empty) is empty


def test_grow_to_mass_edge_stops_at_each_fibres_own_mass_edge():
    """A bright fibre (mass 0.6, columns 0-11) and a dark one (0.2, columns 12-23), the
    membrane on their border (11-12) and at the tissue edge (23-24), a gap of mass 0.02
    beyond; both detected short of their edges. Each grows over the pixels with at least half
    its own median mass: the bright one not into the dark one, the dark one not into the gap."""
    image = np.zeros((6, 32, 2), np.float32)
    image[:, :12, 1], image[:, 12:24, 1], image[:, 24:, 1] = 0.6, 0.2, 0.02
    image[:, 11:13, 0] = 1.0
    image[:, 23:25, 0] = 1.0
    labels = np.zeros((6, 32), np.int32)
    labels[:, 2:9] = 1
    labels[:, 15:20] = 2
    out = grow_to_mass_edge(labels, image, 0.5, reach=6)
    assert out.dtype == labels.dtype
    assert out[0].tolist() == [1] * 12 + [2] * 12 + [0] * 8
    assert (out == out[:1]).all()
    # at most `reach` pixels of growth
    assert grow_to_mass_edge(labels, image, 0.5, reach=2)[0].tolist() == \
        [1] * 11 + [0] * 2 + [2] * 9 + [0] * 10
    # a fraction of 0 (or nothing to grow) leaves the labels as they are
    assert grow_to_mass_edge(labels, image, 0) is labels
    empty = np.zeros_like(labels)
    assert grow_to_mass_edge(empty, image, 0.5) is empty


def test_split_on_faint_membrane_divides_only_objects_with_a_dividing_line():
    """Object 1 covers two fibres (columns 2-18 and 21-36) inside a membrane outline of 0.9,
    divided by a faint membrane line (columns 19-20); object 5 is one fibre whose interior
    membrane is noise (0-0.15). Only object 1 is divided, along the line."""
    image = np.zeros((24, 64, 2), np.float32)
    image[..., 1] = 0.6
    image[[1, 22], 1:38, 0] = 0.9
    image[1:23, [1, 37], 0] = 0.9
    image[2:22, 19:21, 0] = 0.3
    image[3:21, 42:61, 0] = np.random.default_rng(0).uniform(0, 0.15, (18, 19))
    image[[2, 21], 41:62, 0] = 0.9
    image[2:22, [41, 61], 0] = 0.9
    labels = np.zeros((24, 64), np.int32)
    labels[1:23, 1:38] = 1
    labels[2:22, 41:62] = 5
    out = split_on_faint_membrane(labels, image, min_area=60)
    assert out.dtype == labels.dtype
    # the new part takes the next free label; the noisy fibre stays whole
    assert {int(k): int((out == k).sum()) for k in np.unique(out)} == {0: 302, 1: 418, 5: 420,
                                                                       6: 396}
    assert (out[:, :19] != 6).all() and (out[:, 21:38] != 1).all()
    assert (out[labels == 5] == 5).all()
    # a line fainter than the outline's contrast asks for, or parts under min_area: no split
    assert np.unique(split_on_faint_membrane(labels, image, 60, contrast=0.6)).tolist() == \
        [0, 1, 5]
    assert np.unique(split_on_faint_membrane(labels, image, min_area=420)).tolist() == [0, 1, 5]
    # a line too faint to stand above the object's own Otsu level is no line
    image[2:22, 19:21, 0] = 0.12
    assert np.unique(split_on_faint_membrane(labels, image, 60)).tolist() == [0, 1, 5]
    assert split_on_faint_membrane(labels, image, 60, contrast=0) is labels


def test_merge_split_fibres_needs_a_long_border_without_membrane():
    labels = np.zeros((6, 12), np.int32)
    labels[:, :4], labels[:, 4:8], labels[:, 8:] = 1, 2, 3
    membrane = np.zeros((6, 12))
    membrane[:, 7:9] = 1.0
    assert np.unique(merge_split_fibres(labels, membrane, 4, 0.15)).tolist() == [1, 3]
    # a border shorter than min_length (rag_boundary counts 12 pixels here) is kept apart
    assert np.unique(merge_split_fibres(labels, membrane, 13, 0.15)).tolist() == [1, 2, 3]


def _bright_fibre_and_dark_detection():
    """A bright fibre (columns 0-17) with membrane beside it, and a detection (label 2) of a
    fibre without mass on the right; no membrane around the detection yet."""
    image = np.zeros((40, 48, 2), np.float32)
    image[:, :18, 1] = 0.6
    image[:, 18:20, 0] = 1.0                                   # membrane beside the bright fibre
    labels = np.zeros((40, 48), np.int32)
    labels[5:35, 3:15] = 1
    labels[11:29, 27:41] = 2
    return image, labels


def test_refine_keeps_a_dark_detection_without_interior():
    """A fibre without mass whose membrane ring is broken is neither tissue nor enclosed:
    without ``keep_seedless`` its detection is dropped, with it the detection is its seed and
    the object grows over its polygon to the ring (not only its eroded seed)."""
    from nclsm_utils.segmenters.membrane import refine_to_membrane

    image, labels = _bright_fibre_and_dark_detection()
    image[8:32, 24:44, 0] = 1.0
    image[10:30, 26:42, 0] = 0.0                               # a dark fibre's membrane ring ...
    image[18:22, 24:26, 0] = 0.0                               # ... broken on its left
    kwargs = {"erosion": 1, "merge_length": 8}
    assert np.unique(refine_to_membrane(labels, image, 12, **kwargs)).tolist() == [0, 1]
    kept = refine_to_membrane(labels, image, 12, keep_seedless=True, **kwargs)
    assert np.unique(kept).tolist() == [0, 1, 2]
    ys, xs = np.nonzero(kept == 2)                             # within the ring's outer edge
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (9, 30, 25, 42)
    # 292 of the ring's 320 interior pixels (the polygon has 252, its eroded seed 192)
    assert int((kept[10:30, 26:42] == 2).sum()) == 292 and int((kept == 2).sum()) == 336


def test_refine_keeps_a_dark_detection_whatever_its_membrane():
    """``keep_seedless`` asks nothing of the membrane around a detection without interior:
    dark fibres in groups share faint, broken membranes. With membrane on a quarter of its
    ring, or none, the detection keeps its object; without ``keep_seedless`` it goes."""
    from nclsm_utils.segmenters.membrane import membrane_ring_share, refine_to_membrane

    image, labels = _bright_fibre_and_dark_detection()
    found = {}
    for rows in (0, 12):
        side = image.copy()
        side[8:8 + rows, 41:44, 0] = 1.0                       # membrane on the right side only
        share = membrane_ring_share(labels, side, [2])[2]
        kept = refine_to_membrane(labels, side, 12, keep_seedless=True, erosion=1,
                                  merge_length=8)
        dropped = refine_to_membrane(labels, side, 12, erosion=1, merge_length=8)
        found[rows] = (round(share, 3), int((kept == 2).sum()), int((dropped == 2).sum()))
    # the whole polygon (252 px) with no membrane; with some, also pixels up to it
    assert found == {0: (0.0, 252, 0), 12: (0.25, 262, 0)}


def test_drop_background_objects_keeps_fibres_drops_gap_objects():
    image, labels = _two_fibres()
    labels = labels.copy()
    labels[4:8, 23:27] = 7                     # a false object in the gap
    kept = drop_background_objects(labels, image, 0.2)
    assert np.unique(kept).tolist() == [0, 1, 2]
    assert (kept > 0).sum() == 24
    # a dark fibre is kept down to a mean signal of 0.2 (mass 0.25 here); below it, only an
    # object without membrane around it is dropped (seed 1 is far from any membrane here)
    dark = image.copy()
    dark[:, :10, 1] = 0.25
    assert np.unique(drop_background_objects(labels, dark, 0.2)).tolist() == [0, 1, 2]
    dark[:, :10, 1] = 0.1
    assert (drop_background_objects(labels, dark, 0.2) > 0).sum() == 12
    # the same dark fibre outlined by its membrane is kept, whatever its mass
    outlined = dark.copy()
    outlined[2:10, 1:8, 0] = 1.0
    outlined[4:8, 3:6, 0] = 0.0
    kept = drop_background_objects(labels, outlined, 0.2)
    assert np.unique(kept).tolist() == [0, 1, 2] and (kept > 0).sum() == 24
    outlined[:, :10, 1] = 0.0                  # no mass at all
    assert (drop_background_objects(labels, outlined, 0.2) > 0).sum() == 24
    assert drop_background_objects(labels, image, 0) is labels


def _threshold_components(image: np.ndarray) -> np.ndarray:
    """A deterministic local segmenter: 4-connected components of channel 0 > 0.5."""
    return ndimage.label(image[..., 0] > 0.5)[0]


def test_predict_tiled_matches_single_pass():
    rng = np.random.default_rng(3)
    shape = (230, 310)
    image = np.zeros(shape + (2,), np.float32)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for _ in range(120):       # blobs of radius <= 6 (smaller than half the overlap)
        r, c, radius = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(2, 6)
        image[..., 0][(yy - r) ** 2 + (xx - c) ** 2 < radius ** 2] = 1.0
    single = predict_tiled(_threshold_components, image, tile=1024, overlap=32)
    tiled = predict_tiled(_threshold_components, image, tile=96, overlap=32)
    assert single.max() > 50 and tiled.dtype == np.uint32
    assert np.array_equal(single > 0, tiled > 0)
    # every object identical: the label pairs form a bijection
    pairs = np.unique(np.stack([single[single > 0], tiled[single > 0]]), axis=1)
    assert pairs.shape[1] == single.max() == tiled.max()
    assert len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]


# ------------------------------------------------------------------------------ external
def _write_external(folder, tiny):
    """P02 as <id>.tif, P01 as <modality>_<id>.png, S11 in a modality sub-folder; S10 missing."""
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "P02.tif", tiny.section("P02").mask().astype(np.uint16))
    iio.imwrite(folder / "IMC_P01.png", (tiny.section("P01").mask() > 0).astype(np.uint8) * 255)
    (folder / "IF").mkdir(exist_ok=True)
    tifffile.imwrite(folder / "IF" / "S11.tiff", tiny.section("S11").mask().astype(np.uint32))
    return folder


def test_external_masks_found_by_stem(tiny, tmp_path):
    folder = _write_external(tmp_path / "ilastik", tiny)
    seg = get_segmenter(f"external:{folder}", workdir=tmp_path).fit([])
    p02 = seg.predict_section(tiny.section("P02"))
    assert p02.dtype == np.uint32 and np.array_equal(p02, tiny.section("P02").mask())
    assert seg.find_mask(tiny.section("P01")).name == "IMC_P01.png"
    assert seg.find_mask(tiny.section("S11")) == folder / "IF" / "S11.tiff"
    assert set(np.unique(seg.predict_section(tiny.section("P01")))) == {0, 255}
    with pytest.raises(Exception, match="predict_section"):
        seg.predict(tiny.section("P02").image())


def test_external_missing_and_wrong_shape_errors_name_the_file(tiny, tmp_path):
    folder = _write_external(tmp_path / "qupath", tiny)
    seg = get_segmenter(f"external:{folder}", workdir=tmp_path)
    with pytest.raises(DataError) as info:
        seg.predict_section(tiny.section("S10"))
    message = str(info.value)
    assert str(folder) in message and "S10" in message and "IF_S10" in message
    assert "\n" not in message
    tifffile.imwrite(folder / "IF_S10.tif", np.zeros((100, 120), np.uint16))
    with pytest.raises(DataError) as info:
        seg.predict_section(tiny.section("S10"))
    message = str(info.value)
    assert "IF_S10.tif" in message and "(100, 120)" in message and "(256, 256)" in message
    tifffile.imwrite(folder / "IF_S10.tif", np.zeros((256, 256, 3), np.uint8))
    with pytest.raises(DataError, match="colour image"):
        seg.predict_section(tiny.section("S10"))
    with pytest.raises(DataError, match="not found"):
        get_segmenter(f"external:{tmp_path / 'nowhere'}")


# ------------------------------------------------------------------------------ run_method
def test_run_method_mitocyto_end_to_end(tiny, tmp_path):
    result = run_method("mitocyto", tiny, workdir=tmp_path, progress=False)
    assert isinstance(result, RunResult) and result.ok
    assert sorted(result.tables) == ["IF/S11", "IMC/P02"]
    for name in ("IMC_P02.csv", "IF_S11.csv"):
        path = tmp_path / "results" / "mitocyto" / name
        table = pd.read_csv(path)
        assert {"gt_id", "pred_id", "matched", "iou", "method", "section"} <= set(table.columns)
        assert table["matched"].sum() >= 1
    assert len(pd.read_csv(tmp_path / "results" / "mitocyto" / "IMC_P02.csv")) == \
        int(tiny.section("P02").mask().max())
    row = result.summary.iloc[0]
    assert row["method"] == "mitocyto" and row["source"] == "automatic"
    assert row["TS"] == "P02, S11"
    assert np.isfinite(row["mean IoU"]) and 0.7 < row["mean IoU"] <= 1.0
    assert row["MF-A"] == sum(t["matched"].sum() for t in result.tables.values())
    assert row["errors"] == 0
    assert (tmp_path / "results" / "mitocyto_summary.csv").is_file()


def test_run_method_bad_section_does_not_stop_the_others(tiny, tmp_path):
    folder = _write_external(tmp_path / "masks", tiny)      # S10 has no mask
    result = run_method(f"external:{folder}", tiny, sections=["P02", "S10", "S11"],
                        workdir=tmp_path, progress=False)
    assert list(result.errors) == ["IF/S10"] and "no mask" in result.errors["IF/S10"]
    assert sorted(result.tables) == ["IF/S11", "IMC/P02"]
    row = result.summary.iloc[0]
    assert row["TS"] == "P02, S11" and row["errors"] == 1
    assert row["mean IoU"] == pytest.approx(1.0)       # the ground truth scored against itself
    assert row["method"] == "external-masks" and row["source"] == "external"
    assert (tmp_path / "results" / "external-masks" / "IF_S11.csv").is_file()
    assert not (tmp_path / "results" / "external-masks" / "IF_S10.csv").exists()
    # a later run on a subset keeps the other sections' instance metrics
    run_method(f"external:{folder}", tiny, sections=["P02"], workdir=tmp_path, progress=False)
    instance = pd.read_csv(tmp_path / "results" / "external-masks_instance.csv")
    assert sorted(set(instance["section"])) == ["P02", "S11"]
    assert (instance.loc[np.isclose(instance["thresh"], 0.5), "f1"] == 1.0).all()


def test_cli_segment(tiny_root, tmp_path, capsys):
    from nclsm_utils.cli import main

    assert main(["segment", "--method", "bogus", "--data", str(tiny_root)]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "mitocyto" in err
    code = main(["segment", "--method", "mitocyto", "--data", str(tiny_root), "--sections",
                 "P02", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "mitocyto" in out and "mean IoU" in out
    assert (tmp_path / "results" / "mitocyto" / "IMC_P02.csv").is_file()


def test_has_cached_model_is_a_query(tiny, tmp_path):
    seg = get_segmenter("unet", workdir=tmp_path, quick=True)
    before = (list(seg.train_ids), dict(seg.diameters), seg.model_dir)
    assert not seg.has_cached_model(tiny.sections(split="train"))
    assert (list(seg.train_ids), dict(seg.diameters), seg.model_dir) == before
    assert get_segmenter("mitocyto", workdir=tmp_path).has_cached_model([])


def test_refine_keeps_a_fibre_without_mass_that_its_membrane_outlines():
    """A fibre whose mass is at the gap level, outlined by its membrane, keeps its object
    through refine_to_membrane (its interior counts as tissue: enclosed by membrane)."""
    from nclsm_utils.segmenters.membrane import enclosed_by_membrane, refine_to_membrane

    image = np.zeros((30, 60, 2), np.float32)
    image[:, :, 0] = 0.0
    for c0 in (2, 32):                                  # two fibres, membrane rings 2 px wide
        image[2:28, c0:c0 + 26, 0] = 1.0
        image[4:26, c0 + 2:c0 + 24, 0] = 0.0
    image[4:26, 4:26, 1] = 0.6                          # left fibre: normal mass
    image[4:26, 34:56, 1] = 0.01                        # right fibre: near black
    labels = np.zeros((30, 60), np.int32)
    labels[10:20, 10:20] = 1
    labels[10:20, 40:50] = 2
    enclosed = enclosed_by_membrane(image[..., 0])
    assert enclosed[15, 15] and enclosed[15, 45] and not enclosed[0, 0]
    out = refine_to_membrane(labels, image, 8, erosion=1)
    assert set(np.unique(out)) == {0, 1, 2}
    assert (out == 2).sum() >= 0.8 * 22 * 22             # the dark fibre's interior kept
    # a 3-px break in the dark fibre's membrane opens its interior to the gap: without
    # closing the fibre loses its object; bridging breaks of up to ~4 px keeps it
    image[14:17, 54:58, 0] = 0.0
    assert not enclosed_by_membrane(image[..., 0])[15, 45]
    assert enclosed_by_membrane(image[..., 0], closing=2)[15, 45]
    assert 2 not in np.unique(refine_to_membrane(labels, image, 8, erosion=1))
    kept = refine_to_membrane(labels, image, 8, erosion=1, closing=2)
    assert set(np.unique(kept)) == {0, 1, 2} and (kept == 2).sum() >= 0.8 * 22 * 22


def test_refine_variant_passes_its_closing_to_refine_to_membrane():
    from nclsm_utils.segmenters import get_segmenter

    seg = get_segmenter("stardist+refine", params={"closing_fraction": 1 / 9})
    first = seg.postprocessing()[0]
    assert first.name == "membrane.refine_to_membrane"
    assert first.kwargs["closing"] == round(seg.params.target_diameter / 9) == 4


def test_refine_caps_stardist_probability_threshold():
    """``stardist+refine`` detects at the lower of the plain row's probability threshold and
    ``prob_ceiling``; the plain row keeps its own."""
    import types

    plain = get_segmenter("stardist")
    refine = get_segmenter("stardist+refine")
    model = types.SimpleNamespace(thresholds=types.SimpleNamespace(prob=0.569, nms=0.3))
    plain.model = refine.model = model
    assert plain.predict_kwargs((64, 64, 2))["prob_thresh"] is None     # StarDist's chosen
    assert refine.params.prob_ceiling == 0.5
    assert refine.predict_kwargs((64, 64, 2))["prob_thresh"] == 0.5
    model.thresholds.prob = 0.42
    assert refine.predict_kwargs((64, 64, 2))["prob_thresh"] == 0.42
    low = get_segmenter("stardist+refine", params={"prob_thresh": 0.2})
    assert low.predict_kwargs((64, 64, 2))["prob_thresh"] == 0.2
    assert low.predict_kwargs((64, 64, 2))["nms_thresh"] is None
