"""Every command remembers what `start` was told, and tokens have one truth (issue 9).

Real sshd (tests/harness/sshd.py), the companion as a subprocess with a fake HOME, the
runtime on the "remote" side. The remote sessions' PATH holds only the system directories, so
their `python3` is Debian's, without this package: a command that forgot
`start --remote-python` fails there.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.harness.companion import (
    api,
    companion,
    companion_env,
    error_line,
    kill_runtimes,
    run_cli,
    run_code,
    start_companion,
    start_kernel,
    token_of,
)
from tests.harness.processes import SYSTEM_PATH, family, free_port, port_is_free, wait_gone
from tests.harness.runtime_api import wait_for
from tests.harness.sshd import run_sshd

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]

PYTHON = sys.executable  # the interpreter that has the package, named with --remote-python


@pytest.fixture
def bare_server(tmp_path, ssh_client_files):
    """An sshd whose sessions' `python3` lacks the package (only the system PATH)."""
    with run_sshd(tmp_path, name="bare-sshd", set_env={"PATH": SYSTEM_PATH}) as server:
        ssh_client_files.add_host("gpu-box", server)
        yield server


@pytest.fixture
def user(tmp_path, bare_server, ssh_client_files):
    """A laptop user whose ~/.ssh knows `gpu-box`."""
    home = ssh_client_files.make_home(tmp_path / "home")
    env = companion_env(home, tmp_path)
    try:
        yield env
    finally:
        kill_runtimes(bare_server.remote_env["JUPYTER_RUNTIME_DIR"])


def remote_runtimes(server) -> list[dict]:
    """The runtime files on the remote side."""
    rdir = Path(server.remote_env["JUPYTER_RUNTIME_DIR"])
    return [json.loads(p.read_text()) for p in sorted(rdir.glob("colabremote-[0-9]*.json"))]


def test_commands_remember_what_start_was_told(tmp_path, bare_server, user):
    """start --remote-python X --workdir '~/proj'; then url, status, doctor, Ctrl-C, start and
    stop with no option repeated. `~` is the server's home."""
    env = user
    res = run_cli("status", "gpu-box", env=env)
    assert res.returncode == 7, "the sessions' python3 must lack the package for this test"

    port = free_port()
    args = ["start", "gpu-box", "--port", str(port), "--json", "--remote-python", PYTHON]
    with companion([*args, "--workdir", "~/proj"], env, tmp_path / "logs") as c:
        rec = start_companion(c)
        [rt] = remote_runtimes(bare_server)
        assert rt["root_dir"] == str(Path(bare_server.remote_env["HOME"]) / "proj")
        assert "running a Python kernel (1+1)" in c.stderr()

        res = run_cli("url", "gpu-box", env=env)
        assert res.returncode == 0 and res.stdout.strip() == rec["url"], res.stderr
        res = run_cli("status", "gpu-box", "--json", env=env)
        assert res.returncode == 0, res.stderr
        assert [r["pid"] for r in json.loads(res.stdout)["runtimes"]] == [rec["remote_pid"]]
        res = run_cli("doctor", "gpu-box", env=env)
        assert res.returncode == 0 and "All checks passed" in res.stdout, res.stdout

        # Ctrl-C: says what still runs and how to get back or stop it.
        assert c.stop(signal.SIGINT) == 0
        err = c.stderr()
        assert "Tunnel closed. The runtime and its kernels keep running on gpu-box" in err
        assert "jupyter colabremote stop gpu-box" in err and "Traceback" not in err
    res = run_cli("url", "gpu-box", env=env)
    assert res.returncode == 1 and res.stdout == ""
    assert "no tunnel to gpu-box is open" in error_line(res)

    # start again with nothing repeated: the same interpreter, runtime and URL.
    with companion(["start", "gpu-box", "--json"], env, tmp_path / "logs") as again:
        rec2 = start_companion(again)
        assert rec2["url"] == rec["url"] and rec2["reattached"] is True
        procs = family(rec["remote_pid"])
        res = run_cli("stop", "gpu-box", env=env)
        assert res.returncode == 0, res.stderr
        assert (
            res.stdout.startswith("stopped the runtime on gpu-box")
            and "tunnel closed" in res.stdout
        )
        assert again.proc.wait(10) == 0
    assert wait_gone(procs) == []
    assert remote_runtimes(bare_server) == [] and port_is_free(port)
    res = run_cli("url", "gpu-box", env=env)
    assert res.returncode == 1 and "the runtime on gpu-box was stopped" in error_line(res)


def test_stop_says_what_still_runs_when_the_remote_part_fails(tmp_path, bare_server, user):
    """A failing remote stop leaves the tunnel and says so; --tunnel-only closes just it."""
    env = user
    port = free_port()
    args = ["start", "gpu-box", "--port", str(port), "--json", "--remote-python", PYTHON]
    with companion(args, env, tmp_path / "logs") as c:
        rec = start_companion(c)
        res = run_cli("stop", "gpu-box", "--remote-python", "/nonexistent/python", env=env)
        assert res.returncode == 7
        msg = error_line(res)
        assert "could not stop the runtime on gpu-box" in msg
        assert f"tunnel on localhost:{port} (companion pid {c.pid}) is still open" in msg
        assert "--tunnel-only" in msg
        assert c.proc.poll() is None and api(rec["url"], "/api/colab/build-info")[0] == 200

        res = run_cli("stop", "gpu-box", "--tunnel-only", env=env)
        assert res.returncode == 0 and res.stdout.strip() == "closed the tunnel to gpu-box"
        assert c.proc.wait(10) == 0
    assert psutil.pid_exists(rec["remote_pid"]) and port_is_free(port)
    res = run_cli("stop", "gpu-box", env=env)
    assert res.returncode == 0 and res.stdout.startswith("stopped the runtime"), res.stderr


