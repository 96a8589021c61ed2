"""`jupyter colabremote`: one entry point for the runtime and its tools."""

from __future__ import annotations

import os
import sys
import typing as t

from . import __version__
from .errors import CLIError, StartError
from .protocol.errors import ExitCode

USAGE = """usage: jupyter colabremote COMMAND [options]

Commands:
  serve     run this machine as a Colab local runtime in the foreground
            (jupyter_server options apply, e.g. --port=9000; see serve --help)
  token     manage the runtime's tokens: list | new NAME | rotate NAME | revoke NAME
  start     [user@]host: run the runtime there, forward a local port, print Colab's URL,
            and keep the tunnel healthy (no host: this machine becomes the runtime)
  stop      stop a runtime, its kernels and its tunnel
  status    tunnels from this machine, and a host's runtimes
  url       print a connection's Colab URL again
  doctor    check each hop to a host (DNS/TCP, SSH, package, runtime, forward, token)

Options:
  -h, --help     show this help
  --version      show the version
"""


def token_main(argv: list[str]) -> int:
    """The `token` subcommand."""
    from . import token_cli
    from .companion.cli import OneLineParser

    parser = OneLineParser(prog="jupyter colabremote token")
    token_cli.add_arguments(parser)
    return token_cli.run(parser.parse_args(argv))


def serve_main(argv: list[str]) -> int:
    """The `serve` subcommand: jupyter_server with the extension as the starter app."""
    from .extension.app import ColabRemoteApp

    ColabRemoteApp.launch_instance(argv)
    return 0


def remote_main(argv: list[str]) -> int:
    """The `remote` subcommand: the companion's agent on the remote host (internal)."""
    from .agent.main import main as agent_main

    return agent_main(argv)


def companion_main(command: str) -> t.Callable[[list[str]], int]:
    """The companion's commands (start, stop, status, url)."""

    def run_companion(argv: list[str]) -> int:
        from .companion.cli import main as companion

        return companion([command, *argv])

    return run_companion


COMMANDS = {
    "serve": serve_main,
    "token": token_main,
    "remote": remote_main,
    **{c: companion_main(c) for c in ("start", "stop", "status", "url", "doctor")},
}


#: Commands that create files on behalf of the runtime (see the umask in main).
PRIVATE_COMMANDS = ("serve", "remote", "start")


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; expected failures print one line and exit non-zero."""
    from .companion.errors import CompanionError
    from .companion.terminal_text import printable
    from .tokens import TokenError

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return ExitCode.OK if args else ExitCode.USAGE
    if args[0] == "--version":
        print(__version__)
        return 0
    command = COMMANDS.get(args[0])
    if args[0] in PRIVATE_COMMANDS:
        # What these create (Jupyter data and runtime dirs, the workdir, token and state
        # files, notebooks) is the user's alone, whatever umask the shell or sshd gave:
        # a group- or world-writable kernels directory lets another account plant a kernel.
        os.umask(0o077)
    try:
        if command is None:
            raise CLIError(f"unknown command {args[0]!r} (try: jupyter colabremote --help)")
        return command(args[1:])
    except (CLIError, TokenError, StartError) as e:
        print(f"jupyter colabremote: error: {e}", file=sys.stderr)
        return ExitCode.USAGE
    except CompanionError as e:
        print(f"jupyter colabremote: error: {printable(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
