"""The JupyterLab extension: installed with the package, and its panel in a real browser.

`jupyter colabremote serve` loads JupyterLab at /lab; headless Chromium (Debian's, through
chromedriver) opens it with a token, clicks the "Colab connection" launcher card and uses
the panel as a person would: reads the URL to paste into Colab, rotates the token, shuts a
kernel down, and sees the errors a revoked token and a stopped server produce; the one
status poll behind the panel and the status bar runs fast only while the panel is in view.

The panel's pure logic has its own unit tests (labextension/tests, node's test runner);
`test_model_unit_tests` runs them when the extension's node_modules are installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from jupyter_colab_remote import __version__
from tests.harness.browser import CHROMEDRIVER, CHROMIUM, browser_available
from tests.harness.kernel_client import execute_request
from tests.harness.processes import free_port, stop_process
from tests.harness.runtime import run_runtime
from tests.harness.runtime_api import COLAB_ORIGIN

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
LABEXTENSION = ROOT / "labextension"
#: The screenshot the README shows. Rewritten when missing or with COLABREMOTE_SCREENSHOT=1
#: (a copy always goes to the test's tmp_path), so test runs leave the work tree clean.
SCREENSHOT = ROOT / "docs" / "panel.png"
EXTENSION_NAME = "jupyter-colab-remote"
CARD_XPATH = (
    "//div[contains(concat(' ', normalize-space(@class), ' '), ' jp-LauncherCard ')]"
    "[.//*[normalize-space(text())='Colab connection']]"
)

_no_lab = None if importlib.util.find_spec("jupyterlab") else "JupyterLab is not installed"


# -- helpers ---------------------------------------------------------------------------


def wait_for(what: str, check, timeout: float = 30.0, interval: float = 0.1):
    """Poll `check()` until it returns something truthy (bounded); return that."""
    end = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < end:
        try:
            value = check()
        except Exception as e:  # noqa: BLE001 - stale elements and the like: retry
            last_error = e
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


def get(url: str, token: str | None = None) -> int:
    """Status of a GET (token in the Authorization header when given)."""
    headers = {"Authorization": f"token {token}"} if token else {}
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def build_info_status(colab_url: str) -> int:
    """Use a URL as Colab does: GET /api/colab/build-info on it with its token."""
    parts = urllib.parse.urlsplit(colab_url)
    query = urllib.parse.parse_qs(parts.query)
    assert parts.hostname == "localhost" and "token" in query, colab_url
    # Same port and token; 127.0.0.1 because the runtime listens there (not on ::1).
    probe = urllib.parse.urlunsplit(
        ("http", f"127.0.0.1:{parts.port}", parts.path + "api/colab/build-info", parts.query, "")
    )
    return get(probe)


def api(rt, method: str, path: str, token: str, body: dict | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        rt.base + path,
        data=data,
        method=method,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def quiet_lab_settings(config_dir: Path) -> None:
    """No news or update notifications (no network here, and they cover the panel)."""
    settings = config_dir / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )


@contextlib.contextmanager
def lab_browser():
    """Headless Chromium at a fixed window size, with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="lab-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,860",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = None
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@dataclasses.dataclass
class PlainLab:
    """A plain `jupyter lab` (not a runtime): where it listens and its token."""

    base: str
    token: str


