"""What the explorer app shows: the "no method" choice, the fibre columns, a panel's state."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

NO_METHOD = "(none)"
#: Per-fibre columns shown for the selected fibre.
FIBRE_COLUMNS = ["gt_id", "pred_id", "matched", "iou", "gt_area", "pred_area",
                 "gt_membrane_included", "gt_mass_missed", "pred_membrane_included",
                 "pred_mass_missed"]


@dataclass
class PanelState:
    """What one method panel shows (after a refresh)."""

    method: str | None = None
    message: str = ""
    missing: bool = False
    can_run: bool = False
    counts: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    table: pd.DataFrame | None = None
    png: bytes = b""
    rgb: np.ndarray | None = None
    pred: np.ndarray | None = None
