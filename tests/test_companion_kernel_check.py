"""A runtime that cannot run Python is reported by `start` and `doctor`, with the fix (issue 9).

Real sshd and runtime, in two set-ups (ipykernel cannot be removed from the shared test
environment while other tests use it; tests/test_kernel_check.py covers the runtime side):
- `no-kernelspec`: the runtime offers no kernelspec at all, as an environment without
  ipykernel does; simulated with the remote user's Jupyter config
  (`KernelSpecManager.allowed_kernelspecs` naming none that exists).
- `stale-kernelspec`: the remote user's own `python3` kernelspec (preferred over the
  environment's with JUPYTER_PREFER_ENV_PATH=0) runs Debian's /usr/bin/python3, which has no
  ipykernel, as a kernelspec left from a removed environment does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.companion import api, companion_env, error_line, kill_runtimes, run_cli, token_of
from tests.harness.processes import SYSTEM_PATH, free_port
from tests.harness.sshd import run_sshd

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]


def remote_setup(tmp_path: Path, case: str) -> dict[str, str]:
    """The remote sessions' environment for a case (see the module docstring)."""
    env = {"PATH": SYSTEM_PATH}
    if case == "no-kernelspec":
        config = tmp_path / "remote-config"
        config.mkdir()
        settings = {"KernelSpecManager": {"allowed_kernelspecs": ["not-installed"]}}
        (config / "jupyter_server_config.json").write_text(json.dumps(settings))
        return {**env, "JUPYTER_CONFIG_DIR": str(config)}
    python = "/usr/bin/python3"
    probe = subprocess.run([python, "-c", "import ipykernel"], capture_output=True, timeout=30)
    if probe.returncode == 0:
        pytest.skip(f"{python} has ipykernel")
    data = tmp_path / "remote-data"
    spec = data / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return {**env, "JUPYTER_DATA_DIR": str(data), "JUPYTER_PREFER_ENV_PATH": "0"}


@pytest.mark.parametrize("case", ["no-kernelspec", "stale-kernelspec"])
def test_start_and_doctor_report_a_runtime_without_python(tmp_path, ssh_client_files, case):
    """start exits 7 naming the environment and what to install; doctor exits 7 at the
    'Python kernel' check (after token and origin passed); POST /api/kernels answers JSON."""
    set_env = remote_setup(tmp_path, case)
    with run_sshd(tmp_path, name="sshd", set_env=set_env) as server:
        ssh_client_files.add_host("gpu-box", server)
        env = companion_env(ssh_client_files.make_home(tmp_path / "home"), tmp_path)
        try:
            port = free_port()
            args = ["start", "gpu-box", "--port", str(port), "--remote-python", sys.executable]
            res = run_cli(*args, env=env, timeout=120)
            assert res.returncode == 7, res.stderr
            msg = error_line(res)
            assert "on gpu-box" in msg and "Python kernel" in msg and "ipykernel" in msg, msg

            res = run_cli("doctor", "gpu-box", env=env, timeout=120)
            assert res.returncode == 7, res.stdout + res.stderr
            assert "[ok  ] token and Colab origin" in res.stdout, res.stdout
            assert "[FAIL] Python kernel" in res.stdout and "ipykernel" in res.stdout
            assert "Traceback" not in res.stderr

            # The runtime itself answers Colab's kernel request with the same advice.
            record = json.loads(
                next(
                    Path(env["JUPYTER_DATA_DIR"]).glob("colabremote/connections/*.json")
                ).read_text()
            )
            remote_rt = next(
                Path(server.remote_env["JUPYTER_RUNTIME_DIR"]).glob("colabremote-[0-9]*.json")
            )
            url = f"http://127.0.0.1:{json.loads(remote_rt.read_text())['port']}/?token={record['token']}"
            code, body = api(url, "/api/kernels", "POST", {"name": "python3"})
            assert code != 201 and code < 600
            message = json.loads(body)["message"]
            assert "ipykernel" in message and "Unhandled error" not in message, message
            assert token_of(url) not in message
        finally:
            kill_runtimes(server.remote_env["JUPYTER_RUNTIME_DIR"])
