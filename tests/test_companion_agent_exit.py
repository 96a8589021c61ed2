"""The SSH agent as the only key source, and `--stop-on-exit`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from tests.harness.companion import (
    api,
    companion,
    companion_env,
    kill_runtimes,
    run_cli,
    runtime_files,
    start_companion,
)
from tests.harness.processes import family, free_port, wait_gone

pytestmark = [pytest.mark.e2e, pytest.mark.needs_root]


def test_key_from_ssh_agent(tmp_path, sshd_server, ssh_client_files):
    """With the key only in a running ssh-agent (no key file in ~/.ssh), start works."""
    home = ssh_client_files.make_home(tmp_path / "home")
    key = tmp_path / "agent-key"
    shutil.move(home / ".ssh" / "id_ed25519", key)
    (home / ".ssh" / "id_ed25519.pub").unlink()
    # A typical user config: no IdentitiesOnly, so agent keys are offered (as OpenSSH does).
    config = home / ".ssh" / "config"
    config.write_text(config.read_text().replace("IdentitiesOnly yes", "IdentitiesOnly no"))
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    env = companion_env(home, tmp_path)
    try:
        agent_env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        for _ in range(100):  # the socket appears within milliseconds; bounded wait
            if sock.exists():
                break
            time.sleep(0.05)
        subprocess.run(["ssh-add", "-q", str(key)], env=agent_env, check=True, timeout=30)
        port = free_port()
        with companion(
            ["start", "gpu-box", "--port", str(port), "--json"],
            {**env, "SSH_AUTH_SOCK": str(sock)},
            tmp_path / "logs",
        ) as c:
            record = start_companion(c)
            assert api(record["url"], "/api/colab/build-info")[0] == 200
            assert c.stop() == 0
        # Without the agent there is no key at all: a clear authentication error.
        res = run_cli("start", "gpu-box", "--port", str(port), env=env)
        assert res.returncode == 4, res.stderr
        assert re.search(r"authentication to .* failed", res.stderr)
    finally:
        agent.terminate()
        agent.wait(10)
        kill_runtimes(env["JUPYTER_RUNTIME_DIR"])


def test_stop_on_exit_leaves_nothing_running(tmp_path, sshd_server, ssh_client_files):
    """Ctrl-C with --stop-on-exit stops the remote runtime and its kernels too."""
    home = ssh_client_files.make_home(tmp_path / "home")
    env = companion_env(home, tmp_path)
    remote_rt = sshd_server.remote_env["JUPYTER_RUNTIME_DIR"]
    try:
        args = ["start", "gpu-box", "--port", str(free_port()), "--json", "--stop-on-exit"]
        with companion(args, env, tmp_path / "logs") as c:
            record = start_companion(c)
            code, _ = api(record["url"], "/api/kernels", "POST", {"name": "python3"})
            assert code == 201
            procs = family(record["remote_pid"])
            assert len(procs) >= 2  # the runtime and its kernel
            assert c.stop(signal.SIGINT, timeout=60) == 0
            assert "stopped the remote runtime" in c.stderr()
        assert wait_gone(procs) == []
        assert runtime_files(remote_rt) == []
    finally:
        kill_runtimes(env["JUPYTER_RUNTIME_DIR"])
