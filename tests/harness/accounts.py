"""A local account with a known password, for password / keyboard-interactive SSH logins."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .processes import file_lock, run_command

PASSWORD_USER = "colabremote-test"
_LOCK_DIR = Path("/run")


@dataclass
class PasswordUser:
    """A local account with a known password (for password / keyboard-interactive auth)."""

    name: str
    password: str
    home: Path


@contextlib.contextmanager
def password_account(
    name: str = PASSWORD_USER, *, deadline: float = 30.0
) -> Iterator[PasswordUser]:
    """A system account with a fresh random password, locked again on exit.

    Creates the account once (`useradd --system --create-home`, idempotent), sets a random
    password with chpasswd, and locks it (`usermod -L`) afterwards so no usable password stays
    behind (a system sshd on port 22 would accept it). Users of the account are serialised
    across processes by a lock file, so parallel runs never change a password in use.
    With `UsePAM no` sshd checks /etc/shadow itself (yescrypt hashes work on Debian 12).
    The account cannot read root's files: tmp_path (under /tmp/pytest-of-root, mode 0700) and
    an interpreter under /root are out of its reach; use it for authentication tests.
    """
    if os.geteuid() != 0:
        pytest.skip("creating a password account needs root")
    for tool in ("useradd", "chpasswd", "usermod"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing (package passwd)")
    with file_lock(_LOCK_DIR / f"{name}.lock", deadline):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            run_command(
                [
                    "useradd",
                    "--system",
                    "--create-home",
                    "--shell",
                    "/bin/sh",
                    "--comment",
                    "jupyter-colab-remote tests",
                    name,
                ]
            )
            entry = pwd.getpwnam(name)
        password = "crt-" + secrets.token_urlsafe(18)
        run_command(["chpasswd"], input=f"{name}:{password}\n")
        try:
            yield PasswordUser(name, password, Path(entry.pw_dir))
        finally:
            run_command(["usermod", "-L", name], check=False)
