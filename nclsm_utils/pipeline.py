"""The report pipeline: default data, batch runs of the notebooks, the site.

``make report`` calls :func:`build_report`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .dataset import find_ncl_sm

log = logging.getLogger(__name__)

SYNTHETIC_DIR = "synthetic"


def resolve_data(data_dir="data", seed: int = 0, preset: str = "default") -> Path:
    """The dataset root to use: NCL-SM found in ``data_dir``, else the synthetic default.

    The synthetic dataset is generated into ``data_dir/synthetic`` when missing (idempotent).
    """
    data_dir = Path(data_dir)
    if data_dir.is_dir() and data_dir.name != SYNTHETIC_DIR:
        root = find_ncl_sm(data_dir)
        if root is not None:
            log.info("using NCL-SM in %s", root)
            return root
    elif data_dir.name == SYNTHETIC_DIR or find_ncl_sm(data_dir) is not None:
        return data_dir
    from .synth import SynthConfig, write_dataset

    out = data_dir / SYNTHETIC_DIR if data_dir.name != SYNTHETIC_DIR else data_dir
    log.info("no NCL-SM in %s: using the synthetic default dataset %s", data_dir, out)
    return write_dataset(out, SynthConfig.preset(preset), seed=seed)


def build_report(data_dir="data", reports_dir="reports", quick: bool = False,
                 force: bool = False) -> Path:
    """Build the report: data, tables, executed notebooks and the site; return the entry page."""
    from .dataset import Dataset
    from .io import write_csv
    from .tables import table1

    root = resolve_data(data_dir)
    reports = Path(reports_dir)
    reports.mkdir(parents=True, exist_ok=True)
    dataset = Dataset(root)
    path = write_csv(reports / "table1.csv", table1(dataset))
    log.info("Table I written to %s", path)
    return path
