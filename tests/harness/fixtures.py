"""The harness's pytest fixtures (registered by tests/conftest.py through `pytest_plugins`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from . import ROOT
from .install_env import WHEELHOUSE, offline_env
from .netns import remote_host_netns
from .runtime import run_runtime
from .ssh_client import SSHClientFiles
from .sshd import run_sshd


@pytest.fixture
def ssh_client_files(tmp_path):
    """An SSHClientFiles in tmp_path/client, its clients closed after the test."""
    files = SSHClientFiles(tmp_path / "client")
    yield files
    files.close()


@pytest.fixture
def sshd_server(tmp_path, ssh_client_files):
    """An sshd on loopback, known to ssh_client_files as `gpu-box` (root, key auth)."""
    with run_sshd(tmp_path, name="sshd") as server:
        ssh_client_files.add_host("gpu-box", server)
        yield server


@pytest.fixture
def remote_netns():
    """A network namespace "remote host" (NetNS), removed after the test."""
    with remote_host_netns() as ns:
        yield ns


@pytest.fixture
def runtime(tmp_path):
    """A real `jupyter colabremote serve` subprocess on a free loopback port."""
    with run_runtime(tmp_path) as rt:
        yield rt


# ---------------------------------------------------------------------------------------------
# `--install`: a wheel of this checkout, its dependencies' wheelhouse, a laptop venv


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """The dependencies as wheels for this machine's Python (tests/run.sh fills it)."""
    if not (WHEELHOUSE / ".complete").exists():
        pytest.skip(f"{WHEELHOUSE} is missing: tests/run.sh fills it (pip download, once)")
    return WHEELHOUSE


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory) -> Path:
    """This checkout built as a wheel (pip wheel --no-deps, no build isolation), once."""
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        timeout=600, capture_output=True, text=True, env=offline_env(),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (path,) = out.glob("jupyter_colab_remote-*.whl")
    return path


@pytest.fixture(scope="session")
def laptop_python(tmp_path_factory, project_wheel, wheelhouse) -> str:
    """A fresh venv holding only the package (no test extras): `pip install .` as a new user
    does it, from the wheel and the wheelhouse. Its interpreter."""
    venv = tmp_path_factory.mktemp("laptop") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin/python")
    done = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
         "--find-links", str(wheelhouse), str(project_wheel)],
        timeout=600, capture_output=True, text=True, env=offline_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return python
