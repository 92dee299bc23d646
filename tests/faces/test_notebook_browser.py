"""The quickstart notebook as a user sees it: JupyterLab in headless Chromium.

JupyterLab is started on 127.0.0.1 with a token, the quickstart (a copy, in a temporary folder)
is opened in Chromium driven by playwright, every cell is run from the Run menu, and the page
is read: the progress widget is drawn, the Dataset's HTML view is there, and no cell shows an
error or anything on standard error (JupyterLab's red output). ``.ci/run`` installs Chromium,
playwright and the notebook extra. ``PAIREXTRACT_SCREENSHOTS=DIR`` keeps the screenshots there
(docs/user/img/ holds the committed ones).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PAIREXTRACT_CHROMIUM") or shutil.which("chromium") or shutil.which(
    "chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A JupyterLab server on 127.0.0.1 serving a copy of the notebooks folder."""
    pytest.importorskip("jupyterlab")
    pytest.importorskip("ipywidgets")
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", root)
    port, token = _free_port(), secrets.token_hex(16)
    # every cell in the page (JupyterLab draws only the visible ones by default)
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    log = open(tmp_path / "lab.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--ServerApp.open_browser=False", "--allow-root"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("JupyterLab did not start:\n"
                                         + (tmp_path / "lab.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        yield f"{base}/lab/tree/quickstart.ipynb?token={token}&reset", root
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_quickstart_runs_in_jupyterlab_with_widgets_and_no_red_output(
        lab: tuple[str, Path], tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    url, root = lab
    shots = Path(os.environ.get("PAIREXTRACT_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            # a fresh JupyterLab may ask for the kernel: the notebook's own (Python 3)
            try:
                page.click(".jp-Dialog .jp-mod-accept", timeout=15_000)
            except sync_api.TimeoutError:
                pass
            # the kernel is ready once the toolbar's kernel status says Idle
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                                   timeout=120_000)
            page.click(".lm-MenuBar-itemLabel:text-is('Run')")
            page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
            n_code = sum(c.cell_type == "code" for c in nbformat.read(
                root / "quickstart.ipynb", as_version=4).cells)
            page.wait_for_function("n => document.querySelectorAll('.jp-CodeCell').length === n",
                                   arg=n_code, timeout=60_000)
            # every code cell numbered ([n]:, not [*]: or [ ]:)
            page.wait_for_function(
                """n => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                       .filter(p => /\\[\\d+\\]/.test(p.textContent)).length === n""",
                arg=n_code, timeout=int(os.environ.get("PAIREXTRACT_NB_TIMEOUT", "300")) * 1000)
            red = page.locator(".jp-OutputArea-output[data-mime-type="
                               "'application/vnd.jupyter.stderr']")
            assert red.count() == 0, red.all_inner_texts()
            text = page.locator(".jp-Notebook").inner_text()
            assert "Traceback" not in text and "Error" not in text.split("pairs in")[0]
            # Dask's progress widget, drawn (not the text of an undisplayed widget object)
            bar = page.locator(".jp-OutputArea-output .jupyter-widgets.widget-hprogress")
            assert bar.count() >= 1
            assert "ProgressWidget" not in text
            # the run's result as a table, and the Dataset's HTML view with units
            run_cell = page.locator(".jp-CodeCell").filter(has=bar)
            assert "pairextract: ExtractionResult" in run_cell.inner_text()
            dataset = page.locator(".xr-wrap").first
            assert dataset.is_visible()
            assert "xarray.Dataset" in dataset.inner_text()
            assert page.locator(".xr-var-attrs").count() > 10
            run_cell.scroll_into_view_if_needed()
            run_cell.screenshot(path=str(shots / "notebook-extract.png"))
            dataset.screenshot(path=str(shots / "notebook-dataset.png"))
        except Exception:
            page.screenshot(path=str(shots / "failed.png"))  # what the page showed
            (shots / "failed.html").write_text(page.content())
            raise
        finally:
            browser.close()
    # what the notebook made is kept
    assert (root / "quickstart-work" / "run1" / "note.txt").exists()
    assert (root / "quickstart-work" / "relion" / "untilted" / "particles.star").exists()
