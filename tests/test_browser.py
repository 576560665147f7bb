"""The explorer in JupyterLab, driven by headless Chromium (issue 18).

JupyterLab is started on a free loopback port with a token, in a temporary working copy
holding the explorer notebook, the tiny synthetic dataset and cached mitocyto predictions.
Selenium (with Debian's ``chromedriver``; nothing is downloaded) opens the notebook, runs
all cells, waits for the widgets, changes the section and the IoU threshold as a user
would, and checks that the counts shown are those the library computes for that state and
that no widget failed to display. A screenshot is saved in the test's temporary folder.

Marked ``browser``; skipped, with the reason, where Chromium or chromedriver is missing
(`make test` installs Debian's ``chromium`` and ``chromium-driver`` when it can).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver (`make test` "
                              "installs them via scripts/ensure_chromium.sh when run as root)"),
]
selenium = pytest.importorskip("selenium", reason="selenium is a test dependency "
                                                  "(pip install -e '.[test]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running JupyterLab over a working copy: (base url, token, folder); shut down after."""
    from nclsm_utils.runner import run_method
    from nclsm_utils.synth import SynthConfig, write_dataset

    work = tmp_path_factory.mktemp("lab")
    data = write_dataset(work / "data" / "tiny", SynthConfig.preset("tiny"), seed=0,
                         progress=False)
    from nclsm_utils.dataset import Dataset

    run_method("mitocyto", data, sections=[s.key for s in Dataset(data).sections()],
               workdir=work / "data", progress=False)      # every section: cached
    nb = json.loads((ROOT / "notebooks" / "06_explore.ipynb").read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"])
            source = source.replace('data = "../data"', f'data = "{data}"', 1)
            source = source.replace('workdir = "../data"', f'workdir = "{work / "data"}"', 1)
            source = source.replace("snapshot = True", "snapshot = False", 1)
            cell["source"] = source
    (work / "notebooks").mkdir()
    (work / "notebooks" / "06_explore.ipynb").write_text(json.dumps(nb))
    port, token = _free_port(), "nclsm-test-token"
    log = open(work / "lab.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={work}", "--ServerApp.open_browser=False", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT, cwd=work,
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(work / "runtime")})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.time() > deadline or process.poll() is not None:
                    raise RuntimeError("JupyterLab did not start: " +
                                       (work / "lab.log").read_text()[-2000:])
                time.sleep(0.5)
        yield base, token, work
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def driver(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1600",
                "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def _wait(browser, condition, seconds=90, what="the page"):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, seconds, poll_frequency=0.3).until(condition)
    except Exception as error:  # TimeoutException: say what was awaited, keep the page
        raise AssertionError(f"timed out waiting for {what}; page text: "
                             f"{_text(browser.page_source)[-1500:]}") from error


def _menu(browser, menu: str, item: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.XPATH, f"//div[contains(@class,'lm-MenuBar-itemLabel') and "
                                   f"normalize-space()='{menu}']").click()
    _wait(browser, lambda b: b.find_element(
        By.XPATH, f"//div[contains(@class,'lm-Menu-itemLabel') and normalize-space()='{item}']"),
        10, f"the menu item {item}").click()


def _widget(browser, cls: str, label: str):
    """The ipywidgets element of class ``cls`` whose description is ``label``."""
    from selenium.webdriver.common.by import By

    for element in browser.find_elements(By.CSS_SELECTOR, f".{cls}"):
        labels = element.find_elements(By.CSS_SELECTOR, ".widget-label")
        if labels and labels[0].text.strip() == label:
            return element
    return None


def _counts(browser) -> str:
    from selenium.webdriver.common.by import By

    texts = [e.get_attribute("innerHTML") for e in
             browser.find_elements(By.CSS_SELECTOR, ".widget-html-content")]
    found = [_text(t) for t in texts if "matched" in t and "missed" in t]
    return found[0] if found else ""


def test_explorer_widgets_render_and_respond_in_jupyterlab(lab, driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    from nclsm_utils.explore import Explorer

    base, token, work = lab
    driver.get(f"{base}/lab/tree/notebooks/06_explore.ipynb?token={token}")
    _wait(driver, lambda b: b.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"), 90,
          "the notebook")
    _wait(driver, lambda b: b.find_elements(
        By.XPATH, "//*[contains(@class,'jp-Notebook-ExecutionIndicator') or "
                  "contains(@class,'jp-KernelStatus')]"), 60, "the kernel status")
    time.sleep(2)   # the kernel connects
    _menu(driver, "Run", "Run All Cells")
    section_box = _wait(driver, lambda b: _widget(b, "widget-dropdown", "section"), 120,
                        "the explorer's section dropdown")
    _wait(driver, lambda b: "matched" in _counts(b), 60, "the counts")

    # the same state in the library, headless
    data = work / "data" / "tiny"
    app = Explorer(data=data, workdir=work / "data", iou_threshold=0.8)
    first = _counts(driver)
    assert first == _text(app.counts.value)

    # another section, chosen in the browser
    select = Select(section_box.find_element(By.TAG_NAME, "select"))
    current = select.first_selected_option.text
    other = next(o.text for o in select.options if o.text != current)
    select.select_by_visible_text(other)
    app.section.value = dict(app.section.options)[other]     # (label, key) options
    _wait(driver, lambda b: _counts(b) == _text(app.counts.value), 60,
          f"the counts of section {other}")
    second = _counts(driver)
    assert second != first                      # the view followed the dropdown

    # another IoU threshold, typed into the slider's readout
    slider = _widget(driver, "widget-hslider", "IoU >")
    assert slider is not None
    readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
    readout.click()
    readout.send_keys(Keys.CONTROL, "a")
    readout.send_keys("0.5", Keys.ENTER)
    app.threshold.value = 0.5
    _wait(driver, lambda b: _counts(b) == _text(app.counts.value), 60,
          "the counts at IoU > 0.50")
    assert "0.50" in readout.text
    assert _counts(driver) != second            # ... and the slider

    page = driver.page_source
    assert "Error displaying widget" not in page
    assert "A%" in _counts(driver)
    driver.save_screenshot(str(tmp_path / "explorer.png"))
    assert (tmp_path / "explorer.png").stat().st_size > 10_000
