"""The companion's error type: one line for the user, and the exit code to leave with."""

from __future__ import annotations


class CompanionError(Exception):
    """A failure the user can act on; printed as one line, never as a traceback."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class HostKeyError(CompanionError):
    """The server's host key is unknown or has changed."""

    exit_code = 3


class AuthError(CompanionError):
    """SSH authentication failed."""

    exit_code = 4


class ConnectError(CompanionError):
    """The host could not be reached."""

    exit_code = 5
