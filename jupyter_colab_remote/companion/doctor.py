"""`jupyter colabremote doctor HOST`: check each hop of the chain and name the fix."""

from __future__ import annotations

import argparse
import socket
import typing as t

from ..protocol.errors import ExitCode
from . import state
from .agents import RemoteAgent
from .errors import AuthError, CompanionError, ConnectError, HostKeyError
from .forwarder import Forwarder, Link
from .kernel_check import verify_kernel
from .options import interpreter
from .ssh_connect import ConnectOptions, SSHConnection, connect, flatten_hops
from .ssh_target import SSHTarget, resolve
from .terminal_text import printable
from .verify import url_problem, verify_chain


class Check:
    """One named check with its outcome, the fix to suggest and the exit code if it fails."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ok: bool | None = None
        self.detail = ""
        self.fix = ""
        self.exit_code: int = ExitCode.ERROR

    def fail(self, detail: str, fix: str, exit_code: int = ExitCode.ERROR) -> bool:
        """Mark the check failed; `exit_code` is what `start` exits with for the same cause.
        False: the checks after it are not run."""
        self.ok, self.detail, self.fix, self.exit_code = False, detail, fix, exit_code
        return False

    def passed(self, detail: str) -> bool:
        """Mark the check passed; True: go on with the next one."""
        self.ok, self.detail = True, detail
        return True


class Doctor:
    """What the checks found so far: each check reads what the ones before it set up."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.checks: list[Check] = []
        self.target: SSHTarget | None = None
        self.conn: SSHConnection | None = None
        self.agent: RemoteAgent | None = None
        self.record: dict[str, t.Any] = {}
        self.image: str | None = None
        self.remote_port: int | None = None

    def check(self, name: str) -> Check:
        """Start the next check."""
        c = Check(name)
        self.checks.append(c)
        return c

    @property
    def again(self) -> str:
        """The command that starts (or re-attaches) the runtime."""
        return f"jupyter colabremote start {self.args.host}"


def check_ssh_config(d: Doctor) -> bool:
    """The host resolves through ~/.ssh/config (jumps included)."""
    c = d.check("SSH config")
    d.target = resolve(d.args.host)
    jumps = d.target.proxy_jump
    via = " via " + ", ".join(h.alias for h in jumps) if jumps else ""
    return c.passed(f"{d.target.describe()}{via}")


def check_tcp(d: Doctor) -> bool:
    """The first hop answers TCP."""
    c = d.check("DNS and TCP")
    assert d.target is not None
    first = flatten_hops(d.target)[0]
    if first.proxy_command:
        return c.passed("skipped (ProxyCommand)")
    try:
        with socket.create_connection((first.hostname, first.port), timeout=5):
            pass
    except OSError as e:
        return c.fail(
            f"{first.hostname}:{first.port}: {e}",
            "check the host name and port, your network or VPN, and that sshd runs",
            ConnectError.exit_code,
        )
    return c.passed(f"{first.hostname}:{first.port} reachable")


def check_ssh(d: Doctor) -> bool:
    """The host key is known and authentication works."""
    c = d.check("SSH host key and authentication")
    assert d.target is not None
    options = ConnectOptions(
        accept_new_host_key=d.args.accept_new_host_key,
        timeout=10,
        server_alive_interval=d.args.server_alive_interval,
        server_alive_count_max=d.args.server_alive_count_max,
    )
    try:
        d.conn = connect(d.target, options)
    except HostKeyError as e:
        fix = "verify the fingerprint, then rerun with --accept-new-host-key"
        return c.fail(str(e), fix, HostKeyError.exit_code)
    except AuthError as e:
        fix = "ssh-copy-id the key, load it into ssh-agent, or check the password"
        return c.fail(str(e), fix, AuthError.exit_code)
    except ConnectError as e:
        fix = "check that the host runs an SSH server on that port"
        return c.fail(str(e), fix, ConnectError.exit_code)
    return c.passed("host key known, authenticated")


def check_package(d: Doctor) -> bool:
    """The remote interpreter has a compatible jupyter-colab-remote."""
    c = d.check("remote Python and package")
    assert d.conn is not None
    d.agent = RemoteAgent(d.conn, interpreter(d.args))
    try:
        info = d.agent.check_version()
    except CompanionError as e:
        return c.fail(str(e), f"{d.again} --install", e.exit_code)
    return c.passed(f"jupyter-colab-remote {info['version']}, Python {info['python']}")


