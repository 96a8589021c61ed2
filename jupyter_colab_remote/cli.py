"""`jupyter colabremote`: one entry point for the runtime and its tools."""

from __future__ import annotations

import argparse
import sys

from . import __version__

USAGE = """usage: jupyter colabremote COMMAND [options]

Commands:
  serve     run this machine as a Colab local runtime in the foreground
            (jupyter_server options apply, e.g. --port=9000; see serve --help)
  token     manage the runtime's tokens: list | new NAME | rotate NAME | revoke NAME

Options:
  -h, --help     show this help
  --version      show the version
"""


class CLIError(Exception):
    """An error to report in one line, with exit code 2."""


def token_main(argv: list[str]) -> int:
    """The `token` subcommand."""
    from . import token_cli

    parser = argparse.ArgumentParser(prog="jupyter colabremote token")
    token_cli.add_arguments(parser)
    return token_cli.run(parser.parse_args(argv))


def serve_main(argv: list[str]) -> int:
    """The `serve` subcommand: jupyter_server with the extension as the starter app."""
    from .server.app import ColabRemoteApp

    ColabRemoteApp.launch_instance(argv)
    return 0


COMMANDS = {"serve": serve_main, "token": token_main}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; expected failures print one line and exit non-zero."""
    from .server.app import StartError
    from .tokens import TokenError

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    if args[0] == "--version":
        print(__version__)
        return 0
    command = COMMANDS.get(args[0])
    try:
        if command is None:
            raise CLIError(f"unknown command {args[0]!r} (try: jupyter colabremote --help)")
        return command(args[1:])
    except (CLIError, TokenError, StartError) as e:
        print(f"jupyter colabremote: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
