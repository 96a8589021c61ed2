"""A new user's runtime can run a cell, and says what to install when it cannot.

Real `jupyter colabremote serve` processes. The package depends on ipykernel, so this venv
(what `pip install jupyter-colab-remote` gives) always has a Python kernel; the runtimes
without a usable kernel are made with real configuration instead of a second environment:

- no kernelspec: `--KernelSpecManager.allowed_kernelspecs` names a kernel that does not exist,
  so `/api/kernelspecs` is empty, as in an environment without ipykernel. (Removing the kernel
  directories is not possible here: ipykernel's wheel puts `python3` into sys.prefix, which
  jupyter_client always searches, and `ensure_native_kernel=False` does not hide it.)
- a kernelspec whose Python lacks ipykernel: `python3` in a JUPYTER_PATH directory (searched
  first) runs Debian's /usr/bin/python3, which has no ipykernel.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import shutil
import subprocess
import sys

import pytest

from tests.harness.runtime import run_runtime
from tests.harness.runtime_api import local_kernels, rest, run_on, status_doc

pytestmark = [pytest.mark.e2e]

SESSION = {"path": "Untitled.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
SYSTEM_PYTHON = "/usr/bin/python3"


def assert_kernel_error(code: int, body, status: int, *needles: str) -> str:
    """A JSON error (never "Unhandled error") whose message contains each needle."""
    assert code == status, body
    assert isinstance(body, dict), body
    message = body["message"]
    assert "Unhandled error" not in message
    for needle in needles:
        assert needle in message, message
    return message


def system_python_lacks_ipykernel() -> str | None:
    """Why the second case cannot run here, or None."""
    if not shutil.which(SYSTEM_PYTHON):
        return f"no {SYSTEM_PYTHON}"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import ipykernel"], capture_output=True)
    return None if probe.returncode else f"{SYSTEM_PYTHON} has ipykernel"


def test_pip_install_gives_a_runtime_that_runs_a_cell(runtime):
    """ipykernel is a dependency; the runtime lists python3 and runs a cell, started through a
    session as Colab does, in the Python of the runtime's own environment."""
    requires = importlib.metadata.requires("jupyter-colab-remote") or []
    assert any(r.startswith("ipykernel") and "extra" not in r for r in requires), requires
    code, _, specs = rest(runtime, "GET", "/api/kernelspecs")
    assert code == 200 and "python3" in specs["kernelspecs"], specs
    assert specs["kernelspecs"]["python3"]["spec"]["language"] == "python"
    doc = status_doc(runtime)
    assert doc["runtime"] is True
    available = doc["kernels_available"]
    assert available["python"] is True and available["advice"] is None, available
    assert "python3" in available["kernelspecs"]

    code, _, session = rest(runtime, "POST", "/api/sessions", SESSION)
    assert code == 201, session
    kid = session["kernel"]["id"]
    (out,) = asyncio.run(run_on(runtime, kid, "import sys; print(sys.prefix, 6 * 7)"))
    assert out.strip() == f"{sys.prefix} 42"


def test_no_kernelspec_answers_what_to_install(tmp_path):
    """No kernelspec at all: kernel and session starts answer 503 with JSON naming the server's
    Python and `-m pip install ipykernel`; the status says so too; nothing is started."""
    args = ["--KernelSpecManager.allowed_kernelspecs=not-installed"]
    with run_runtime(tmp_path, extra_args=args) as rt:
        code, _, specs = rest(rt, "GET", "/api/kernelspecs")
        assert code == 200 and specs["kernelspecs"] == {}, specs
        install = f"{sys.executable} -m pip install ipykernel"
        for body in ({"name": "python3"}, None):
            code, headers, doc = rest(rt, "POST", "/api/kernels", body)
            message = assert_kernel_error(code, doc, 503, sys.executable, sys.prefix, install)
            assert headers["Content-Type"].startswith("application/json")
            assert doc["advice"] == install and doc["kernelspecs"] == []
        code, _, doc = rest(rt, "POST", "/api/sessions", SESSION)
        assert assert_kernel_error(code, doc, 503, install) == message
        code, _, sessions = rest(rt, "GET", "/api/sessions")
        assert sessions == []

        available = status_doc(rt)["kernels_available"]
        assert available["python"] is False and available["kernelspecs"] == []
        assert install in available["advice"]
        assert local_kernels(rt.proc.pid) == []
        assert "no Jupyter kernel to start" in rt.log()  # the server's log says it too


@pytest.mark.skipif(system_python_lacks_ipykernel() is not None, reason="needs a bare python")
def test_kernelspec_whose_python_lacks_ipykernel(tmp_path):
    """A python3 kernelspec running a Python without ipykernel: 503 naming that Python, the
    fix there and the server's own environment, instead of a kernel that dies at start."""
    spec_dir = tmp_path / "share" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    argv = [SYSTEM_PYTHON, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "System Python", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    with run_runtime(tmp_path, env={"JUPYTER_PATH": str(tmp_path / "share")}) as rt:
        code, _, specs = rest(rt, "GET", "/api/kernelspecs")
        assert specs["kernelspecs"]["python3"]["spec"]["argv"][0] == SYSTEM_PYTHON
        fix = f"{SYSTEM_PYTHON} -m pip install ipykernel"
        needles = (SYSTEM_PYTHON, "has no ipykernel", fix, sys.executable, str(spec_dir))
        code, _, doc = rest(rt, "POST", "/api/kernels", {"name": "python3"})
        assert_kernel_error(code, doc, 503, *needles)
        assert doc["advice"] == fix
        code, _, doc = rest(rt, "POST", "/api/sessions", SESSION)
        assert_kernel_error(code, doc, 503, *needles)
        assert local_kernels(rt.proc.pid) == []

        # A name that is not installed is the client's mistake: 400, listing what there is.
        code, _, doc = rest(rt, "POST", "/api/kernels", {"name": "julia-1.10"})
        assert_kernel_error(code, doc, 400, "'julia-1.10'", "available: python3")

        available = status_doc(rt)["kernels_available"]
        assert available["python"] is False and fix in available["advice"]
