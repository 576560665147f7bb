"""The explorer's data store: a dataset's sections, cached predictions and per-fibre tables.

:class:`ExploreData` reads what the pipeline cached (and nothing else), keeps the
full-resolution arrays of one section at a time, small per-section results (label boxes,
thresholds, shapes) and bounded LRU caches of views and crops (:class:`ViewCache`);
:class:`MissingPrediction` is raised for a method with no cached prediction.

Whole-section views (overviews) are also kept on disk, in
``<workdir>/overviews/<modality>_<id>/<layer>_<max_side>.npz``, keyed by the source file's
path, size and modification time: a section whose overviews are there is shown without
decoding its full-resolution files (:meth:`ExploreData.overview`,
:meth:`ExploreData.build_overviews`). The section image's positive thresholds (two floats,
needed by the fibre panel) are kept beside them, in ``thresholds.npz``, keyed the same way.
"""
from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from ..core.dataset import Dataset, Section, find_ncl_sm
from ..core.io import DataError, read_array, read_npz, write_npz
from ..segmenters.base import BENCHMARK_METHODS, method_label
from ..core.workdir import MissingPrediction, Workdir
from .views import DEFAULT_MAX_SIDE, Region, downsample_image, downsample_labels, view_sampling

log = logging.getLogger(__name__)

