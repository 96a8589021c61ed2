"""Private files shared by every process: an atomic 0600 JSON writer and a file lock.

POSIX only for now (`fcntl.flock`); a Windows counterpart (msvcrt.locking) belongs here too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import typing as t
from collections.abc import Iterator
from pathlib import Path


def write_private_json(path: str | os.PathLike[str], data: t.Any) -> Path:
    """Replace `path` with `data` as JSON, atomically (a reader sees the old or the new file,
    never half of one) and readable by this user only (0600, whatever the umask); the
    directory is created 0700 if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)  # mkstemp creates 0600 already; a umask policy may differ
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def locked(lock_path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (created 0600) for the block; other processes
    taking the same lock wait."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
