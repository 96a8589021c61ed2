"""The companion's error types: one line for the user, and the exit code to leave with."""

from __future__ import annotations

from ..protocol.errors import ColabRemoteError, ExitCode


class CompanionError(ColabRemoteError):
    """A failure the user can act on; printed as one line, never as a traceback."""


class HostKeyError(CompanionError):
    """The server's host key is unknown or has changed."""

    exit_code = ExitCode.HOST_KEY


class AuthError(CompanionError):
    """SSH authentication failed."""

    exit_code = ExitCode.AUTH


class ConnectError(CompanionError):
    """The host could not be reached."""

    exit_code = ExitCode.UNREACHABLE
