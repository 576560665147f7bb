#!/usr/bin/env python
"""Write each notebook ``notebooks/NN_name.ipynb`` from its source ``notebooks/NN_name.py``.

The notebooks are authored once, as jupytext percent-format scripts (``# %%`` starts a code
cell, ``# %% [markdown]`` a Markdown cell, ``# %% tags=["parameters"]`` the papermill
parameter cell). The ``.ipynb`` next to each source is what papermill executes and JupyterLab
opens; it is stored without outputs and with stable cell ids (``<NN>-<n>``) so diffs stay
small. With jupytext installed, JupyterLab opens the ``.py`` as a notebook and saves both
files of the pair (``formats: ipynb,py:percent`` in each source's header)::

    python scripts/sync_notebooks.py            # notebooks/*.py -> notebooks/*.ipynb
    python scripts/sync_notebooks.py --check    # exit 1 when an .ipynb differs from its source
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def notebook_from_source(source: Path) -> nbformat.NotebookNode:
    """The output-free notebook of a percent-format ``source``, with stable cell ids."""
    nb = jupytext.read(source, fmt="py:percent")
    prefix = source.stem.split("_", 1)[0]
    cells = []
    for i, cell in enumerate(nb.cells):
        tags = list(cell.metadata.get("tags", []))
        metadata = {"tags": tags} if tags else {}
        if cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source, metadata=metadata)
        else:
            new = nbformat.v4.new_code_cell(cell.source, metadata=metadata)
        new.id = f"{prefix}-{i:02d}"
        cells.append(new)
    out = nbformat.v4.new_notebook()
    out.cells = cells
    out.metadata = {"jupytext": {"formats": "ipynb,py:percent"}, "kernelspec": KERNELSPEC,
                    "language_info": {"name": "python", "pygments_lexer": "ipython3"}}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when a notebook is out of date")
    parser.add_argument("--dir", default=str(NOTEBOOKS))
    args = parser.parse_args(argv)
    folder = Path(args.dir)
    stale = []
    for source in sorted(folder.glob("[0-9][0-9]_*.py")):
        text = nbformat.writes(notebook_from_source(source)) + "\n"
        path = source.with_suffix(".ipynb")
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path)
            continue
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print("out of date (run scripts/sync_notebooks.py):", *map(str, stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
