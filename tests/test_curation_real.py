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
