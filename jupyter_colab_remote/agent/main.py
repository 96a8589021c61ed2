"""`python -m jupyter_colab_remote remote ACTION`: the agent's entry point.

Run by the companion over SSH on the server, or as a local process by `start` without a
host. Reads one JSON request on stdin (secrets travel only there, never on a command line),
answers one JSON line on stdout; progress goes to stderr (see protocol/messages.py).
"""

from __future__ import annotations

import json
import sys

from ..protocol.errors import ColabRemoteError, ExitCode
from ..protocol.messages import failure_line, success_line
from ..tokens import TokenError
from .actions import ACTIONS


def main(argv: list[str]) -> int:
    """Run one action; always answer one JSON line, exit 0 on success and 1 on failure."""
    if len(argv) != 1 or argv[0] not in ACTIONS:
        print(failure_line(f"usage: remote {{{','.join(ACTIONS)}}}", ExitCode.USAGE))
        return ExitCode.USAGE
    try:
        raw = sys.stdin.readline() if not sys.stdin.isatty() else ""
        request = json.loads(raw) if raw.strip() else {}
        result = ACTIONS[argv[0]](request)
    except ColabRemoteError as e:  # the companion exits with its code
        print(failure_line(str(e), e.exit_code), flush=True)
        return ExitCode.ERROR
    except (TokenError, OSError, ValueError) as e:
        print(failure_line(str(e)), flush=True)
        return ExitCode.ERROR
    print(success_line(result), flush=True)
    return ExitCode.OK
