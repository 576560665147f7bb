"""The explorer app: the ipywidgets :class:`Explorer` (controls, panels, fibre view, actions)."""
from __future__ import annotations

import html
import logging
import time
import warnings
from collections import OrderedDict

import numpy as np
import pandas as pd

from .. import metrics
from ..core.dataset import Section
from ..core.errors import one_line
from ..core.io import DataError
from .snapshot import SnapshotMixin
from .store import ExploreData, MissingPrediction, SectionView
from .views import (DEFAULT_CMAP, DEFAULT_MAX_SIDE, GT_COLOUR, IOU_RANGE, Region, _fmt,
                    _html_table, _shift_box, colorbar_png, colour_lut, fibre_panel, fibre_rings,
                    overlay, png_bytes, threshold_counts, worst_fibres, zoom_region)

from .state import FIBRE_COLUMNS, NO_METHOD, PanelState  # noqa: F401

log = logging.getLogger(__name__)


class Explorer(SnapshotMixin):
    """The ipywidgets explorer: sections, two methods side by side, fibres and thresholds.

    Parameters
    ----------
    data : path-like or Dataset
        Dataset folder (NCL-SM, synthetic, or ``data/`` holding ``synthetic/``).
    workdir : path-like, optional
        Where ``predictions/`` and ``results/`` are cached (default as the pipeline).
    methods : str or list of str, optional
        Methods shown in panels A and B (default: the first cached method, nothing in B).
    section : str, optional
        Section id to open (default: the first section with a cached prediction of A).
    max_side, iou_threshold : int, float
        Longest side of a rendered view (pixels); initial IoU threshold of the counts.
    runner : callable, optional
        Called as ``runner(method, dataset, sections=[id], workdir=..., progress=False)``
        by the *Run* button (default :func:`nclsm_utils.runner.run_method`).

    The controls (``section``, ``method_a``, ``threshold``, ``fibre``, ...) are ipywidgets:
    setting a ``value`` updates the app as a user would.
    show_fibre_button, zoom_to_fibre : ipywidgets.Button
        Show the selected fibre's panel (:meth:`show_fibre`); zoom onto it (:meth:`focus_fibre`).
    timings : dict
        Seconds taken by the last refresh (``refresh``) and fibre update (``fibre``).

    Notes
    -----
    The panels show whole-section views, read from the on-disk overview cache when it is
    current, so opening the app or switching section decodes no full-resolution file.
    The fibre panel (the selected fibre's rings at full resolution) needs the section's
    full-resolution image and masks: it is built only when a fibre is asked for (choosing
    one in the list, *show fibre*, *zoom to fibre*, :meth:`show_fibre`, :meth:`select`
    with ``fibre``) and then follows the selection until the section changes; until then
    it shows a line saying so.
    """

    def __init__(self, data="data", workdir=None, methods=None, section=None,
                 max_side: int = DEFAULT_MAX_SIDE, iou_threshold: float = 0.8,
                 cmap: str = DEFAULT_CMAP, runner=None, cache_mb: float = 512):
        import ipywidgets as w

        self._w = w
        self.max_side = int(max_side)
        self.cmap = cmap
        self.lut = colour_lut(cmap)
        self.runner = runner
        self.store: ExploreData | None = None
        self._workdir_arg = workdir
        self._cache_mb = cache_mb
        self._hold = 0
        self.timings: dict[str, float] = {}
        self.panels = {"a": PanelState(), "b": PanelState()}
        self.fibre_rows: dict[str, dict] = {}
        self._fibre_cache: OrderedDict = OrderedDict()
        self._summaries: dict = {}
        self._prefetched: set = set()
        self._fibre_signature: tuple = (None, None)
        self._fibre_section: str | None = None  # the section whose fibre panel is shown
        self.errors: list[str] = []
        if isinstance(methods, str):
            methods = [m.strip() for m in methods.split(",") if m.strip()]
        self._extra_methods = [m for m in (methods or []) if m]

        layout = w.Layout
        self.data_path = w.Text(value=str(getattr(data, "root", data)), description="data",
                                layout=layout(width="420px"))
        self.workdir_path = w.Text(value="" if workdir is None else str(workdir),
                                   description="workdir", placeholder="default: as the pipeline",
                                   layout=layout(width="420px"))
        self.open_button = w.Button(description="Open", layout=layout(width="70px"))
        self.modality = w.Dropdown(description="modality", layout=layout(width="180px"))
        self.section = w.Dropdown(description="section", layout=layout(width="220px"))
        self.method_a = w.Dropdown(description="method A", layout=layout(width="260px"))
        self.method_b = w.Dropdown(description="method B", layout=layout(width="260px"))
        self.zoom = w.FloatLogSlider(value=1.0, base=2, min=0, max=6, step=0.25,
                                     description="zoom", readout_format=".2g",
                                     continuous_update=False)
        self.centre_row = w.FloatSlider(value=0.5, min=0, max=1, step=0.01, description="pan ↕",
                                        continuous_update=False)
        self.centre_col = w.FloatSlider(value=0.5, min=0, max=1, step=0.01, description="pan ↔",
                                        continuous_update=False)
        self.show_gt = w.Checkbox(value=True, description="GT contours", indent=False,
                                  layout=layout(width="120px"))
        self.show_pred = w.Checkbox(value=True, description="predictions", indent=False,
                                    layout=layout(width="120px"))
        self.threshold = w.FloatSlider(value=float(iou_threshold), min=0.0, max=0.99, step=0.01,
                                       description="IoU >", readout_format=".2f",
                                       continuous_update=True)
        self.fibre_order = w.ToggleButtons(options=["worst first", "by id"],
                                           value="worst first", description="fibres",
                                           style={"button_width": "90px"})
        self.fibre = w.Dropdown(description="fibre", options=[], layout=layout(width="330px"))
        self.show_fibre_button = w.Button(description="show fibre", layout=layout(width="110px"))
        self.zoom_to_fibre = w.Button(description="zoom to fibre", layout=layout(width="120px"))
        self.message = w.HTML()
        self.title_a, self.title_b = w.HTML(), w.HTML()
        self.image_a = w.Image(format="png")
        self.image_b = w.Image(format="png")
        self.colorbar = w.Image(value=colorbar_png(cmap), format="png",
                                layout=layout(width="90px"))
        self.run_a = w.Button(description="Run", button_style="warning",
                              layout=layout(display="none", width="auto"))
        self.run_b = w.Button(description="Run", button_style="warning",
                              layout=layout(display="none", width="auto"))
        self.counts = w.HTML()
        self.fibre_image = w.Image(format="png")
        self.fibre_info = w.HTML()
        for image in (self.image_a, self.image_b, self.fibre_image):
            image.add_class("nclsm-explore-px")
        # views are shown at their natural size; enlarged pixels stay square and sharp
        self.style = w.HTML("<style>.nclsm-explore-px{image-rendering:pixelated;}</style>")
        self.box_b = w.VBox([self.title_b, self.image_b, self.run_b])
        self.widget = w.VBox([
            self.style,
            w.HBox([self.data_path, self.workdir_path, self.open_button]),
            w.HBox([self.modality, self.section, self.method_a, self.method_b]),
            w.HBox([self.show_gt, self.show_pred]),
            w.HBox([self.zoom, self.centre_row, self.centre_col]),
            self.threshold,
            self.message,
            w.HBox([w.VBox([self.title_a, self.image_a, self.run_a]), self.box_b,
                    self.colorbar], layout=layout(flex_flow="row wrap")),
            self.counts,
            w.HBox([self.fibre_order, self.fibre, self.show_fibre_button, self.zoom_to_fibre]),
            self.fibre_image,
            self.fibre_info,
        ])

        self.open_button.on_click(lambda _: self.open(self.data_path.value,
                                                      workdir=self.workdir_path.value or None))
        self.modality.observe(self._on_modality, "value")
        for control in (self.section, self.method_a, self.method_b, self.zoom, self.centre_row,
                        self.centre_col, self.show_gt, self.show_pred):
            control.observe(self._on_view_change, "value")
        self.threshold.observe(self._on_threshold, "value")
        self.fibre.observe(self._on_fibre, "value")
        self.fibre_order.observe(lambda _: self._update_fibre_options(), "value")
        self.show_fibre_button.on_click(lambda _: self.show_fibre())
        self.zoom_to_fibre.on_click(lambda _: self.focus_fibre())
        self.run_a.on_click(lambda _: self.run_missing("a"))
        self.run_b.on_click(lambda _: self.run_missing("b"))

        self.open(data, methods=self._extra_methods, section=section)

    # -- display --------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        note = ("NCL-SM explorer (ipywidgets): live in JupyterLab; a static page shows the "
                "snapshot saved with Explorer.snapshot().")
        bundle["text/plain"] = note
        bundle["text/html"] = f"<p><i>{html.escape(note)}</i></p>"
        return bundle

    # -- helpers -----------------------------------------------------------------------
    class _Held:
        def __init__(self, app):
            self.app = app

        def __enter__(self):
            self.app._hold += 1

        def __exit__(self, *exc):
            self.app._hold -= 1

    def hold(self):
        """Context manager: change several controls, refresh once afterwards yourself."""
        return Explorer._Held(self)

    def _set_message(self, lines) -> None:
        self.errors = [line for line in lines if line]
        if not self.errors:
            self.message.value = ""
            return
        items = "".join(f"<li>{line}</li>" for line in self.errors)
        self.message.value = (f"<div style='background:#fff3cd;border:1px solid #e0c36c;"
                              f"padding:4px 10px;border-radius:4px'><ul style='margin:2px 0'>"
                              f"{items}</ul></div>")

    @property
    def current_section(self) -> Section | None:
        if self.store is None or not self.section.value:
            return None
        return self.store.dataset.section(self.section.value)

    @property
    def methods_shown(self) -> list[str]:
        return [m for m in (self.method_a.value, self.method_b.value) if m and m != NO_METHOD]

    def region(self) -> Region | None:
        section = self.current_section
        if section is None:
            return None
        return zoom_region(self.store.shape(section), self.zoom.value,
                           (self.centre_row.value, self.centre_col.value))

    @property
    def state(self) -> dict:
        """A plain summary of what the app shows (for tests and notebooks)."""
        region = self.region()
        return {
            "data": str(self.store.dataset.root) if self.store else None,
            "workdir": str(self.store.workdir) if self.store else None,
            "modality": self.modality.value, "section": self.section.value,
            "methods": [self.method_a.value, self.method_b.value],
            "region": region.as_tuple() if region else None,
            "zoom": self.zoom.value, "threshold": self.threshold.value,
            "fibre": self.fibre.value,
            "counts": {p.method: dict(p.counts) for p in self.panels.values()
                       if p.method and p.counts},
            "messages": list(self.errors),
            "missing": {p.method: p.missing for p in self.panels.values() if p.method},
        }

    # -- loading -----------------------------------------------------------------------
    def open(self, data, methods=None, section=None, workdir=None) -> None:
        """Open a dataset folder (the *Open* button reads the data and workdir boxes)."""
        if isinstance(methods, str):
            methods = [m.strip() for m in methods.split(",") if m.strip()]
        workdir = workdir if workdir not in (None, "") else self._workdir_arg
        try:
            store = ExploreData(data, workdir, self.max_side, self._cache_mb)
        except (DataError, OSError) as error:
            self.store = None
            self._set_message([f"Cannot open the dataset: {html.escape(str(error))}"])
            with self.hold():
                self.modality.options, self.section.options = [], []
                self.method_a.options, self.method_b.options = [], []
            for image in (self.image_a, self.image_b, self.fibre_image):
                image.value = b""
            self.counts.value = self.fibre_info.value = ""
            return
        self.store = store
        self._workdir_arg = store.workdir
        self._fibre_section = None
        self._fibre_cache.clear()
        self._prefetched.clear()
        self.data_path.value = str(store.dataset.root)
        self.workdir_path.value = str(store.workdir)
        all_methods = store.methods(extra=[*self._extra_methods, *(methods or [])])
        cached = store.cached_methods()
        wanted = store.pick_methods(methods) if methods else []
        first = wanted[0] if wanted else (cached[0] if cached else all_methods[0])
        second = wanted[1] if len(wanted) > 1 else NO_METHOD
        notes = []
        try:
            chosen = self._initial_section(store, first, section)
        except DataError as error:
            notes.append(html.escape(str(error)))
            chosen = self._initial_section(store, first, None)
        with self.hold():
            self.method_a.options = all_methods
            self.method_b.options = [NO_METHOD, *all_methods]
            self.method_a.value = first
            self.method_b.value = second
            self.modality.options = store.dataset.modalities
            modality = chosen.modality if chosen else store.dataset.modalities[0]
            self.modality.value = modality
            self._set_section_options(modality)
            if chosen is not None:
                self.section.value = chosen.key
            self.zoom.value, self.centre_row.value, self.centre_col.value = 1.0, 0.5, 0.5
        self.refresh(keep_fibre=False)
        if notes:
            self._set_message([*notes, *self.errors])

    def _initial_section(self, store: ExploreData, method: str, section) -> Section | None:
        sections = store.dataset.sections()
        if not sections:
            return None
        if section is not None:
            return store.dataset.section(str(section))
        for candidate in sections:
            try:
                store.prediction_path(method, candidate)
                return candidate
            except DataError:
                continue
        tests = [s for s in sections if s.split == "test"]
        return (tests or sections)[0]

    def _set_section_options(self, modality: str) -> None:
        sections = self.store.dataset.sections(modality=modality) if self.store else []
        options = [(f"{s.id} ({s.split})", s.key) for s in sections]
        current = self.section.value
        self.section.options = options
        if current in [key for _, key in options]:
            self.section.value = current
        elif options:
            self.section.value = options[0][1]

    # -- observers -----------------------------------------------------------------------
    def _on_modality(self, change) -> None:
        if self._hold or self.store is None:
            return
        with self.hold():
            self._set_section_options(change["new"])
        self.refresh()

    def _on_view_change(self, change) -> None:
        if self._hold:
            return
        if change["owner"] is self.section:
            with self.hold():
                self.zoom.value, self.centre_row.value, self.centre_col.value = 1.0, 0.5, 0.5
        self.refresh(keep_fibre=change["owner"] is not self.section)

    def _on_threshold(self, change) -> None:
        if self._hold:
            return
        self.refresh(keep_fibre=True, fibre_panel=False)

    def _on_fibre(self, change) -> None:
        if self._hold:
            return
        section = self.current_section
        if section is not None and change["new"]:
            self._fibre_section = section.key  # a fibre was asked for: show its panel
        self.refresh(keep_fibre=True)

    # -- rendering ------------------------------------------------------------------------
    def refresh(self, keep_fibre: bool = True, fibre_panel: bool = True) -> None:
        """Recompute the panels, counts and fibre view from the controls.

        The fibre panel is rebuilt only when a fibre was asked for on the current section
        (see the class notes); otherwise it shows a line saying how to get it.
        """
        start = time.perf_counter()
        section = self.current_section
        if section is None:
            if self.store is not None:
                self._set_message([f"{html.escape(str(self.store.dataset.root))}: no sections"])
            return
        if self._fibre_section != section.key:
            self._fibre_section = None
        messages = []
        try:
            region = self.region()
            base = self.store.section_view(section, None, region)
        except Exception as error:  # noqa: BLE001 - shown, never raised into the notebook
            log.exception("explorer: cannot show %s", section.key)
            self._set_message([f"Cannot read section {section.key}: "
                               f"{html.escape(one_line(error))}"])
            for image in (self.image_a, self.image_b, self.fibre_image):
                image.value = b""
            return
        if not base.gt.any() and not self._gt_has_fibres(section):
            messages.append(f"The ground truth of {section.key} has no fibres: nothing to "
                            "match; the image and predictions are shown as they are.")
        for name, dropdown in (("a", self.method_a), ("b", self.method_b)):
            method = dropdown.value if dropdown.value not in (None, NO_METHOD) else None
            self.panels[name] = self._load_panel(section, method, base)
            if self.panels[name].message:
                messages.append(self.panels[name].message)
        self._update_fibre_options(keep=keep_fibre)
        for panel in self.panels.values():
            self._draw_panel(panel, base)
        self.box_b.layout.display = None if self.panels["b"].method else "none"
        for name, image, title, button in (("a", self.image_a, self.title_a, self.run_a),
                                           ("b", self.image_b, self.title_b, self.run_b)):
            panel = self.panels[name]
            image.value = panel.png
            if panel.rgb is not None:
                image.layout.width = f"{panel.rgb.shape[1]}px"
            title.value = f"<b>{html.escape(panel.method or '')}</b> on {section.key}" \
                if panel.method else ""
            button.layout.display = None if panel.can_run else "none"
            button.description = f"Run {panel.method} on {section.id}" if panel.can_run else "Run"
        self.counts.value = self._counts_html(section)
        self._set_message(messages)
        self.timings["refresh"] = time.perf_counter() - start
        if fibre_panel:
            if self._fibre_section == section.key:
                self._render_fibre(section)
            else:
                self._fibre_placeholder()
            self._prefetch_fibres(section)

    def _fibre_placeholder(self) -> None:
        self.fibre_rows = {}
        self.fibre_image.value = b""
        self.fibre_info.value = (
            "<i>Select a fibre (or press <b>show fibre</b>) to see it at full resolution.</i>"
            if self.fibre.value else "<i>No fibre to show.</i>")

    def _gt_has_fibres(self, section: Section) -> bool:
        for panel in self.panels.values():
            if panel.table is not None and len(panel.table):
                return True
        return bool(len(self.store.boxes(section, "gt")))

    def _load_panel(self, section: Section, method: str | None, base: SectionView) -> PanelState:
        panel = PanelState(method=method)
        if method is None:
            return panel
        pred = table = None
        try:
            pred = self.store.view(section, f"pred:{method}", base.region)
            table = self.store.table(section, method)
        except MissingPrediction as error:
            panel.missing = True
            panel.can_run = not method.startswith("external")
            panel.message = (f"<b>{html.escape(method)}</b>: {html.escape(str(error))}."
                             + (" Use the <i>Run</i> button below its panel to compute it."
                                if panel.can_run else ""))
        except Exception as error:  # noqa: BLE001 - shown, never raised into the notebook
            log.exception("explorer: %s on %s", method, section.key)
            panel.message = (f"<b>{html.escape(method)}</b> on {section.key}: "
                             f"{html.escape(one_line(error))}")
        if table is not None:
            panel.table = table
            n_pred = self.store.n_pred(section, method, table)
            panel.counts = threshold_counts(table, n_pred, self.threshold.value)
            if n_pred == 0:
                panel.message = (f"<b>{html.escape(method)}</b> predicted no fibres on "
                                 f"{section.key}: every ground-truth fibre is missed.")
            panel.summary = self._summary(section, method, table)
        panel.pred = pred
        return panel

    def _draw_panel(self, panel: PanelState, base: SectionView) -> None:
        if panel.method is None:
            return
        panel.rgb = overlay(base.image, base.gt, panel.pred, panel.table, self.threshold.value,
                            selected=self.fibre.value or None, cmap=self.cmap,
                            show_gt=self.show_gt.value, show_pred=self.show_pred.value,
                            lut=self.lut)
        panel.png = png_bytes(panel.rgb)

    def _summary(self, section: Section, method: str, table: pd.DataFrame) -> dict:
        """metrics.summarise of a table (cached while the table object is)."""
        if not len(table):
            return {}
        key = (section.key, method)
        cached = self._summaries.get(key)
        if cached is None or cached[0] is not table:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cached = (table, metrics.summarise(table).iloc[0].to_dict())
            self._summaries[key] = cached
        return cached[1]

    def _counts_html(self, section: Section) -> str:
        t = self.threshold.value
        rows = []
        for panel in self.panels.values():
            if not panel.method:
                continue
            c, s = panel.counts, panel.summary
            if not c:
                rows.append([html.escape(panel.method), *["–"] * 8])
                continue
            rows.append([f"<b>{html.escape(panel.method)}</b>", c["gt"], c["n_pred"],
                         c["matched"], c["missed"], c["extra"], _fmt(c["A%"], 4),
                         c["MF-A"], _fmt(s.get("mean IoU"))])
        header = ["method", "GT fibres", "predicted", f"matched (IoU>{t:.2f})", "missed",
                  "extra", f"A%(IoU>{t:.2f})", "MF-A (centroid)", "mean IoU"]
        legend = ("<div style='font-size:85%;color:#555'>GT contours white; predicted contours "
                  f"coloured by the IoU of their matched fibre ({html.escape(self.cmap)}, "
                  f"{IOU_RANGE[0]}–{IOU_RANGE[1]}); blue tint: GT fibres missed at the "
                  "threshold; orange tint: extra predictions at the threshold (orange contour: matched by "
                  "no GT fibre at all); yellow: the selected fibre. "
                  "A% = 100 × matched with IoU &gt; t / matched (the paper's A%).</div>")
        return _html_table(header, rows) + legend if rows else ""

    def _update_fibre_options(self, keep: bool = True) -> None:
        table = next((p.table for p in self.panels.values() if p.table is not None), None)
        signature = (self.section.value, id(table), self.fibre_order.value)
        if keep and table is not None and signature == self._fibre_signature[0] \
                and self._fibre_signature[1] is table:
            return
        self._fibre_signature = (signature, table)
        if table is not None and len(table):
            ids = worst_fibres(table) if self.fibre_order.value == "worst first" \
                else sorted(int(v) for v in table["gt_id"])
            iou = dict(zip(table["gt_id"].astype(int), table["iou"].astype(float)))
            matched = dict(zip(table["gt_id"].astype(int), table["matched"].astype(bool)))
            options = [(f"#{i}  IoU {iou[i]:.3f}" if matched[i] else f"#{i}  not matched", i)
                       for i in ids]
        else:
            section = self.current_section
            ids = []
            if section is not None:
                try:
                    ids = [int(v) for v in self.store.boxes(section, "gt").ids]
                except Exception:  # noqa: BLE001
                    ids = []
            options = [(f"#{i}", i) for i in ids]
        current = self.fibre.value if keep else None
        values = [v for _, v in options]
        if current not in values:
            # default: the worst fibre that was matched (its rings can be compared)
            current = values[0] if values else None
            if table is not None and len(table) and self.fibre_order.value == "worst first":
                matched_ids = set(table.loc[table["matched"].astype(bool), "gt_id"].astype(int))
                current = next((v for v in values if v in matched_ids), current)
        with self.hold():
            self.fibre.options = options
            self.fibre.value = current

    def _fibre_key(self, section: Section, label) -> tuple:
        parts = [section.key, label]
        for panel in self.panels.values():
            if panel.method and panel.table is not None:
                try:
                    stamp = self.store._stamp(self.store.prediction_path(panel.method, section))
                except (DataError, OSError):
                    stamp = None
                parts.append((panel.method, stamp, id(panel.table)))
        return tuple(parts)

    def _render_fibre(self, section: Section) -> None:
        start = time.perf_counter()
        label = self.fibre.value
        self.fibre_rows = {}
        if not label:
            self.fibre_image.value = b""
            self.fibre_info.value = "<i>No fibre to show.</i>"
            return
        key = self._fibre_key(section, label)
        cached = self._fibre_cache.get(key)
        if cached is not None:
            self.fibre_image.value, self.fibre_info.value, rows = cached
            self.fibre_rows = dict(rows)
            self.timings["fibre"] = time.perf_counter() - start
            return
        try:
            store = self.store
            k = section.half_width
            plan = self._fibre_plan(section, label)
            if plan is None:
                self.fibre_info.value = f"<i>Fibre {label} is not in the ground truth.</i>"
                self.fibre_image.value = b""
                return
            window, matches = plan
            local = Region(0, window.height, 0, window.width)
            image = store.crop(section, "image", window)
            gt = store.crop(section, "gt", window)
            thresholds = store.thresholds(section)
            rings = fibre_rings(gt, label, k, image, thresholds,
                                box=_shift_box(store.box(section, "gt", label), window))
            crop_gt = gt == label
            gt_outlines, method_panels, titles, rows = [], [], ["GT"], []
            for method, (row, pred_id) in matches.items():
                self.fibre_rows[method] = row
                rows.append([f"<b>{html.escape(method)}</b>",
                             *[_fmt(row.get(c)) for c in FIBRE_COLUMNS]])
                if pred_id:
                    layer = f"pred:{method}"
                    pred = store.crop(section, layer, window)
                    other = fibre_rings(pred, pred_id, k, image, thresholds,
                                        box=_shift_box(store.box(section, layer, pred_id), window))
                    gt_outlines.append((pred == pred_id, self._iou_colour(float(row["iou"]))))
                    method_panels.append(fibre_panel(image, local, other, [(crop_gt, GT_COLOUR)]))
                else:
                    method_panels.append(fibre_panel(image, local, None, [(crop_gt, GT_COLOUR)]))
                titles.append(method + ("" if pred_id else " (not matched)"))
            panels = [fibre_panel(image, local, rings, gt_outlines), *method_panels]
            height = max(p.shape[0] for p in panels)
            gap = np.full((height, 6, 3), 255, np.uint8)
            padded = []
            for p in panels:
                if p.shape[0] < height:
                    p = np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)))
                padded.extend([p, gap])
            self.fibre_image.value = png_bytes(np.concatenate(padded[:-1], axis=1))
            gt_row = [f"ground truth (k = {k})", label, "", "", "", _fmt(int(rings.filled.sum())),
                      "", _fmt(rings.membrane_included), _fmt(rings.mass_missed), "", ""]
            caption = (f"<div style='font-size:85%;color:#555'>Panels: {' | '.join(titles)}. "
                       "Yellow: inner ring AiB, blue: outer ring AoB (square of side 2k+1); "
                       "solid pixels are membrane-positive (AiB) or mass-positive (AoB), so "
                       "membrane_included = solid / all yellow and mass_missed = solid / all "
                       "blue. The GT panel outlines the matched prediction (in its IoU colour), "
                       "a method's panel the GT fibre (white).</div>")
            header = ["", *FIBRE_COLUMNS]
            self.fibre_info.value = _html_table(header, [gt_row, *rows]) + caption
            self._fibre_cache[key] = (self.fibre_image.value, self.fibre_info.value,
                                      dict(self.fibre_rows))
            while len(self._fibre_cache) > 256:
                self._fibre_cache.popitem(last=False)
        except Exception as error:  # noqa: BLE001 - shown, never raised into the notebook
            log.exception("explorer: fibre %s of %s", label, section.key)
            self.fibre_image.value = b""
            self.fibre_info.value = f"<i>Cannot show fibre {label}: " \
                                    f"{html.escape(one_line(error))}</i>"
        self.timings["fibre"] = time.perf_counter() - start

    def _fibre_plan(self, section: Section, label: int):
        """(window, {method: (per-fibre row, matched pred id or 0)}) of a GT fibre, or None.

        The window holds the GT fibre and every matched predicted fibre with their ring
        margins (k) and some context, so the rings computed on its crops equal the metrics'.
        """
        store = self.store
        k = section.half_width
        box = store.box(section, "gt", label)
        if box is None:
            return None
        boxes, matches = [box], {}
        for panel in self.panels.values():
            if not panel.method or panel.table is None:
                continue
            match = panel.table[panel.table["gt_id"] == label]
            if not len(match):
                continue
            row = match.iloc[0].to_dict()
            pred_id = int(row["pred_id"]) if row.get("matched") else 0
            if pred_id:
                pred_box = store.box(section, f"pred:{panel.method}", pred_id)
                if pred_box is None:
                    pred_id = 0
                else:
                    boxes.append(pred_box)
            matches[panel.method] = (row, pred_id)
        # the GT fibre with context (the same window whatever methods are shown, so cached
        # crops are reused), grown only when a matched prediction and its ring stick out
        height, width = store.shape(section)
        r0, r1, c0, c1 = box
        pad = int(max(2 * k, 0.35 * max(r1 - r0, c1 - c0)))
        r0, r1, c0, c1 = r0 - pad, r1 + pad, c0 - pad, c1 + pad
        for b in boxes[1:]:
            r0, r1 = min(r0, b[0] - k), max(r1, b[1] + k)
            c0, c1 = min(c0, b[2] - k), max(c1, b[3] + k)
        window = Region(max(r0, 0), min(r1, height), max(c0, 0), min(c1, width))
        return window, matches

    def _prefetch_fibres(self, section: Section, n: int = 8) -> None:
        """While a section's full-resolution arrays are in memory, keep the crops of the
        selected fibre and of the first ``n`` (and first ``n`` matched) fibres of the list,
        so their panels need no re-read after a section switch."""
        store = self.store
        layers = ["image", "gt"] + [f"pred:{p.method}" for p in self.panels.values()
                                    if p.method and p.table is not None]
        options = [v for _, v in self.fibre.options]
        table = next((p.table for p in self.panels.values() if p.table is not None), None)
        matched = set()
        if table is not None and len(table):
            matched = set(table.loc[table["matched"].astype(bool), "gt_id"].astype(int))
        # the selected fibre, the first of the list and the first matched ones (the default
        # selection when the section is shown again)
        labels = tuple(dict.fromkeys([self.fibre.value, *options[:n],
                                      *[v for v in options if v in matched][:n]]))
        labels = tuple(v for v in labels if v)
        key = (section.key, tuple(layers), labels)
        if key in self._prefetched:
            return
        try:
            if not all(store.is_loaded(section, layer) for layer in layers):
                return
            self._prefetched.add(key)
            for label in labels:
                plan = self._fibre_plan(section, label)
                if plan is None:
                    continue
                window, _ = plan
                for layer in layers:
                    store.crop(section, layer, window)
            store.thresholds(section)
        except Exception:  # noqa: BLE001 - an optimisation only
            log.debug("explorer: prefetch of %s failed", section.key, exc_info=True)

    def _iou_colour(self, iou: float):
        lo, hi = IOU_RANGE
        scaled = np.clip((iou - lo) / (hi - lo), 0, 1)
        return tuple(int(v) for v in self.lut[int(round(scaled * (len(self.lut) - 1)))])

    # -- actions --------------------------------------------------------------------------
    def select(self, section: str | None = None, method_a: str | None = None,
               method_b: str | None = None, fibre: int | None = None) -> None:
        """Show a section (``P02`` or ``IMC/P02``, any modality) and/or methods; one refresh.

        ``method_b=""`` or ``"(none)"`` hides panel B.
        """
        if self.store is None:
            return
        with self.hold():
            if section is not None:
                chosen = self.store.dataset.section(str(section))
                if self.modality.value != chosen.modality:
                    self.modality.value = chosen.modality
                    self._set_section_options(chosen.modality)
                if self.section.value != chosen.key:
                    self.section.value = chosen.key
                    self.zoom.value, self.centre_row.value, self.centre_col.value = 1.0, 0.5, 0.5
            for dropdown, method in ((self.method_a, method_a), (self.method_b, method_b)):
                if method is None:
                    continue
                method = method or NO_METHOD
                if method not in dropdown.options:
                    self._extra_methods.append(method)
                    options = self.store.methods(extra=self._extra_methods)
                    a, b = self.method_a.value, self.method_b.value
                    self.method_a.options = options
                    self.method_b.options = [NO_METHOD, *options]
                    self.method_a.value, self.method_b.value = a, b
                dropdown.value = method
        self.refresh(keep_fibre=section is None)
        if fibre is not None:
            self.show_fibre(int(fibre))

    def show_fibre(self, label: int | None = None) -> None:
        """Show a GT fibre's panel at full resolution (default: the selected fibre; the
        *show fibre* button).

        The first fibre panel of a section reads its full-resolution image, GT and shown
        predictions (the crops are kept, so the panels of a section left earlier need no
        re-read); later selections in the section update the panel until the section changes.
        """
        section = self.current_section
        if section is None:
            return
        self._fibre_section = section.key
        if label is not None and int(label) != self.fibre.value:
            with self.hold():
                self.fibre.value = int(label)
            self.refresh()  # the panels highlight the newly selected fibre
            return
        self._render_fibre(section)
        self._prefetch_fibres(section)

    def focus_fibre(self, label: int | None = None) -> None:
        """Zoom and pan onto a GT fibre (default: the selected one) and show its panel."""
        section = self.current_section
        label = label if label is not None else self.fibre.value
        if section is None or not label:
            return
        box = self.store.box(section, "gt", int(label))
        if box is None:
            return
        height, width = self.store.shape(section)
        r0, r1, c0, c1 = box
        size = max((r1 - r0) / height, (c1 - c0) / width, 1e-6)
        zoom = float(np.clip(1.0 / (3 * size), 1.0, 2.0 ** self.zoom.max))
        with self.hold():
            self.zoom.value = zoom
            self.centre_row.value = round((r0 + r1) / 2 / height, 2)
            self.centre_col.value = round((c0 + c1) / 2 / width, 2)
            if self.fibre.value != label:
                self.fibre.value = label
        self._fibre_section = section.key
        self.refresh()

    def run_missing(self, panel: str = "a") -> None:
        """Run a panel's method on the current section (the *Run* button)."""
        method = self.panels[panel].method
        section = self.current_section
        if not method or section is None:
            return
        runner = self.runner
        if runner is None:
            from ..runner import run_method as runner
        self._set_message([f"Running {html.escape(method)} on {section.key} ..."])
        try:
            result = runner(method, self.store.dataset, sections=[section.id],
                            workdir=self.store.workdir, progress=False)
        except Exception as error:  # noqa: BLE001 - shown, never raised into the notebook
            log.exception("explorer: running %s", method)
            self._set_message([f"{html.escape(method)} could not run: "
                               f"{html.escape(one_line(error))}"])
            return
        errors = getattr(result, "errors", {}) or {}
        options = self.store.methods(extra=self._extra_methods)
        with self.hold():
            a, b = self.method_a.value, self.method_b.value
            self.method_a.options = options
            self.method_b.options = [NO_METHOD, *options]
            self.method_a.value, self.method_b.value = a, b
        self.refresh(keep_fibre=False)
        if errors:
            self._set_message([*self.errors, *(f"{html.escape(method)} on {k}: "
                                               f"{html.escape(v)}" for k, v in errors.items())])

