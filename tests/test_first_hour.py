"""A new user's first hour, end to end: `start ALIAS --install` against a server that has only
Python, sshd and the user's key; Colab runs a cell; `url` and `stop` need nothing repeated.

The server is a real sshd on loopback. Its `python3` is Debian's /usr/bin/python3 with
nothing installed for it (checked through the sshd), its pip kept off the network
(PIP_NO_INDEX=1, PIP_CONFIG_FILE=/dev/null). Its package index for the dependencies is the
wheelhouse tests/run.sh fills: as PIP_FIND_LINKS in the server's environment ("the server has
an index") or uploaded with `--wheelhouse` ("it has none"). The package itself is on neither:
the companion brings its own version. The laptop is a fresh venv holding only the package
(`pip install` of a wheel of this checkout), and a HOME whose ~/.ssh/config names the server
with the key and whose known_hosts is empty (a new host key). Colab is headless Chromium on a
fake https://colab.research.google.com page (tests/harness/browser.py).

The main test also runs, in that wheel-only runtime, the features that need more than the
server's bare Python: a kernel's `python -m http.server` is forwarded to the laptop
automatically (the runtime's port watcher with only the package's declared dependencies),
over SSH-level liveness (never declaring the healthy link dead).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from jupyter_colab_remote import __version__
from jupyter_colab_remote.companion.remote import sh_join
from tests.harness.browser import browser_available, chromium, serve_page
from tests.harness.companion import (
    api,
    companion,
    companion_env,
    error_line,
    run_cli,
    run_code,
    start_kernel,
)
from tests.harness.install_env import SYSTEM_PYTHON, server_env
from tests.harness.processes import free_port, wait_gone
from tests.harness.runtime_api import wait_for
from tests.harness.sshd import run_sshd
from tests.test_port_forwards import NOTICE_BOUND, serve_code, wait_closed, wait_listing

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.needs_root,
    pytest.mark.browser,
    pytest.mark.timeout(600),
]
#: Installing jupyter-colab-remote[lab] (~100 wheels) on a busy 2-core machine.
INSTALL_DEADLINE = 400.0
URL = re.compile(r"http://localhost:\d+/\?token=[A-Za-z0-9_-]+")
STEP = re.compile(
    rf"installing jupyter-colab-remote {re.escape(__version__)} on gpu-box +([\d.]+) s"
)


def _no_ensurepip(directory: Path) -> Path:
    """A PYTHONPATH directory whose `ensurepip` cannot be imported: for the server's python3
    this simulates Debian without python3-venv (no ensurepip, so `venv` makes no pip)."""
    pkg = directory / "ensurepip"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        'raise ImportError("ensurepip is not installed (simulated: no python3-venv)")\n'
    )
    return directory


class FirstHour:
    """One server (sshd with a bare python3) and one laptop (HOME, venv with the package)."""

    def __init__(self, tmp_path: Path, server, laptop_python: str, client_files) -> None:
        self.tmp = tmp_path
        self.server = server
        self.python = laptop_python
        self.key = client_files.key
        client_files.add_host("gpu-box", server)
        self.home = client_files.make_home(tmp_path / "home")
        (self.home / ".ssh/known_hosts").write_text("")  # never connected: a new host key
        self.env = companion_env(
            self.home,
            tmp_path,
            XDG_CACHE_HOME=str(self.home / ".cache"),
            PIP_CONFIG_FILE="/dev/null",
        )
        self.port = free_port()

    def remote(self, command: str) -> tuple[int, str, str]:
        """A command in the server's environment, through its sshd: (exit code, out, err)."""
        client = self.server.connect(self.key)
        _, out, err = client.exec_command(command, timeout=60)
        return out.channel.recv_exit_status(), out.read().decode(), err.read().decode()

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """A companion command run by the laptop's venv."""
        return run_cli(*args, env=self.env, timeout=timeout, python=self.python)

    def leftovers(self) -> list:
        """Processes the server still runs for us: runtimes, kernels (sshd itself excluded)."""
        out = []
        for p in self.server.processes():
            with contextlib.suppress(psutil.Error):
                if p.name() != "sshd":
                    out.append(p)
        return out