def check_runtime(d: Doctor) -> bool:
    """The profile's runtime runs (or, with an image, the engine, image, GPUs and container)."""
    assert d.agent is not None
    args = d.args
    d.record = state.load(args.host, args.profile) or {}
    d.image = getattr(args, "image", None) or d.record.get("image")
    if d.image:  # Colab's image in a container: engine, image, GPUs, container, port
        request = {"profile": args.profile, "image": d.image, "gpus": args.gpus}
        request["engine"] = args.engine or d.record.get("engine")
        for item in d.agent.call("container-doctor", request)["checks"]:
            c = d.check(item["name"])
            c.ok, c.detail = item["ok"], item["detail"]
            c.fix = item["fix"].replace(" HOST", f" {args.host}")
            if not c.ok:
                c.exit_code = ExitCode.CONTAINER
                return False
        d.remote_port = d.record.get("remote_port")
        return True
    c = d.check("runtime")
    mine = [r for r in d.agent.call("status")["runtimes"] if r.get("profile") == args.profile]
    if not mine:
        return c.fail(f"no runtime running for profile {args.profile!r}", d.again)
    d.remote_port = mine[0]["port"]
    return c.passed(f"pid {mine[0]['pid']} on remote port {mine[0]['port']}")


def check_token_and_kernel(d: Doctor) -> bool:
    """Through a forward of doctor's own (no tunnel needed): the token, Colab's preflight and
    probe, and for a native runtime a Python kernel."""
    c = d.check("token and Colab origin")
    if not d.record.get("token") or not d.remote_port:
        return c.fail("this machine holds no token for that runtime", d.again)
    assert d.conn is not None
    mode = "container" if d.image else "native"
    token = d.record["token"]
    link = Link()
    link.set(d.conn.transport, ("127.0.0.1", int(d.remote_port)))
    probe = Forwarder(0, link).start()
    try:
        try:
            verify_chain(probe.port, token, timeout=10, mode=mode)
        except CompanionError as e:
            return c.fail(str(e), d.again, e.exit_code)
        c.passed("token accepted; Colab's preflight and probe pass")
        if mode != "native":
            return True
        c = d.check("Python kernel")
        try:
            verify_kernel(probe.port, token, d.args.host)
        except CompanionError as e:
            fix = "install ipykernel in the runtime's environment (see above)"
            return c.fail(str(e), fix, ExitCode.PACKAGE)
        return c.passed("a kernel started and ran 1+1")
    finally:
        probe.close()


def check_local_forward(d: Doctor) -> bool:
    """A companion forwards a local port, and the URL works through it."""
    c = d.check("local forward")
    port = d.record.get("local_port")
    if not port or not state.companion_alive(d.record):
        return c.fail("no companion is forwarding a local port for this host", d.again)
    problem = url_problem(int(port), d.record["token"], "container" if d.image else "native")
    if problem:
        return c.fail(f"localhost:{port}: {problem}", d.again)
    return c.passed(f"localhost:{port} (companion pid {d.record['companion_pid']})")


#: The checks, in the order of the chain; the first failure stops the run.
CHECKS: tuple[t.Callable[[Doctor], bool], ...] = (
    check_ssh_config,
    check_tcp,
    check_ssh,
    check_package,
    check_runtime,
    check_token_and_kernel,
    check_local_forward,
)


def run_doctor(args: argparse.Namespace) -> int:
    """Run the checks in order, stop at the first failure, print a fix; exit with the code
    `start` would give for that failure (README: exit codes), 1 for doctor's own findings."""
    d = Doctor(args)
    try:
        for check in CHECKS:
            if not check(d):
                break
    except CompanionError as e:
        c = d.checks[-1] if d.checks else d.check("setup")
        c.fail(str(e), c.fix, e.exit_code)
    finally:
        if d.conn is not None:
            d.conn.close()
    return _report(d.checks)


def _report(checks: t.Sequence[Check]) -> int:
    failed = None
    for c in checks:
        mark = "ok  " if c.ok else "FAIL"
        print(f"  [{mark}] {c.name:34} {printable(c.detail)}")
        if not c.ok and failed is None:
            failed = c
    if failed is None:
        print("All checks passed: Colab can use this runtime.")
        return 0
    if failed.fix:
        print(f"\nFix: {failed.fix}")
    return failed.exit_code
