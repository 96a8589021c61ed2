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
from .verify import url_problem, verify_chain


class Check:
    """One named check with its outcome, the fix to suggest and the exit code if it fails."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ok: bool | None = None
        self.detail = ""
        self.fix = ""
        self.exit_code = 1

    def fail(self, detail: str, fix: str, exit_code: int = 1) -> None:
        """Mark the check failed; `exit_code` is what `start` exits with for the same cause."""
        self.ok, self.detail, self.fix, self.exit_code = False, detail, fix, exit_code


def run_doctor(args: argparse.Namespace) -> int:
    """Run the checks in order, stop at the first failure, print a fix; exit with the code
    `start` would give for that failure (README: exit codes), 1 for doctor's own findings."""
    checks: list[Check] = []

    def check(name: str) -> Check:
        c = Check(name)
        checks.append(c)
        return c

    conn: SSHConnection | None = None
    try:
        c = check("SSH config")
        target: SSHTarget = resolve(args.host)
        first = flatten_hops(target)[0]
        via = " via " + ", ".join(h.alias for h in target.proxy_jump) if target.proxy_jump else ""
        c.ok, c.detail = True, f"{target.describe()}{via}"

        c = check("DNS and TCP")
        if first.proxy_command:
            c.ok, c.detail = True, "skipped (ProxyCommand)"
        else:
            try:
                with socket.create_connection((first.hostname, first.port), timeout=5):
                    pass
                c.ok, c.detail = True, f"{first.hostname}:{first.port} reachable"
            except OSError as e:
                c.fail(
                    f"{first.hostname}:{first.port}: {e}",
                    "check the host name and port, your network or VPN, and that sshd runs",
                    ConnectError.exit_code,
                )
                return _report(checks)

        c = check("SSH host key and authentication")
        try:
            conn = connect(
                target, ConnectOptions(accept_new_host_key=args.accept_new_host_key, timeout=10)
            )
            c.ok, c.detail = True, "host key known, authenticated"
        except HostKeyError as e:
            c.fail(str(e), "verify the fingerprint, then rerun with --accept-new-host-key", 3)
            return _report(checks)
        except AuthError as e:
            c.fail(str(e), "ssh-copy-id the key, load it into ssh-agent, or check the password", 4)
            return _report(checks)
        except ConnectError as e:
            c.fail(str(e), "check that the host runs an SSH server on that port", 5)
            return _report(checks)

        c = check("remote Python and package")
        agent = RemoteAgent(conn, interpreter(args))
        try:
            info = agent.check_version()
            c.ok, c.detail = (
                True,
                f"jupyter-colab-remote {info['version']}, Python {info['python']}",
            )
        except CompanionError as e:
            c.fail(str(e), f"jupyter colabremote start {args.host} --install", e.exit_code)
            return _report(checks)

        record = state.load(args.host, args.profile) or {}
        image = getattr(args, "image", None) or record.get("image")
        if image:  # Colab's image in a container: engine, image, GPUs, container, port
            request = {"profile": args.profile, "image": image, "gpus": args.gpus}
            request["engine"] = args.engine or record.get("engine")
            for item in agent.call("container-doctor", request)["checks"]:
                c = check(item["name"])
                c.ok, c.detail = item["ok"], item["detail"]
                c.fix = item["fix"].replace(" HOST", f" {args.host}")
                if not c.ok:
                    c.exit_code = ExitCode.CONTAINER
                    return _report(checks)
            remote_port = record.get("remote_port")
        else:
            c = check("runtime")
            runtimes = [
                r for r in agent.call("status")["runtimes"] if r.get("profile") == args.profile
            ]
            if not runtimes:
                c.fail(
                    f"no runtime running for profile {args.profile!r}",
                    f"jupyter colabremote start {args.host}",
                )
                return _report(checks)
            rt = runtimes[0]
            remote_port = rt["port"]
            c.ok, c.detail = True, f"pid {rt['pid']} on remote port {rt['port']}"

        mode = "container" if image else "native"
        c = check("token and Colab origin")
        if not record.get("token") or not remote_port:
            c.fail(
                "this machine holds no token for that runtime",
                f"jupyter colabremote start {args.host}",
            )
            return _report(checks)
        # Through a forward of doctor's own: the runtime is checked even with no tunnel up.
        link = Link()
        link.set(conn.transport, ("127.0.0.1", int(remote_port)))
        probe = Forwarder(0, link).start()
        try:
            try:
                verify_chain(probe.port, record["token"], timeout=10, mode=mode)
                c.ok, c.detail = True, "token accepted; Colab's preflight and probe pass"
            except CompanionError as e:
                c.fail(str(e), f"jupyter colabremote start {args.host}", e.exit_code)
                return _report(checks)
            if mode == "native":
                c = check("Python kernel")
                try:
                    verify_kernel(probe.port, record["token"], args.host)
                    c.ok, c.detail = True, "a kernel started and ran 1+1"
                except CompanionError as e:
                    c.fail(str(e), "install ipykernel in the runtime's environment (see above)", 7)
                    return _report(checks)
        finally:
            probe.close()

        c = check("local forward")
        port = record.get("local_port")
        if not port or not state.companion_alive(record):
            c.fail(
                "no companion is forwarding a local port for this host",
                f"jupyter colabremote start {args.host}",
            )
            return _report(checks)
        problem = url_problem(int(port), record["token"], mode)
        if problem:
            c.fail(f"localhost:{port}: {problem}", f"jupyter colabremote start {args.host}")
            return _report(checks)
        c.ok, c.detail = True, f"localhost:{port} (companion pid {record['companion_pid']})"
        return _report(checks)
    except CompanionError as e:
        c = checks[-1] if checks else check("setup")
        c.fail(str(e), c.fix, e.exit_code)
        return _report(checks)
    finally:
        if conn is not None:
            conn.close()


def _report(checks: t.Sequence[Check]) -> int:
    failed = None
    for c in checks:
        mark = "ok  " if c.ok else "FAIL"
        print(f"  [{mark}] {c.name:34} {c.detail}")
        if not c.ok and failed is None:
            failed = c
    if failed is None:
        print("All checks passed: Colab can use this runtime.")
        return 0
    if failed.fix:
        print(f"\nFix: {failed.fix}")
    return failed.exit_code