#: Methods always offered (they can be run from the app when not cached).
BUILTIN_METHODS = BENCHMARK_METHODS
#: Version of the on-disk overviews (part of their key: a new version rebuilds them).
OVERVIEW_VERSION = 1


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
    overview_cache : bool
        Read and write whole-section views in ``<workdir>/overviews/`` (see
        :meth:`overview`); False computes them from the full-resolution arrays every time
        a process first shows a section.
    """

    def __init__(self, data, workdir=None, max_side: int = DEFAULT_MAX_SIDE,
                 cache_mb: float = 512, overview_cache: bool = True):
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
        self.overview_cache = bool(overview_cache)
        self._overview_write_failed = False

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
        """Membrane / mass positive thresholds of the section image
        (:func:`nclsm_utils.metrics.positive_thresholds`), kept per section and on disk
        beside the overviews (``thresholds.npz``, keyed as :meth:`overview_key`), so a new
        process reads them instead of taking percentiles of the whole image."""
        key = ("thresholds", section.key)
        if key not in self._small:
            self._small[key] = self._thresholds(section)[0]
        return self._small[key]

    def _thresholds(self, section: Section) -> tuple[tuple[float, float], str]:
        """``(thresholds, how)``: how = ``read``, ``written`` or ``computed``."""
        path = Workdir(self.workdir).thresholds_path(section.modality, section.id)
        key = self._source_key(section, "image", what="positive_thresholds")
        if self.overview_cache:
            values = self._read_cached(path, key)
            if values is not None and values.shape == (2,):
                return (float(values[0]), float(values[1])), "read"
        values = tuple(float(v) for v in metrics.positive_thresholds(self.full(section, "image")))
        if not self.overview_cache:
            return values, "computed"
        return values, self._write_cached(path, key, np.array(values, np.float64))

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
        """A cached view (crop, then downsample) of a layer.

        The whole section comes from :meth:`overview` (on-disk cache); a smaller region
        (a zoom) is cropped from the full-resolution array, then downsampled.
        """
        max_side = int(max_side or self.max_side)
        whole = Region.full(self.shape(section))
        region = region or whole
        key = (section.key, layer, self.layer_stamp(section, layer), max_side, region.as_tuple())
        view = self.views.get(key)
        if view is None:
            if region == whole:
                view = self.overview(section, layer, max_side)
            else:
                view = self._downsample(section, layer, region, max_side)
            self.views.put(key, view)
        return view

    def _downsample(self, section: Section, layer: str, region: Region,
                    max_side: int) -> np.ndarray:
        full = self.full(section, layer)
        if layer == "image":
            return downsample_image(full, region, max_side)
        return downsample_labels(full, region, max_side)

    # -- overviews (whole-section views cached on disk) -----------------------------------
    def layer_source(self, section: Section, layer: str) -> Path:
        """The file a layer is read from: the section's image, its myofibre mask or the
        method's cached prediction (raises MissingPrediction)."""
        if layer == "image":
            return section.path("image")
        if layer == "gt":
            return section.path("myofibres")
        if layer.startswith("pred:"):
            return self.prediction_path(layer[5:], section)
        raise KeyError(f"unknown layer {layer!r}; use image, gt or pred:<method>")

    def overview_path(self, section: Section, layer: str, max_side: int | None = None) -> Path:
        """``<workdir>/overviews/<modality>_<id>/<layer>_<max_side>.npz``."""
        return Workdir(self.workdir).overview_path(section.modality, section.id, layer,
                                                   int(max_side or self.max_side))

    def overview_key(self, section: Section, layer: str, max_side: int | None = None) -> str:
        """What an on-disk overview depends on (a JSON string): the source file's absolute
        path, size and modification time, the section shape, ``max_side`` and
        :data:`OVERVIEW_VERSION`. A changed file gives another key (the overview is rebuilt)."""
        return self._source_key(section, layer, max_side=int(max_side or self.max_side))

    def _source_key(self, section: Section, layer: str, **extra) -> str:
        source = self.layer_source(section, layer)
        stat = source.stat()
        return json.dumps({"version": OVERVIEW_VERSION, "layer": layer,
                           "source": os.path.abspath(source), "size": int(stat.st_size),
                           "mtime_ns": int(stat.st_mtime_ns),
                           "shape": [int(v) for v in self.shape(section)], **extra},
                          sort_keys=True)

    def read_overview(self, section: Section, layer: str,
                      max_side: int | None = None) -> np.ndarray | None:
        """The on-disk overview of a layer when it is current (its key matches), else None."""
        path = self.overview_path(section, layer, max_side)
        if not path.is_file():
            return None
        return self._read_cached(path, self.overview_key(section, layer, max_side))

    @staticmethod
    def _read_cached(path: Path, key: str) -> np.ndarray | None:
        """The ``view`` array of an on-disk cache file when its ``key`` matches, else None."""
        if not path.is_file():
            return None
        try:
            arrays = read_npz(path)
        except DataError as error:
            log.info("%s unreadable, rebuilt: %s", path, error)
            return None
        if "view" not in arrays or str(arrays.get("key", "")) != key:
            log.debug("%s is stale (its source changed): rebuilt", path)
            return None
        return arrays["view"]

    def _write_cached(self, path: Path, key: str, view: np.ndarray) -> str:
        """Write an on-disk cache file atomically: ``written``, or ``computed`` when the
        workdir cannot be written (logged once as a warning)."""
        try:
            write_npz(path, view=view, key=np.array(key))
        except OSError as error:
            level = logging.DEBUG if self._overview_write_failed else logging.WARNING
            log.log(level, "cannot write %s (%s); it is recomputed in every new process",
                    path, error)
            self._overview_write_failed = True
            return "computed"
        return "written"

    def overview(self, section: Section, layer: str, max_side: int | None = None) -> np.ndarray:
        """The whole-section view of a layer (``image``, ``gt`` or ``pred:<method>``).

        Read from ``<workdir>/overviews/`` when it is current (no full-resolution file is
        decoded); else computed from the full-resolution array exactly as :meth:`view`
        computes any region, and written there atomically (a workdir that cannot be
        written is only logged).
        """
        return self._overview(section, layer, int(max_side or self.max_side))[0]

    def _overview(self, section: Section, layer: str, max_side: int) -> tuple[np.ndarray, str]:
        """``(view, how)``: how = ``read``, ``written`` or ``computed`` (not written)."""
        if self.overview_cache:
            view = self.read_overview(section, layer, max_side)
            if view is not None:
                return view, "read"
        key = self.overview_key(section, layer, max_side)
        view = self._downsample(section, layer, Region.full(self.shape(section)), max_side)
        if not self.overview_cache:
            return view, "computed"
        return view, self._write_cached(self.overview_path(section, layer, max_side), key, view)

    def build_overviews(self, sections=None, methods=None,
                        max_side: int | None = None) -> pd.DataFrame:
        """Write the on-disk overviews of sections, so a new process shows them at once.

        Parameters
        ----------
        sections : list of Section or str, optional
            Default: every section of the dataset.
        methods : list of str, optional
            Methods whose cached predictions get an overview (default:
            :meth:`cached_methods`); a method without a prediction for a section is skipped.
        max_side : int, optional
            Longest side of the views (default: the store's ``max_side``).

        Returns
        -------
        DataFrame
            One row per overview and one per section for its positive thresholds (layer
            ``thresholds``, see :meth:`thresholds`): ``section``, ``layer``, ``status``
            (``read`` when it was current already, ``written``, or ``computed`` when it
            could not be written) and ``path``.

        The full-resolution arrays read to compute them are dropped afterwards.
        """
        max_side = int(max_side or self.max_side)
        chosen = self.dataset.sections() if sections is None else [
            s if isinstance(s, Section) else self.dataset.section(str(s)) for s in sections]
        methods = self.cached_methods() if methods is None else list(methods)
        rows = []
        for section in chosen:
            layers = ["image", "gt"]
            for method in methods:
                try:
                    self.prediction_path(method, section)
                except MissingPrediction:
                    continue
                layers.append(f"pred:{method}")
            for layer in layers:
                _, status = self._overview(section, layer, max_side)
                rows.append({"section": section.key, "layer": layer, "status": status,
                             "path": str(self.overview_path(section, layer, max_side))})
            values, status = self._thresholds(section)
            self._small[("thresholds", section.key)] = values
            rows.append({"section": section.key, "layer": "thresholds", "status": status,
                         "path": str(Workdir(self.workdir).thresholds_path(section.modality,
                                                                           section.id))})
            log.info("overviews of %s: %s", section.key,
                     ", ".join(f"{r['layer']} {r['status']}" for r in rows[-len(layers) - 1:]))
        self._full.clear()
        self._full_key = None
        return pd.DataFrame(rows, columns=["section", "layer", "status", "path"])

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
