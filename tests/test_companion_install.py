"""`start --install`: the wheel the companion brings, and a host without the package.

The wheel the companion makes of itself is compared with the one pip builds from this checkout
(from the development install these tests run in, and from a regular install in a fresh
venv). Against a real sshd whose `python3` is Debian's with nothing installed: a clear error
without --install; `--install --wheel FILE` with `--remote-python` of a system interpreter
installs FILE into the private venv made from it. The host's dependencies come from the
wheelhouse (PIP_FIND_LINKS; pip kept offline), see tests/harness/install_env.py.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import psutil
import pytest

from jupyter_colab_remote.companion import wheels
from tests.harness.companion import (
    api,
    companion,
    companion_env,
    error_line,
    kill_runtimes,
    run_cli,
)
from tests.harness.install_env import SYSTEM_PYTHON, offline_env, server_env
from tests.harness.processes import free_port
from tests.harness.sshd import run_sshd

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]

#: Files of a wheel that describe how it was made, not what it installs.
MADE_BY = ("RECORD", "WHEEL")


def wheel_files(path: Path) -> dict[str, bytes]:
    """A wheel's files and contents, without RECORD and WHEEL; of METADATA its headers (the
    description, README.md, is as old as the last `pip install -e .` in a development venv)."""
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist() if n.rsplit("/", 1)[-1] not in MADE_BY}
    for name in files:
        if name.endswith(".dist-info/METADATA"):
            files[name] = files[name].split(b"\n\n", 1)[0]
    return files


def test_own_wheel_of_a_development_install_is_the_built_wheel(tmp_path, project_wheel):
    """From `pip install -e .`: the package directory and pyproject's shared-data (the
    JupyterLab extension, the server config) give the files pip's build gives; cached."""
    built = wheels.own_wheel(tmp_path / "cache")
    assert built.name == project_wheel.name
    assert wheel_files(built) == wheel_files(project_wheel)
    assert wheels.own_wheel(tmp_path / "cache") == built  # cached: built once per content
    with zipfile.ZipFile(built) as z:
        assert z.testzip() is None


def test_own_wheel_of_a_regular_install_is_the_built_wheel(tmp_path, project_wheel, laptop_python):
    """From `pip install` of the wheel: repacked from RECORD (console scripts left out), the
    same files again; the laptop's cache directory holds it."""
    cache = tmp_path / "xdg-cache"
    made = subprocess.run(
        [laptop_python, "-c",
         "from jupyter_colab_remote.companion.wheels import own_wheel; print(own_wheel())"],
        capture_output=True, text=True, timeout=60, env=offline_env(XDG_CACHE_HOME=str(cache)),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    repacked = Path(made.stdout.strip())
    assert repacked.is_relative_to(cache / "jupyter-colab-remote")
    assert wheel_files(repacked) == wheel_files(project_wheel)


def test_install_from_given_wheel_into_private_venv(
    tmp_path, ssh_client_files, project_wheel, wheelhouse
):
    """Without the package: a clear error; with --install --wheel and --remote-python of a
    system interpreter: that wheel in a private venv made from it, and a working runtime."""
    env_extra = {"PIP_FIND_LINKS": str(wheelhouse)}
    with run_sshd(tmp_path, name="sshd", set_env=server_env(**env_extra)) as server:
        ssh_client_files.add_host("gpu-box", server)
        home = ssh_client_files.make_home(tmp_path / "home")
        env = companion_env(home, tmp_path)
        base = ["start", "gpu-box", "--port", str(free_port()), "--json"]
        try:
            res = run_cli(*base, env=env)
            assert res.returncode == 7
            assert "not installed" in error_line(res) and "--install" in error_line(res)

            args = [*base, "--install", "--wheel", str(project_wheel)]
            args += ["--remote-python", SYSTEM_PYTHON]
            with companion(args, env, tmp_path / "logs") as c:
                record = c.read_record(deadline=400)
                assert api(record["url"], "/api/colab/build-info")[0] == 200
                venv = server.remote_home / ".local/share/jupyter-colab-remote/venv"
                # The runtime runs from the private venv, with the package installed there (a
                # copy from the uploaded wheel, not this checkout).
                runtime = psutil.Process(record["remote_pid"])
                assert runtime.cmdline()[0].startswith(str(venv))
                probe = "import jupyter_colab_remote as m; print(m.__file__)"
                where = subprocess.run(
                    [str(venv / "bin/python"), "-c", probe],
                    capture_output=True, text=True, check=True, cwd=tmp_path,
                ).stdout  # fmt: skip
                assert where.startswith(str(venv)), where
                assert "installing jupyter-colab-remote" in c.stderr()
                assert c.stop() == 0
            res = run_cli("stop", "gpu-box", env=env)
            assert res.returncode == 0 and "stopped the runtime" in res.stdout
        finally:
            kill_runtimes(env["JUPYTER_RUNTIME_DIR"])
