"""The report website: the nbconvert fallback (always), a headless Chromium screenshot of the
overview page (when chromium is installed), and the Quarto path (when quarto is on PATH).

The site is built from a small reports folder made here: an executed-looking notebook per
navigation page (with a table and a figure as outputs), Table III with every method and a
run manifest. No notebook is executed (the site never re-executes them).
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbconvert")

from nclsm_utils.report import site  # noqa: E402
from nclsm_utils.report.tables import TABLE3_COLUMNS, TABLE3_METHODS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METHOD_NAMES = [*TABLE3_METHODS, "QA"]
PAGES = ["Overview", "Dataset", "Annotation quality", "Methods", "Curation", "Explore",
         "Synthetic vs real", "Paper reproduction", "Reproduce", "Docs"]
QUARTO_REASON = ("Quarto is a system install (https://quarto.org/docs/get-started/) and no "
                 "`quarto` binary is on PATH here; the nbconvert fallback is tested instead")


def _png() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0.5, 0.9, 0.7], marker="o")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _executed_notebook(path: Path, title: str, png: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    table = pd.DataFrame({"section": ["P02", "S11"], "mean IoU": [0.91, 0.93]})
    cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nAn executed notebook."),
             nbformat.v4.new_code_cell("table", execution_count=1, outputs=[
                 nbformat.v4.new_output("execute_result", execution_count=1, data={
                     "text/html": table.to_html(), "text/plain": table.to_string()})]),
             nbformat.v4.new_code_cell("fig = plot()", execution_count=2, outputs=[
                 nbformat.v4.new_output("display_data", data={"image/png": png,
                                                             "text/plain": "<Figure>"})]),
             # a cell that would fail if it were executed: the site must not re-run notebooks
             nbformat.v4.new_code_cell("raise RuntimeError('executed again')")]
    for i, cell in enumerate(cells):
        cell.id = f"c{i}"
    nb.cells = cells
    nbformat.write(nb, str(path))


def make_reports(reports: Path, methods=TABLE3_METHODS) -> Path:
    reports.mkdir(parents=True, exist_ok=True)
    png = _png()
    names = ["01_dataset", "02_annotation_quality", "04_compare"]
    names += [f"03_segment_{m}" for m in methods]
    for name in names:
        _executed_notebook(reports / f"{name}.ipynb", name, png)
    rng = np.random.default_rng(0)
    rows = []
    for method in methods:
        row = {c: float(v) for c, v in zip(TABLE3_COLUMNS[2:13], rng.uniform(0.5, 1, 11))}
        row.update(method=method, TS="P02, P06, S11, S60", source="trained", note="")
        rows.append(row)
    rows.append({"method": "QA", "TS": "P02, S11", "MF-A": 26, "mean IoU": 0.95,
                 "source": "duplicate annotation", "note": "AP/F1/PQ not applicable"})
    pd.DataFrame(rows, columns=TABLE3_COLUMNS).to_csv(reports / "table3.csv", index=False)
    pd.DataFrame({"technique": ["IMC"], "sections": [8]}).to_csv(reports / "table1.csv",
                                                                 index=False)
    manifest = {"version": 1, "data": str(reports.parent / "data"), "methods": list(methods),
                "quick": False, "workdir": str(reports.parent / "work"),
                "last_run": {"started": "2024-01-01T00:00:00", "status": "ok",
                             "jobs": names},
                "jobs": {n: {"status": "ok", "key": "k", "seconds": 12.5,
                             "finished": "2024-01-01T00:01:00"} for n in names}}
    (reports / "run_manifest.json").write_text(json.dumps(manifest))
    return reports


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("site")
    reports = make_reports(tmp / "reports")
    result = site.build_site(reports_dir=reports, out_dir=tmp / "_site", project=ROOT,
                             engine="nbconvert")
    return tmp, reports, result


def page_text(path: Path) -> str:
    text = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", path.read_text(), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", text))


# ---------------------------------------------------------------------------- config
def test_quarto_config_has_the_pages_and_does_not_execute():
    config = site.read_config(ROOT)
    assert config["project"]["type"] == "website"
    assert config["project"]["output-dir"] == "_site"
    assert config["execute"]["enabled"] is False
    assert [item["text"] for item in site.nav_items(config)] == PAGES
    hrefs = site._nav_hrefs(site.nav_items(config))
    from nclsm_utils.report.notebooks import job_slug

    for name in TABLE3_METHODS:
        assert f"reports/03_segment_{job_slug(name)}.ipynb" in hrefs
    assert "reports/07_synthetic_vs_real.ipynb" in hrefs
    for href in hrefs:
        if not href.startswith("reports/"):
            assert (ROOT / href).is_file(), href


def test_markdown_table_formats_numbers():
    frame = pd.DataFrame({"method": ["a", "b"], "MF-A": [12.0, np.nan],
                          "r_AoB": [0.91234, 1.0], "A%(IoU>0.80)": [95.238, 100.0]})
    text = site.markdown_table(frame)
    assert "| a | 12 | 0.912 | 95.2 |" in text
    assert "| b | – | 1.000 | 100.0 |" in text


# ---------------------------------------------------------------------------- fallback
def test_fallback_builds_every_page_with_navigation(built):
    tmp, reports, result = built
    out = tmp / "_site"
    assert result.engine == "nbconvert" and result.index == out / "index.html"
    assert result.index.is_file()
    for page in ("site/methods.html", "site/reproduce.html", "reports/01_dataset.html",
                 "reports/03_segment_unet.html", "reports/04_compare.html",
                 "reports/table3.csv"):
        assert (out / page).is_file(), page
    # navigation missing targets got placeholders, so no link is broken
    assert (out / "reports" / "05_curation.html").is_file()
    placeholder = " ".join(page_text(out / "reports" / "07_synthetic_vs_real.html").split())
    assert "07_synthetic_vs_real has not been run" in placeholder
    index = result.index.read_text()
    for name in PAGES:
        assert f">{name}<" in index or f">{name} " in index, name
    links = re.findall(r'href="([^"#]+)"', index)
    local = [link for link in links if not re.match(r"^[a-z]+:", link)]
    assert len(local) >= 10
    for link in local:
        assert (out / link).is_file(), f"broken link {link}"
    # links from a page one level down resolve too
    methods_page = (out / "site" / "methods.html").read_text()
    for link in re.findall(r'href="([^"#]+)"', methods_page):
        if not re.match(r"^[a-z]+:", link):
            assert (out / "site" / link).resolve().is_file(), f"broken link {link}"


def test_overview_shows_table3_with_every_method(built):
    tmp, _, result = built
    text = page_text(result.index)
    assert "Table III" in text
    for name in METHOD_NAMES:
        assert re.search(rf"\b{re.escape(name)}\b", text), name
    table = re.search(r"<table.*?</table>", result.index.read_text(), re.S).group(0)
    for name in METHOD_NAMES:
        assert f"<td>{name}</td>" in table or f">{name}<" in table
    assert "mean IoU" in text and "AP@0.75" in text
    assert "Versions" in text and "papermill" in text
    assert "12.5" in text  # the run manifest's notebook times


def test_notebooks_are_rendered_not_executed(built):
    tmp, _, _ = built
    page = (tmp / "_site" / "reports" / "03_segment_cellpose.html").read_text()
    assert "data:image/png;base64" in page
    assert "mean IoU" in page
    # the cell that would raise shows nothing, so it is left out; never executed
    assert "Traceback" not in page and "executed again" not in page
    assert 'class="nclsm-nav"' in page


def test_notebook_pages_fold_code_and_leave_out_parameter_cells(tmp_path):
    reports = make_reports(tmp_path / "reports")
    path = reports / "04_compare.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    for tag, source in (("parameters", "data = 'defaults-cell'"),
                        ("injected-parameters", "data = 'injected-cell'")):
        cell = nbformat.v4.new_code_cell(source, execution_count=0, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="shown-output\n")])
        cell.metadata["tags"] = [tag]
        cell.id = tag
        nb.cells.insert(1, cell)
    nbformat.write(nb, str(path))
    site.build_site(reports_dir=reports, out_dir=tmp_path / "_site", project=ROOT,
                    engine="nbconvert")
    page = (tmp_path / "_site" / "reports" / "04_compare.html").read_text()
    assert "defaults-cell" not in page and "injected-cell" not in page
    assert "shown-output" not in page
    # the two code cells with outputs keep their input, folded in a closed <details>
    assert page.count('<details class="nclsm-code">') == 2
    assert "<details open" not in page
    assert "data:image/png;base64" in page and "mean IoU" in page


def test_the_built_site_has_no_broken_link_or_image(built):
    tmp, _, _ = built
    assert site.broken_links(tmp / "_site") == []


def test_link_check_finds_a_missing_page_and_image(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/a.html#x">a</a><a href="https://example.org/">ext</a>'
        '<img src="missing.png"><a href="#top">top</a><a href="../outside.html">o</a>')
    (tmp_path / "sub" / "a.html").write_text('<a href="../index.html">back</a>'
                                             '<img src="data:image/png;base64,AAAA">')
    (tmp_path.parent / "outside.html").write_text("not part of the site")
    assert site.broken_links(tmp_path) == [("index.html", "missing.png"),
                                           ("index.html", "../outside.html")]


def test_cli_prints_one_line_when_quarto_is_missing(tmp_path, monkeypatch, capsys):
    from nclsm_utils.cli import main

    reports = make_reports(tmp_path / "reports", methods=("mitocyto",))
    monkeypatch.setattr(site, "quarto_binary", lambda: None)
    monkeypatch.chdir(ROOT)
    code = main(["site", "--reports", str(reports), "--out", str(tmp_path / "_site")])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    notes = [line for line in lines if "Quarto" in line]
    assert len(notes) == 1
    assert "not found" in notes[0] and "https://quarto.org/docs/get-started/" in notes[0]
    assert lines[-1].endswith("index.html")
    assert (tmp_path / "_site" / "reports" / "03_segment_stardist.html").is_file()  # placeholder


# ---------------------------------------------------------------------------- screenshot
def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None,
                    reason="chromium is not installed (the Makefile's `make test` installs "
                           "Debian's chromium via scripts/ensure_chromium.sh)")
def test_screenshot_of_the_overview_is_not_blank(built, tmp_path):
    from PIL import Image

    _, _, result = built
    png = tmp_path / "overview.png"
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'chrome'}", f"--screenshot={png}",
               "--window-size=1280,1600", result.index.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert png.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1280)
    assert pixels.std() > 20, "screenshot looks uniform"
    non_white = float((pixels < 235).mean())
    assert 0.03 < non_white < 0.9, non_white
    top = pixels[:40]  # the dark navigation bar
    assert (top < 100).mean() > 0.5


# ---------------------------------------------------------------------------- quarto
@pytest.mark.skipif(shutil.which("quarto") is None, reason=QUARTO_REASON)
def test_quarto_renders_the_site(tmp_path):
    reports = make_reports(tmp_path / "reports")
    result = site.build_site(reports_dir=reports, out_dir=tmp_path / "_site", project=ROOT,
                             engine="auto")
    assert result.engine == "quarto" and result.note == ""
    assert result.index.is_file()
    text = page_text(result.index)
    for name in METHOD_NAMES:
        assert name in text
    assert (tmp_path / "_site" / "reports" / "03_segment_unet.html").is_file()


# ---------------------------------------------------------------------------- README block
def test_readme_results_block_is_generated_from_the_reports(tmp_path):
    import importlib.util

    from nclsm_utils.report.tables import SEED_METRICS, seed_columns

    reports = tmp_path / "reports"
    reports.mkdir()
    row = {c: np.nan for c in TABLE3_COLUMNS}
    row.update({"method": "unet", "source": "fine-tuned", "TS": "P02", "MF-A": 393,
                "mean IoU": 0.8798, "mean IoU CI low": 0.869, "mean IoU CI high": 0.890,
                "A%(IoU>0.90)": 55.7, "A%(IoU>0.90) CI low": 51.4,
                "A%(IoU>0.90) CI high": 60.05, "seeds": 3})
    for metric in SEED_METRICS:
        row.update(zip(seed_columns(metric), (0.87, 0.004, 0.866, 0.875)))
    pd.DataFrame([row]).to_csv(reports / "table3.csv", index=False)
    pd.DataFrame([{"method_a": "unet", "method_b": "cellpose", "metric": "IoU",
                   "better": "unet", "distinguishable": True}]).to_csv(
        reports / "table3_pairwise.csv", index=False)
    text = site.readme_results(reports)
    lines = text.splitlines()
    assert lines[0].startswith("| method | source | MF-A | r_AoB |")
    assert "| unet | fine-tuned | 393 | – | – | 0.880 [0.869, 0.890] |" in lines[2]
    assert "55.7 [51.4, 60.0]" in lines[2] or "55.7 [51.4, 60.1]" in lines[2]
    assert "| unet | 3 | 0.870 ± 0.004 (0.866-0.875) |" in text
    assert "**unet** has the best per-fibre IoU, distinguishably better" in text
    assert "Who gets missed" not in text        # no recall_gaps.csv in these reports
    pd.DataFrame([{"method": "unet", "property": p, "recall": 0.95, "lowest recall": low,
                   "difference": low - 0.96, "difference CI low": low - 1.0,
                   "difference CI high": low - 0.9} for p, low in (("mass", 0.5), ("area", 0.9))]
                 ).to_csv(reports / "recall_gaps.csv", index=False)
    text = site.readme_results(reports)
    assert "Who gets missed" in text
    assert ("| unet | 0.950 | 0.500 (vs rest -0.460 [-0.500, -0.400]) | "
            "0.900 (vs rest -0.060 [-0.100, +0.000]) |") in text

    spec = importlib.util.spec_from_file_location("readme_tables",
                                                  ROOT / "scripts" / "readme_tables.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\nrest\n")
    assert script.main(["--reports", str(reports), "--readme", str(readme), "--check"]) == 1
    assert script.main(["--reports", str(reports), "--readme", str(readme)]) == 0
    written = readme.read_text()
    assert written.startswith("intro\n<!-- results:start -->\n| method |")
    assert written.endswith("<!-- results:end -->\nrest\n") and "old" not in written
    assert script.main(["--reports", str(reports), "--readme", str(readme), "--check"]) == 0


# ---------------------------------------------------------------------------- rendered DOM
@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None or shutil.which("chromedriver") is None,
                    reason="needs Debian's chromium and chromium-driver (`make test` installs "
                           "them via scripts/ensure_chromium.sh when run as root)")
def test_reader_pages_show_no_code_by_default_in_chromium(built, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    tmp, _, _ = built
    options = webdriver.ChromeOptions()
    options.binary_location = _chromium()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        for page in ("index.html", "reports/04_compare.html", "reports/03_segment_unet.html"):
            browser.get((tmp / "_site" / page).resolve().as_uri())
            code = browser.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputArea, "
                                                          ".cell-code, div.sourceCode")
            visible = [element for element in code if element.is_displayed()]
            assert visible == [], f"{page}: {len(visible)} code cells shown"
            assert browser.find_element(By.TAG_NAME, "nav").is_displayed()
            if page != "index.html":
                # folded, not lost: one click on "Show code" opens it
                summaries = browser.find_elements(By.CSS_SELECTOR, "details.nclsm-code>summary")
                assert len(summaries) == 2
                summaries[0].click()
                assert sum(e.is_displayed() for e in browser.find_elements(
                    By.CSS_SELECTOR, ".jp-CodeCell .jp-InputArea")) == 1
            # tables and figures are what a reader sees
            assert browser.find_elements(By.TAG_NAME, "table")
    finally:
        browser.quit()
