"""Exit codes, one enum for every process, and the error type that carries one."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What `jupyter colabremote` exits with (README: exit codes); the agent sends it back."""

    OK = 0
    ERROR = 1
    USAGE = 2
    HOST_KEY = 3
    AUTH = 4
    UNREACHABLE = 5
    PORT_TAKEN = 6
    PACKAGE = 7
    CONTAINER = 8


class ColabRemoteError(Exception):
    """A failure the user can act on: one line, and the exit code to leave with."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            try:
                self.exit_code = ExitCode(exit_code)
            except ValueError:  # a code from a newer agent: a plain failure here
                self.exit_code = ExitCode.ERROR
