"""Curation against NCL-SM's own labels: the real IF masks' published NTM flags and the
curation panels (C-F) of the overview figure (LEFT half only; the right half is held out)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nclsm_utils.curation import (ArraySection, ntm_decision, ntm_definition, ntm_features,
                                  prf, section_ntm_scale)

MASKS = {"S11": "S11_groundtruth_mask.tiff", "S60": "S60_groundtruth_mask.tiff"}


@pytest.mark.parametrize("section_id", ["S11", "S60"])
def test_curate_ntm_decision_on_real_if_masks_matches_published_flags(sample_dir, section_id):
    from nclsm_utils.core.io import read_array
    from nclsm_utils.dataset import as_labels

    path = sample_dir / MASKS[section_id]
    labels = as_labels(read_array(path), path)
    section = ArraySection({}, "IF", section_id)          # a real NCL-SM IF section
    assert ntm_definition(section.modality) == "rule" and section_ntm_scale(section) == 1.0
    # the curation's own path: per-fibre features (measured on fibre crops for a mask this
    # large) at the section's scale, then the decision `nclsm curate` takes for IF
    table = ntm_features(labels, section_ntm_scale(section))
    decisions = pd.DataFrame({"ntm": ntm_decision(table, section.modality)},
                             index=table["label"].to_numpy())
    published = pd.read_csv(sample_dir / "IF_NTM_detection.csv")
    published = published[published["FileName"] == section_id].set_index("Fibre_ID")
    both = decisions.join(published["NTM"].astype(bool).rename("published"), how="inner")
    assert len(both) == {"S11": 488, "S60": 584}[section_id]
    tp = int((both["ntm"] & both["published"]).sum())
    fp = int((both["ntm"] & ~both["published"]).sum())
    fn = int((~both["ntm"] & both["published"]).sum())
    assert tp + fn == {"S11": 47, "S60": 46}[section_id]
    assert prf(tp, fp, fn)[2] >= 0.9


# ---------------------------------------------------------------------------- figure panels C-F
@pytest.fixture(scope="module")
def figure_labels(panel):
    from nclsm_utils.core.realpanel import load_curation_labels

    return load_curation_labels(panel)


def test_panel_class_counts_on_the_left_half(figure_labels):
    """Panels C-F on panel B's 255 left-half fibres: 6 FAM (C), 48 NTM (D), 201 analysable
    (F); the folded region of panel E lies outside the left half."""
    from nclsm_utils.core.realpanel import LEFT_HALF_X, half_of

    fibres = figure_labels.fibres
    left = fibres[fibres["half"] == "left"]
    assert len(left) == 255
    assert left[["fam", "ntm", "fr", "analysable"]].sum().to_dict() == {
        "fam": 6, "ntm": 48, "fr": 0, "analysable": 201}
    # each fibre in one class: 251 of 255 (2 in none, 2 in two: edge fibres)
    assert int((left[["fam", "ntm", "fr", "analysable"]].sum(axis=1) == 1).sum()) == 251
    assert int(figure_labels.fr[:, :LEFT_HALF_X].sum()) == 0
    assert int(half_of(figure_labels.analysable, "left").max()) == 203
    # flagged fibres are well covered by their overlay, the others hardly at all
    assert left.loc[left["ntm"], "ntm_cover"].min() > 0.5
    assert left.loc[~left["ntm"], "ntm_cover"].max() < 0.5
    assert left.loc[left["fam"], "fam_cover"].min() > 0.6


def test_panel_registrations(figure_labels):
    shifts = figure_labels.shifts
    assert shifts["fam"] == (pytest.approx(1.0125), (-1, 0))
    assert shifts["ntm"] == (pytest.approx(1.015), (-2, -3))
    assert shifts["analysable"] == (pytest.approx(1.0175), (-1, 0))


def test_colour_mask_and_cover_on_a_drawn_overlay():
    from nclsm_utils.core.realpanel import FAM_COLOUR, _cover, colour_mask

    labels = np.zeros((20, 20), np.int32)
    labels[2:8, 2:8] = 1
    labels[10:18, 10:18] = 2
    drawn = np.zeros((20, 20, 3), np.uint8)
    drawn[3:8, 2:8] = FAM_COLOUR                        # 30 of fibre 1's 36 pixels
    drawn[10:12, 10:18] = (FAM_COLOUR[0] + 20, FAM_COLOUR[1] - 10, FAM_COLOUR[2])  # 16 of 64
    overlay = colour_mask(drawn, FAM_COLOUR)
    np.testing.assert_allclose(_cover(labels, overlay), [30 / 36, 16 / 64])
