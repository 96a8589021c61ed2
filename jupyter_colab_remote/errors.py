"""Errors the command line reports in one line (kept import-light for fast remote calls)."""

from __future__ import annotations


class CLIError(Exception):
    """A usage mistake, reported in one line with exit code 2."""


class StartError(Exception):
    """The runtime cannot start as asked (a non-loopback bind, a broken install)."""
