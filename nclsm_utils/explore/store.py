"""The explorer's data store: a dataset's sections, cached predictions and per-fibre tables.

:class:`ExploreData` reads what the pipeline cached (and nothing else), keeps the
full-resolution arrays of one section at a time, small per-section results (label boxes,
thresholds, shapes) and bounded LRU caches of views and crops (:class:`ViewCache`);
:class:`MissingPrediction` is raised for a method with no cached prediction.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from ..core.dataset import Dataset, Section, find_ncl_sm
from ..core.io import DataError, read_array
from ..segmenters.base import BENCHMARK_METHODS, method_label
from ..core.workdir import MissingPrediction, Workdir
from .views import DEFAULT_MAX_SIDE, Region, downsample_image, downsample_labels, view_sampling

log = logging.getLogger(__name__)

#: Methods always offered (they can be run from the app when not cached).
BUILTIN_METHODS = BENCHMARK_METHODS


# ============================================================================ data access
class ViewCache:
    """A least-recently-used cache of arrays bounded by their total size in bytes."""

    def __init__(self, max_bytes: int = 512 * 2**20):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key):
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        return None

    def put(self, key, value):
        size = int(getattr(value, "nbytes", 0))
        if key in self._items:
            self.bytes -= int(getattr(self._items.pop(key), "nbytes", 0))
        self._items[key] = value
        self.bytes += size
        while self.bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self.bytes -= int(getattr(old, "nbytes", 0))
        return value

    def __contains__(self, key) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


@dataclass
class SectionView:
    """Views of one section over one region: image, GT labels and a method's labels."""

    section: str
    region: Region
    step: int
    up: int
    image: np.ndarray
    gt: np.ndarray
    pred: np.ndarray | None = None
    method: str | None = None


def _open_dataset(data) -> Dataset:
    if isinstance(data, Dataset):
        return data
    path = Path(data).expanduser()
    root = find_ncl_sm(path)
    if root is None and (path / "synthetic").is_dir():
        root = find_ncl_sm(path / "synthetic")
    return Dataset(root if root is not None else path)