@pytest.fixture
def first_hour(request, tmp_path, laptop_python, ssh_client_files, wheelhouse):
    """FirstHour; `@pytest.mark.parametrize("first_hour", [{...}], indirect=True)` shapes the
    server: "index" (default True: PIP_FIND_LINKS=wheelhouse in its environment) and
    "ensurepip" (default True; False puts an unimportable ensurepip on its PYTHONPATH)."""
    shape = {"index": True, "ensurepip": True, **getattr(request, "param", {})}
    extra = {}
    if shape["index"]:
        extra["PIP_FIND_LINKS"] = str(wheelhouse)
    if not shape["ensurepip"]:
        extra["PYTHONPATH"] = str(_no_ensurepip(tmp_path / "no-ensurepip"))
    with run_sshd(tmp_path, name="gpu", set_env=server_env(**extra)) as server:
        yield FirstHour(tmp_path, server, laptop_python, ssh_client_files)


def _kernel_app_is_forwarded(url: str, c) -> dict[str, float]:
    """A kernel started through the URL runs `python -m http.server` in the background: the
    laptop serves its listing within NOTICE_BOUND, on the same port or (the server shares this
    machine's loopback, so that port is taken here) the next free one the companion prints;
    once the kernel kills it the forward goes. Returns the measured seconds."""
    t_step = time.monotonic()
    kernel_id = start_kernel(url)
    port = free_port()
    t0 = time.monotonic()
    (pid,) = run_code(url, kernel_id, serve_code(port, "fh", "app"))
    line = re.compile(
        rf"http\.server \(kernel python3, pid {int(pid)}\) -> http://localhost:(\d+)"
        rf"(?: \(port {port} is in use here\))?$",
        re.M,
    )
    found = wait_for(lambda: line.search(c.stderr()), NOTICE_BOUND, "the forward's line")
    local = int(found.group(1))
    assert local >= port, found.group(0)  # the same port, or the next free one
    wait_listing(local, "marker-fh.txt", NOTICE_BOUND)
    served = time.monotonic() - t0
    t1 = time.monotonic()
    run_code(url, kernel_id, "app.kill(); app.wait()")
    gone_line = f"stopped listening: closed http://localhost:{local}\n"
    wait_for(lambda: gone_line in c.stderr(), NOTICE_BOUND, "the forward's end")
    wait_closed(local, NOTICE_BOUND)
    return {
        "forward_line": found.group(0),
        "forward_served_s": round(served, 2),
        "forward_gone_s": round(time.monotonic() - t1, 2),
        "forward_step_s": round(time.monotonic() - t_step, 2),
    }


def _start_install_and_use(
    fh: FirstHour, *options: str, expect_prefix: Path, forward: bool = False
) -> dict[str, object]:
    """`start gpu-box --install --accept-new-host-key [options]`, Colab runs a cell through the
    printed URL (and, if `forward`, a kernel's app is forwarded), then `url` and `stop` with
    no options. Returns what was measured."""
    missing = browser_available()
    if missing:
        pytest.skip(f"no browser to test with: {missing}")
    rc, _, err = fh.remote("python3 -c 'import jupyter_server'")
    assert rc != 0 and "No module named 'jupyter_server'" in err, err
    assert fh.remote("command -v python3")[1].strip() == SYSTEM_PYTHON

    args = ["start", "gpu-box", "--install", "--accept-new-host-key", "--port", str(fh.port)]
    t0 = time.monotonic()
    with companion([*args, *options], fh.env, fh.tmp / "logs", python=fh.python) as c:
        printed = c.read_until(b"?token=", deadline=INSTALL_DEADLINE)
        started = time.monotonic() - t0
        (url,) = URL.findall(printed)
        err = c.stderr()
        assert "Traceback" not in err and "rerun with --install" not in err, err
        step = STEP.search(err)
        assert step, err  # installing is its own timed step
        # JupyterLab (the extra) with this package's launcher card, and the server extension.
        code, body = api(url, "/lab")
        assert code == 200 and b"jupyter-colab-remote" in body, body[:500]

        with (
            serve_page("colab.research.google.com", fh.tmp / "certs") as page,
            chromium([page]) as browser,
        ):
            browser.open(page.origin)
            browser.grant_loopback(page.origin)
            code = "import sys, jupyter_colab_remote as m; sys.prefix + ' ' + m.__version__"
            _, run = browser.run_cell(url, code, ms=60000)
        assert run.get("error") is None and run["reply"]["status"] == "ok", run
        # The kernel runs in the environment installed into, with this very version.
        assert run["executeResult"]["data"]["text/plain"] == repr(f"{expect_prefix} {__version__}")
        measured = _kernel_app_is_forwarded(url, c) if forward else {}
        # SSH-level liveness ran all along over the real sshd: the link was never taken for dead.
        assert "; reconnecting" not in c.stderr() and "Traceback" not in c.stderr(), c.stderr()

        again = fh.cli("url", "gpu-box")
        assert again.returncode == 0 and again.stdout.strip() == url, again
        runtime = fh.leftovers()
        assert runtime, "no runtime on the server"
        stopped = fh.cli("stop", "gpu-box")
        assert stopped.returncode == 0 and "stopped the runtime" in stopped.stdout, stopped
        assert c.proc.wait(20) == 0  # `stop` ended the companion too
    assert wait_gone(runtime) == [], "runtime or kernel still running after stop"
    assert fh.leftovers() == []
    return {"install_s": float(step.group(1)), "start_s": started, **measured}


