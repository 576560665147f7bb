"""The report website: ``_quarto.yml`` + ``index.qmd`` + ``site/*.qmd`` + ``reports/*.ipynb``.

:func:`build_site` first writes the page fragments (``reports/_fragments/*.md``: Table III,
what was run on which data, versions, links to the per-method pages) that the hand-written
pages include, and a placeholder notebook for every navigation target that has not been run.
Then it runs ``quarto render`` when a ``quarto`` binary is on PATH. Without Quarto it builds
the same pages into ``_site/`` (:mod:`nclsm_utils.report.pages`: the executed notebooks with
nbconvert, their stored outputs never re-executed, the ``.qmd`` pages as simple HTML, each
with the navigation bar of ``_quarto.yml``).

Example
-------
>>> from nclsm_utils.report.site import build_site
>>> result = build_site(reports_dir="reports")   # doctest: +SKIP
>>> result.index, result.engine                  # doctest: +SKIP
(PosixPath('_site/index.html'), 'nbconvert')
"""
from __future__ import annotations

import html
import json
import logging
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .methods import manifest_budget, methods_fragment

from .notebooks import COMPARE, SEGMENT
from .pages import (  # noqa: F401 - re-exported: the site's one entry point
    _nav_hrefs, broken_links, nav_items, output_name, reader_notebook, render_fallback,
    render_notebook,
)

log = logging.getLogger(__name__)

QUARTO_URL = "https://quarto.org/docs/get-started/"
FRAGMENTS = "_fragments"
#: Packages whose versions the overview page lists.
VERSION_PACKAGES = ("nclsm", "numpy", "pandas", "scipy", "scikit-image", "torch", "cellpose",
                    "stardist", "tensorflow", "mitocyto", "papermill", "nbconvert", "seaborn")


@dataclass
class SiteResult:
    """What :func:`build_site` built: the entry page, the engine used and a note for the user."""

    index: Path
    engine: str          # "quarto" or "nbconvert"
    pages: list
    note: str = ""


# ---------------------------------------------------------------------------- config
def project_dir() -> Path:
    from .notebooks import project_root

    return project_root()


def read_config(project=None) -> dict:
    """The parsed ``_quarto.yml`` of ``project``."""
    import yaml

    path = Path(project or project_dir()) / "_quarto.yml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no _quarto.yml; run `nclsm site` in the project folder")
    return yaml.safe_load(path.read_text()) or {}


