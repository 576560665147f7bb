"""The report website: ``_quarto.yml`` + ``index.qmd`` + ``site/*.qmd`` + ``reports/*.ipynb``.

:func:`build_site` first writes the page fragments (``reports/_fragments/*.md``: Table III,
what was run on which data, versions, links to the per-method pages) that the hand-written
pages include, and a placeholder notebook for every navigation target that has not been run.
Then it runs ``quarto render`` when a ``quarto`` binary is on PATH. Without Quarto it builds
the same pages into ``_site/``: the executed notebooks with nbconvert's HTML exporter (their
stored outputs, never re-executed), the ``.qmd`` pages as simple HTML (front matter, include
shortcodes, fenced divs and Markdown), each with the navigation bar of ``_quarto.yml``.

Example
-------
>>> from nclsm_utils.report.site import build_site
>>> result = build_site(reports_dir="reports")   # doctest: +SKIP
>>> result.index, result.engine                  # doctest: +SKIP
(PosixPath('_site/index.html'), 'nbconvert')
"""
from __future__ import annotations

import glob
import html
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .notebooks import COMPARE, SEGMENT

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


def nav_items(config: dict) -> list[dict]:
    """The navbar of ``_quarto.yml`` as ``[{"text", "href"} or {"text", "menu": [...]}]``."""
    navbar = (config.get("website") or {}).get("navbar") or {}
    items = []
    for side in ("left", "right"):
        for item in navbar.get(side) or []:
            if isinstance(item, str):
                item = {"href": item}
            entry = {"text": item.get("text") or Path(item.get("href", "")).stem}
            if item.get("menu"):
                entry["menu"] = [{"text": (m.get("text") if isinstance(m, dict) else None)
                                  or Path(m if isinstance(m, str) else m.get("href", "")).stem,
                                  "href": m if isinstance(m, str) else m.get("href", "")}
                                 for m in item["menu"]]
            else:
                entry["href"] = item.get("href", "")
            items.append(entry)
    return items


def _nav_hrefs(items) -> list[str]:
    out = []
    for item in items:
        if "menu" in item:
            out.extend(m["href"] for m in item["menu"] if m.get("href"))
        elif item.get("href"):
            out.append(item["href"])
    return out


