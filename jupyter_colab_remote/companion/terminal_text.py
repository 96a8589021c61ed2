"""Text from the server made safe for the user's terminal: control characters shown escaped.

A compromised server could otherwise put escape sequences (OSC 52 rewrites the clipboard the
user pastes into Colab, cursor moves hide lines) into agent errors, progress lines or JSON the
companion prints. Newlines and tabs stay; everything else below 0x20, DEL, C1 controls and the
Unicode bidirectional overrides become visible `\\xNN` / `\\uNNNN` escapes.
"""

from __future__ import annotations

import re
import typing as t

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """The text with terminal control characters escaped (newlines and tabs kept)."""
    return _UNSAFE.sub(_escape, text)


def printable_tree(value: t.Any) -> t.Any:
    """The same for every string in a JSON value (keys included)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_tree(k): printable_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable_tree(v) for v in value]
    return value
