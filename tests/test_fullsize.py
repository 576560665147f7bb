"""The NCL-SM-shaped synthetic dataset at real size (synth.fullsize): its plan and its files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from nclsm_utils.core.dataset import Dataset
from nclsm_utils.curation.models import section_ntm_scale
from nclsm_utils.metrics.morphology import NTM_REFERENCE_DIAMETER
from nclsm_utils.report.site import _dataset_description
from nclsm_utils.synth.fullsize import (
    PlannedSection, REAL_IF_SHAPES, section_plan, write_ncl_sm_shaped, write_planned_section,
)


def test_plan_has_ncl_sm_shape():
    plan = section_plan(46, scale=1.0, seed=0)
    imc = [p for p in plan if p.modality == "IMC"]
    if_ = [p for p in plan if p.modality == "IF"]
    assert (len(imc), len(if_)) == (27, 19)
    shapes = {p.section: p.shape for p in if_}
    for section, shape in REAL_IF_SHAPES.items():
        assert shapes[section] == shape
    # every IF section 98-186 Mpx (S60 is 98.5), fibres 280-370 px, drawn with 72-px fibres
    assert all(98 <= p.megapixels <= 186 for p in if_)
    assert all(280 <= p.diameter <= 370 for p in if_)
    for p in if_:
        factor = p.shape[0] / p.working[0]
        assert factor == pytest.approx(p.diameter / 72.0, rel=0.01)
    assert {"P02", "P06", "P04"} <= {p.section for p in imc}      # the default splits' sections
    assert {"S11", "S60", "S25"} <= set(shapes)
    assert section_plan(46, 1.0, 0) == plan                         # deterministic


def test_smaller_versions_keep_the_proportion():
    plan = section_plan(12, scale=0.1, seed=0)
    assert [p.modality for p in plan].count("IF") == 5
    s11 = [p for p in plan if p.section == "S11"][0]
    assert s11.shape == (1227, 1513) and s11.working == s11.shape   # fibres < 72 px: drawn as is
    with pytest.raises(ValueError, match="sections must be 2-46"):
        section_plan(47)
    with pytest.raises(ValueError, match="scale must be in"):
        section_plan(10, scale=0)


def test_written_section_is_enlarged_and_readable(tmp_path):
    planned = PlannedSection("IF", "S11", (600, 700), 144.0, (300, 350))
    record = write_planned_section(tmp_path, planned, seed=0, index=0)
    assert record["shape"] == [600, 700] and record["myofibres"] > 5
    png = tmp_path / "IF" / "Images" / "S11.png"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (700, 600) and image.mode == "RGB"
    labels = tifffile.imread(tmp_path / "IF" / "Mask_All_Myofibres" / "S11.tiff")
    assert labels.shape == (600, 700)
    # enlarged by nearest neighbour: every 2 x 2 block holds one label
    assert (labels[::2, ::2] == labels[1::2, 1::2]).mean() > 0.99
    assert len(np.unique(labels)) - 1 == record["myofibres"]
    analysable = tifffile.imread(tmp_path / "IF" / "Mask_All_AM" / "S11.tiff")
    assert set(np.unique(analysable)) <= set(np.unique(labels))
    assert not (tmp_path / "IF" / "Images_Raw").exists()


def test_dataset_writer_is_idempotent_and_loadable(tmp_path, monkeypatch):
    import nclsm_utils.synth.fullsize as fullsize

    small = [PlannedSection("IMC", "P02", (200, 200), 34.0, (200, 200)),
             PlannedSection("IF", "S11", (400, 440), 144.0, (200, 220))]
    monkeypatch.setattr(fullsize, "section_plan", lambda sections, scale, seed: small)
    out = write_ncl_sm_shaped(tmp_path / "NCL-SM", sections=2, progress=False)
    manifest = json.loads((out / "synth_manifest.json").read_text())
    assert [s["section"] for s in manifest["sections"]] == ["P02", "S11"]
    stamp = (out / "IF" / "Images" / "S11.png").stat().st_mtime_ns
    write_ncl_sm_shaped(out, sections=2, progress=False)           # kept: nothing rewritten
    assert (out / "IF" / "Images" / "S11.png").stat().st_mtime_ns == stamp
    dataset = Dataset(out)
    report = dataset.check()
    assert report["ok"].all(), report.to_dict("records")
    section = dataset.section("S11")
    assert section.image().shape == (400, 440, 3)
    assert section.mask("myofibres").shape == (400, 440)
    # curation's NTM rule scale: this section's own fibre diameter over the rule's reference
    assert section_ntm_scale(section) == pytest.approx(144.0 / NTM_REFERENCE_DIAMETER)
    assert "seed 0, 1 IMC + 1 IF sections" in "\n".join(_dataset_description(out))
