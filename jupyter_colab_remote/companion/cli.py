"""`jupyter colabremote start|stop|status|url`: the companion's commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import time
import typing as t

import psutil

from .. import files
from ..protocol.errors import ExitCode
from . import profiles, state
from .agents import LocalAgent, RemoteAgent
from .browser import open_colab
from .env_file import git_token_from_environment, parse_env_file
from .errors import CompanionError
from .gateway import check_gateway_url, gateway_token_from_environment
from .install import check_wheelhouse
from .options import (
    INTERPRETER_OPTIONS,
    REMEMBERED,
    StartOptions,
    add_options,
    apply_defaults,
    cli_fields,
    interpreter,
)
from .port_forwards import forward_lines, parse_forwards
from .session import Session, colab_url
from .ssh_connect import ConnectOptions, connect
from .ssh_target import resolve
from .ui import UI
from .verify import url_problem


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (exit 2) instead of a usage dump."""

    def error(self, message: str) -> t.NoReturn:
        """Raise the mistake as a one-line error."""
        raise CompanionError(f"{message} (see: {self.prog} --help)", exit_code=ExitCode.USAGE)


def add_connection_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that talks to a host."""
    add_options(p, "connection")


def add_container_arguments(p: argparse.ArgumentParser) -> None:
    """`--image` and its options: Colab's runtime image in a container on the host."""
    add_options(p, "container")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the companion commands."""
    parser = OneLineParser(prog="jupyter colabremote")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("start", help="connect a host (or this machine) as a Colab runtime")
    add_options(p)

    p = sub.add_parser("stop", help="stop a runtime, its kernels and its tunnel")
    p.add_argument("host", nargs="?", help="[user@]host[:port]; none: this machine's runtime")
    add_connection_arguments(p)
    p.add_argument(
        "--tunnel-only",
        action="store_true",
        help="close only this machine's tunnel; leave the runtime running (or unreachable)",
    )

    p = sub.add_parser("status", help="show tunnels, runtimes and kernels")
    p.add_argument("host", nargs="?")
    add_connection_arguments(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("doctor", help="check every hop to a host and suggest a fix")
    p.add_argument("host")
    add_connection_arguments(p)
    add_container_arguments(p)

    p = sub.add_parser("url", help="print the Colab URL of a connection again")
    p.add_argument("host", nargs="?")
    p.add_argument("--profile")
    return parser


#: Profile names name files on both machines (logs, locks, records): keep them plain.
PROFILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def apply_profile(args: argparse.Namespace) -> None:
    """Fill options from the named profile (command-line options win)."""
    profile = profiles.lookup(getattr(args, "host", None))
    if profile:
        args.host = profile["host"]
        for key, value in profile.items():
            if key in ("host", "name"):
                continue
            if key in ("env_file", "wheel", "wheelhouse"):
                value = os.path.expanduser(str(value))
            if getattr(args, key, None) is None and hasattr(args, key):
                setattr(args, key, value)
        if getattr(args, "profile", None) is None:
            args.profile = profile["name"]


def apply_remembered(args: argparse.Namespace) -> dict[str, t.Any] | None:
    """Fill what the command line and profile left open from the connection record.

    `start` saved how it started the runtime (interpreter, workdir, image...), so `url`,
    `status`, `doctor`, `stop` and a later `start` need none of it repeated. Without
    `--profile`, a host with a single remembered connection uses that one's profile.
    """
    record = state.find(getattr(args, "host", None), getattr(args, "profile", None))
    if getattr(args, "profile", None) is None:
        args.profile = (record or {}).get("profile") or "default"
    if record is None:
        return None
    if hasattr(args, "remote_python") and not any(getattr(args, k) for k in INTERPRETER_OPTIONS):
        args.remote_prefix = record.get("python")
    for key in (*REMEMBERED, "port"):
        value = record.get("local_port" if key == "port" else key)
        if hasattr(args, key) and getattr(args, key) is None and value is not None:
            setattr(args, key, value)
    return record


def cmd_start(args: argparse.Namespace) -> int:
    """`start`: print the URL once verified, then keep the tunnel up until Ctrl-C."""
    if not 0 < args.port < 65536:
        raise CompanionError(f"invalid --port {args.port}")
    # Everything as given, then what the options name: files checked, secrets looked up.
    given = {f.name: getattr(args, f.name) for f in cli_fields()}
    opts = StartOptions(**given, remote_prefix=getattr(args, "remote_prefix", None))
    if opts.wheel:
        opts.wheel = _local_file(opts.wheel, "--wheel")
    if opts.wheelhouse:
        opts.wheelhouse = check_wheelhouse(opts.wheelhouse)
    opts.env = parse_env_file(opts.env_file) if opts.env_file else {}
    opts.git_token = git_token_from_environment() if opts.git else None
    if opts.gateway_url:
        opts.gateway_url = check_gateway_url(opts.gateway_url)
        opts.gateway_token = gateway_token_from_environment()
    if not opts.host and parse_forwards(opts.forward):
        raise CompanionError(
            "--forward needs a HOST: without one the runtime runs on this machine, whose "
            "ports are local already",
            exit_code=ExitCode.USAGE,
        )
    ui = UI()
    if not opts.host:  # this machine is the runtime: nothing to keep up after the URL
        check_local_runtime_supported("start")
        record = Session(opts, ui).start()
        _print_record(record, opts.json)
        if opts.open_browser:
            open_colab(ui)
        return 0
    session = Session(opts, ui)
    # SIGTERM (from `stop`) ends the run like Ctrl-C does; so does Ctrl-Break on a Windows
    # console (SIGBREAK). Ctrl-C itself raises KeyboardInterrupt in this (main) thread on
    # every OS: supervise() waits in short slices, so it is seen within SUPERVISE_POLL.
    for name in ("SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda *_: session.stop_event.set())
    try:
        record = session.start()
        # From here the tunnel is up: Ctrl-C at any moment (even while the URL is printed)
        # is the normal way to close it.
        try:
            _print_record(record, opts.json)
            if opts.open_browser:
                open_colab(ui)
            ui.info("Tunnel up; Ctrl-C closes it (the runtime and its kernels keep running).")
            session.supervise()
        except KeyboardInterrupt:
            if not opts.stop_on_exit:
                ui.info(closed_message(opts.host, opts.profile))
        if opts.stop_on_exit:
            session.stop_remote()
            ui.info("stopped the remote runtime")
    finally:
        session.close()
        rec = state.load(opts.host, opts.profile)
        if rec and rec.get("companion_pid") == os.getpid():
            state.update(opts.host, opts.profile, companion_pid=None)
    return 0


def check_local_runtime_supported(command: str) -> None:
    """This machine as the runtime is server-side (POSIX) code: on Windows, say so."""
    if files.WINDOWS:
        raise CompanionError(
            "running the runtime on this machine needs Linux or macOS (or WSL); on Windows, "
            f"name the host it runs on: jupyter colabremote {command} [user@]host",
            exit_code=ExitCode.USAGE,
        )


def closed_message(host: str, profile: str) -> str:
    """What Ctrl-C leaves behind, and the commands that pick it up again."""
    name = host if profile == "default" else f"{host} --profile {profile}"
    return (
        f"Tunnel closed. The runtime and its kernels keep running on {host}: "
        f"`jupyter colabremote start {name}` reconnects (same URL), "
        f"`jupyter colabremote stop {name}` stops them."
    )


def _local_file(path: str, option: str) -> str:
    """A local file an option names, or a one-line usage error."""
    if not os.path.isfile(path):
        raise CompanionError(f"{option} {path}: no such file", exit_code=ExitCode.USAGE)
    return path


#: A published port reaches the container's network interface, not its loopback.
CONTAINER_APP_HINT = (
    "  (apps in the container must listen on all its addresses: 0.0.0.0, tensorboard --bind_all)\n"
)


def _print_record(record: dict[str, t.Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record), flush=True)
        return
    port = record["local_port"]
    token = record["url"].rsplit("=", 1)[1]
    print(
        "\n  Colab -> Connect -> Connect to a local runtime, Backend URL:\n\n"
        f"    {record['url']}\n\n"
        f"  VS Code -> Select Kernel -> Existing Jupyter Server: "
        f"http://localhost:{port}/?token={token}\n"
        f"  ({'re-attached to the running runtime' if record['reattached'] else 'new runtime'}"
        + (
            f": container {record['container']}, {record['image']}"
            if record.get("mode") == "container"
            else ""
        )
        + f", remote pid {record['remote_pid']})\n"
        + "".join(f"  {line}\n" for line in forward_lines(record.get("forwards")))
        + (
            CONTAINER_APP_HINT
            if any(f.get("host_port") for f in record.get("forwards") or [])
            else ""
        )
        + ("\n" if record.get("forwards") else ""),
        flush=True,
    )


def _agent(args: argparse.Namespace) -> RemoteAgent:
    target = resolve(args.host)
    options = ConnectOptions(
        accept_new_host_key=args.accept_new_host_key,
        server_alive_interval=args.server_alive_interval,
        server_alive_count_max=args.server_alive_count_max,
    )
    conn = connect(target, options)
    return RemoteAgent(conn, interpreter(args))


def _stop_companion(record: dict[str, t.Any] | None) -> bool:
    """End the local companion of a connection (frees its port); True if one ran."""
    if not record or not state.companion_alive(record):
        return False
    proc = psutil.Process(int(record["companion_pid"]))
    with contextlib.suppress(psutil.Error):
        proc.terminate()
        # Poll rather than proc.wait(): a companion that exited but is not yet reaped by its
        # parent (a zombie) has closed its port already; wait() would block until the timeout.
        deadline = time.monotonic() + 10
        while _running(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _running(proc):
            proc.kill()
    return True


def _running(proc: psutil.Process) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cmd_stop(args: argparse.Namespace) -> int:
    """`stop`: the runtime and its kernels first, then the local tunnel; nothing left running.

    If the remote part fails, the tunnel stays (both still run) and the error says so;
    `--tunnel-only` closes just the tunnel (a host that is gone for good).
    """
    key = args.host or "local"
    where = args.host or "this machine"
    record = state.load(key, args.profile)
    result: dict[str, t.Any] = {}
    if args.tunnel_only:
        pass
    elif args.host:
        try:
            agent = _agent(args)
            try:
                result = agent.call("stop", {"profile": args.profile})
            finally:
                agent.conn.close()
        except CompanionError as e:
            still = "the runtime may still be running there"
            if record and state.companion_alive(record):
                still += (
                    f", and the tunnel on localhost:{record.get('local_port')} (companion pid "
                    f"{record['companion_pid']}) is still open"
                )
            raise CompanionError(
                f"could not stop the runtime on {where}: {e}; {still}. Fix that and run stop "
                f"again, or close only the tunnel with: jupyter colabremote stop {args.host} "
                "--tunnel-only",
                exit_code=e.exit_code,
            ) from e
    else:
        check_local_runtime_supported("stop")
        result = LocalAgent().call("stop", {"profile": args.profile})
    tunnel = _stop_companion(record)
    if record:
        state.update(key, args.profile, stopped=not args.tunnel_only, companion_pid=None)
    closed = "; tunnel closed" if tunnel else ""
    if args.tunnel_only:
        print(f"closed the tunnel to {where}" if tunnel else f"no tunnel to {where} was open")
    elif result.get("container"):
        print(f"removed the container {result['container']} ({result['image']}) on {where}{closed}")
    elif result.get("stopped"):
        print(
            f"stopped the runtime on {where} "
            f"(pid {result['pid']}, {result['processes']} processes){closed}"
        )
    else:
        print(f"no runtime was running on {where}{closed}")
    return 0


def cmd_url(args: argparse.Namespace) -> int:
    """`url`: the URL again, only if it works now (else what to run, and a non-zero exit)."""
    where = args.host or "this machine"
    again = f"jupyter colabremote start{' ' + args.host if args.host else ''}"
    record = state.load(args.host or "local", args.profile)
    if not record or not record.get("token"):
        raise CompanionError(f"no connection to {where} yet; run: {again}")
    if record.get("stopped"):
        raise CompanionError(f"the runtime on {where} was stopped; {again} starts it again")
    if args.host and not state.companion_alive(record):
        raise CompanionError(
            f"no tunnel to {where} is open, so its URL would not answer; {again} reconnects "
            "(same URL)"
        )
    port, token = int(record["local_port"]), record["token"]
    problem = url_problem(port, token, record.get("mode") or "native")
    if problem:
        raise CompanionError(f"the URL of {where} does not work: {problem}; run: {again}")
    print(colab_url(port, token))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """`status`: tunnels from this machine, and the host's runtimes when one is named."""
    out: dict[str, t.Any] = {"tunnels": []}
    for rec in state.all_records():
        if args.host and rec.get("host") != args.host:
            continue
        alive = state.companion_alive(rec) if rec.get("host") else None
        out["tunnels"].append(
            {
                "host": rec.get("host") or "this machine",
                "profile": rec.get("profile"),
                "local_port": rec.get("local_port"),
                "companion_running": alive,
                # Extra forwards live as long as the companion that holds them.
                "forwards": (rec.get("forwards") or []) if alive else [],
            }
        )
    if args.host:
        agent = _agent(args)
        try:
            answer = agent.call("status")
            out["runtimes"] = answer["runtimes"]
            out["containers"] = answer.get("containers", [])
        finally:
            agent.conn.close()
    if args.json:
        print(json.dumps(out))
        return 0
    for tun in out["tunnels"]:
        running = {True: "tunnel up", False: "tunnel down", None: "local"}[tun["companion_running"]]
        print(
            f"{tun['host']:30} profile={tun['profile']:10} localhost:{tun['local_port']}  {running}"
        )
        for line in forward_lines(tun["forwards"]):
            print(f"  {line}")
    for rt in out.get("runtimes", []):
        age = time.time() - float(rt.get("started", time.time()))
        print(
            f"  runtime profile={rt.get('profile')} pid={rt['pid']} port={rt['port']} "
            f"up {age / 60:.0f} min, root {rt.get('root_dir')}"
        )
    for c in out.get("containers", []):
        up = f"up {c['uptime'] / 60:.0f} min" if c.get("uptime") is not None else c.get("state")
        gpus = ", ".join(c.get("gpu_names") or []) or c.get("gpus") or "none"
        print(
            f"  container profile={c.get('profile')} {c.get('container')} ({c.get('engine')}) "
            f"image {c.get('image')}, {up}, port {c.get('port')}, "
            f"{c.get('restarts')} restart(s), GPUs: {gpus}"
            + "".join(
                f", {p['port']} on 127.0.0.1:{p['host_port']}" for p in c.get("published") or []
            )
        )
    if not out["tunnels"] and not out.get("runtimes") and not out.get("containers"):
        print("no connections")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """`doctor`: check each hop."""
    from .doctor import run_doctor

    return run_doctor(args)


COMMANDS = {
    "start": cmd_start,
    "stop": cmd_stop,
    "status": cmd_status,
    "url": cmd_url,
    "doctor": cmd_doctor,
}


def main(argv: list[str]) -> int:
    """Parse and run one companion command."""
    args = build_parser().parse_args(argv)
    apply_profile(args)
    apply_remembered(args)
    apply_defaults(args)
    if not PROFILE_NAME.fullmatch(args.profile):
        raise CompanionError(
            f"invalid profile name {args.profile!r}: use letters, digits, '-', '_', '.'",
            exit_code=2,
        )
    return COMMANDS[args.command](args)
