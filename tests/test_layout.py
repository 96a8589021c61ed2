"""The package layout: one subpackage per process, and the companion never loads the server's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness.companion import companion_env, kill_runtimes, run_cli, run_code, start_kernel
from tests.harness.processes import free_port

#: Imports every module of a package in a fresh interpreter and lists what got loaded.
PROBE = """
import json, pkgutil, importlib, sys
package = importlib.import_module(sys.argv[1])
for m in pkgutil.iter_modules(package.__path__):
    importlib.import_module(f"{package.__name__}.{m.name}")
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(package: str) -> list[str]:
    """The modules loaded by importing every module of `package`."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, package],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    loaded = json.loads(out)
    assert f"{package}.errors" in loaded or f"{package}.app" in loaded  # the probe did import
    return loaded


def test_companion_imports_neither_the_extension_nor_jupyter_server():
    """The laptop side runs without jupyter_server: none of the extension or agent is loaded."""
    offending = [
        m
        for m in loaded_by("jupyter_colab_remote.companion")
        if m.split(".")[0] == "jupyter_server"
        or m.startswith(("jupyter_colab_remote.extension", "jupyter_colab_remote.agent"))
    ]
    assert offending == []


def test_extension_imports_neither_the_companion_nor_the_agent():
    """The runtime's process loads the protocol it shares, not the other processes' code."""
    offending = [
        m
        for m in loaded_by("jupyter_colab_remote.extension")
        if m.startswith(("jupyter_colab_remote.companion", "jupyter_colab_remote.agent"))
    ]
    assert offending == []


@pytest.mark.e2e
def test_local_runtime_kernels_do_not_see_the_companions_secrets(tmp_path):
    """`start` without a host runs the agent as a local process with the git and gateway
    tokens removed from its environment: a kernel of the runtime does not see them, while
    an ordinary variable still reaches it (issue 10, item 7)."""
    secrets = {"GITHUB_TOKEN": "ghp-secret", "COLABREMOTE_GATEWAY_TOKEN": "gw-secret"}
    env = companion_env(tmp_path / "home", tmp_path, COLABREMOTE_PLAIN="plain", **secrets)
    (tmp_path / "home").mkdir()
    try:
        res = run_cli("start", "--port", str(free_port()), "--json", env=env, timeout=90)
        assert res.returncode == 0, res.stderr
        url = json.loads(res.stdout)["url"]
        kid = start_kernel(url)
        names = ["COLABREMOTE_PLAIN", *secrets]
        code = f"import os; [os.environ.get(n) for n in {names!r}]"
        assert run_code(url, kid, code) == ["['plain', None, None]"]
    finally:
        kill_runtimes(env["JUPYTER_RUNTIME_DIR"])
