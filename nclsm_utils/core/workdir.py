"""The work directory: the one owner of every path under it, and the one prediction loader.

::

    <workdir>/models/<method>-<key>/               cached models (key: params + training set)
    <workdir>/predictions/<method>/<modality>_<id>.tiff   cached predictions (+ .json sidecar)
    <workdir>/results/<label>/<modality>_<id>.csv  per-fibre tables
    <workdir>/results/<label>_summary.csv          a method's summary
    <workdir>/results/<label>_instance.csv         its instance metrics
    <workdir>/results/<label>_run.json             how its run went
    <workdir>/results/manifest.json                the results manifest (nclsm_utils.core.manifest)
    <workdir>/overviews/<modality>_<id>/<layer>_<max_side>.npz   explorer overviews
    <workdir>/overviews/<modality>_<id>/thresholds.npz           the section image's thresholds
    <workdir>/seeds/seed<k>/                       the same layout for training seed k > 0

>>> from pathlib import Path
>>> work = Workdir("data")
>>> work.prediction_path("unet", "IF", "S11").as_posix()
'data/predictions/unet/IF_S11.tiff'
>>> work.overview_path("IF", "S11", "pred:unet", 640).as_posix()
'data/overviews/IF_S11/pred-unet_640.npz'
>>> work.result_table("unet", "IF", "S11").as_posix(), work.seed(2).root.as_posix()
('data/results/unet/IF_S11.csv', 'data/seeds/seed2')
>>> default_workdir(Path("/x/data/synthetic")), default_workdir(Path("/x/NCL-SM"))
(PosixPath('/x/data'), PosixPath('/x/nclsm-work'))
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from .io import DataError, read_array

#: Folder of the synthetic default dataset inside the data folder.
SYNTHETIC_DIR = "synthetic"
#: File name of the results manifest in ``results/``.
RESULTS_MANIFEST = "manifest.json"


class MissingPrediction(DataError):
    """A method has no cached prediction for a section (the message names the file)."""


class Workdir:
    """Paths under one work directory (nothing is created until something is written).

    Parameters
    ----------
    root : path-like
        The work directory (``data/`` for the default data: :func:`default_workdir`).

    Attributes
    ----------
    root : Path
        The work directory.
    models, predictions, results, overviews : Path
        Its ``models/``, ``predictions/``, ``results/`` and ``overviews/`` folders.
    """

    def __init__(self, root):
        self.root = Path(root)
        self.models = self.root / "models"
        self.predictions = self.root / "predictions"
        self.results = self.root / "results"
        self.overviews = self.root / "overviews"

    def __repr__(self) -> str:
        return f"Workdir({str(self.root)!r})"

    # -- models ---------------------------------------------------------------------------
    def model_dir(self, method: str, key: str) -> Path:
        """``models/<method>-<key>``."""
        return self.models / f"{method}-{key}"

    # -- predictions ----------------------------------------------------------------------
    def prediction_dir(self, method: str) -> Path:
        """``predictions/<method>``."""
        return self.predictions / method

    def prediction_path(self, method: str, modality: str, section_id: str) -> Path:
        """``predictions/<method>/<modality>_<id>.tiff`` (the one prediction-path builder)."""
        return self.prediction_dir(method) / f"{modality}_{section_id}.tiff"

    def load_prediction(self, method: str, section) -> np.ndarray:
        """The cached prediction of ``method`` for ``section`` (a Section or anything with
        ``modality``, ``id`` and ``key``).

        Raises
        ------
        MissingPrediction
            No cached file; the message names the expected file and the command that makes it.
        """
        path = self.prediction_path(method, section.modality, section.id)
        if not path.is_file():
            raise MissingPrediction(
                f"{path}: no cached prediction of method {method!r} for section {section.key}; "
                f"run `nclsm segment --method {method} --data <data>` first")
        return read_array(path)

    # -- results --------------------------------------------------------------------------
    def results_dir(self, label: str) -> Path:
        """``results/<label>``: the method's per-fibre tables."""
        return self.results / label

    @staticmethod
    def result_name(label: str, modality: str, section_id: str) -> str:
        """``<label>/<modality>_<id>.csv``: a per-fibre table relative to ``results/``."""
        return f"{label}/{modality}_{section_id}.csv"

    def result_table(self, label: str, modality: str, section_id: str) -> Path:
        """``results/<label>/<modality>_<id>.csv``."""
        return self.results / self.result_name(label, modality, section_id)

    def summary_path(self, label: str) -> Path:
        return self.results / f"{label}_summary.csv"

    def instance_path(self, label: str) -> Path:
        return self.results / f"{label}_instance.csv"

    def run_record(self, label: str) -> Path:
        """``results/<label>_run.json``: how the method's last run went."""
        return self.results / f"{label}_run.json"

    @property
    def results_manifest(self) -> Path:
        """``results/manifest.json``."""
        return self.results / RESULTS_MANIFEST

    # -- explorer overviews ---------------------------------------------------------------
    def overview_path(self, modality: str, section_id: str, layer: str, max_side: int) -> Path:
        """``overviews/<modality>_<id>/<layer>_<max_side>.npz``: the explorer's cached
        whole-section view of a layer (``image``, ``gt`` or ``pred:<method>``, written
        ``pred-<method>``; a method name that is not a plain file name, such as
        ``external:<folder>``, is shortened and suffixed with a hash of it).

        >>> Workdir("w").overview_path("IF", "S11", "pred:external:/x/masks", 640).name
        'pred-external_x_masks-3a874cc66f_640.npz'
        """
        name = layer.replace("pred:", "pred-", 1) if layer.startswith("pred:") else layer
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            digest = hashlib.sha1(layer.encode()).hexdigest()[:10]
            name = f"{re.sub(r'[^A-Za-z0-9_.+-]+', '_', name)[:60]}-{digest}"
        return self.overviews / f"{modality}_{section_id}" / f"{name}_{int(max_side)}.npz"

    def thresholds_path(self, modality: str, section_id: str) -> Path:
        """``overviews/<modality>_<id>/thresholds.npz``: the explorer's cached positive
        thresholds of the section image.

        >>> Workdir("w").thresholds_path("IF", "S11").as_posix()
        'w/overviews/IF_S11/thresholds.npz'
        """
        return self.overviews / f"{modality}_{section_id}" / "thresholds.npz"

    # -- seeds ----------------------------------------------------------------------------
    def seed(self, k: int) -> "Workdir":
        """The work directory of training seed ``k``: this one for 0, else ``seeds/seed<k>``."""
        return self if int(k) == 0 else Workdir(self.root / "seeds" / f"seed{int(k)}")


def default_workdir(data: Path) -> Path:
    """Where models, predictions and results go: ``data/`` for ``data/synthetic`` (and for
    NCL-SM found under a ``data/`` folder), else ``<data>/../nclsm-work``."""
    data = Path(data).resolve()
    if data.name == SYNTHETIC_DIR or data.parent.name == "data":
        return data.parent
    if data.name == "data":
        return data
    return data.parent / "nclsm-work"
