"""What the companion shows while it works: timed steps and events on stderr."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from .terminal_text import printable


class UI:
    """Prints progress to stderr (stdout is kept for the URL or --json record)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def _print(self, text: str) -> None:
        if not self.quiet:
            print(printable(text), file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        """Show a step and how long it took."""
        start = time.monotonic()
        yield
        self._print(f"  {label:<34} {time.monotonic() - start:6.2f} s")

    def event(self, text: str) -> None:
        """A timestamped event (outage, recovery)."""
        self._print(f"[{time.strftime('%H:%M:%S')}] {text}")

    def info(self, text: str) -> None:
        """A plain line."""
        self._print(text)
