"""`start --install`: a host without the package gets it in a private venv, from a local wheel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from companion_helpers import (
    api,
    companion,
    companion_env,
    error_line,
    kill_runtimes,
    run_cli,
)
from runtime_process import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """This checkout built as a wheel (what a user uploads to a host without index access)."""
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        timeout=600, capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (path,) = out.glob("jupyter_colab_remote-*.whl")
    return path


def test_install_from_uploaded_wheel(tmp_path, sshd_server, ssh_client_files, wheel):
    """Without the package: a clear error; with --install --wheel: a working runtime from a venv."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    home = ssh_client_files.make_home(tmp_path / "home")
    env = companion_env(home, tmp_path)
    port = str(free_port())
    base = [
        "start",
        "gpu-box",
        "--port",
        port,
        "--json",
        "--remote-python",
        str(bare / "bin/python"),
    ]
    try:
        res = run_cli(*base, env=env)
        assert res.returncode == 7
        assert "not installed" in error_line(res) and "--install" in error_line(res)

        with companion([*base, "--install", "--wheel", str(wheel)], env, tmp_path / "logs") as c:
            record = c.read_record()
            assert api(record["url"], "/api/colab/build-info")[0] == 200
            venv = Path(sshd_server.remote_home) / ".local/share/jupyter-colab-remote/venv"
            # The runtime runs from the private venv, with the package installed there (a copy
            # from the uploaded wheel, not this checkout).
            runtime = psutil.Process(record["remote_pid"])
            assert runtime.cmdline()[0].startswith(str(venv))
            probe = "import jupyter_colab_remote as m; print(m.__file__)"
            where = subprocess.run(
                [str(venv / "bin/python"), "-c", probe],
                capture_output=True, text=True, check=True, cwd=tmp_path,
            ).stdout  # fmt: skip
            assert where.startswith(str(venv)), where
            assert "installing" in c.stderr()
            assert c.stop() == 0
        res = run_cli("stop", "gpu-box", env=env)
        assert res.returncode == 0 and "stopped the runtime" in res.stdout
    finally:
        kill_runtimes(env["JUPYTER_RUNTIME_DIR"])
