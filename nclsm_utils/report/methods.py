"""What every Table III row ran, in words generated from the methods' params (the Methods page).

:func:`methods_fragment` takes a batch run's manifest (``reports/run_manifest.json``: its
budget, methods and workdir) and describes each method with
:meth:`~nclsm_utils.segmenters.base.Segmenter.describe`, beside the ``source`` its run
recorded; nothing on the page is typed by hand.
"""
from __future__ import annotations

import html
import json
from pathlib import Path


def manifest_budget(manifest: dict) -> str:
    """The training budget a batch ran with (older manifests: ``quick`` True / False)."""
    from ..segmenters.base import budget_name

    return budget_name(manifest.get("budget") or bool(manifest.get("quick")))


def methods_fragment(manifest: dict) -> str:
    """What every Table III row ran, generated from the methods' params (never typed): the
    weights it started from, its training length at the run's budget, what makes its labels,
    and every step after that with its parameters, in call order; the ``source`` each run
    recorded beside it."""
    from ..segmenters import get_segmenter
    from .tables import TABLE3_METHODS

    budget = manifest_budget(manifest)
    workdir = manifest.get("workdir") or "data"
    methods = list(TABLE3_METHODS) + [m for m in manifest.get("methods", [])
                                      if m not in TABLE3_METHODS and not m.startswith("external:")]
    parts = [f"Training budget of this report: **{budget}** (`--budget quick|report|full`; "
             "`full` trains each library's network for the library's documented default "
             "length).\n"]
    for method in methods:
        try:
            described = get_segmenter(method, workdir=workdir, budget=budget).describe()
        except Exception as error:  # noqa: BLE001 - the page still builds
            parts.append(f"### {method}\n\n*not described: {html.escape(str(error))}*\n")
            continue
        record = {}
        path = Path(workdir) / "results" / f"{method}_run.json"
        if path.is_file():
            try:
                record = json.loads(path.read_text())
            except ValueError:
                record = {}
        lines = [f"### {method}", ""]
        if record.get("source"):
            lines.append(f"- source (this run): {record['source']}")
        lines += [f"- weights: {described['weights']}",
                  f"- training ({budget} budget): {described['training']}",
                  f"- labels from: {described['network']}",
                  "- after that, in call order:"]
        lines += [f"    {i}. `{step['step']}`: {step['parameters']}"
                  for i, step in enumerate(described["steps"], 1)]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)