# ---------------------------------------------------------------------------- fragments
def _fmt(value, digits: int = 3) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _column_digits(column: str, values: pd.Series, digits: int) -> int:
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    if len(numbers) and (numbers == numbers.round()).all() and not column.startswith("r_"):
        return 0
    if "%" in column or (len(numbers) and numbers.abs().max() >= 10):
        return 1
    return digits


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A Markdown pipe table of ``frame`` (no index), NaN as an en dash; integer-valued
    columns without decimals, percentages with one."""
    if frame is None or frame.empty:
        return "*(empty)*\n"
    numeric = {c: pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns}
    places = {c: _column_digits(str(c), frame[c], digits) for c in frame.columns if numeric[c]}

    def cell(column, value):
        if numeric[column] and value is not None and value is not pd.NA:
            try:
                value = float(value)
            except (TypeError, ValueError):
                pass
        text = _fmt(value, places.get(column, digits))
        return text.replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(str(c).replace("|", "\\|") for c in frame.columns) + " |"
    align = "|" + "|".join(" ---: " if numeric[c] else " --- " for c in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(c, v) for c, v in zip(frame.columns, row)) + " |"
            for row in frame.astype(object).itertuples(index=False)]
    return "\n".join([header, align, *rows]) + "\n"


def table3_fragment(reports: Path) -> str:
    path = reports / "table3.csv"
    if not path.is_file():
        return ("*Table III has not been computed yet: run `nclsm run` (or `make report`), "
                "then `nclsm site`.*\n")
    from .tables import with_intervals

    table = pd.read_csv(path, dtype={"TS": str, "note": str, "source": str})
    shown = with_intervals(table.drop(columns=[c for c in ("note",) if c in table]))
    text = ""
    sections = set(table["TS"].dropna()) if "TS" in table else set()
    if len(sections) == 1:  # the same test sections in every row: say it once
        text = f"Test sections (TS) of every row: {sections.pop()}.\n\n"
        shown = shown.drop(columns=["TS"])
    text += markdown_table(shown)
    if any(str(c).endswith(" CI low") for c in table.columns):
        text += ("\nIn brackets: 95 % bootstrap intervals (matched fibres, or for AP/F1/PQ "
                 "tiles, resampled within sections).\n")
    text += ranking_sentence(reports / "table3_pairwise.csv")
    notes = [(m, n) for m, n in zip(table["method"], table.get("note", [])) if isinstance(n, str) and n]
    if notes:
        text += "\n" + "\n".join(f"- **{m}**: {html.escape(n)}" for m, n in notes) + "\n"
    return text


#: Columns of the README's Table III block (values with their intervals).
README_TABLE3_COLUMNS = ("method", "source", "MF-A", "r_AoB", "r_AiB", "mean IoU",
                         "A%(IoU>0.80)", "A%(IoU>0.90)", "A%(IoU>0.95)", "AP@0.5", "F1@0.5",
                         "PQ")


def readme_results(reports) -> str:
    """The README's generated results block from ``reports/table3.csv`` (and
    ``table3_pairwise.csv`` when present): Table III with 95 % intervals, the spread over
    training seeds when the run had several, and the paired-comparison sentence.

    ``scripts/readme_tables.py`` writes it between the README's ``<!-- results:start -->``
    and ``<!-- results:end -->`` markers, so the README's numbers are a run's, never typed.
    """
    from .tables import SEED_METRICS, seed_columns, with_intervals

    reports = Path(reports)
    table = pd.read_csv(reports / "table3.csv", dtype={"TS": str, "note": str, "source": str})
    shown = with_intervals(table, digits=3)[[c for c in README_TABLE3_COLUMNS if c in table]]
    text = markdown_table(shown)
    seeded = table[table["seeds"].fillna(0) >= 2] if "seeds" in table else table.iloc[:0]
    if len(seeded):
        rows = []
        for _, row in seeded.iterrows():
            entry = {"method": row["method"], "seeds": int(row["seeds"])}
            for metric in SEED_METRICS:
                mean, sd, low, high = (row[c] for c in seed_columns(metric))
                digits = 1 if metric.startswith("A%") else 3
                entry[metric] = (f"{mean:.{digits}f} ± {sd:.{digits}f} "
                                 f"({low:.{digits}f}-{high:.{digits}f})")
            rows.append(entry)
        text += ("\nAcross training seeds (mean ± sd (min-max) of the seeds' values; the "
                 "table above is seed 0; methods without training ran once):\n\n"
                 + markdown_table(pd.DataFrame(rows)))
    sentence = ranking_sentence(reports / "table3_pairwise.csv")
    if sentence and len(seeded):
        sentence = sentence.replace("\nPaired comparison", "\nPaired comparison of seed 0's "
                                    "models", 1)
        best = seeded.loc[seeded["mean IoU seeds mean"].idxmax()]
        text += sentence + (f"Across the seeds, **{best['method']}** has the highest mean "
                            f"mean IoU ({best['mean IoU seeds mean']:.3f}); the order of "
                            "methods whose seed ranges overlap depends on the training run.\n")
    else:
        text += sentence
    return text + recall_gaps_text(reports / "recall_gaps.csv")


def recall_gaps_text(gaps_csv: Path) -> str:
    """Who gets missed (``recall_gaps.csv`` of the comparison notebook): per method, the recall
    of all fibres, of the darkest and of the smallest tenth, each with the 95 % interval of its
    difference from the rest; empty when the file is missing."""
    gaps_csv = Path(gaps_csv)
    if not gaps_csv.is_file():
        return ""
    gaps = pd.read_csv(gaps_csv)
    if gaps.empty:
        return ""
    rows = {}
    for _, row in gaps.iterrows():
        entry = rows.setdefault(row["method"], {"method": row["method"],
                                                "recall (IoU >= 0.5)": f"{row['recall']:.3f}"})
        name = {"mass": "darkest tenth", "area": "smallest tenth"}.get(row["property"],
                                                                       row["property"])
        entry[name] = (f"{row['lowest recall']:.3f} (vs rest {row['difference']:+.3f} "
                       f"[{row['difference CI low']:+.3f}, {row['difference CI high']:+.3f}])")
    return ("\nWho gets missed: recall of the darkest tenth of fibres (mean mass signal, relative "
            "to the section's median fibre) and of the smallest tenth, with the difference from "
            "the other nine tenths and its 95 % bootstrap interval (`recall_by_fibre.csv`):\n\n"
            + markdown_table(pd.DataFrame(list(rows.values()))))


def ranking_sentence(pairwise_csv: Path, metric: str = "IoU") -> str:
    """Which method has the best per-fibre ``metric`` and which others cannot be told apart
    from it (paired comparisons of ``table3_pairwise.csv``); '' without that file."""
    if not Path(pairwise_csv).is_file():
        return ""
    pairs = pd.read_csv(pairwise_csv)
    pairs = pairs[pairs["metric"] == metric]
    # a pair with no fibre matched by both (a method that matched none) compares nothing
    everyone = set(pairs["method_a"]) | set(pairs["method_b"])
    if "n fibres" in pairs:
        pairs = pairs[pd.to_numeric(pairs["n fibres"], errors="coerce").fillna(0) > 0]
    if not len(pairs):
        return ""
    left_out = sorted(everyone - set(pairs["method_a"]) - set(pairs["method_b"]))
    methods = sorted(set(pairs["method_a"]) | set(pairs["method_b"]))
    # most distinguishable wins; between methods with as many, most pairs won at all (the
    # better mean difference), so a tie is never settled by the methods' names
    better = pairs["better"]
    wins = {m: (int(((better == m) & pairs["distinguishable"].astype(bool)).sum()),
                int((better == m).sum())) for m in methods}
    best = max(methods, key=lambda m: wins[m])
    involved = pairs[(pairs["method_a"] == best) | (pairs["method_b"] == best)]
    ties = [b if a == best else a for a, b, d in zip(involved["method_a"], involved["method_b"],
                                                        involved["distinguishable"].astype(bool))
            if not d]
    text = (f"\nPaired comparison on the fibres both methods matched (`table3_pairwise.csv`): "
            f"**{best}** has the best per-fibre {metric}")
    if ties:
        text += (f", but it cannot be told apart from {', '.join(ties)} (Holm-adjusted "
                 "Wilcoxon p >= 0.05 or an interval that includes 0)")
    else:
        text += ", distinguishably better than every other method (Holm-adjusted Wilcoxon "
        text += "p < 0.05, interval excluding 0)"
    if left_out:
        text += f"; not compared: {', '.join(left_out)} (no matched fibre)"
    return text + ".\n"


def published_fragment() -> str:
    """The paper's published Table II and III rows, labelled as real-NCL-SM numbers so they
    are never read as ours (:func:`nclsm_utils.report.reproduce.published_rows`)."""
    from .reproduce import published_rows

    rows = published_rows().rename(columns={"row": "published row"})
    return ("These are the NCL-SM paper's numbers on the **real** dataset, not results of "
            "this site's run: Table II is the QA duplicate annotation against the ground "
            "truth; Table III is on the IMC sections P02 and P06 with **mitocyto after manual "
            "corrections** (our mitocyto row has none). `nclsm reproduce` recomputes those "
            "that the paper's public sample data allow.\n\n" + markdown_table(rows))


def _dataset_description(data: Path | None) -> list[str]:
    if data is None:
        return ["- data: unknown (no run recorded)"]
    lines = [f"- data: `{data}`"]
    manifest = data / "synth_manifest.json"
    if manifest.is_file():
        try:
            info = json.loads(manifest.read_text())
            config = info.get("config", {})
            rows = info.get("sections") if isinstance(info.get("sections"), list) else []
            counts = {m: sum(1 for r in rows if isinstance(r, dict) and r.get("modality") == m)
                      for m in ("IMC", "IF")}
            n_imc = config.get("n_imc", counts["IMC"] or "?")
            n_if = config.get("n_if", counts["IF"] or "?")
            lines.append(f"- kind: **synthetic NCL-SM** ({info.get('generator', 'nclsm.synth')}, "
                         f"seed {info.get('seed')}, {n_imc} IMC + {n_if} IF sections); "
                         "the real NCL-SM was not in `data/`")
        except ValueError:
            lines.append("- kind: synthetic NCL-SM")
    elif data.is_dir():
        lines.append("- kind: **NCL-SM** (the dataset folder above)")
    try:
        from ..core.dataset import Dataset

        dataset = Dataset(data)
        for split in ("train", "validation", "test"):
            ids = [s.key for s in dataset.sections(split=split)]
            if ids:
                shown = ", ".join(ids) if len(ids) <= 12 else ", ".join(ids[:12]) + ", ..."
                lines.append(f"- {split} split: {len(ids)} sections ({shown})")
    except Exception as error:  # noqa: BLE001 - the page still builds
        lines.append(f"- sections: unavailable ({error})")
    return lines


def runs_fragment(reports: Path) -> str:
    from .notebooks import read_manifest

    manifest = read_manifest(reports)
    jobs = manifest.get("jobs", {})
    if not jobs:
        return "*No batch run recorded in this reports folder yet: run `nclsm run`.*\n"
    data = Path(manifest["data"]) if manifest.get("data") else None
    lines = _dataset_description(data)
    lines.append(f"- methods: {', '.join(manifest.get('methods', [])) or '–'}")
    lines.append(f"- training budget: **{manifest_budget(manifest)}** (training length per "
                 "method on the [Methods](site/methods.qmd) page)")
    lines.append(f"- models, predictions and per-fibre results: `{manifest.get('workdir', '–')}`")
    last = manifest.get("last_run", {})
    if last:
        lines.append(f"- last run: started {last.get('started', '?')}, status "
                     f"**{last.get('status', '?')}**")
    rows = [{"notebook": name, "status": rec.get("status"), "seconds": rec.get("seconds"),
             "finished": rec.get("finished", "")} for name, rec in jobs.items()]
    table = pd.DataFrame(rows)
    total = pd.to_numeric(table["seconds"], errors="coerce").sum()
    return ("\n".join(lines) + "\n\n" + markdown_table(table, digits=1)
            + f"\nTotal notebook time of the recorded runs: {total / 60:.1f} min.\n")


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions_fragment() -> str:
    rows = [{"component": "python", "version": platform.python_version()},
            {"component": "platform", "version": f"{platform.system()} {platform.machine()}"}]
    rows += [{"component": p, "version": _version(p)} for p in VERSION_PACKAGES]
    quarto = quarto_version()
    rows.append({"component": "quarto", "version": quarto or "not installed (nbconvert fallback)"})
    return markdown_table(pd.DataFrame(rows))


def method_pages_fragment(reports: Path, root: str = "../") -> str:
    """Links to the per-method pages, as seen from a page ``root`` below the site root."""
    from .notebooks import job_slug, read_manifest
    from .tables import TABLE3_METHODS

    last = set(read_manifest(reports).get("last_run", {}).get("jobs", []))
    pages = sorted(p for p in reports.glob(f"{SEGMENT}_*.ipynb"))
    named = {p.stem[len(SEGMENT) + 1:]: p for p in pages}
    slugs = {job_slug(m): m for m in TABLE3_METHODS}
    lines = []
    for name in list(TABLE3_METHODS) + [n for n in named if n not in slugs]:
        page = named.get(job_slug(name))
        if page is not None and not _is_placeholder(page):
            earlier = "" if page.stem in last else " (from an earlier run)"
            lines.append(f"- [{name}]({root}reports/{page.name}): fit, predict and score on "
                         f"the test split, per-section summary, overlays{earlier}")
        else:
            lines.append(f"- {name}: not run in this report")
    lines.append(f"- [Comparison of all methods]({root}reports/{COMPARE}.ipynb): AP / F1 / PQ "
                 "over IoU thresholds, morphology vs ground truth, the same region for every method")
    return "\n".join(lines) + "\n"


def last_command_fragment(reports: Path) -> str:
    from .notebooks import read_manifest

    manifest = read_manifest(reports)
    if not manifest.get("jobs"):
        return ""
    methods = " ".join(manifest.get("methods", []))
    budget = manifest_budget(manifest)
    quick = f" --budget {budget}" if budget != "report" else ""
    return ("## This report\n\nThe notebooks of this site were produced by the equivalent of\n\n"
            f"```bash\nnclsm run --data {manifest.get('data', 'data')} --methods {methods}{quick}\n"
            "nclsm site\n```\n")


def write_fragments(reports) -> Path:
    """Write the Markdown fragments the pages include into ``<reports>/_fragments/``.

    Fragments with links are written for the page that includes them (``method_pages.md``
    for ``site/methods.qmd``); the others hold no links.
    """
    from ..core.io import write_text
    from .notebooks import read_manifest

    reports = Path(reports)
    out = reports / FRAGMENTS
    out.mkdir(parents=True, exist_ok=True)
    fragments = {"table3.md": table3_fragment(reports), "runs.md": runs_fragment(reports),
                 "versions.md": versions_fragment(), "published.md": published_fragment(),
                 "method_pages.md": method_pages_fragment(reports),
                 "methods.md": methods_fragment(read_manifest(reports)),
                 "last_command.md": last_command_fragment(reports)}
    for name, text in fragments.items():
        write_text(out / name, text)
    return out


# ---------------------------------------------------------------------------- placeholders
def _is_placeholder(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("metadata", {}).get("nclsm", {})
                    .get("placeholder"))
    except (OSError, ValueError):
        return False


def write_placeholders(config: dict, reports: Path) -> list[Path]:
    """A one-cell notebook for every navigation target in ``reports/`` that does not exist,
    so that no link of the site is broken. A batch run replaces them."""
    import nbformat

    made = []
    for href in _nav_hrefs(nav_items(config)):
        if not href.startswith("reports/") or not href.endswith(".ipynb"):
            continue
        path = reports / href[len("reports/"):]
        if path.exists():
            continue
        stem = path.stem
        what = (f"The method `{stem[len(SEGMENT) + 1:]}` was not run in this report."
                if stem.startswith(f"{SEGMENT}_") else f"The notebook `{stem}` has not been run.")
        nb = nbformat.v4.new_notebook()
        nb.metadata["nclsm"] = {"placeholder": True}
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        cell = nbformat.v4.new_markdown_cell(
            f"# {stem}\n\n{what} Run it with `nclsm run` (see *Reproduce*), then `nclsm site`.")
        cell.id = "placeholder"
        nb.cells.append(cell)
        path.parent.mkdir(parents=True, exist_ok=True)
        from ..core.io import write_text  # atomic (temporary file + rename); bytes as nbformat.write
        write_text(path, nbformat.writes(nb) + "\n")
        made.append(path)
    return made


# ---------------------------------------------------------------------------- quarto
def quarto_binary() -> str | None:
    return shutil.which("quarto")


def quarto_version() -> str | None:
    binary = quarto_binary()
    if not binary:
        return None
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=60).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def render_quarto(project: Path, reports: Path, out_dir: Path) -> Path:
    """``quarto render`` of the project into ``out_dir``; staged in a temporary copy when
    ``reports`` is not ``<project>/reports``."""
    binary = quarto_binary()
    if reports.resolve() == (project / "reports").resolve():
        workdir, cleanup = project, None
    else:
        cleanup = Path(tempfile.mkdtemp(prefix="nclsm-site-"))
        workdir = cleanup
        for name in ("_quarto.yml", "index.qmd"):
            shutil.copy2(project / name, workdir / name)
        if (project / "site").is_dir():
            shutil.copytree(project / "site", workdir / "site")
        shutil.copytree(reports, workdir / "reports",
                        ignore=shutil.ignore_patterns("logs", ".*"))
    try:
        command = [binary, "render", "--output-dir", str(out_dir.resolve())]
        log.info("running %s in %s", " ".join(command), workdir)
        done = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout or "").strip().splitlines()[-15:]
            raise RuntimeError("quarto render failed:\n" + "\n".join(tail))
    finally:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
    return out_dir / "index.html"


# ---------------------------------------------------------------------------- entry point
def build_site(reports_dir="reports", out_dir=None, project=None, engine: str = "auto") -> SiteResult:
    """Write the fragments and placeholders, then render the site.

    Parameters
    ----------
    reports_dir : path-like
        The executed notebooks and tables (``nclsm run``'s output).
    out_dir : path-like, optional
        Default ``<project>/_site``.
    project : path-like, optional
        Folder of ``_quarto.yml`` (default: :func:`nclsm_utils.report.notebooks.project_root`).
    engine : ``auto`` | ``quarto`` | ``nbconvert``
        ``auto`` uses Quarto when a ``quarto`` binary is on PATH.

    Returns
    -------
    SiteResult
        ``index`` (``<out_dir>/index.html``), ``engine`` and ``note`` (one line for the user
        when Quarto was not found).
    """
    project = Path(project) if project is not None else project_dir()
    reports = Path(reports_dir)
    if not reports.is_absolute() and not reports.exists() and (project / reports).exists():
        reports = project / reports
    reports.mkdir(parents=True, exist_ok=True)
    out_dir = Path(out_dir) if out_dir is not None else project / "_site"
    config = read_config(project)
    write_fragments(reports)
    write_placeholders(config, reports)
    if engine not in ("auto", "quarto", "nbconvert"):
        raise ValueError(f"engine must be auto, quarto or nbconvert, got {engine!r}")
    note = ""
    start = time.perf_counter()
    if engine == "quarto" or (engine == "auto" and quarto_binary()):
        if not quarto_binary():
            raise FileNotFoundError(f"quarto not found on PATH; install it: {QUARTO_URL}")
        index = render_quarto(project, reports, out_dir)
        used, pages = "quarto", sorted(out_dir.rglob("*.html"))
    else:
        pages = render_fallback(project, reports, out_dir, config)
        index, used = out_dir / "index.html", "nbconvert"
        if engine == "auto":
            note = (f"Quarto was not found on PATH: built {index} with the nbconvert fallback; "
                    f"install Quarto ({QUARTO_URL}) for the full site.")
    log.info("site built with %s in %.1f s: %s", used, time.perf_counter() - start, index)
    return SiteResult(index=index, engine=used, pages=pages, note=note)
