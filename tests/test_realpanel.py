"""Tests of nclsm_utils.core.realpanel on the real NCL-SM overview figure and hand-made images.

The values asserted on the figure were measured once (panel A 364 x 479, 503 labels, 255
in the left half, registration scale 1.005 and shift (0, 4)); only left-half statistics
are asserted: the right half is held out.
"""
from __future__ import annotations

import numpy as np
import pytest

from nclsm_utils.core import realpanel
from nclsm_utils.core.io import DataError
from nclsm_utils.core.realpanel import (
    LEFT_HALF_X, LETTER_BOX, half_of, load_panel, mask_from_colours, median_diameter,
    read_figure,
)


# ---------------------------------------------------------------------------- real figure
def test_panel_shapes_and_types(panel):
    assert panel.image.shape == (364, 479, 3)
    assert panel.image.dtype == np.uint8
    assert panel.labels.shape == (364, 479)
    assert panel.labels.dtype == np.int32
    assert not panel.image[..., 2].any()            # B forced to 0
    assert panel.path == realpanel.FIGURE


def test_panel_label_counts(panel):
    labels = panel.labels
    assert int(labels.max()) == 503
    assert len(np.unique(labels)) - 1 == 503        # sequential labels 1..503
    left = half_of(labels, "left")
    assert int(left.max()) == 255


def test_left_half_fibre_diameter(panel):
    left = half_of(panel.labels, "left")
    assert median_diameter(left) == pytest.approx(16.7, abs=0.1)
    assert panel.median_diameter == pytest.approx(16.66, abs=0.1)


def test_registration(panel):
    assert panel.scale == pytest.approx((1.005, 1.005), abs=1e-9)
    assert tuple(panel.shift) == (0, 4)


def test_registered_borders_on_membrane(panel):
    """Fibre borders of the registered mask lie on brighter membrane than fibre interiors
    (left half only)."""
    from skimage.segmentation import find_boundaries

    left = half_of(panel.labels, "left")
    membrane = panel.image[..., 0].astype(float)
    border = find_boundaries(left, mode="inner")
    interior = (left > 0) & ~border
    assert membrane[border].mean() > 3 * membrane[interior].mean()   # measured 6.4x


def test_half_of_drops_the_letter_box_on_the_panel(panel):
    with_letter = half_of(panel.labels, "left", exclude_box=None)
    assert int(with_letter.max()) == 256
    centres = realpanel.centroids(with_letter)
    r0, r1, c0, c1 = LETTER_BOX
    in_box = ((centres[:, 0] >= r0) & (centres[:, 0] < r1)
              & (centres[:, 1] >= c0) & (centres[:, 1] < c1))
    assert int(in_box.sum()) == 1
    kept = realpanel.centroids(half_of(panel.labels, "left"))
    assert (kept[:, 1] < LEFT_HALF_X).all()


# ---------------------------------------------------------------------------- hand-made
RED, GREEN = (200, 40, 40), (40, 200, 40)


def test_mask_from_colours_same_colour_far_apart_are_two_labels():
    image = np.zeros((40, 60, 3), np.uint8)
    image[5:15, 5:15] = RED
    image[25:35, 40:50] = RED
    image[5:15, 25:35] = GREEN
    labels = mask_from_colours(image)
    assert labels.dtype == np.int32
    assert int(labels.max()) == 3
    red_labels = {int(labels[10, 10]), int(labels[30, 45])}
    assert len(red_labels) == 2 and 0 not in red_labels
    assert int(labels[10, 30]) not in red_labels | {0}
    for label in range(1, 4):
        assert int((labels == label).sum()) == 100


def test_mask_from_colours_anti_aliased_edges_join_their_region():
    image = np.zeros((40, 60, 3), np.uint8)
    image[5:15, 5:15] = RED
    image[5:15, 15] = (100, 20, 20)           # half-intensity anti-aliased column
    image[5:15, 25:35] = GREEN
    image[5:15, 24] = (20, 100, 20)
    image[20:30, 5:15] = RED
    image[19, 5:15] = (30, 10, 10)             # too dark (sum <= 60): background, not grown
    labels = mask_from_colours(image)
    assert int(labels.max()) == 3
    first = int(labels[10, 10])
    assert (labels[5:15, 15] == first).all()
    assert int((labels == first).sum()) == 110
    green = int(labels[10, 30])
    assert (labels[5:15, 24] == green).all()
    assert int((labels == green).sum()) == 110
    assert (labels[19, 5:15] == 0).all()
    assert int((labels == labels[25, 10]).sum()) == 100


def test_mask_from_colours_drops_small_fragments_and_rare_colours():
    image = np.zeros((40, 60, 3), np.uint8)
    image[5:15, 5:15] = RED
    image[30:34, 30:34] = RED                  # 16 px of a palette colour: below min_area
    image[30:33, 50:53] = (90, 90, 200)        # 9 px of a colour outside the palette
    labels = mask_from_colours(image)
    assert int(labels.max()) == 1
    assert int((labels == 1).sum()) == 100
    assert not labels[30:34, 30:34].any()


def test_half_of_letter_box_and_split():
    labels = np.zeros((364, 479), np.int32)
    labels[100:110, 10:20] = 1                 # left
    labels[330:340, 10:20] = 2                 # left, under the panel letter
    labels[100:110, 300:310] = 3               # right
    labels[230:250, 235:245] = 4               # centroid column 239.5: left
    left = half_of(labels, "left")
    assert int(left.max()) == 2
    assert left[105, 15] > 0 and left[240, 240] > 0
    assert not left[335, 15] and not left[105, 305]
    right = half_of(labels, "right")
    assert int(right.max()) == 1 and right[105, 305] == 1
    assert int(half_of(labels, "left", exclude_box=None).max()) == 3
    with pytest.raises(ValueError, match="half"):
        half_of(labels, "top")


# ---------------------------------------------------------------------------- bad inputs
def test_missing_figure_is_a_data_error_naming_the_file(tmp_path):
    path = tmp_path / "no_such_figure.png"
    with pytest.raises(DataError, match="no_such_figure.png"):
        load_panel(path)


def test_wrong_shaped_figure_is_a_data_error_naming_the_file(tmp_path):
    import imageio.v3 as iio

    small = tmp_path / "small_figure.png"
    iio.imwrite(small, np.zeros((50, 50, 3), np.uint8))
    with pytest.raises(DataError, match=r"small_figure\.png.*\(50, 50, 3\)"):
        read_figure(small)
    grey = tmp_path / "grey_figure.png"
    iio.imwrite(grey, np.zeros((800, 1500), np.uint8))
    with pytest.raises(DataError, match="grey_figure.png"):
        load_panel(grey)
