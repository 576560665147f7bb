"""Synthetic vs real: the numbers and tables of the site's "Synthetic vs real" page.

The real reference is ONE real NCL-SM section (IF) with ground truth, seen at reduced
resolution in the NCL-SM paper's overview figure (:mod:`nclsm_utils.core.realpanel`, fibres about
16 px across). Only its LEFT half (``x < realpanel.LEFT_HALF_X``) is shown, measured or
reported here (:func:`real_left_half`); the right half is held out as an independent check
and is never read by this module.

* :func:`synthetic_statistics`: :func:`nclsm_utils.report.calibration.image_statistics` of every
  section of a dataset, each first shrunk to the real fibre diameter
  (:func:`nclsm_utils.report.calibration.at_diameter`);
* :func:`calibration_table` / :func:`calibration_reading`: the real values
  (:data:`nclsm_utils.report.calibration.REAL_TARGETS`) against the synthetic 10-90 % ranges, and
  the one-line reading of that table;
* :func:`load_transfer_table` / :func:`transfer_reading`: the real-image check written by
  ``benchmarks/bench_real_transfer.py`` (``reports/real_transfer.csv``), when present.

Example
-------
>>> from nclsm_utils.report import realcheck
>>> stats = realcheck.synthetic_statistics("data/synthetic")        # doctest: +SKIP
>>> table = realcheck.calibration_table(stats)                       # doctest: +SKIP
>>> realcheck.calibration_reading(table, len(stats))                 # doctest: +SKIP
'For 24 of 34 statistics the real value lies inside the synthetic 10-90 % range ...'
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import calibration
from ..core import realpanel
from ..core.dataset import Dataset, Section
from ..core.io import DataError

log = logging.getLogger(__name__)

#: Statistics the comparison leaves out: ``diameter_px`` is made equal by the rescaling and
#: ``fibres`` counts depend on the image size.
SCALE_STATISTICS = ("diameter_px", "fibres")
#: The file ``benchmarks/bench_real_transfer.py`` writes into the reports folder.
TRANSFER_FILE = "real_transfer.csv"
#: Columns of the real-image check shown on the page (those present, in this order).
TRANSFER_COLUMNS = ("case", "method", "source", "n_gt", "n_pred", "F1@0.5", "F1@0.5 CI low",
                    "F1@0.5 CI high", "F1@0.75", "F1@0.9", "mean IoU", "mean IoU CI low",
                    "mean IoU CI high", "note")
#: What each case of the real-image check is.
TRANSFER_CASES = {
    "real-left": "the real panel, scored on its left half only (fibres whose centre lies at "
                 "x < 240 px), as IF at its own fibre size",
    "synthetic-control": "a synthetic test section shrunk to the same fibre size",
    "s11-geometry": "the real S11 ground-truth geometry rendered by the synthetic renderer",
}
#: How to produce the real-image check.
TRANSFER_COMMAND = "python benchmarks/bench_real_transfer.py"


@dataclass
class RealLeftHalf:
    """The left half (``x < LEFT_HALF_X``) of the real panel: image and instance mask."""

    image: np.ndarray     # (H, LEFT_HALF_X, 3) uint8
    labels: np.ndarray    # (H, LEFT_HALF_X) int32
    path: Path

    @property
    def diameter(self) -> float:
        """Median equivalent fibre diameter (px) of the left-half mask."""
        return realpanel.median_diameter(self.labels)


def real_left_half(path=None) -> RealLeftHalf | None:
    """The real panel cut to its left half, or None (logged) when the figure is missing.

    The cut is a plain column slice ``[:, :LEFT_HALF_X]`` of the registered panel, exactly what
    :data:`nclsm_utils.report.calibration.REAL_TARGETS` was measured on; nothing right of it is kept.
    """
    try:
        panel = realpanel.load_panel(realpanel.FIGURE if path is None else path)
    except DataError as error:
        log.warning("real reference not available: %s", error)
        return None
    x = realpanel.LEFT_HALF_X
    return RealLeftHalf(image=np.ascontiguousarray(panel.image[:, :x]),
                        labels=np.ascontiguousarray(panel.labels[:, :x]), path=panel.path)


# ---------------------------------------------------------------------------- sections
def _sections(dataset_or_sections) -> list[Section]:
    if dataset_or_sections is None:
        from .pipeline import resolve_data

        dataset_or_sections = resolve_data("data")
    if isinstance(dataset_or_sections, (str, Path)):
        dataset_or_sections = Dataset(dataset_or_sections)
    if isinstance(dataset_or_sections, Dataset):
        return dataset_or_sections.sections()
    if isinstance(dataset_or_sections, Section):
        return [dataset_or_sections]
    return list(dataset_or_sections)


def is_synthetic(dataset) -> bool:
    """Whether a dataset (or its root folder) was written by :mod:`nclsm_utils.synth`."""
    root = Path(dataset.root if isinstance(dataset, Dataset) else dataset)
    return (root / "synth_manifest.json").is_file()


def synthetic_statistics(dataset_or_sections=None,
                         diameter: float = calibration.REAL_TARGETS["diameter_px"],
                         progress: bool = False) -> pd.DataFrame:
    """Calibration statistics of every section, each shrunk to the fibre ``diameter`` first.

    Parameters
    ----------
    dataset_or_sections : Dataset, path, Section or list of Sections, optional
        Default: the default data (``data/``: NCL-SM found there, else ``data/synthetic``).
    diameter : float
        Median fibre diameter (px) every section is rescaled to (default: the real left
        half's, ``REAL_TARGETS["diameter_px"]``).
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    DataFrame
        One row per section with a fibre mask: ``section`` (``IMC/P02``), ``modality``,
        ``split``, then every :func:`~nclsm_utils.report.calibration.image_statistics` column.
        Sections without fibres are skipped (logged). One section is in memory at a time.
    """
    from tqdm.auto import tqdm

    rows = []
    sections = _sections(dataset_or_sections)
    for section in tqdm(sections, desc="calibration statistics", disable=not progress):
        labels = section.mask("myofibres")
        if not (labels > 0).any():
            log.warning("%s: no fibres in the myofibre mask; left out of the calibration",
                        section.key)
            continue
        image, small = calibration.at_diameter(section.image(), labels, diameter)
        del labels
        stats = calibration.image_statistics(image, small)
        rows.append({"section": section.key, "modality": section.modality,
                     "split": section.split, **stats})
    return pd.DataFrame(rows)


def section_pairs(dataset_or_sections=None, n: int = 3) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(title, image, myofibre mask)`` of ``n`` sections, alternating modalities (IMC, IF,
    IMC, ...) in section order, for :func:`nclsm_utils.report.plots.real_vs_synthetic_figure`."""
    sections = _sections(dataset_or_sections)
    by_modality = {m: [s for s in sections if s.modality == m] for m in ("IMC", "IF")}
    chosen: list[Section] = []
    while len(chosen) < n and any(by_modality.values()):
        for modality in ("IMC", "IF"):
            if by_modality[modality] and len(chosen) < n:
                chosen.append(by_modality[modality].pop(0))
    return [(section.key, section.image(), section.mask("myofibres")) for section in chosen]


# ---------------------------------------------------------------------------- calibration
def calibration_table(synthetic, real: dict | None = None,
                      drop=SCALE_STATISTICS) -> pd.DataFrame:
    """:func:`nclsm_utils.report.calibration.compare` of the real values and the synthetic sections.

    ``synthetic``: :func:`synthetic_statistics`' frame (or a list of statistics dicts);
    ``real``: default :data:`~nclsm_utils.report.calibration.REAL_TARGETS`. The statistics in
    ``drop`` (set by the rescaling or by the image size) are left out.
    """
    real = calibration.REAL_TARGETS if real is None else real
    records = synthetic.to_dict("records") if isinstance(synthetic, pd.DataFrame) else list(synthetic)
    table = calibration.compare(real, records)
    if len(table):
        table = table[~table["statistic"].isin(list(drop))].reset_index(drop=True)
    return table


def calibration_reading(table: pd.DataFrame, n_sections: int | None = None) -> str:
    """One line: for how many statistics the real value lies in the synthetic 10-90 % range.

    >>> t = pd.DataFrame({"statistic": ["a", "b", "c"], "within": [True, False, True]})
    >>> calibration_reading(t, 5)  # doctest: +NORMALIZE_WHITESPACE
    'For 2 of 3 statistics (67 %) the real value lies inside the synthetic 10-90 % range of
    the 5 sections.'
    """
    if table is None or not len(table):
        return "No statistics to compare (no section with fibres)."
    inside, total = int(table["within"].sum()), len(table)
    over = f" of the {n_sections} sections" if n_sections is not None else ""
    return (f"For {inside} of {total} statistics ({100 * inside / total:.0f} %) the real value "
            f"lies inside the synthetic 10-90 % range{over}.")


# ---------------------------------------------------------------------------- real-image check
def load_transfer_table(reports_dir="reports", columns=TRANSFER_COLUMNS) -> pd.DataFrame | None:
    """The real-image check (``<reports_dir>/real_transfer.csv``), or None when it is missing.

    ``columns``: the columns kept (those present, in this order; None keeps all). Rows of a
    right-half case are dropped: the right half of the real panel is held out and never
    reported here.
    """
    path = Path(reports_dir) / TRANSFER_FILE
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"case": str, "method": str, "source": str, "note": str})
    if "case" in table:
        held_out = table["case"].fillna("").str.contains("right", case=False)
        if held_out.any():
            log.warning("%s: %d right-half row(s) left out (the right half is held out)",
                        path, int(held_out.sum()))
        table = table[~held_out]
    if columns is not None:
        table = table[[c for c in columns if c in table]]
    text = [c for c in ("case", "method", "source", "note") if c in table]
    table = table.assign(**{c: table[c].fillna("") for c in text})
    return table.reset_index(drop=True)


def transfer_meta(reports_dir="reports") -> dict:
    """The JSON sidecar of the real-image check (``real_transfer.json``), ``{}`` when absent."""
    path = Path(reports_dir) / TRANSFER_FILE.replace(".csv", ".json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def transfer_reading(table: pd.DataFrame | None) -> str:
    """Markdown above the real-image check: what it is, or how to produce it."""
    if table is None:
        return (f"*The real-image check has not been run for this report: run `{TRANSFER_COMMAND}` "
                "after `make report` (it writes `reports/real_transfer.csv`), then `nclsm site`.*")
    cases = [c for c in dict.fromkeys(table.get("case", pd.Series(dtype=str)).dropna())]
    lines = ["Each method as fitted by `make report` (its cached model), scored on images it was "
             "not trained on "
             "(instance F1 at IoU 0.5 / 0.75 / 0.9, mean IoU of matched fibres). The real case is "
             "**one real section at reduced resolution** (the paper's overview figure, fibres "
             "about 16 px across), left half only: a small sample, not a benchmark on NCL-SM."]
    lines += [f"- `{c}`: {TRANSFER_CASES[c]}" for c in cases if c in TRANSFER_CASES]
    return "\n".join(lines)
