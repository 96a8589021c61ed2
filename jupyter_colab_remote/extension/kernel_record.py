"""One kernel in the status document, whether it runs here or on a gateway."""

from __future__ import annotations

import typing as t


def kernel_record(model: dict[str, t.Any], memory_bytes: int | None = None) -> dict[str, t.Any]:
    """id, name, state, last activity and connections from a kernel model, and its memory
    (None when unknown: a kernel on a gateway runs on the gateway's side)."""
    return {
        "id": model.get("id"),
        "name": model.get("name"),
        "execution_state": model.get("execution_state"),
        "last_activity": model.get("last_activity"),
        "connections": model.get("connections", 0),
        "memory_bytes": memory_bytes,
    }
