"""A real Jupyter Enterprise Gateway 3.3.0 whose kernels run on a second "host" over SSH.

EG pins jupyter_server<2 / jupyter_client<7, so it lives in its own venv (`$EG_VENV`, default
`.venv-eg`, made by tests/run.sh); it is started from there as a subprocess and stopped by PID.
Its HTTP API listens on 127.0.0.1 only, with the token from EG_AUTH_TOKEN (never on a command
line). The second host is a network namespace (`sshd.remote_host_netns`) running a real
OpenSSH sshd: EG's DistributedProcessProxy logs in with paramiko (key from $HOME/.ssh, host
key checked against $HOME/.ssh/known_hosts with RejectPolicy) and runs our kernel launcher
(harness/eg_launcher.py, EG venv python) there with nohup; the launcher reports back to EG's
response socket on the host end of the veth (EG_RESPONSE_IP), and EG then talks ZMQ to the
kernel at the namespace's address. So all traffic stays on loopback and the test's veth.

The namespace shares this machine's filesystem: the launcher and the EG venv are reached by
the same paths, and kernel logs (EG_KERNEL_LOG_DIR) land in the test directory.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from . import ROOT
from .gateway import KernelGateway
from .netns import NetNS
from .processes import SYSTEM_PATH, free_port

EG_VENV = Path(os.environ.get("EG_VENV", ROOT / ".venv-eg"))
EG_PYTHON = EG_VENV / "bin" / "python"
LAUNCHER = Path(__file__).resolve().with_name("eg_launcher.py")
DISTRIBUTED = "enterprise_gateway.services.processproxies.distributed.DistributedProcessProxy"


def require_eg_venv() -> None:
    """Skip unless the EG venv has enterprise_gateway and ipykernel (tests/run.sh makes it)."""
    site = list(EG_VENV.glob("lib/python3*/site-packages"))
    if not EG_PYTHON.exists() or not site:
        pytest.skip(f"no Enterprise Gateway venv at {EG_VENV} (tests/run.sh creates it)")
    for pkg in ("enterprise_gateway", "ipykernel", "Cryptodome"):
        if not (site[0] / pkg).is_dir():
            pytest.skip(f"{pkg} missing from {EG_VENV} (tests/run.sh installs it)")


def write_kernelspec(share: Path, name: str = "python3") -> Path:
    """A kernelspec under SHARE/kernels/NAME whose kernels EG starts on its remote hosts."""
    spec_dir = share / "kernels" / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "display_name": "Python 3 (remote host via Enterprise Gateway)",
        "language": "python",
        "metadata": {"process_proxy": {"class_name": DISTRIBUTED}},
        # EG fills in the {placeholders}; the launcher runs on the remote host.
        "argv": [
            str(EG_PYTHON),
            str(LAUNCHER),
            "--kernel-id",
            "{kernel_id}",
            "--response-address",
            "{response_address}",
            "--public-key",
            "{public_key}",
        ],
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir


class EnterpriseGateway(KernelGateway):
    """`python -m enterprise_gateway` from the EG venv, launching kernels on `ns` over SSH.

    HOME (DIR/home) must hold `.ssh/id_*` authorized on the namespace's sshd and, for EG to
    connect at all, `.ssh/known_hosts` with its host key. Kernelspecs come from DIR/share
    (JUPYTER_PATH): `python3` is the distributed one.
    """

    def __init__(self, directory: Path, ns: NetNS, token: str | None = None) -> None:
        super().__init__(directory, token)
        self.ns = ns
        # The port kernels report their connection info to, on the host end of the veth.
        self.response_port = free_port(ns.host_addr)
        self.kernel_log_dir = directory / "kernel-logs"
        self.kernel_log_dir.mkdir(exist_ok=True)
        write_kernelspec(directory / "share")

    @property
    def home(self) -> Path:
        """EG's HOME (paramiko reads ~/.ssh from here)."""
        return self.dir / "home"

    def argv(self) -> list[str]:
        """EG's command line: HTTP on 127.0.0.1 only; no token or key on it."""
        return [
            str(EG_PYTHON),
            "-m",
            "enterprise_gateway",
            "--EnterpriseGatewayApp.ip=127.0.0.1",
            f"--EnterpriseGatewayApp.port={self.port}",
            "--EnterpriseGatewayApp.port_retries=0",
        ]

    def env(self) -> dict[str, str]:
        """EG's environment. DistributedProcessProxy exports all of it into the remote command,
        so nothing of ours (agent socket, our venv) goes along."""
        drop = ("JUPYTER_", "KG_", "EG_", "SSH_", "VIRTUAL_ENV", "PYTHON")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.update(
            HOME=str(self.home),
            PATH=f"{EG_PYTHON.parent}:{SYSTEM_PATH}",
            JUPYTER_PATH=str(self.dir / "share"),
            JUPYTER_RUNTIME_DIR=str(self.dir / "runtime"),
            JUPYTER_DATA_DIR=str(self.dir / "data"),
            JUPYTER_CONFIG_DIR=str(self.dir / "config"),
            EG_AUTH_TOKEN=self.token,  # EG's token; EG drops it from kernel environments
            EG_LIST_KERNELS="True",  # jupyter_server's gateway client lists kernels
            EG_REMOTE_HOSTS=self.ns.addr,
            EG_REMOTE_USER="root",  # the harness sshd allows root (key only)
            EG_RESPONSE_IP=self.ns.host_addr,
            EG_RESPONSE_PORT=str(self.response_port),
            EG_RESPONSE_PORT_RETRIES="0",
            EG_KERNEL_LOG_DIR=str(self.kernel_log_dir),  # on the remote host = same disk here
        )
        return env

    def set_known_hosts(self, text: str) -> None:
        """Replace EG's ~/.ssh/known_hosts (re-read by EG for every SSH connection)."""
        path = self.home / ".ssh" / "known_hosts"
        path.write_text(text)
        path.chmod(0o600)

    def kernel_logs(self) -> str:
        """The remote kernels' stdout/stderr (nohup ... >> EG_KERNEL_LOG_DIR/kernel-ID.log)."""
        return "".join(p.read_text(errors="replace") for p in self.kernel_log_dir.glob("*.log"))


def launcher_processes(ns: NetNS) -> list[psutil.Process]:
    """Processes inside the namespace running our kernel launcher (the kernels)."""
    found = []
    for pid in ns.pids():
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if str(LAUNCHER) in p.cmdline():
                found.append(p)
    return found


def net_namespace_inode(pid: int) -> int:
    """The inode of a process's network namespace (as in /proc/PID/ns/net -> net:[INODE])."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


@contextlib.contextmanager
def enterprise_gateway(directory: Path, ns: NetNS) -> Iterator[EnterpriseGateway]:
    """A started EnterpriseGateway, stopped by PID afterwards whatever happened."""
    require_eg_venv()
    gw = EnterpriseGateway(directory, ns)
    try:
        yield gw.start()
    finally:
        gw.stop()
