"""`jupyter colabremote doctor HOST`: check each hop of the chain and name the fix."""

from __future__ import annotations

import argparse
import socket
import typing as t

from . import state
from .errors import AuthError, CompanionError, ConnectError, HostKeyError
from .remote import RemoteAgent, python_command
from .ssh_connect import ConnectOptions, SSHConnection, connect, flatten_hops
from .ssh_target import SSHTarget, resolve
from .verify import verify_chain


class Check:
    """One named check with its outcome and the fix to suggest when it fails."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ok: bool | None = None
        self.detail = ""
        self.fix = ""


def run_doctor(args: argparse.Namespace) -> int:
    """Run the checks in order, stop at the first failure, print a fix; exit 1 if any failed."""
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
                c.ok, c.detail = False, f"{first.hostname}:{first.port}: {e}"
                c.fix = "check the host name and port, your network or VPN, and that sshd runs"
                return _report(checks)

        c = check("SSH host key and authentication")
        try:
            conn = connect(
                target, ConnectOptions(accept_new_host_key=args.accept_new_host_key, timeout=10)
            )
            c.ok, c.detail = True, "host key known, authenticated"
        except HostKeyError as e:
            c.ok, c.detail = False, str(e)
            c.fix = "verify the fingerprint, then rerun with --accept-new-host-key"
            return _report(checks)
        except AuthError as e:
            c.ok, c.detail = False, str(e)
            c.fix = "ssh-copy-id the key, load it into ssh-agent, or check the password"
            return _report(checks)
        except ConnectError as e:
            c.ok, c.detail = False, str(e)
            c.fix = "check that the host runs an SSH server on that port"
            return _report(checks)

        c = check("remote Python and package")
        agent = RemoteAgent(
            conn,
            python_command(args.remote_python, args.remote_venv, args.remote_conda, args.remote_uv),
        )
        try:
            info = agent.check_version()
            c.ok, c.detail = (
                True,
                f"jupyter-colab-remote {info['version']}, Python {info['python']}",
            )
        except CompanionError as e:
            c.ok, c.detail = False, str(e)
            c.fix = "jupyter colabremote start HOST --install"
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
                    return _report(checks)
        else:
            c = check("runtime")
            runtimes = [
                r for r in agent.call("status")["runtimes"] if r.get("profile") == args.profile
            ]
            if not runtimes:
                c.ok, c.detail = False, f"no runtime running for profile {args.profile!r}"
                c.fix = f"jupyter colabremote start {args.host}"
                return _report(checks)
            rt = runtimes[0]
            c.ok, c.detail = True, f"pid {rt['pid']} on remote port {rt['port']}"

        c = check("local forward")
        port = record.get("local_port")
        if not port or not state.companion_alive(record):
            c.ok, c.detail = False, "no companion is forwarding a local port for this host"
            c.fix = f"jupyter colabremote start {args.host}"
            return _report(checks)
        c.ok, c.detail = True, f"localhost:{port} (companion pid {record['companion_pid']})"

        c = check("token and Colab origin")
        try:
            verify_chain(int(port), record["token"], timeout=10, mode=record.get("mode", "native"))
            c.ok, c.detail = True, "token accepted; Colab's preflight and probe pass"
        except CompanionError as e:
            c.ok, c.detail = False, str(e)
            c.fix = f"jupyter colabremote stop {args.host} && jupyter colabremote start {args.host}"
        return _report(checks)
    except CompanionError as e:
        c = checks[-1] if checks else check("setup")
        c.ok, c.detail = False, str(e)
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
    return 1
