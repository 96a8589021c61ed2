"""The companion in a Windows-like and a macOS-like interpreter state, against a real sshd.

This machine is Linux: the states come from tests/harness/foreign_os.py (a sitecustomize on
PYTHONPATH): `windows` makes the POSIX-only modules (fcntl, termios, pwd, resource, ...)
unimportable for jupyter_colab_remote's code and removes socket.TCP_USER_TIMEOUT; `macos`
removes socket.TCP_USER_TIMEOUT. Windows' own behaviour (ACLs, msvcrt locks, the console)
cannot run here; those branches have unit tests (tests/unit/test_portable_files.py).

Every companion command runs as a user runs it (`python -m jupyter_colab_remote ...`, a fake
HOME whose ~/.ssh knows the server, no terminal). Processes are stopped by PID; every wait
is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.harness.browser import browser_available, chromium, serve_page
from tests.harness.companion import (
    companion,
    companion_env,
    error_line,
    kill_runtimes,
    run_cli,
    run_code,
    start_companion,
)
from tests.harness.foreign_os import foreign_os_env, marked_pids
from tests.harness.processes import free_port, port_is_free, wait_gone

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]

KINDS = ("windows", "macos")


@pytest.mark.parametrize("kind", KINDS)
def test_companion_modules_import_in_a_foreign_state(tmp_path, kind):
    """`import jupyter_colab_remote.companion.cli` (what `start` loads) works; the guard is
    real: our code importing fcntl fails there, and socket has no TCP_USER_TIMEOUT."""
    env = foreign_os_env(dict(os.environ), tmp_path / "site", kind)
    code = (
        "import socket, jupyter_colab_remote.cli, jupyter_colab_remote.companion.cli, "
        "jupyter_colab_remote.companion.doctor, jupyter_colab_remote.tokens\n"
        "print(hasattr(socket, 'TCP_USER_TIMEOUT'))\n"
        "try:\n"
        "    exec('import fcntl', {'__name__': 'jupyter_colab_remote.probe'})\n"
        "    print('fcntl importable')\n"
        "except ModuleNotFoundError:\n"
        "    print('fcntl blocked')\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    blocked = "fcntl blocked" if kind == "windows" else "fcntl importable"
    assert res.stdout.split("\n")[:2] == ["False", blocked]
    assert marked_pids(tmp_path / "site", kind)


@pytest.mark.browser
@pytest.mark.parametrize("kind", KINDS)
def test_start_colab_reattach_stop_in_a_foreign_state(
    tmp_path, sshd_server, ssh_client_files, kind
):
    """start -> Colab runs a cell through the URL -> Ctrl-C -> start re-attaches (same URL,
    same kernel) -> url, status -> stop; every command in the foreign state."""
    missing = browser_available()
    if missing:
        pytest.skip(f"no browser to test with: {missing}")
    home = ssh_client_files.make_home(tmp_path / "home")
    site = tmp_path / "site"
    env = foreign_os_env(companion_env(home, tmp_path), site, kind)
    port = free_port()
    start = ["start", "gpu-box", "--port", str(port), "--json"]
    try:
        with companion(start, env, tmp_path / "logs") as first:
            rec = start_companion(first)
            assert first.pid in marked_pids(site, kind)
            url = rec["url"]
            with (
                serve_page("colab.research.google.com", tmp_path / "certs") as page,
                chromium([page]) as browser,
            ):
                browser.open(page.origin)
                browser.grant_loopback(page.origin)
                kernel_id, run = browser.run_cell(url, "x = 6*7; x", ms=60000)
            assert run.get("error") is None and run["reply"]["status"] == "ok", run
            assert run["executeResult"]["data"]["text/plain"] == "42"
            # Ctrl-C closes the tunnel only (exit 0); the runtime keeps running.
            assert first.stop(signal.SIGINT) == 0
            assert "Traceback" not in first.stderr(), first.stderr()
        assert port_is_free(port)
        assert psutil.pid_exists(rec["remote_pid"])

        # The connection record (it holds the token) is private.
        record_file = Path(rec["state_file"])
        assert stat.S_IMODE(record_file.stat().st_mode) == 0o600
        assert json.loads(record_file.read_text())["token"] in url

        with companion(start, env, tmp_path / "logs") as second:
            again = start_companion(second)
            assert second.pid in marked_pids(site, kind)
            assert again["reattached"] is True and again["url"] == url
            assert run_code(url, kernel_id, "x") == ["42"]
            res = run_cli("url", "gpu-box", env=env)
            assert res.returncode == 0 and res.stdout.strip() == url, res.stderr
            res = run_cli("doctor", "gpu-box", env=env, timeout=120)
            assert res.returncode == 0, res.stdout + res.stderr
            assert "Traceback" not in res.stderr
            res = run_cli("status", "gpu-box", "--json", env=env)
            assert res.returncode == 0, res.stderr
            status = json.loads(res.stdout)
            assert [t["companion_running"] for t in status["tunnels"]] == [True]
            assert [r["pid"] for r in status["runtimes"]] == [rec["remote_pid"]]
            procs = [psutil.Process(rec["remote_pid"])]
            res = run_cli("stop", "gpu-box", env=env)
            assert res.returncode == 0, res.stderr
            assert "stopped the runtime" in res.stdout and "tunnel closed" in res.stdout
            assert second.proc.wait(10) == 0
            assert "Traceback" not in second.stderr(), second.stderr()
        assert wait_gone(procs) == []
        assert port_is_free(port)

        # The liveness options reach the connection: a count of 0 is refused in one line.
        res = run_cli("start", "gpu-box", "--port", str(port), "--server-alive-count-max", "0",
                      env=env)  # fmt: skip
        assert res.returncode == 2
        assert "--server-alive-count-max 0" in error_line(res)
        # ... and ~/.ssh/config's ServerAlive* options are read (a bad one named in one line).
        with open(home / ".ssh" / "config", "a") as f:
            f.write("\nHost *\n    ServerAliveInterval soon\n")
        res = run_cli("start", "gpu-box", "--port", str(port), env=env)
        assert res.returncode == 2
        assert "ServerAliveInterval 'soon'" in error_line(res)
    finally:
        kill_runtimes(env["JUPYTER_RUNTIME_DIR"])
