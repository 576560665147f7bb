"""Make the README's figures.

``docs/synthetic_section.png``: a synthetic section in the layout of NCL-SM's overview figure
(A image (R membrane, G mitochondrial mass), B instance mask, C freezing-artefact fibres,
D non-transverse fibres, E folded regions, F analysable fibres).
``docs/real_vs_synthetic.png``: the real panel's LEFT half (the right half is held out)
beside synthetic sections of the default generator shrunk to the same fibre size.
Run: ``python scripts/make_docs_figures.py``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.color import label2rgb  # noqa: E402

from nclsm_utils.synth import SynthConfig, generate_section  # noqa: E402


def highlight(image, mask, colour):
    out = image.astype(float) / 255
    out[mask > 0] = colour
    return out


def main(out="docs/synthetic_section.png") -> None:
    roles = generate_section("P06", "IMC", SynthConfig(), seed=0, index=5)
    image = roles["image"]
    panels = [
        ("A", image),
        ("B", label2rgb(roles["myofibres"], bg_label=0)),
        ("C", highlight(image, roles["fam"], (0.4, 0.8, 1.0))),
        ("D", highlight(image, roles["ntm"], (0.85, 0.92, 0.92))),
        ("E", highlight(image, roles["fr"], (0.9, 0.7, 0.5))),
        ("F", label2rgb(roles["analysable"], image=image[..., 1] / 255 * 0.2, bg_label=0)),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(12, 8))
    for ax, (letter, panel) in zip(axes.ravel(), panels):
        ax.imshow(panel)
        ax.text(0.03, 0.05, letter, transform=ax.transAxes, color="white", fontsize=22,
                fontweight="bold")
        ax.set_axis_off()
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(out)


def real_vs_synthetic(out="docs/real_vs_synthetic.png", n: int = 4) -> None:
    from nclsm_utils.report import plots
    from nclsm_utils.report import realcheck

    real = realcheck.real_left_half()
    if real is None:
        print("real figure missing: docs/real_vs_synthetic.png not made")
        return
    config = SynthConfig()
    pairs = []
    items = list(enumerate(config.section_ids()))
    imc = [item for item in items if item[1][0] == "IMC"]
    if_ = [item for item in items if item[1][0] == "IF"]
    alternating = [item for pair in zip(imc, if_) for item in pair][:n]
    for index, (modality, section_id) in alternating:   # as in data/synthetic (seed 0)
        roles = generate_section(section_id, modality, config, seed=0, index=index)
        pairs.append((f"{modality}/{section_id}", roles["image"], roles["myofibres"]))
    fig = plots.real_vs_synthetic_figure(real.image, real.labels, pairs, n=n, size=160)
    fig.savefig(out, dpi=80)
    print(out)


if __name__ == "__main__":
    main()
    real_vs_synthetic()