def test_first_start_installs_into_the_private_venv(first_hour):
    """Default: the server's index (PIP_FIND_LINKS) has the dependencies but not the package;
    the companion uploads its own version into ~/.local/share/jupyter-colab-remote/venv."""
    venv = first_hour.server.remote_home / ".local/share/jupyter-colab-remote/venv"
    measured = _start_install_and_use(first_hour, expect_prefix=venv, forward=True)
    print(f"private venv: {measured}")


@pytest.mark.parametrize(
    "first_hour", [{"index": False, "ensurepip": False}], indirect=True, ids=["bare"]
)
def test_remote_venv_on_a_server_without_index_or_ensurepip(first_hour, wheelhouse):
    """`--remote-venv '~/venvs/ml'` (README's example, `~` expanded on the server) on a server
    with no index (dependencies uploaded with --wheelhouse) whose python3 has no ensurepip
    (Debian without python3-venv): the venv is made without pip, pip comes from the laptop."""
    venv = first_hour.server.remote_home / "venvs/ml"
    measured = _start_install_and_use(
        first_hour,
        "--remote-venv",
        "~/venvs/ml",
        "--wheelhouse",
        str(wheelhouse),
        expect_prefix=venv,
    )
    assert (venv / "bin/pip").exists()  # bootstrapped from the laptop's pip
    print(f"--remote-venv: {measured}")


def test_remote_python_of_a_server_venv_installs_into_it(first_hour):
    """`--remote-python '~/venvs/torch/bin/python'`, a venv interpreter (the user's libraries
    live there): the package goes into that venv and the kernel runs there, next to them."""
    rc, _, err = first_hour.remote("python3 -m venv ~/venvs/torch")
    assert rc == 0, err
    venv = first_hour.server.remote_home / "venvs/torch"
    measured = _start_install_and_use(
        first_hour, "--remote-python", "~/venvs/torch/bin/python", expect_prefix=venv
    )
    print(f"--remote-python: {measured}")


@pytest.mark.parametrize("first_hour", [{"index": False}], indirect=True, ids=["no-index"])
def test_no_index_and_no_wheelhouse_is_one_error_naming_the_fix(first_hour):
    """Nothing to install the dependencies from: one error line, exit 7, naming --wheelhouse
    and the exact `pip download` for the server's Python and platform."""
    res = first_hour.cli(
        "start", "gpu-box", "--install", "--accept-new-host-key", "--port", str(first_hour.port),
        timeout=300,
    )  # fmt: skip
    assert res.returncode == 7, res
    line = error_line(res)
    assert "--wheelhouse" in line and "pip download" in line, line
    _, version, _ = first_hour.remote(
        "python3 -c 'import platform; print(platform.python_version())'"
    )
    assert f"--python-version {version.strip()} " in line, line  # the server's, not the laptop's
    assert "--platform manylinux" in line and "jupyterlab" in line, line
    assert first_hour.leftovers() == []


def test_server_paths_expand_in_the_servers_shell(tmp_path):
    """`~`, `~/x`, `$HOME/x` (what users type, and README's `--remote-venv '~/venvs/ml'`)
    expand in the server's shell; anything else, spaces and `$` included, stays literal."""
    home = tmp_path / "the home"  # a space in HOME must not split the word
    words = ["~", "~/venvs/ml/bin/python", "$HOME/x y", "${HOME}/z", "~root/a", "/opt/$x 'q'"]
    out = subprocess.run(
        ["sh", "-c", "printf '%s\\n' " + sh_join(words)],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout.splitlines()  # fmt: skip
    root_home = os.path.expanduser("~root")
    assert out == [
        str(home), f"{home}/venvs/ml/bin/python", f"{home}/x y", f"{home}/z", f"{root_home}/a",
        "/opt/$x 'q'",
    ]  # fmt: skip
