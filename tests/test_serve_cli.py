"""`jupyter colabremote serve` and `token`, run as a user would, as real processes."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.harness.processes import free_port, stop_process
from tests.harness.runtime import run_runtime, wait_for_runtime_file

#: Exercises the jupyter_server extension: also run at the lowest dependency versions.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.server,
]


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `jupyter colabremote ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "jupyter_colab_remote", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def http_code(url: str) -> int:
    """GET url; return the status code (errors included)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def env_for(rt) -> dict:
    """The environment under which the CLI finds this runtime."""
    return {
        "HOME": str(rt.home),
        "JUPYTER_RUNTIME_DIR": str(rt.runtime_dir),
        "JUPYTER_DATA_DIR": str(rt.token_file.parent.parent),
    }


def all_cmdlines(root_pid: int) -> list[str]:
    """Command lines of a process and all its descendants (the server and its kernels)."""
    proc = psutil.Process(root_pid)
    return [" ".join(p.cmdline()) for p in [proc, *proc.children(recursive=True)]]


def test_first_start_prints_a_working_url_once(tmp_path):
    """A new user runs `serve` and gets a URL to paste into Colab; the token is shown once."""
    env = {
        "HOME": str(tmp_path),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
    }
    port = free_port()
    out = tmp_path / "out.txt"
    err = tmp_path / "err.txt"
    args = [
        sys.executable,
        "-m",
        "jupyter_colab_remote",
        "serve",
        f"--port={port}",
        f"--ServerApp.root_dir={tmp_path}",
    ]
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(
            args,
            env={**os.environ, **env},
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        info = wait_for_runtime_file(tmp_path / "rt", proc.pid, proc, 60)
        assert info["port"] == port
        match = re.search(r"http://localhost:(\d+)/\?token=([0-9a-f]{64})", out.read_text())
        assert match, out.read_text()
        token = match.group(2)
        assert token not in json.dumps(info)
        assert http_code(f"http://127.0.0.1:{port}/api/colab/build-info?token={token}") == 200
        assert http_code(f"http://127.0.0.1:{port}/api/colab/build-info?token=x") == 403
        token_file = tmp_path / "data" / "colabremote" / "tokens.json"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert token not in token_file.read_text()
        # The token travels in neither the log nor any process's arguments.
        assert token not in err.read_text()
        assert not any(token in c for c in all_cmdlines(proc.pid))
    finally:
        stop_process(proc)
    assert not (tmp_path / "rt" / f"colabremote-{proc.pid}.json").exists()

    # A second start keeps the token (Colab's saved URL still works) and does not reprint it.
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(
            args,
            env={**os.environ, **env},
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for_runtime_file(tmp_path / "rt", proc.pid, proc, 60)
        assert http_code(f"http://127.0.0.1:{port}/api/colab/build-info?token={token}") == 200
        assert token not in out.read_text()
        assert "jupyter colabremote token rotate default" in out.read_text()
    finally:
        stop_process(proc)


def test_port_zero_reports_the_port_it_listens_on(tmp_path):
    """`serve --port=0` (as the companion's agent starts it): the runtime file names the
    port the server really listens on, not 0."""
    with run_runtime(tmp_path, port=0) as rt:
        info = wait_for_runtime_file(rt.runtime_dir, rt.proc.pid, rt.proc, 5)
        assert info["port"] != 0 and info["url"] == f"http://localhost:{info['port']}/"
        assert http_code(f"{rt.base}/api/colab/build-info?token={rt.token}") == 200


def test_a_configured_jupyter_token_is_refused_with_a_warning(tmp_path):
    """A token set the usual Jupyter ways does not open the runtime, and `serve` says why,
    without printing it (issue 10, item 13)."""
    configured = "c" * 64
    with run_runtime(
        tmp_path, env={"JUPYTER_TOKEN": configured},
        extra_args=[f"--IdentityProvider.token={'d' * 64}"],
    ) as rt:  # fmt: skip
        assert http_code(f"{rt.base}/api/kernelspecs?token={configured}") == 403
        assert http_code(f"{rt.base}/api/kernelspecs?token={'d' * 64}") == 403
        assert http_code(f"{rt.base}/api/kernelspecs?token={rt.token}") == 200
        log = rt.log()
        assert "is not used by this runtime" in log and "token new NAME" in log
        assert configured not in log


def test_token_never_in_logs_or_arguments_while_in_use(tmp_path):
    """Debug logging, requests with the token and a running kernel: the token leaks nowhere."""
    with run_runtime(tmp_path, extra_args=["--debug"]) as rt:
        base = f"{rt.base}/api"
        req = urllib.request.Request(
            f"{base}/kernels?token={rt.token}", data=b'{"name":"python3"}', method="POST"
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            kid = json.load(r)["id"]
        assert http_code(f"{base}/kernels/{kid}?token={rt.token}") == 200
        assert http_code(f"{base}/colab/resources?token={rt.token}") == 200
        cmdlines = all_cmdlines(rt.proc.pid)
        assert any("ipykernel" in c for c in cmdlines)  # the kernel is among them
        assert not any(rt.token in c for c in cmdlines)
        log = rt.log()
        assert "/api/kernels" in log  # requests were logged...
        assert rt.token not in log  # ...with the token masked
        assert "token=[secret]" in log or "token=" not in log


def test_non_loopback_bind_is_refused(tmp_path):
    """`--ip=0.0.0.0` is a one-line error, not a server open to the network."""
    r = cli(
        "serve",
        "--ip=0.0.0.0",
        f"--port={free_port()}",
        env={"JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_DATA_DIR": str(tmp_path)},
    )
    assert r.returncode == 2
    assert "refusing to listen on 0.0.0.0" in r.stderr
    assert "Traceback" not in r.stderr
    assert "allow_remote_bind" in r.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus"], "unknown command 'bogus'"),
        (["token", "rotate", "nope"], "no token named 'nope'"),
        (["token", "new", "bad name"], "invalid token name"),
        (["token", "new", "x", "--expires-in", "soon"], "invalid duration"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(tmp_path, args, message):
    """Mistakes print a single clear line and exit 2."""
    r = cli(*args, env={"JUPYTER_DATA_DIR": str(tmp_path), "JUPYTER_RUNTIME_DIR": str(tmp_path)})
    assert r.returncode == 2, r
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_token_commands_against_the_running_server(tmp_path):
    """new/list/rotate/revoke act on the running server's store and take effect at once."""
    with run_runtime(tmp_path) as rt:
        env = env_for(rt)
        check = f"{rt.base}/api/colab/build-info?token="

        r = cli("token", "new", "phone", "--expires-in", "7d", env=env)
        assert r.returncode == 0, r.stderr
        url = r.stdout.strip()
        assert url.startswith(f"http://localhost:{rt.port}/?token=")
        phone = url.rsplit("=", 1)[1]
        assert http_code(check + phone) == 200

        r = cli("token", "list", env=env)
        assert r.returncode == 0
        names = [line.split()[0] for line in r.stdout.splitlines()[1:]]
        assert names == ["test", "phone"]
        assert phone not in r.stdout and rt.token not in r.stdout

        r = cli("token", "rotate", "test", env=env)
        assert r.returncode == 0
        rotated = r.stdout.strip().rsplit("=", 1)[1]
        assert http_code(check + rt.token) == 403
        assert http_code(check + rotated) == 200

        r = cli("token", "revoke", "phone", env=env)
        assert r.returncode == 0
        assert http_code(check + phone) == 403
        assert http_code(check + rotated) == 200


def test_help_and_version():
    """`--help` and `--version` answer without starting anything."""
    from jupyter_colab_remote import __version__

    assert cli("--version").stdout.strip() == __version__
    r = cli("--help")
    assert r.returncode == 0 and "serve" in r.stdout and "token" in r.stdout
    r = cli("serve", "--help-all")
    assert r.returncode == 0 and "--ColabRemoteApp.token_file" in r.stdout
    assert "--ColabRemoteApp.cull_idle_timeout" in r.stdout


def test_package_enables_the_extension_on_install():
    """The jupyter-config file shipped in the wheel turns the extension on for jupyter_server."""
    root = Path(__file__).resolve().parent.parent
    cfg = json.loads(
        (root / "jupyter-config/jupyter_server_config.d/jupyter_colab_remote.json").read_text()
    )
    assert cfg["ServerApp"]["jpserver_extensions"]["jupyter_colab_remote"] is True
    r = subprocess.run(
        [sys.executable, "-m", "jupyter_server", "extension", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    listing = r.stdout + r.stderr
    assert re.search(r"jupyter_colab_remote.*enabled", listing), listing
