"""The token store: hashed at rest, and rotation, revocation and expiry apply at once."""

from __future__ import annotations

import json
import stat
import time

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_colab_remote.tokens import TokenError, TokenStore, hash_token

#: Exercises the jupyter_server extension: also run at the lowest dependency versions.
pytestmark = pytest.mark.server


def test_tokens_are_256_bit_and_stored_only_hashed(token_store, token_file):
    """The file holds names and hashes, never a token, and only its owner can read it."""
    secret = token_store.create("laptop")
    assert len(secret) == 64 and int(secret, 16) >= 0
    raw = token_file.read_text()
    assert secret not in raw
    assert hash_token(secret) in raw
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    (record,) = json.loads(raw)["tokens"]
    assert record["name"] == "laptop" and record["created"] <= time.time()


def test_store_refuses_duplicates_unknown_names_and_bad_names(token_store):
    """Mistakes get one clear sentence, not a traceback."""
    token_store.create("a")
    with pytest.raises(TokenError, match="exists already"):
        token_store.create("a")
    with pytest.raises(TokenError, match="no token named 'b'"):
        token_store.rotate("b")
    with pytest.raises(TokenError, match="no token named 'b'"):
        token_store.revoke("b")
    with pytest.raises(TokenError, match="invalid token name"):
        token_store.create("has space")


def test_corrupt_store_is_a_clear_error(token_file):
    """A damaged file is reported with its path, and never silently replaced."""
    token_file.parent.mkdir(parents=True)
    token_file.write_text("{not json")
    with pytest.raises(TokenError, match="corrupt"):
        TokenStore(token_file).records()
    assert token_file.read_text() == "{not json"


def test_two_processes_see_each_others_changes(token_file):
    """The CLI and the server hold separate store objects on one file."""
    server_view, cli_view = TokenStore(token_file), TokenStore(token_file)
    secret = cli_view.create("x")
    assert server_view.verify(secret) is not None
    cli_view.revoke("x")
    assert server_view.verify(secret) is None


async def _status(jp_fetch, secret: str) -> int:
    try:
        r = await jp_fetch("api", "kernels", headers={"Authorization": f"token {secret}"})
        return r.code
    except HTTPClientError as e:
        return e.code


async def test_rotation_applies_to_the_next_request(jp_fetch, token_file, token):
    """After rotating, the old URL stops working at once and the new one works."""
    cli = TokenStore(token_file)  # a separate object, as the CLI process would use
    assert await _status(jp_fetch, token) == 200
    new = cli.rotate("test")
    assert await _status(jp_fetch, token) == 403
    assert await _status(jp_fetch, new) == 200


async def test_revocation_applies_to_the_next_request(jp_fetch, token_file, token):
    """A revoked token is refused on its very next use, without a server restart."""
    other = TokenStore(token_file).create("other")
    TokenStore(token_file).revoke("test")
    assert await _status(jp_fetch, token) == 403
    assert await _status(jp_fetch, other) == 200


async def test_expiry_applies_to_the_next_request(jp_fetch, token_file):
    """A token with an expiry works until then and is refused after."""
    short = TokenStore(token_file).create("short", expires_in=1.0)
    assert await _status(jp_fetch, short) == 200
    time.sleep(1.1)
    assert await _status(jp_fetch, short) == 403


async def test_login_cookie_dies_with_its_token(jp_fetch, token_file, token):
    """A browser session opened with a token ends when that token is revoked or rotated."""
    r = await jp_fetch("api", "kernels")
    cookies = [c.split(";")[0] for c in r.headers.get_list("Set-Cookie")]
    login = next(c for c in cookies if c.startswith("username-"))
    cookie_only = {"Authorization": "", "Cookie": login}
    assert (await jp_fetch("api", "kernels", headers=cookie_only)).code == 200
    TokenStore(token_file).rotate("test")
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("api", "kernels", headers=cookie_only)
    assert e.value.code == 403


async def test_last_use_is_recorded(jp_fetch, colab_app, token_file):
    """`token list` can show when each token was last used."""
    before = time.time()
    await jp_fetch("api", "kernels")
    colab_app.token_store.flush_last_use()
    (record,) = TokenStore(token_file).records()
    assert record.last_used is not None and record.last_used >= before


async def test_rotation_keeps_the_expiry(jp_fetch, token_file):
    """A limited token stays limited when rotated (issue 10, item 5); a new expiry may be set."""
    store = TokenStore(token_file)
    store.create("guest", expires_in=3600)
    expires = store.get("guest").expires
    secret = store.rotate("guest")
    assert store.get("guest").expires == expires
    assert await _status(jp_fetch, secret) == 200
    store.rotate("guest", expires_in=60)
    assert store.get("guest").expires < expires
