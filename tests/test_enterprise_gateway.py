"""Kernels on a second host through Jupyter Enterprise Gateway's distributed mode (issue 6).

Real processes throughout: a network namespace as the second host with OpenSSH's sshd in it
(key auth, generated keys), Enterprise Gateway 3.3.0 from its own venv (DistributedProcessProxy:
SSH to the host, `nohup` our launcher there, connection info back over its response socket),
and `jupyter colabremote serve --GatewayClient.url=...` in front of it with the gateway token
in its environment (JUPYTER_GATEWAY_AUTH_TOKEN). The kernel is driven through the runtime only.

Covered: EG refuses a host whose SSH host key is not in its known_hosts and the runtime passes
that on as a readable error; a kernel starts inside the namespace, keeps state, is interrupted
(SIGINT via the launcher's comm port), restarted (a new process there) and listed by the
runtime's status; after shutdown no kernel process is left on the host. Limits: one remote
host, root over SSH, no EG tunnelling (EG_ENABLE_TUNNELING), no kernel culling or EG restart
with persisted sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from jupyter_colab_remote.agent import gateway_launch
from tests.harness.enterprise_gateway import (
    EnterpriseGateway,
    enterprise_gateway,
    launcher_processes,
    net_namespace_inode,
    require_eg_venv,
)
from tests.harness.netns import NetNS, remote_host_netns
from tests.harness.runtime import Runtime, run_runtime
from tests.harness.runtime_api import (
    local_kernels,
    rest,
    run_interrupted,
    run_on,
    status_doc,
    wait_for,
)
from tests.harness.ssh_client import SSHClientFiles
from tests.harness.sshd import SSHServer, run_sshd

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.needs_root,
    pytest.mark.timeout(240),
]


@dataclass
class Setup:
    """The second host, its sshd, the gateway and the runtime in front of it."""

    ns: NetNS
    sshd: SSHServer
    gateway: EnterpriseGateway
    runtime: Runtime


@pytest.fixture
def eg_setup(tmp_path: Path) -> Iterator[Setup]:
    """sshd in a fresh namespace, EG launching kernels there, a runtime using EG."""
    require_eg_venv()  # skip before building anything
    with (
        remote_host_netns() as ns,
        run_sshd(tmp_path, netns=ns) as server,
        enterprise_gateway(tmp_path / "eg", ns) as eg,
    ):
        client = SSHClientFiles(tmp_path / "client")
        client.add_host("second-host", server)  # authorizes the key, records the host key
        client.make_home(eg.home)  # ~/.ssh/id_ed25519 and known_hosts for paramiko
        env = {
            gateway_launch.GATEWAY_TOKEN_ENV: eg.token,
            # EG refuses kernels for KERNEL_USERNAME root (EG_UNAUTHORIZED_USERS defaults to
            # root) and defaults it to the gateway client's user; the test runs as root.
            "KERNEL_USERNAME": "colab",
        }
        args = [f"--GatewayClient.url={eg.url}"]
        with run_runtime(tmp_path / "rt", args, env=env) as rt:
            yield Setup(ns, server, eg, rt)


def only_sshd_left(ns: NetNS) -> list[str]:
    """Names of processes in the namespace other than sshd (empty when only sshd is left)."""
    names = []
    for pid in ns.pids():
        with contextlib.suppress(psutil.Error):
            name = psutil.Process(pid).name()
            if name != "sshd":
                names.append(f"{pid}:{name}")
    return names


def is_gone(p: psutil.Process) -> bool:
    """Whether the process has exited (a zombie awaiting PID 1's reaping counts as exited)."""
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_unknown_host_key_is_refused(eg_setup: Setup) -> None:
    s = eg_setup
    s.gateway.set_known_hosts("")  # the key pair still works: only trust is missing
    code, _, err = rest(s.runtime, "POST", "/api/kernels", {"name": "python3"})
    assert code == 500, (code, err)
    message = err["message"]
    # EG's words, relayed once: it reports any SSH failure as an authentication failure (its
    # handler tests `e is paramiko.SSHException or ...`, always true) and drops paramiko's
    # "not found in known_hosts", in its log too; the host it tried is named.
    assert message.startswith(f"Kernel gateway {s.gateway.url}: the gateway answered HTTP 500")
    assert f"Failure occurred starting kernel on '{s.ns.addr}'" in message, message
    assert message.count("Failed to authenticate SSHClient with password-less SSH") == 1, message
    assert "Traceback" not in s.runtime.log()
    assert launcher_processes(s.ns) == []
    assert status_doc(s.runtime)["kernels"] == []


def test_kernel_runs_on_the_second_host(eg_setup: Setup) -> None:
    s = eg_setup
    rt = s.runtime
    code, _, specs = rest(rt, "GET", "/api/kernelspecs")
    assert code == 200, specs
    proxy = specs["kernelspecs"]["python3"]["spec"]["metadata"]["process_proxy"]
    assert proxy["class_name"].endswith("DistributedProcessProxy"), proxy

    code, _, model = rest(rt, "POST", "/api/kernels", {"name": "python3"})
    assert code == 201, (model, s.gateway.log()[-3000:], s.gateway.kernel_logs()[-3000:])
    kernel_id = model["id"]

    # The kernel is our launcher's process, inside the namespace, started through its sshd.
    (kernel,) = launcher_processes(s.ns)
    assert kernel_id in kernel.cmdline()
    assert net_namespace_inode(kernel.pid) == os.stat(s.ns.path).st_ino
    assert net_namespace_inode(kernel.pid) != net_namespace_inode(os.getpid())
    assert kernel.pid in {p.pid for p in s.sshd.processes()}  # a session of that sshd
    # None under the runtime (it may briefly run `npm prefix -g` at startup: not a kernel).
    assert local_kernels(rt.proc.pid) == []
    # The launcher's private connection file is gone once the kernel has bound its ports.
    assert not list(Path(tempfile.gettempdir()).glob(f"kernel-{kernel_id}-*.json"))

    assert asyncio.run(run_on(rt, kernel_id, "x = 41", "x + 1")) == ["", "42"]
    out = asyncio.run(run_on(rt, kernel_id, "import os; os.getpid()"))
    assert out == [str(kernel.pid)]

    ename, seconds = asyncio.run(run_interrupted(rt, kernel_id))
    assert ename == "KeyboardInterrupt" and seconds < 10, (ename, seconds)
    assert asyncio.run(run_on(rt, kernel_id, "x"))[0] == "41"  # interrupted, not restarted

    # A restart relaunches the kernel on the host (a new launcher process, a fresh namespace).
    code, _, body = rest(rt, "POST", f"/api/kernels/{kernel_id}/restart", {})
    assert code == 200, (body, s.gateway.log()[-3000:])
    out = asyncio.run(run_on(rt, kernel_id, "x", "import os; os.getpid()"))
    assert out[0].startswith("NameError"), out
    wait_for(lambda: is_gone(kernel), 20, "the first kernel process gone")
    (kernel,) = launcher_processes(s.ns)
    assert out[1] == str(kernel.pid)

    doc = status_doc(rt)
    assert doc["gateway"]["url"] == s.gateway.url and doc["gateway"]["reachable"] is True
    (record,) = doc["kernels"]
    assert record["id"] == kernel_id and record["name"] == "python3"
    assert record["memory_bytes"] is None  # not a process of ours

    code, _, body = rest(rt, "DELETE", f"/api/kernels/{kernel_id}")
    assert code == 204, body
    wait_for(lambda: not only_sshd_left(s.ns), 20, "only sshd left in the namespace")
    assert is_gone(kernel)
    assert status_doc(rt)["kernels"] == []
    code, body = s.gateway.api("/api/kernels")
    assert code == 200 and json.loads(body) == []

    # The gateway token: on no command line (EG, runtime, kernel), in no runtime log line.
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            assert s.gateway.token not in " ".join(p.cmdline()), p.pid
    assert s.gateway.token not in rt.log()
