"""The token store: named auth tokens kept hashed in a 0600 JSON file."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

from .files import locked, write_private_json

#: 32 random bytes: 256 bits, as the issue asks; hex keeps it URL-safe.
TOKEN_BYTES = 32
STORE_VERSION = 1
#: How often the server writes last-use times back (seconds); in memory in between.
LAST_USE_FLUSH_SECONDS = 30.0


class TokenError(Exception):
    """A token-store operation failed for a reason the user can fix."""


def default_token_file() -> Path:
    """Where the token store lives unless configured otherwise."""
    return Path(jupyter_data_dir()) / "colabremote" / "tokens.json"


def hash_token(token: str) -> str:
    """Hash a token for storage; tokens carry 256 bits so a plain SHA-256 suffices."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_secret() -> str:
    """Return a fresh random token of TOKEN_BYTES bytes, hex encoded."""
    return secrets.token_hex(TOKEN_BYTES)


@dataclasses.dataclass
class TokenRecord:
    """One named token as stored: its hash, never the token itself."""

    name: str
    hash: str
    created: float
    expires: float | None = None
    last_used: float | None = None
    #: Changes on every rotation, so cookies minted for an older secret stop working.
    generation: str = dataclasses.field(default_factory=lambda: secrets.token_hex(8))

    def expired(self, now: float | None = None) -> bool:
        """True once the expiry time has passed."""
        return self.expires is not None and (now or time.time()) >= self.expires

    def public(self) -> dict[str, object]:
        """What may be shown to a user: everything but the hash."""
        return {
            "name": self.name,
            "created": self.created,
            "expires": self.expires,
            "last_used": self.last_used,
            "expired": self.expired(),
        }


def new_record(name: str, secret: str, expires_in: float | None = None) -> TokenRecord:
    """A fresh record (new rotation generation) holding the hash of `secret`."""
    now = time.time()
    return TokenRecord(
        name=name,
        hash=hash_token(secret),
        created=now,
        expires=now + expires_in if expires_in else None,
    )


def valid_name(name: str) -> str:
    """Check a token name; names appear in URLs and tables, so keep them simple."""
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise TokenError(f"invalid token name {name!r}: use 1-64 letters, digits, '-', '_' or '.'")
    return name


class TokenStore:
    """Named tokens in a JSON file of mode 0600, shared by the server and the CLI.

    Every change is a locked read-modify-write followed by an atomic rename, so the
    server notices it on its next request (it compares the file's stat) and the CLI
    and the server never overwrite each other's changes.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stat_key: tuple[int, int, int] | None = None
        self._records: dict[str, TokenRecord] = {}
        self._by_hash: dict[str, TokenRecord] = {}
        self._pending_use: dict[str, float] = {}
        self._last_flush = time.monotonic()

    # -- file handling -------------------------------------------------
    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.path.with_name(self.path.name + ".lock"))

    def _read_file(self) -> dict[str, TokenRecord]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise TokenError(f"cannot read token store {self.path}: {e.strerror}") from e
        try:
            data = json.loads(raw)
            return {r["name"]: TokenRecord(**r) for r in data.get("tokens", [])}
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise TokenError(f"token store {self.path} is corrupt ({e}); move it aside") from e

    def _write_file(self, records: dict[str, TokenRecord]) -> None:
        data = {
            "version": STORE_VERSION,
            "tokens": [dataclasses.asdict(r) for r in records.values()],
        }
        write_private_json(self.path, data)
        self._load(records)

    def _load(self, records: dict[str, TokenRecord]) -> None:
        self._records = records
        self._by_hash = {r.hash: r for r in records.values()}
        try:
            st = self.path.stat()
            self._stat_key = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            self._stat_key = None

    def refresh(self) -> None:
        """Reload the file if another process changed it since the last look."""
        try:
            st = self.path.stat()
            key: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            key = None
        if key != self._stat_key or (key is None and self._records):
            self._load(self._read_file())

    # -- queries -------------------------------------------------------
    def records(self) -> list[TokenRecord]:
        """All records, oldest first."""
        self.refresh()
        return sorted(self._records.values(), key=lambda r: r.created)

    def get(self, name: str) -> TokenRecord | None:
        """The record of that name, or None."""
        self.refresh()
        return self._records.get(name)

    def verify(self, token: str) -> TokenRecord | None:
        """Return the live record matching this token, or None (and note its use)."""
        if not token:
            return None
        self.refresh()
        digest = hash_token(token)
        record = self._by_hash.get(digest)
        # compare_digest keeps the final check constant-time even after the dict lookup.
        if record is None or not hmac.compare_digest(record.hash, digest):
            return None
        if record.expired():
            return None
        now = time.time()
        record.last_used = now
        self._pending_use[record.name] = now
        if time.monotonic() - self._last_flush > LAST_USE_FLUSH_SECONDS:
            self.flush_last_use()
        return record

    def is_current(self, name: str, generation: str) -> bool:
        """True if the named token still exists, is unexpired and was not rotated since."""
        record = self.get(name)
        return record is not None and record.generation == generation and not record.expired()

    # -- changes -------------------------------------------------------
    def create(self, name: str, expires_in: float | None = None, secret: str | None = None) -> str:
        """Add a token named `name` and return its secret (shown once, never stored)."""
        valid_name(name)
        if secret is not None and len(secret) < 2 * TOKEN_BYTES:
            raise TokenError("a supplied token must have at least 256 bits (64 hex digits)")
        secret = secret or new_secret()
        with self._locked():
            records = self._read_file()
            if name in records:
                raise TokenError(
                    f"a token named {name!r} exists already; rotate or revoke it instead"
                )
            records[name] = new_record(name, secret, expires_in)
            self._write_file(records)
        return secret

    def rotate(self, name: str, expires_in: float | None = None) -> str:
        """Give the named token a new secret; the old one stops working at once.

        The expiry stays as it was (a limited token never becomes unlimited by a rotation),
        unless `expires_in` sets a new one.
        """
        with self._locked():
            records = self._read_file()
            old = records.get(name)
            if old is None:
                raise TokenError(f"no token named {name!r} (see: jupyter colabremote token list)")
            secret = new_secret()
            record = new_record(name, secret, expires_in)
            if expires_in is None:
                record.expires = old.expires
            records[name] = record
            self._write_file(records)
        return secret

    def put(self, name: str, secret: str) -> None:
        """Store `secret` under `name`, creating or replacing it (the companion's token)."""
        valid_name(name)
        if len(secret) < 2 * TOKEN_BYTES:
            raise TokenError("a supplied token must have at least 256 bits (64 hex digits)")
        with self._locked():
            records = self._read_file()
            old = records.get(name)
            if old is not None and hmac.compare_digest(old.hash, hash_token(secret)):
                return
            records[name] = new_record(name, secret)
            self._write_file(records)

    def revoke(self, name: str) -> None:
        """Delete the named token; requests using it fail from the next one on."""
        with self._locked():
            records = self._read_file()
            if records.pop(name, None) is None:
                raise TokenError(f"no token named {name!r} (see: jupyter colabremote token list)")
            self._write_file(records)

    def flush_last_use(self) -> None:
        """Write noted last-use times back to the file (merged with any newer changes)."""
        self._last_flush = time.monotonic()
        if not self._pending_use:
            return
        pending, self._pending_use = self._pending_use, {}
        with self._locked():
            records = self._read_file()
            for name, when in pending.items():
                if name in records:
                    records[name].last_used = max(records[name].last_used or 0, when)
            self._write_file(records)