class ExploreData:
    """Cached access to a dataset's views, predictions and per-fibre tables.

    Parameters
    ----------
    data : Dataset or path-like
        The dataset (a folder holding NCL-SM, or ``data/`` holding ``synthetic/``).
    workdir : path-like, optional
        Where the pipeline cached ``predictions/`` and ``results/`` (default: the
        pipeline's :func:`nclsm_utils.report.pipeline.default_workdir`).
    max_side : int
        Longest side of a view.
    cache_mb : float
        Bound of the view cache.
    """

    def __init__(self, data, workdir=None, max_side: int = DEFAULT_MAX_SIDE,
                 cache_mb: float = 512):
        self.dataset = _open_dataset(data)
        if workdir is None:
            from ..core.workdir import default_workdir

            workdir = default_workdir(self.dataset.root)
        self.workdir = Path(workdir)
        self.max_side = int(max_side)
        self.views = ViewCache(int(cache_mb * 2**20))
        self.crops = ViewCache(int(cache_mb * 2**20) // 4)
        self._small: dict = {}
        self._tables: dict = {}
        self._full_key: str | None = None
        self._full: dict = {}

    # -- methods and files -----------------------------------------------------------
    def cached_methods(self) -> list[str]:
        """Method folders under ``<workdir>/predictions`` and ``<workdir>/results``."""
        found = set()
        work = Workdir(self.workdir)
        for folder in (work.predictions, work.results):
            if folder.is_dir():
                found.update(p.name for p in folder.iterdir()
                             if p.is_dir() and not p.name.startswith("."))
        return sorted(found)

    def methods(self, extra=()) -> list[str]:
        """Cached methods first, then the built-in ones and ``extra`` not cached."""
        cached = self.cached_methods()
        rest = [m for m in (*extra, *BUILTIN_METHODS) if m not in cached]
        return list(dict.fromkeys([*cached, *rest]))

    def pick_methods(self, methods, n: int = 2) -> list[str]:
        """The first ``n`` of ``methods`` that have cached predictions (or results); when
        none has, ``methods[:1]`` (the app then offers to run it)."""
        if isinstance(methods, str):
            methods = [m.strip() for m in methods.split(",") if m.strip()]
        methods = [m for m in (methods or []) if m]
        cached = set(self.cached_methods())
        have = [m for m in methods if method_label(m) in cached or m.startswith("external:")]
        return (have or methods[:1])[:n]

    def prediction_path(self, method: str, section: Section) -> Path:
        """The cached prediction of ``method`` for ``section``; raises MissingPrediction."""
        if method.startswith("external:"):
            from ..segmenters.external import ExternalMasks

            try:
                return ExternalMasks(folder=method.split(":", 1)[1]).find_mask(section)
            except DataError as error:
                raise MissingPrediction(str(error)) from error
        work = Workdir(self.workdir)
        path = work.prediction_path(method, section.modality, section.id)
        if not path.is_file():
            if not work.prediction_dir(method).is_dir():
                hint = (f"{method} has no cached predictions in {work.predictions}")
            else:
                hint = f"no cached prediction of {method} for {section.key} (expected {path})"
            if method.startswith("external-"):
                hint += "; open external masks as method 'external:<folder>'"
            raise MissingPrediction(hint)
        return path

    def table_path(self, method: str, section: Section) -> Path:
        return Workdir(self.workdir).result_table(method_label(method), section.modality,
                                                  section.id)

    def _stamp(self, path: Path):
        stat = path.stat()
        return (str(path), stat.st_mtime_ns, stat.st_size)

    # -- full-resolution arrays (one section at a time) --------------------------------
    def layer_stamp(self, section: Section, layer: str):
        """What a cached array of a layer depends on: the prediction file's path, mtime and
        size for ``pred:<method>`` (a re-run invalidates it), None for image and GT."""
        if layer.startswith("pred:"):
            return self._stamp(self.prediction_path(layer[5:], section))
        return None

    def is_loaded(self, section: Section, layer: str) -> bool:
        """Whether the full-resolution array of a layer is in memory (no file read needed)."""
        if self._full_key != section.key or layer not in self._full:
            return False
        try:
            return self._full[layer][0] == self.layer_stamp(section, layer)
        except DataError:
            return False

    def full(self, section: Section, layer: str) -> np.ndarray:
        """Full-resolution ``image``, ``gt`` or ``pred:<method>`` of one section.

        Only the arrays of one section are kept; asking for another section drops them.
        """
        if self._full_key != section.key:
            self._full.clear()
            self._full_key = section.key
        stamp = self.layer_stamp(section, layer)
        cached = self._full.get(layer)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if layer == "image":
            array = section.image()
        elif layer == "gt":
            array = section.mask("myofibres")
        elif layer.startswith("pred:"):
            from ..core.dataset import as_labels

            path = Path(stamp[0])
            array = as_labels(read_array(path), path)
            expected = tuple(section.shape())
            if array.shape != expected:
                raise DataError(f"{path}: prediction has shape {array.shape}, the section "
                                f"{section.key} {expected}")
        else:
            raise KeyError(f"unknown layer {layer!r}; use image, gt or pred:<method>")
        self._full[layer] = (stamp, array)
        return array

    def shape(self, section: Section) -> tuple[int, int]:
        key = ("shape", section.key)
        if key not in self._small:
            self._small[key] = tuple(section.shape())
        return self._small[key]

    def boxes(self, section: Section, layer: str) -> metrics.LabelBoxes:
        """Label bounding boxes of a layer (computed once, kept after the section is left)."""
        key = ("boxes", section.key, layer, self.layer_stamp(section, layer))
        if key not in self._small:
            self._small[key] = metrics.label_boxes(self.full(section, layer))
        return self._small[key]

    def box(self, section: Section, layer: str, label: int):
        """Bounding box ``(row0, row1, col0, col1)`` of one label of a layer (None if absent)."""
        boxes = self.boxes(section, layer)
        index = int(np.searchsorted(boxes.ids, label))
        if index >= len(boxes.ids) or boxes.ids[index] != label:
            return None
        return (int(boxes.row0[index]), int(boxes.row1[index]), int(boxes.col0[index]),
                int(boxes.col1[index]))

    def thresholds(self, section: Section) -> tuple[float, float]:
        """Membrane / mass positive thresholds of the section image (kept per section)."""
        key = ("thresholds", section.key)
        if key not in self._small:
            self._small[key] = metrics.positive_thresholds(self.full(section, "image"))
        return self._small[key]

    def crop(self, section: Section, layer: str, window: Region) -> np.ndarray:
        """A full-resolution crop of a layer, cached (fibre panels of a section left earlier
        need no re-read of its files)."""
        key = (section.key, layer, self.layer_stamp(section, layer), window.as_tuple())
        array = self.crops.get(key)
        if array is None:
            array = self.crops.put(key, np.array(self.full(section, layer)[window.slices]))
        return array

    # -- views --------------------------------------------------------------------------
    def view(self, section: Section, layer: str, region: Region | None = None,
             max_side: int | None = None) -> np.ndarray:
        """A cached view (crop, then downsample) of a layer."""
        max_side = int(max_side or self.max_side)
        region = region or Region.full(self.shape(section))
        key = (section.key, layer, self.layer_stamp(section, layer), max_side, region.as_tuple())
        view = self.views.get(key)
        if view is None:
            full = self.full(section, layer)
            if layer == "image":
                view = downsample_image(full, region, max_side)
            else:
                view = downsample_labels(full, region, max_side)
            self.views.put(key, view)
        return view

    def section_view(self, section: Section, method: str | None = None,
                     region: Region | None = None, max_side: int | None = None) -> SectionView:
        """Image, GT and (when ``method`` is given) predicted views of one region."""
        max_side = int(max_side or self.max_side)
        region = region or Region.full(self.shape(section))
        step, up = view_sampling(region, max_side)
        pred = self.view(section, f"pred:{method}", region, max_side) if method else None
        return SectionView(section.key, region, step, up,
                           self.view(section, "image", region, max_side),
                           self.view(section, "gt", region, max_side), pred, method)

    # -- tables --------------------------------------------------------------------------
    def table(self, section: Section, method: str) -> pd.DataFrame:
        """The per-fibre table of ``method`` on ``section``.

        Read from ``<workdir>/results/<method>/<modality>_<id>.csv``; when that file is
        missing but the prediction is cached, it is computed with
        :func:`nclsm_utils.metrics.evaluate` (kept in memory, not written).
        """
        path = self.table_path(method, section)
        if path.is_file():
            key = ("csv", section.key, method, self._stamp(path))
            if key not in self._tables:
                table = metrics.read_per_fibre_table(path)
                self._tables[key] = table
            return self._tables[key]
        pred_path = self.prediction_path(method, section)
        key = ("evaluated", section.key, method, self._stamp(pred_path))
        if key not in self._tables:
            log.info("no per-fibre table %s: evaluating the cached prediction", path)
            image = self.full(section, "image") if section.has("image") else None
            table = metrics.evaluate(self.full(section, "gt"), self.full(section, f"pred:{method}"),
                                     image, half_width=section.half_width)
            self._tables[key] = table
        return self._tables[key]

    def n_pred(self, section: Section, method: str, table: pd.DataFrame | None = None) -> int:
        """Number of predicted fibres (from the table; counted on the labels when empty)."""
        if table is not None and len(table) and "n_pred" in table:
            return int(table["n_pred"].iloc[0])
        return int(len(self.boxes(section, f"pred:{method}")))