def test_doctor_exits_as_start_does(tmp_path, bare_server, user, ssh_client_files):
    """Unreachable host: 5 from both; unknown host key: 3 from both."""
    env = user
    closed = free_port()
    for cmd in (["start", f"root@127.0.0.1:{closed}"], ["doctor", f"root@127.0.0.1:{closed}"]):
        res = run_cli(*cmd, env=env, timeout=60)
        assert res.returncode == 5, (cmd, res.stdout, res.stderr)
    (Path(env["HOME"]) / ".ssh/known_hosts").write_text("")
    res = run_cli("start", "gpu-box", "--remote-python", PYTHON, env=env)
    assert res.returncode == 3, res.stderr
    res = run_cli("doctor", "gpu-box", env=env)
    assert res.returncode == 3 and "[FAIL] SSH host key" in res.stdout, res.stdout


def _drop_ssh_sessions(server) -> None:
    """Cut the companion's SSH connection from the server side (its sshd session processes
    die, as when a NAT or the network drops the connection); the listener stays."""
    for p in server.processes():
        try:
            if p.pid != server.pid and p.name().startswith("sshd"):
                p.kill()
        except psutil.Error:
            continue


def rotate_in_the_panel(url: str, lab_config_dir: Path) -> str:
    """Open JupyterLab through the URL in Chromium, rotate the token in the Colab panel as a
    person would (button, confirmation); the new URL the panel shows."""
    from selenium.webdriver.common.by import By

    from tests.test_labextension import (
        CARD_XPATH,
        click_dialog_button,
        lab_browser,
        panel_text,
        quiet_lab_settings,
    )
    from tests.test_labextension import wait_for as lab_wait_for

    quiet_lab_settings(lab_config_dir)
    base, token = url.split("/?token=")
    with lab_browser() as driver:
        driver.get(f"{base}/lab?token={token}")
        card = lab_wait_for(
            "the launcher card", lambda: driver.find_element(By.XPATH, CARD_XPATH), timeout=90
        )
        card.click()
        shown = lab_wait_for(
            "the URL in the panel", lambda: panel_text(driver, ".jp-ColabRemote-url"), timeout=30
        )
        assert shown == url  # the companion's port and token
        driver.find_element(By.CSS_SELECTOR, ".jp-ColabRemote-rotate").click()
        click_dialog_button(driver, "Rotate")
        return lab_wait_for(
            "the new URL",
            lambda: (u := panel_text(driver, ".jp-ColabRemote-url")) != url and u,
        )


@pytest.mark.browser
def test_a_rotation_elsewhere_is_never_undone(tmp_path, bare_server, user):
    """Rotate the companion's token in the JupyterLab panel (Chromium), then start again and
    reconnect after a dropped connection: the rotated secret never works again, the panel's
    new URL keeps working, and the URL the companion prints (and `url`) works."""
    env = user
    port = free_port()
    args = ["start", "gpu-box", "--port", str(port), "--json", "--remote-python", PYTHON]
    with companion(args, env, tmp_path / "logs") as c:
        rec = start_companion(c)
        old = rec["url"]
        panel_url = rotate_in_the_panel(old, Path(bare_server.remote_env["JUPYTER_CONFIG_DIR"]))
        assert panel_url.startswith(f"http://localhost:{port}/?token=")
        assert api(panel_url, "/api/kernelspecs")[0] == 200
        assert api(old, "/api/kernelspecs")[0] == 403
        assert c.stop(signal.SIGINT) == 0

    with companion(["start", "gpu-box", "--json"], env, tmp_path / "logs") as c:
        rec = start_companion(c)
        assert "rotated or revoked on the server" in c.stderr()
        new = rec["url"]
        assert new != old and token_of(new) != token_of(panel_url)
        for url in (new, panel_url):
            assert api(url, "/api/kernelspecs")[0] == 200
        assert api(old, "/api/kernelspecs")[0] == 403
        res = run_cli("url", "gpu-box", env=env)
        assert res.returncode == 0 and res.stdout.strip() == new
        kid = start_kernel(new)
        assert run_code(new, kid, "x = 5; x") == ["5"]

        # The panel user revokes the companion's new token; the link then drops. The
        # companion reconnects with yet another token; no revoked secret comes back.
        current = json.loads(api(new, "/colabremote/api/tokens")[1])["current"]
        assert api(panel_url, f"/colabremote/api/tokens/{current}", "DELETE")[0] == 204
        assert api(new, "/api/kernelspecs")[0] == 403
        _drop_ssh_sessions(bare_server)
        wait_for(lambda: "reconnected" in c.stderr(), 60, "the companion to reconnect")
        res = run_cli("url", "gpu-box", env=env)
        assert res.returncode == 0, res.stderr
        healed = res.stdout.strip()
        assert healed not in (old, new)
        assert api(healed, "/api/kernelspecs")[0] == 200
        assert run_code(healed, kid, "x") == ["5"]  # same kernel
        for dead in (old, new):
            assert api(dead, "/api/kernelspecs")[0] == 403
        assert api(panel_url, "/api/kernelspecs")[0] == 200
        res = run_cli("stop", "gpu-box", env=env)
        assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 10
    while not port_is_free(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert port_is_free(port)
