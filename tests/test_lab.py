"""JupyterLab in a real browser: the probe notebook opens, runs on the smoke profile, and shows outputs.

A JupyterLab server (this venv's `jupyter lab`, a free port, a token) serves a scratch copy of the
repository; headless Chromium (Debian's `chromium` and `chromium-driver`, driven by selenium) opens
`notebooks/01_probe_base_models.ipynb` and runs it from JupyterLab's menu (Run > Run All Cells), so the
frontend, the kernel websocket and the kernel all take part; the outputs are read back from the page.
The notebook's parameters cell is left as None, which selects the smoke profile (`profiles/smoke.yaml`). `make chromium` (run by
`make test`) installs the browser; without it this test is skipped, never passed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from r1repro.config import load_params

CHROMIUM = Path(os.environ.get("R1REPRO_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("R1REPRO_CHROMEDRIVER", "/usr/bin/chromedriver"))
NOTEBOOK = "notebooks/01_probe_base_models.ipynb"
RUN_TIMEOUT_S = 900

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(RUN_TIMEOUT_S + 600),
    pytest.mark.skipif(not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()),
                       reason="Chromium or chromedriver missing: run `make chromium`"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scratch_repo(dest: Path, repo_root: Path, data_dir: Path, base_model_dir: Path) -> Path:
    """What the notebook reads (dvc.yaml marks the root): params, profiles, notebooks; data and model linked."""
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(repo_root / name, dest / name)
    for name in ("profiles", "notebooks"):
        shutil.copytree(repo_root / name, dest / name)
    (dest / "data").symlink_to(data_dir, target_is_directory=True)
    (dest / "models").mkdir()
    (dest / "models" / "base").symlink_to(base_model_dir, target_is_directory=True)
    return dest


@pytest.fixture
def lab_server(tmp_path, repo_root, data_dir, base_model_dir):
    """(url, token, root): a JupyterLab server on a scratch repository, stopped afterwards."""
    (tmp_path / "repo").mkdir()
    root = scratch_repo(tmp_path / "repo", repo_root, data_dir, base_model_dir)
    port, token = free_port(), secrets.token_hex(16)
    home = tmp_path / "jupyter"
    # Its own config, settings and workspaces: nothing from the user's JupyterLab (layouts, extensions).
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
         "--LabApp.expose_app_in_browser=True", *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, token, server, tmp_path / "jupyter.log")
        yield url, token, root
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def wait_for_server(url: str, token: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # localhost, never a proxy
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            pytest.fail(f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with opener.open(f"{url}/api/status?token={token}", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"jupyter lab did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(120)
    try:
        yield driver
    finally:
        driver.save_screenshot(str(tmp_path / "last_view.png"))  # what the page showed, pass or fail
        driver.quit()


# JavaScript run in the page, through the app JupyterLab exposes with `expose_app_in_browser`. The
# notebook panel is looked up by path: a headless window has no focus, so `currentWidget` may be null.
PANEL = """const app = window.jupyterapp; let panel = null;
if (app) {
  for (const w of app.shell.widgets('main')) { if (w.context && w.context.path === arguments[0]) panel = w; }
}
"""
KERNEL_STATUS = PANEL + """const s = panel && panel.sessionContext.session;
return s && s.kernel ? s.kernel.status : null;"""
NOTEBOOK_JSON = PANEL + """return JSON.stringify({nb: panel.content.model.toJSON(),
                                          status: panel.sessionContext.session.kernel.status});"""


def wait_until(predicate, timeout: float, what: str, poll: float = 2.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def notebook_state(driver) -> tuple[dict, str]:
    state = json.loads(driver.execute_script(NOTEBOOK_JSON, NOTEBOOK))
    return state["nb"], state["status"]


def finished(driver):
    """The notebook once every code cell has run (or one failed), else None."""
    nb, status = notebook_state(driver)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        pytest.fail(f"a cell failed: {errors[0].get('ename')}: {errors[0].get('evalue')}")
    done = all(c.get("execution_count") for c in code) and status == "idle"
    return nb if done else None


def click_menu(driver, menu: str, item: str) -> None:
    """Click `menu` in JupyterLab's menu bar, then its entry `item`, as a user would."""
    from selenium.webdriver.common.by import By

    wait_until(lambda: [m for m in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel")
                        if m.text == menu], 30, f"menu {menu}")[0].click()
    wait_until(lambda: [m for m in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-itemLabel")
                        if m.text == item], 30, f"menu entry {item}")[0].click()


def test_probe_notebook_runs_in_jupyterlab(lab_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, token, root = lab_server
    browser.get(f"{url}/lab/tree/{NOTEBOOK}?token={token}")
    wait_until(lambda: browser.execute_script(KERNEL_STATUS, NOTEBOOK) == "idle", 180,
               "the notebook and an idle kernel")
    nb, _ = notebook_state(browser)
    assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), "notebook not clean"

    browser.find_element(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell").click()  # focus the notebook
    click_menu(browser, "Run", "Run All Cells")
    nb = wait_until(lambda: finished(browser), RUN_TIMEOUT_S, "all cells to run")

    # Outputs in the notebook model and on the page; the last cell wrote the stage's metrics.
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    with_output = [c for c in code if c.get("outputs")]
    assert len(with_output) >= len(code) // 2, f"only {len(with_output)} of {len(code)} code cells show output"
    rendered = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
    assert rendered, "no output area on the page"
    smoke = load_params(root, profile="smoke").probe
    metrics = json.loads((root / "results" / "dev" / "probe" / "metrics.json").read_text())
    assert set(metrics["answer_rate"]) == set(smoke.models)
    assert metrics["n_questions"] == smoke.questions.limit
    assert sorted(p.name for p in (root / "results" / "dev" / "probe" / "plots").glob("*.png"))

    screenshot = tmp_path / "jupyterlab_probe.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
