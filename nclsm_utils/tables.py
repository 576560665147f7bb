"""The NCL-SM paper's tables: I (annotation counts), II (QA vs GT), III (methods vs GT)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

TABLE1_COLUMNS = ["technique", "sections", "myofibres", "analysable", "non-transverse",
                  "freezing artefact", "folded regions"]


def count_labels(labels: np.ndarray) -> int:
    """Number of distinct non-zero labels in a label image.

    >>> count_labels(np.array([[0, 3, 3], [7, 0, 1]]))
    3
    """
    values = np.unique(labels)
    return int(np.count_nonzero(values))


def count_regions(mask: np.ndarray) -> int:
    """Number of 8-connected regions of the non-zero pixels of a mask.

    >>> count_regions(np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1]]))
    2
    """
    _, n = ndimage.label(mask > 0, structure=np.ones((3, 3), bool))
    return int(n)


def section_counts(section) -> dict:
    """Table I counts of one section; a missing role counts as NaN (reported, not guessed)."""
    def labels_of(role):
        return count_labels(section.mask(role)) if section.has(role) else np.nan

    return {
        "technique": section.modality,
        "section": section.id,
        "myofibres": labels_of("myofibres"),
        "analysable": labels_of("analysable"),
        "non-transverse": labels_of("ntm"),
        "freezing artefact": labels_of("fam"),
        "folded regions": count_regions(section.mask("fr")) if section.has("fr") else np.nan,
    }


def table1_per_section(dataset) -> pd.DataFrame:
    """One row of Table I counts per section of ``dataset`` (a :class:`~nclsm_utils.dataset.Dataset`)."""
    return pd.DataFrame([section_counts(s) for s in dataset.sections()])


def table1(dataset=None, per_section: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table I: sections and annotation counts per technique (IMC, IF) and in total.

    Parameters
    ----------
    dataset : Dataset, optional
        Counted section by section when ``per_section`` is not given.
    per_section : DataFrame, optional
        Output of :func:`table1_per_section`.

    Returns
    -------
    DataFrame
        Columns :data:`TABLE1_COLUMNS`; one row per technique present plus ``Total``.
        Counts are integers; a class whose masks are missing for every section is NaN.
    """
    if per_section is None:
        per_section = table1_per_section(dataset)
    count_columns = TABLE1_COLUMNS[2:]
    rows = []
    for technique, group in per_section.groupby("technique", sort=False):
        row = {"technique": technique, "sections": len(group)}
        row.update({c: group[c].sum(min_count=1) for c in count_columns})
        rows.append(row)
    order = {"IMC": 0, "IF": 1}
    rows.sort(key=lambda r: order.get(r["technique"], 9))
    total = {"technique": "Total", "sections": len(per_section)}
    total.update({c: per_section[c].sum(min_count=1) for c in count_columns})
    rows.append(total)
    table = pd.DataFrame(rows, columns=TABLE1_COLUMNS)
    for column in count_columns:
        if table[column].notna().all():
            table[column] = table[column].astype(int)
    return table


def class_proportions(table: pd.DataFrame) -> pd.DataFrame:
    """Percent of myofibres that are analysable, NTM and FAM, per Table I row."""
    out = table[["technique"]].copy()
    for column in ("analysable", "non-transverse", "freezing artefact"):
        out[f"{column} %"] = 100.0 * table[column] / table["myofibres"]
    return out
