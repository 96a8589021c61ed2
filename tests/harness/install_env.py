"""What the `--install` tests share: the wheelhouse of the dependencies, pip kept offline, and a
server environment without the package (the wheel and laptop venv fixtures: fixtures.py).

`.wheelhouse/` (filled once by tests/run.sh with `pip download`) plays the package index:
tests that need it skip with the reason when it is missing. Every pip run here and on the
test "servers" is kept off the network (PIP_NO_INDEX=1, PIP_CONFIG_FILE=/dev/null).
"""

from __future__ import annotations

import os

from . import ROOT
from .processes import SYSTEM_PATH

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


def server_env(**extra: str | None) -> dict[str, str | None]:
    """`run_sshd(set_env=...)` for a server whose `python3` is Debian's, with nothing
    installed, and whose pip stays offline; `extra` adds (or with None removes) variables."""
    return {"PATH": SYSTEM_PATH, **OFFLINE_PIP, **extra}