@contextlib.contextmanager
def plain_jupyter_lab(tmp: Path):
    """`jupyter lab` of this environment (the extension loads, as for any user of the
    package) on a free loopback port, token from the environment; stopped by PID."""
    dirs = {name: tmp / name for name in ("home", "runtime", "data", "config", "root")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    quiet_lab_settings(dirs["config"])
    token = secrets.token_hex(24)
    env = {
        **os.environ,
        "HOME": str(dirs["home"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_TOKEN": token,
    }
    port = free_port()
    # --allow-root: tests may run as root, as a GPU box's user often does.
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1"]
    args += [f"--port={port}", f"--ServerApp.root_dir={dirs['root']}"]
    with open(tmp / "lab.log", "wb") as log:
        proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        lab = PlainLab(f"http://127.0.0.1:{port}", token)

        def listening() -> bool:
            assert proc.poll() is None, (tmp / "lab.log").read_text()[-2000:]
            return get(f"{lab.base}/api/status", token) == 200

        wait_for("jupyter lab to listen", listening, 60)
        yield lab
    finally:
        stop_process(proc, group=True)


def open_panel(driver, lab_url: str) -> None:
    """Open JupyterLab at `lab_url` and click the "Colab connection" launcher card."""
    from selenium.webdriver.common.by import By

    driver.get(lab_url)
    card = wait_for(
        "the 'Colab connection' launcher card",
        lambda: driver.find_element(By.XPATH, CARD_XPATH),
        timeout=60,
    )
    card.click()


def panel_text(driver, css: str) -> str:
    """Text of the first element matching `css` inside the panel ('' when hidden/absent)."""
    return driver.execute_script(
        "const n = document.querySelector('#colabremote-panel ' + arguments[0]);"
        "return n && !n.hidden ? n.textContent : '';",
        css,
    )


def click_dialog_button(driver, label: str) -> None:
    """Click a button of JupyterLab's open dialog by its label."""
    from selenium.webdriver.common.by import By

    button = wait_for(
        f"the dialog's {label!r} button",
        lambda: driver.find_element(
            By.XPATH,
            f"//div[contains(@class,'jp-Dialog')]//button[normalize-space(.)='{label}']",
        ),
    )
    button.click()
    wait_for(
        "the dialog to close",
        lambda: not driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog"),
    )


# -- installation ----------------------------------------------------------------------


def test_labextension_version_matches_package():
    """The extension's package.json holds the one version: the build (hatch-nodejs-version)
    gives it to the distribution and to `__version__` (a stale build fails here)."""
    package = json.loads((LABEXTENSION / "package.json").read_text())
    assert package["name"] == EXTENSION_NAME
    assert package["version"] == __version__
    assert importlib.metadata.version("jupyter-colab-remote") == __version__


@pytest.mark.skipif(_no_lab is not None, reason=_no_lab or "")
def test_labextension_is_installed_and_enabled():
    """`pip install` put the built extension where JupyterLab finds it; no separate step."""
    out = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    line = next((x for x in text.splitlines() if EXTENSION_NAME in x), "")
    assert f"{EXTENSION_NAME} v{__version__} enabled OK" in line, text


def test_model_unit_tests():
    """The panel model's TypeScript unit tests (node's test runner), when buildable here."""
    jlpm = shutil.which("jlpm")
    if not (LABEXTENSION / "node_modules" / "typescript").is_dir() or not jlpm:
        pytest.skip("labextension/node_modules or jlpm missing (pip install -e . makes them)")
    out = subprocess.run(
        [jlpm, "run", "test"], cwd=LABEXTENSION, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"^# fail 0$", out.stdout, re.M), out.stdout[-4000:]
    assert re.search(r"^# pass [1-9]\d*$", out.stdout, re.M), out.stdout[-4000:]


# -- the panel in a browser ------------------------------------------------------------


def colab_kernel_connection(rt, kernel_id: str, token: str):
    """A kernel WebSocket opened the way Colab opens it (Colab's Origin)."""
    import websocket  # websocket-client, a dependency of selenium

    return websocket.create_connection(
        f"ws://127.0.0.1:{rt.port}/api/kernels/{kernel_id}/channels?token={token}",
        origin=COLAB_ORIGIN,
        timeout=30,
    )


def colab_execute(ws, code: str) -> None:
    """Run `code` on the kernel behind `ws` and wait until it is idle again."""
    msg = execute_request(code, uuid.uuid4().hex)
    ws.send(json.dumps(msg))
    msg_id = msg["header"]["msg_id"]
    got_reply = got_idle = False
    end = time.monotonic() + 30
    while not (got_reply and got_idle):
        assert time.monotonic() < end, f"no reply to {code!r}"
        reply = json.loads(ws.recv())
        if reply.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        got_reply |= reply["msg_type"] == "execute_reply"
        got_idle |= reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle"


def save_screenshot(driver, tmp_path: Path) -> None:
    """The picture for the README (see SCREENSHOT); always a copy in tmp_path."""
    driver.execute_script(
        "document.querySelectorAll('.jp-Notification-Toast-Close, .Toastify__close-button')"
        ".forEach(b => b.click());"
    )
    shot = tmp_path / "panel.png"
    driver.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG")
    if not SCREENSHOT.exists() or os.environ.get("COLABREMOTE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)


@pytest.mark.skipif(_no_lab is not None, reason=_no_lab or "")
@pytest.mark.skipif(browser_available() is not None, reason=str(browser_available()))
@pytest.mark.timeout(240)
def test_panel_in_browser(tmp_path):
    from selenium.webdriver.common.by import By

    def status_bar() -> str:
        return driver.find_element(By.CSS_SELECTOR, ".jp-ColabRemote-statusItem").text

    quiet_lab_settings(tmp_path / "config")
    # A GPU for the gauges (and the screenshot): nvidia-smi's CSV answer, from a script.
    fake_smi = tmp_path / "nvidia-smi"
    fake_smi.write_text("#!/bin/sh\necho '0, Tesla T4, 5120, 15360, 35, 33'\n")
    fake_smi.chmod(0o755)
    extra = [f"--ColabRemoteApp.nvidia_smi={fake_smi}"]
    with run_runtime(tmp_path, extra_args=extra) as rt, lab_browser() as driver:
        old_token = rt.token
        open_panel(driver, f"{rt.base}/lab?token={old_token}")
        url = wait_for(
            "the URL in the panel", lambda: panel_text(driver, ".jp-ColabRemote-url"), timeout=30
        )
        # The token this page was opened with, on the port Colab reaches (no companion).
        assert url == f"http://localhost:{rt.port}/?token={old_token}"
        assert build_info_status(url) == 200
        assert panel_text(driver, ".jp-ColabRemote-hint") == ""

        # Gauges from the status document: RAM and the disk, with sizes and percentages.
        gauges = wait_for(
            "the gauges",
            lambda: driver.execute_script(
                "return [...document.querySelectorAll('#colabremote-panel "
                ".jp-ColabRemote-gauge')].map(n => n.textContent);"
            ),
        )
        assert re.fullmatch(r"RAM\d+%[\d.]+ [KMG]iB of [\d.]+ GiB", gauges[0]), gauges
        assert any(re.fullmatch(r"Disk\d+%.*iB of .*iB", g) for g in gauges), gauges
        assert "GPU: Tesla T433%5.0 GiB of 15.0 GiB · utilization 35%" in gauges, gauges

        # The status bar counts Colab clients and kernels.
        assert wait_for("the status-bar item", status_bar) == "Colab: 0 clients, 0 kernels"

        # A kernel started elsewhere (as Colab does) shows up within a refresh.
        code, text = api(rt, "POST", "/api/kernels", old_token, {"name": "python3"})
        assert code == 201, text
        kernel_id = json.loads(text)["id"]
        row_css = f'.jp-ColabRemote-kernelRow[data-kernel-id="{kernel_id}"]'

        def row_cells() -> list[str]:
            cells = driver.find_elements(By.CSS_SELECTOR, f"#colabremote-panel {row_css} td")
            return [c.text for c in cells]

        cells = wait_for("the kernel's row", row_cells, timeout=20)
        assert cells[0] == "python3", cells

        # Colab connects to the kernel and fills some memory: the status bar counts the
        # client; the row shows the kernel idle, its memory and its connection.
        colab = colab_kernel_connection(rt, kernel_id, old_token)
        try:
            colab_execute(colab, "blob = bytearray(200 * 2**20)")
            wait_for(
                "the Colab client in the status bar",
                lambda: status_bar() == "Colab: 1 client, 1 kernel",
                timeout=20,
            )
            cells = wait_for(
                "the kernel idle, with its memory and one connection",
                lambda: (c := row_cells())[1] == "idle" and c[4] == "1" and c,
                timeout=20,
            )
            memory = re.fullmatch(r"(\d+) MiB", cells[3])
            assert memory and int(memory.group(1)) >= 200, cells

            # Rotate the token: a confirmation first; then the new URL replaces the old one.
            driver.find_element(By.CSS_SELECTOR, ".jp-ColabRemote-rotate").click()
            click_dialog_button(driver, "Rotate")
            new_url = wait_for(
                "the new URL",
                lambda: (u := panel_text(driver, ".jp-ColabRemote-url")) != url and u,
            )
            new_token = urllib.parse.parse_qs(urllib.parse.urlsplit(new_url).query)["token"][0]
            assert new_token != old_token and len(new_token) == 64
            assert new_url == f"http://localhost:{rt.port}/?token={new_token}"
            assert build_info_status(new_url) == 200
            assert build_info_status(url) == 403  # the old token is refused from now on
            assert "previous URL no longer works" in panel_text(driver, ".jp-ColabRemote-notice")

            # This session stays logged in (the rotation re-issued its cookie): the panel
            # keeps refreshing without an error.
            updated = panel_text(driver, ".jp-ColabRemote-summary")
            wait_for(
                "a refresh",
                lambda: panel_text(driver, ".jp-ColabRemote-summary") != updated,
                timeout=15,
            )
            assert panel_text(driver, ".jp-ColabRemote-error") == ""
            assert row_cells()[0] == "python3"

            save_screenshot(driver, tmp_path)
        finally:
            colab.close()

        # Shut the kernel down from the panel (confirmed): gone from the server and the table.
        driver.find_element(By.CSS_SELECTOR, f"{row_css} .jp-ColabRemote-shutdown").click()
        click_dialog_button(driver, "Shut down")
        wait_for("the row to go", lambda: not row_cells(), timeout=20)
        code, text = api(rt, "GET", "/api/kernels", new_token)
        assert code == 200 and kernel_id not in text, text

        # Errors read as sentences: a revoked token (403) ...
        code, text = api(rt, "DELETE", "/colabremote/api/tokens/test", new_token)
        assert code == 204, text
        message = wait_for(
            "the 403 message", lambda: panel_text(driver, ".jp-ColabRemote-error"), timeout=20
        )
        assert "403" in message and "rotated or revoked" in message, message
        assert status_bar() == "Colab: offline"

        # ... and a server that is gone.
        stop_process(rt.proc)
        message = wait_for(
            "the network-error message",
            lambda: "Cannot reach" in (m := panel_text(driver, ".jp-ColabRemote-error")) and m,
            timeout=20,
        )
        assert "jupyter colabremote serve" in message


@pytest.mark.skipif(_no_lab is not None, reason=_no_lab or "")
@pytest.mark.skipif(browser_available() is not None, reason=str(browser_available()))
@pytest.mark.timeout(180)
def test_panel_on_plain_jupyter_lab(tmp_path):
    """A plain `jupyter lab` in the same environment is not a runtime: the panel says so and
    how to make one, without a URL, token name, copy or rotate button; the status bar claims
    no Colab clients."""
    from selenium.webdriver.common.by import By

    with plain_jupyter_lab(tmp_path) as lab, lab_browser() as driver:
        code, text = api(lab, "GET", "/colabremote/api/status", lab.token)
        assert code == 200 and json.loads(text)["runtime"] is False, text
        # The anonymous user's name is no token of the store.
        code, text = api(lab, "GET", "/colabremote/api/tokens", lab.token)
        assert code == 200 and json.loads(text)["current"] is None, text

        open_panel(driver, f"{lab.base}/lab?token={lab.token}")
        message = wait_for(
            "the not-a-runtime message",
            lambda: panel_text(driver, ".jp-ColabRemote-notRuntime"),
            timeout=30,
        )
        assert "This JupyterLab is not a Colab runtime" in message, message
        assert "jupyter colabremote serve" in message
        assert "jupyter colabremote start HOST" in message
        # Rendered from the status (the version is in the summary) ...
        assert __version__ in panel_text(driver, ".jp-ColabRemote-summary")
        # ... with nothing to copy into Colab, and no token controls.
        visible = driver.execute_script(
            "return [...document.querySelectorAll('#colabremote-panel .jp-ColabRemote-url,"
            " #colabremote-panel .jp-ColabRemote-copy, #colabremote-panel .jp-ColabRemote-rotate,"
            " #colabremote-panel .jp-ColabRemote-tokenRow, .jp-ColabRemote-statusItem')]"
            ".filter(n => n.getClientRects().length > 0).map(n => n.className);"
        )
        assert visible == [], visible
        text = driver.find_element(By.ID, "colabremote-panel").text
        assert "localhost:" not in text and lab.token not in text and "Token:" not in text
        assert panel_text(driver, ".jp-ColabRemote-error") == ""


def status_requests(driver) -> int:
    """How many status requests the page finished since the resource timings were cleared."""
    return driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/colabremote/api/status')).length;"
    )


@pytest.mark.skipif(_no_lab is not None, reason=_no_lab or "")
@pytest.mark.skipif(browser_available() is not None, reason=str(browser_available()))
@pytest.mark.timeout(180)
def test_one_poll_fast_only_while_the_panel_is_in_view(tmp_path):
    """One poll feeds the panel and the status bar: every 5 s while the panel is in view,
    every 15 s (the status bar's pace) once another tab covers it, and at once when the
    panel is shown again."""
    from selenium.webdriver.common.by import By

    quiet_lab_settings(tmp_path / "config")
    with run_runtime(tmp_path) as rt, lab_browser() as driver:
        open_panel(driver, f"{rt.base}/lab?token={rt.token}")
        wait_for(
            "the URL in the panel", lambda: panel_text(driver, ".jp-ColabRemote-url"), timeout=30
        )
        driver.execute_script(
            "performance.setResourceTimingBufferSize(100000); performance.clearResourceTimings();"
        )
        time.sleep(11)
        assert 2 <= status_requests(driver) <= 3

        # A new launcher tab (the main area's "+") covers the panel.
        driver.find_element(By.CSS_SELECTOR, ".lm-DockPanel-tabBar .lm-TabBar-addButton").click()
        wait_for(
            "the panel to be covered",
            lambda: driver.execute_script(
                "return document.getElementById('colabremote-panel')"
                ".classList.contains('lm-mod-hidden');"
            ),
        )
        time.sleep(6)  # the fetch already due at the panel's pace
        driver.execute_script("performance.clearResourceTimings();")
        time.sleep(16)
        assert status_requests(driver) == 1

        # The panel's tab again: fetched at once.
        driver.execute_script("performance.clearResourceTimings();")
        tab = driver.find_element(
            By.XPATH,
            "//li[contains(@class,'lm-TabBar-tab')][.//div[normalize-space(.)='Colab connection']]",
        )
        tab.click()
        wait_for("a fetch on showing the panel", lambda: status_requests(driver) >= 1, timeout=3)
