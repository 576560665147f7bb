"""external: masks made by any other tool, evaluated like the built-in methods.

Use as ``external:<folder>`` wherever a method name is taken::

    nclsm segment --method external:masks/ilastik --data data/NCL-SM
    run_method("external:masks/qupath", dataset)

The folder holds one label mask per section (0 = background, one integer per fibre, same
height and width as the section), exported from Ilastik, CellProfiler, QuPath, a manually
corrected mitocyto run, ... Files are matched to sections by stem, first match wins:

1. ``<folder>/<modality>_<id>.<ext>`` (``IMC_P02.tiff``; also what ``data/predictions``
   holds, so another method's cached predictions can be re-evaluated),
2. ``<folder>/<modality>/<id>.<ext>`` (a folder per modality),
3. ``<folder>/<id>.<ext>`` (``P02.tif``),

with ``<ext>`` one of ``.tif``, ``.tiff``, ``.png`` (any case). Stems are compared
case-insensitively. Masks are validated with :func:`nclsm_utils.dataset.as_labels` (a colour
rendering of contours is rejected with a message saying to export a label image).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..core.dataset import as_labels
from ..core.io import DataError, read_array, read_shape
from .base import BaseParams, Segmenter, SegmenterError, register

log = logging.getLogger(__name__)

MASK_SUFFIXES = (".tif", ".tiff", ".png")


@register
class ExternalMasks(Segmenter):
    """Pre-computed label masks read from ``folder`` (no fitting, no prediction, no cache)."""

    name = "external"
    Params = BaseParams
    trainable = False

    def __init__(self, folder=None, params=None, workdir="data", device=None, quick=False,
                 budget=None):
        super().__init__(params=params, workdir=workdir, device=device, quick=quick,
                         budget=budget)
        if folder is None or str(folder) == "":
            raise ValueError("external masks need a folder: use the method name "
                             "'external:<folder>'")
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: external mask folder not found; expected a folder "
                            "of label masks named <id>.tif(f)/.png or <modality>_<id>.tif(f)/.png")
        self.source = "external"

    @property
    def label(self) -> str:
        """A file-system safe method label for result folders: ``external-<folder name>``."""
        return f"external-{self.folder.resolve().name}"

    def fit(self, train_sections=(), workdir=None, force: bool = False,
            validation=None) -> "ExternalMasks":
        """No-op: external masks need no training."""
        self.fitted = True
        return self

    def _predict_working(self, image, modality):
        raise SegmenterError(f"{self.label}: external masks cannot segment an image; "
                             "use predict_section(section)")

    def predict(self, image, modality="IMC"):
        return self._predict_working(image, modality)

    # -- masks -----------------------------------------------------------------------------
    def expected_names(self, section) -> list[str]:
        return [f"{section.modality}_{section.id}", f"{section.modality}/{section.id}", section.id]

    def find_mask(self, section) -> Path:
        """The mask file of ``section`` in the folder (see the module docstring for the order)."""
        listing = _listing(self.folder)
        sub = self.folder / section.modality
        for stem, where in ((f"{section.modality}_{section.id}", listing),
                            (section.id, _listing(sub) if sub.is_dir() else {}),
                            (section.id, listing)):
            found = where.get(stem.lower(), [])
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise DataError(f"{self.folder}: several masks for section {section.key}: "
                                f"{', '.join(p.name for p in found)}; keep one")
        raise DataError(f"{self.folder}: no mask for section {section.key}; expected "
                        f"{section.id}.tif(f)/.png or {section.modality}_{section.id}.tif(f)/.png "
                        "in that folder")

    def predict_section(self, section, force: bool = False) -> np.ndarray:
        """Read, validate and return the section's mask as a uint32 label image."""
        path = self.find_mask(section)
        expected = tuple(section.shape())
        shape = tuple(read_shape(path))
        if shape[:2] != expected:
            raise DataError(f"{path}: mask shape {shape} does not match section {section.key}; "
                            f"expected {expected} (height, width)")
        labels = as_labels(read_array(path), path)
        if labels.shape != expected:  # e.g. a (1, H, W) stack the header reported differently
            raise DataError(f"{path}: mask shape {labels.shape} does not match section "
                            f"{section.key}; expected {expected} (height, width)")
        if labels.max() > np.iinfo(np.uint32).max:
            raise DataError(f"{path}: label values exceed uint32")
        return labels.astype(np.uint32, copy=False)


def _listing(folder: Path) -> dict[str, list[Path]]:
    """Lower-cased stem -> mask files in ``folder`` (hidden files ignored)."""
    out: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") \
                and path.suffix.lower() in MASK_SUFFIXES:
            out.setdefault(path.stem.lower(), []).append(path)
    return out
