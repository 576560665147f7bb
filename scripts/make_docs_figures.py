"""Make docs/synthetic_section.png: a synthetic section in the layout of NCL-SM's overview figure.

A image (R membrane, G mitochondrial mass), B instance mask, C freezing-artefact fibres,
D non-transverse fibres, E folded regions, F analysable fibres.
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


if __name__ == "__main__":
    main()
