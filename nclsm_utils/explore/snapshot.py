"""Static snapshot of the explorer: the current view saved as a PNG figure and an HTML page.

:class:`SnapshotMixin` holds :meth:`Explorer.snapshot <nclsm_utils.explore.app.Explorer.snapshot>`
(a method of the app, kept in its own module so the app module stays small).
"""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import numpy as np

from .views import IOU_RANGE, _decode_png, _fmt


class SnapshotMixin:
    """The explorer's :meth:`snapshot` (mixed into :class:`~nclsm_utils.explore.app.Explorer`)."""

    # -- snapshot -------------------------------------------------------------------------
    def snapshot(self, path, html_path=None, dpi: int = 110) -> Path:
        """Save a static picture of the current view (PNG) and optionally an HTML page.

        The PNG shows the method panels with titles, the IoU colour bar and the selected
        fibre's rings; the HTML embeds the panels and the counts and fibre tables.
        """
        from matplotlib import colormaps, colors
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.cm import ScalarMappable
        from matplotlib.figure import Figure

        from ..core.io import atomic_path, write_text

        path = Path(path)
        panels = [p for p in self.panels.values() if p.method and p.rgb is not None]
        section = self.section.value or ""
        fibre_rgb = None
        if self.fibre_image.value:
            fibre_rgb = _decode_png(self.fibre_image.value)
        n = max(len(panels), 1)
        rows = 2 if fibre_rgb is not None else 1
        width = 5.2 * n + 0.8
        fibre_height = 0.0
        if fibre_rgb is not None:
            aspect = fibre_rgb.shape[0] / max(fibre_rgb.shape[1], 1)
            fibre_height = float(np.clip(0.8 * width * aspect, 1.2, 3.6)) + 0.4
        fig = Figure(figsize=(width, 5.4 + fibre_height), dpi=dpi)
        FigureCanvasAgg(fig)
        grid = fig.add_gridspec(rows, n, height_ratios=[5.4, fibre_height] if rows == 2 else [1])
        for i, panel in enumerate(panels):
            ax = fig.add_subplot(grid[0, i])
            ax.imshow(panel.rgb, interpolation="nearest")
            c = panel.counts
            subtitle = (f"matched {c['matched']}  missed {c['missed']}  extra {c['extra']}  "
                        f"A% {_fmt(c['A%'], 4)}" if c else (panel.message and "no prediction"))
            ax.set_title(f"{panel.method} on {section}\nIoU > {self.threshold.value:.2f}: "
                         f"{subtitle}", fontsize=9)
            ax.set_axis_off()
        if not panels:
            ax = fig.add_subplot(grid[0, 0])
            ax.text(0.5, 0.5, "no method shown", ha="center", va="center")
            ax.set_axis_off()
        mappable = ScalarMappable(norm=colors.Normalize(*IOU_RANGE), cmap=colormaps[self.cmap])
        fig.colorbar(mappable, ax=fig.axes[:n], fraction=0.03, pad=0.02, label="IoU of match")
        if fibre_rgb is not None:
            ax = fig.add_subplot(grid[1, :])
            ax.imshow(fibre_rgb, interpolation="nearest")
            ax.set_title(f"fibre #{self.fibre.value}: AiB (yellow) / AoB (blue) rings, "
                         "GT and predicted outlines", fontsize=9)
            ax.set_axis_off()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
            os.chmod(tmp, 0o644)
        if html_path is not None:
            images = "".join(
                f"<figure style='display:inline-block;margin:4px'><img style='max-width:520px' "
                f"src='data:image/png;base64,{base64.b64encode(p.png).decode()}'/>"
                f"<figcaption>{html.escape(p.method)}</figcaption></figure>" for p in panels)
            fibre = (f"<img src='data:image/png;base64,"
                     f"{base64.b64encode(self.fibre_image.value).decode()}'/>"
                     if self.fibre_image.value else "")
            page = (f"<html><head><meta charset='utf-8'><title>NCL-SM explorer snapshot"
                    f"</title></head><body><h3>{html.escape(section)} at IoU &gt; "
                    f"{self.threshold.value:.2f}</h3>{self.message.value}{images}"
                    f"{self.counts.value}{fibre}{self.fibre_info.value}</body></html>")
            os.chmod(write_text(Path(html_path), page), 0o644)
        return path