def output_name(source: str) -> str:
    """Site path of a source page: ``site/methods.qmd`` -> ``site/methods.html``."""
    stem, ext = os.path.splitext(source)
    return stem + ".html" if ext.lower() in (".qmd", ".ipynb", ".md") else source


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
    if not len(pairs):
        return ""
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
            lines.append(f"- kind: **synthetic NCL-SM** (nclsm.synth, seed {info.get('seed')}, "
                         f"{config.get('n_imc', '?')} IMC + {config.get('n_if', '?')} IF sections); "
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
    lines.append(f"- methods: {', '.join(manifest.get('methods', [])) or '–'}"
                 + (" (quick mode: short training)" if manifest.get("quick") else ""))
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
    from .notebooks import read_manifest
    from .tables import TABLE3_METHODS

    last = set(read_manifest(reports).get("last_run", {}).get("jobs", []))
    pages = sorted(p for p in reports.glob(f"{SEGMENT}_*.ipynb"))
    named = {p.stem[len(SEGMENT) + 1:]: p for p in pages}
    lines = []
    for name in list(TABLE3_METHODS) + [n for n in named if n not in TABLE3_METHODS]:
        page = named.get(name)
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
    quick = " --quick" if manifest.get("quick") else ""
    return ("## This report\n\nThe notebooks of this site were produced by the equivalent of\n\n"
            f"```bash\nnclsm run --data {manifest.get('data', 'data')} --methods {methods}{quick}\n"
            "nclsm site\n```\n")


def write_fragments(reports) -> Path:
    """Write the Markdown fragments the pages include into ``<reports>/_fragments/``.

    Fragments with links are written for the page that includes them (``method_pages.md``
    for ``site/methods.qmd``); the others hold no links.
    """
    from ..core.io import write_text

    reports = Path(reports)
    out = reports / FRAGMENTS
    out.mkdir(parents=True, exist_ok=True)
    fragments = {"table3.md": table3_fragment(reports), "runs.md": runs_fragment(reports),
                 "versions.md": versions_fragment(), "published.md": published_fragment(),
                 "method_pages.md": method_pages_fragment(reports),
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


# ---------------------------------------------------------------------------- fallback
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
color:#212529;background:#fff;line-height:1.5}
nav.nclsm-nav{background:#2c3e50;padding:0 1rem;display:flex;flex-wrap:wrap;align-items:center;
position:sticky;top:0;z-index:1000;font-size:15px}
nav.nclsm-nav a.brand{color:#fff;font-weight:600;margin-right:1.5rem;padding:.8rem 0;
text-decoration:none}
nav.nclsm-nav .item{position:relative}
nav.nclsm-nav .item>a,nav.nclsm-nav .item>span{display:block;color:#dfe6ee;padding:.8rem .7rem;
text-decoration:none;cursor:pointer}
nav.nclsm-nav .item>a:hover,nav.nclsm-nav .item>span:hover,nav.nclsm-nav a.active{color:#fff;
background:#1a252f}
nav.nclsm-nav .menu{display:none;position:absolute;background:#fff;min-width:16rem;
box-shadow:0 4px 12px rgba(0,0,0,.2);border-radius:4px;padding:.3rem 0}
nav.nclsm-nav .item:hover .menu{display:block}
nav.nclsm-nav .menu a{display:block;color:#212529;padding:.35rem 1rem;text-decoration:none}
nav.nclsm-nav .menu a:hover{background:#eef2f6}
main.nclsm-page{max-width:1240px;margin:0 auto;padding:1.5rem 1.5rem 3rem}
main.nclsm-page h1.title{margin-bottom:.2rem}
main.nclsm-page p.subtitle{color:#6c757d;font-size:1.15rem;margin-top:0}
main.nclsm-page table{border-collapse:collapse;margin:1rem 0;font-size:13px;display:block;
overflow-x:auto}
main.nclsm-page th,main.nclsm-page td{border-bottom:1px solid #dee2e6;padding:.3rem .45rem;
text-align:right;white-space:nowrap}
main.nclsm-page th{background:#f1f3f5;border-bottom:2px solid #adb5bd}
main.nclsm-page td:first-child,main.nclsm-page th:first-child{text-align:left;font-weight:600}
main.nclsm-page pre{background:#f6f8fa;padding:.8rem 1rem;border-radius:4px;overflow-x:auto}
main.nclsm-page code{font-size:90%}
main.nclsm-page dt{font-weight:600;margin-top:.6rem}
main.nclsm-page dd{margin-left:1.5rem}
details.nclsm-code>summary{color:#6c757d;font-size:13px;cursor:pointer;margin:.2rem 0}
.callout{border-left:4px solid #2780e3;background:#f3f8fd;padding:.5rem 1rem;margin:1rem 0}
footer.nclsm-footer{color:#6c757d;font-size:13px;text-align:center;padding:1rem;
border-top:1px solid #dee2e6}
"""


def _relative(target: str, page: str) -> str:
    """Link from site page ``page`` to site path ``target`` (both relative to the site root)."""
    depth = page.count("/")
    return "../" * depth + target


def nav_html(items, page: str, title: str) -> str:
    def link(href, text, css=""):
        target = output_name(href)
        active = " active" if target == page else ""
        return (f'<a class="{css}{active}" href="{html.escape(_relative(target, page))}">'
                f"{html.escape(text)}</a>")

    parts = [f'<nav class="nclsm-nav">{link("index.html", title, "brand")}']
    for item in items:
        if "menu" in item:
            entries = "".join(link(m["href"], m["text"]) for m in item["menu"] if m.get("href"))
            parts.append(f'<div class="item"><span>{html.escape(item["text"])} &#9662;</span>'
                         f'<div class="menu">{entries}</div></div>')
        else:
            parts.append(f'<div class="item">{link(item["href"], item["text"])}</div>')
    parts.append("</nav>")
    return "".join(parts)


def _front_matter(text: str) -> tuple[dict, str]:
    import yaml

    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
    if not match:
        return {}, text
    return yaml.safe_load(match.group(1)) or {}, text[match.end():]


def _resolve_includes(text: str, source: Path, project: Path, reports: Path, depth: int = 0) -> str:
    pattern = re.compile(r"\{\{<\s*include\s+(\S+)\s*>\}\}")

    def replace(match):
        name = match.group(1)
        if name.startswith("/"):
            rel = name.lstrip("/")
            path = reports / rel[len("reports/"):] if rel.startswith("reports/") else project / rel
        else:
            path = source.parent / name
        if not path.is_file():
            return f"*(missing include: {name})*"
        body = path.read_text()
        return _resolve_includes(body, path, project, reports, depth + 1) if depth < 5 else body

    return pattern.sub(replace, text)


def _fenced_divs(text: str) -> str:
    out = []
    for line in text.splitlines():
        opening = re.match(r"^:{3,}\s*\{([^}]*)\}\s*$", line) or re.match(r"^:{3,}\s*([\w-]+)\s*$", line)
        if opening:
            classes = " ".join(c.lstrip(".") for c in opening.group(1).split() if c.startswith(".")
                               or "=" not in c)
            out.extend(["", f'<div class="{html.escape(classes.replace("callout-", "callout callout-"))}">', ""])
        elif re.match(r"^:{3,}\s*$", line):
            out.extend(["", "</div>", ""])
        else:
            out.append(line)
    return "\n".join(out)


def _rewrite_links(body: str) -> str:
    """``href="x.qmd"`` / ``x.ipynb`` / ``x.md`` -> ``x.html`` for local links."""
    def replace(match):
        href = match.group(2)
        if re.match(r"^[a-z]+:", href) or href.startswith("#"):
            return match.group(0)
        path, _, anchor = href.partition("#")
        stem, ext = os.path.splitext(path)
        if ext.lower() in (".qmd", ".ipynb", ".md"):
            href = stem + ".html" + (f"#{anchor}" if anchor else "")
        return f'{match.group(1)}"{href}"'

    return re.sub(r'(href=)"([^"]*)"', replace, body)


def _markdown(text: str) -> str:
    import mistune

    renderer = mistune.create_markdown(escape=False, plugins=["table", "def_list", "strikethrough",
                                                              "url"])
    return renderer(text)


def _page(title: str, subtitle: str, nav: str, body: str, footer: str) -> str:
    sub = f'<p class="subtitle">{html.escape(subtitle)}</p>' if subtitle else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>{nav}"
            f'<main class="nclsm-page"><h1 class="title">{html.escape(title)}</h1>{sub}{body}'
            f'</main><footer class="nclsm-footer">{html.escape(footer)}</footer></body></html>\n')


def render_qmd(source: Path, page: str, project: Path, reports: Path, nav: str, footer: str) -> str:
    meta, text = _front_matter(source.read_text())
    text = _resolve_includes(text, source, project, reports)
    body = _rewrite_links(_markdown(_fenced_divs(text)))
    return _page(str(meta.get("title", source.stem)), str(meta.get("subtitle", "")), nav, body,
                 footer)


#: Cells that never appear on the site: papermill's parameter cells (the defaults and the
#: injected values) and cells a notebook marks as not for readers.
HIDDEN_CELL_TAGS = ("parameters", "injected-parameters", "remove-cell")

#: nbconvert template of the site's notebook pages: the lab template with every code
#: cell's input folded into a closed ``<details>`` (results first; the code one click away).
NOTEBOOK_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{% block input_group -%}
<details class="nclsm-code"><summary>Show code</summary>
{{ super() }}
</details>
{%- endblock input_group %}
"""


def reader_notebook(nb):
    """A copy of notebook ``nb`` as readers see it: without the cells tagged in
    :data:`HIDDEN_CELL_TAGS` and without code cells that show nothing.

    Examples
    --------
    >>> import nbformat
    >>> nb = nbformat.v4.new_notebook()
    >>> nb.cells = [nbformat.v4.new_code_cell("data = 'x'", metadata={"tags": ["parameters"]}),
    ...             nbformat.v4.new_markdown_cell("# Title"),
    ...             nbformat.v4.new_code_cell("import numpy")]
    >>> [c.cell_type for c in reader_notebook(nb).cells]
    ['markdown']
    """
    import copy

    out = copy.deepcopy(nb)
    keep = []
    for cell in out.cells:
        tags = set((cell.get("metadata") or {}).get("tags") or ())
        if tags & set(HIDDEN_CELL_TAGS):
            continue
        if cell.cell_type == "code" and not cell.get("outputs"):
            continue
        keep.append(cell)
    out.cells = keep
    return out


def render_notebook(source: Path, page: str, nav: str, footer: str) -> str:
    """An executed notebook as HTML (stored outputs, not re-executed) with the site's nav.

    Parameter cells are left out and every code cell's input is folded (closed by
    default), so a page reads as text, tables and figures.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    nb = reader_notebook(nbformat.read(str(source), as_version=4))
    exporter = HTMLExporter(extra_loaders=[jinja2.DictLoader({"nclsm.html.j2": NOTEBOOK_TEMPLATE})],
                            template_file="nclsm.html.j2")
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    traitlets_log = logging.getLogger("traitlets")
    level = traitlets_log.level
    traitlets_log.setLevel(logging.ERROR)  # "Alternative text is missing on N image(s)"
    try:
        body, _ = exporter.from_notebook_node(nb)
    finally:
        traitlets_log.setLevel(level)
    style = f"<style>{CSS}</style>"
    body = body.replace("</head>", style + "</head>", 1)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav, body, count=1)
    body = body.replace("</body>", f'<footer class="nclsm-footer">{html.escape(footer)}</footer>'
                                   "</body>", 1)
    return _rewrite_links(body)


def _render_list(config: dict, project: Path, reports: Path) -> list[tuple[str, Path]]:
    """(site path of the source, source file) of every page: the render list and the navbar."""
    patterns = list((config.get("project") or {}).get("render") or ["index.qmd"])
    patterns += _nav_hrefs(nav_items(config))
    pages: dict[str, Path] = {}
    for pattern in patterns:
        if pattern.startswith("reports/"):
            base, rel = reports, pattern[len("reports/"):]
        else:
            base, rel = project, pattern
        for match in sorted(glob.glob(str(base / rel))):
            path = Path(match)
            if path.name.startswith("_") or path.name.startswith("."):
                continue
            site_path = ("reports/" if base is reports else "") + \
                path.relative_to(base).as_posix()
            pages.setdefault(site_path, path)
    return list(pages.items())


def render_fallback(project: Path, reports: Path, out_dir: Path, config: dict) -> list[Path]:
    """Build the site without Quarto into ``out_dir`` (replaced as a whole at the end)."""
    website = config.get("website") or {}
    title = str(website.get("title", "Report"))
    footer_conf = website.get("page-footer") or {}
    footer = str(footer_conf.get("center", "") if isinstance(footer_conf, dict) else footer_conf)
    items = nav_items(config)
    staging = Path(tempfile.mkdtemp(prefix=".site-", dir=out_dir.parent))
    written = []
    try:
        for site_path, source in _render_list(config, project, reports):
            page = output_name(site_path)
            nav = nav_html(items, page, title)
            if source.suffix == ".ipynb":
                text = render_notebook(source, page, nav, footer)
            else:
                text = render_qmd(source, page, project, reports, nav, footer)
            target = staging / page
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            written.append(out_dir / page)
        resources = (config.get("project") or {}).get("resources") or []
        for pattern in resources:
            base, rel = (reports, pattern[len("reports/"):]) if pattern.startswith("reports/") \
                else (project, pattern)
            for match in glob.glob(str(base / rel)):
                prefix = "reports/" if base is reports else ""
                target = staging / (prefix + Path(match).relative_to(base).as_posix())
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(match, target)
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(staging, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return written


# ---------------------------------------------------------------------------- link check
def _local_targets(page_html: str) -> list[str]:
    """The ``href`` and ``src`` values of a page that point at files of the site."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            for name, value in attrs:
                if name in ("href", "src") and value:
                    found.append(value)

    Links().feed(page_html)
    local = []
    for value in found:
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", value) or value.startswith(("#", "//")):
            continue  # http:, https:, mailto:, data: and in-page anchors
        path = value.split("#", 1)[0].split("?", 1)[0]
        if path:
            local.append(path)
    return local


def broken_links(site_dir) -> list[tuple[str, str]]:
    """Every link or image of the built site whose target is not in the site.

    Parameters
    ----------
    site_dir : path-like
        A built site (``_site/``).

    Returns
    -------
    list of (page, target)
        Pages relative to ``site_dir``; empty when every local ``href``/``src`` resolves to a
        file (or a folder with ``index.html``) inside ``site_dir``. Links to other sites are
        not followed.
    """
    from urllib.parse import unquote

    root = Path(site_dir).resolve()
    broken = []
    for page in sorted(root.rglob("*.html")):
        for target in _local_targets(page.read_text(errors="replace")):
            resolved = (page.parent / unquote(target)).resolve()
            inside = resolved == root or root in resolved.parents
            exists = resolved.is_file() or (resolved / "index.html").is_file()
            if not (inside and exists):
                broken.append((page.relative_to(root).as_posix(), target))
    return broken


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
