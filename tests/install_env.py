"""What the `--install` tests share: a wheel of this checkout, the wheelhouse of its
dependencies, a laptop venv holding only the package, and a server environment without one.

`.wheelhouse/` (filled once by tests/run.sh with `pip download`) plays the package index:
tests that need it skip with the reason when it is missing. Every pip run here and on the
test "servers" is kept off the network (PIP_NO_INDEX=1, PIP_CONFIG_FILE=/dev/null).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sshd import SYSTEM_PATH

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / ".wheelhouse"
#: The server's Python: Debian's, with nothing installed for it.
SYSTEM_PYTHON = "/usr/bin/python3"
#: pip never reaches an index, from this machine's config or the environment.
OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}


def offline_env(**extra: str) -> dict[str, str]:
    """This process's environment with pip kept off the network (and off this machine's
    pip configuration: its find-links and constraints)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    return {**env, **OFFLINE_PIP, **extra}


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


def server_env(**extra: str | None) -> dict[str, str | None]:
    """`run_sshd(set_env=...)` for a server whose `python3` is Debian's, with nothing
    installed, and whose pip stays offline; `extra` adds (or with None removes) variables."""
    return {"PATH": SYSTEM_PATH, **OFFLINE_PIP, **extra}
