"""The API behind the launcher panel: tokens, the forwarded port, Colab's connections."""

from __future__ import annotations

import json

import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError

from jupyter_colab_remote.tokens import TokenStore
from tests.harness.kernel_client import execute
from tests.harness.runtime_api import COLAB_ORIGIN

#: Exercises the jupyter_server extension: also run at the lowest dependency versions.
pytestmark = pytest.mark.server


async def test_list_tokens_shows_names_never_secrets(jp_fetch, token):
    """The panel lists tokens with times; the secret itself is never sent back."""
    r = await jp_fetch("colabremote", "api", "tokens")
    body = json.loads(r.body)
    assert body["current"] == "test"
    (record,) = body["tokens"]
    assert record["name"] == "test" and record["created"] > 0
    assert token not in r.body.decode()
    assert "hash" not in record


async def test_rotate_returns_new_url_and_keeps_the_session(jp_fetch, jp_http_port, token):
    """Rotate: the old token stops working, the new URL works, the Lab session stays logged in."""
    r = await jp_fetch("colabremote", "api", "tokens", "test", "rotate", method="POST", body="")
    body = json.loads(r.body)
    new = body["token"]
    assert new != token and len(new) == 64
    assert body["url"] == f"http://localhost:{jp_http_port}/a%40b/?token={new}"
    cookie = next(
        c.split(";")[0] for c in r.headers.get_list("Set-Cookie") if c.startswith("username-")
    )
    # The browser session continues with the cookie issued for the new rotation.
    r = await jp_fetch("api", "kernels", headers={"Authorization": "", "Cookie": cookie})
    assert r.code == 200
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("api", "kernels", headers={"Authorization": f"token {token}"})
    assert e.value.code == 403
    r = await jp_fetch("api", "kernels", headers={"Authorization": f"token {new}"})
    assert r.code == 200


async def test_revoke_and_unknown_names(jp_fetch, token_file):
    """Revoking another token works at once; unknown names get a readable 404."""
    other = TokenStore(token_file).create("phone")
    r = await jp_fetch("colabremote", "api", "tokens", "phone", method="DELETE")
    assert r.code == 204
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("api", "kernels", headers={"Authorization": f"token {other}"})
    assert e.value.code == 403
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("colabremote", "api", "tokens", "nope", "rotate", method="POST", body="")
    assert e.value.code == 404
    assert "no token named 'nope'" in json.loads(e.value.response.body)["message"]


async def _code(jp_fetch, secret: str, *parts: str, method: str = "GET", body=None) -> int:
    try:
        r = await jp_fetch(
            *parts, method=method, body=body, headers={"Authorization": f"token {secret}"}
        )
        return r.code
    except HTTPClientError as e:
        return e.code


async def test_guest_token_manages_only_itself(jp_fetch, token_file, token):
    """With only a token that expires (a guest token), nothing else can be seen or taken over:
    the owner's token cannot be rotated (which would hand over its new secret) or revoked,
    nor another guest's, and no forward can be reported; the guest may rotate and revoke
    itself, and its rotation keeps the expiry. The owner token keeps full control."""
    store = TokenStore(token_file)
    guest = store.create("guest", expires_in=3600)
    other = store.create("other-guest", expires_in=3600)
    listed = json.loads(
        (
            await jp_fetch(
                "colabremote", "api", "tokens", headers={"Authorization": f"token {guest}"}
            )
        ).body
    )
    assert [r["name"] for r in listed["tokens"]] == ["guest"]
    for victim in ("test", "other-guest"):
        rotate = ("colabremote", "api", "tokens", victim, "rotate")
        assert await _code(jp_fetch, guest, *rotate, method="POST", body="") == 403
        revoke = ("colabremote", "api", "tokens", victim)
        assert await _code(jp_fetch, guest, *revoke, method="DELETE") == 403
    forward = json.dumps({"local_port": 9000, "client": "evil"})
    assert (
        await _code(jp_fetch, guest, "colabremote", "api", "forward", method="PUT", body=forward)
        == 403
    )
    ports = json.dumps({"client": "evil", "forwards": [{"remote_port": 80, "local_port": 80}]})
    assert (
        await _code(jp_fetch, guest, "colabremote", "api", "ports", method="PUT", body=ports) == 403
    )
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch(
            "colabremote", "api", "tokens", "test", "rotate", method="POST", body="",
            headers={"Authorization": f"token {guest}"},
        )  # fmt: skip
    assert "guest token" in json.loads(e.value.response.body)["message"]
    # Nothing changed: the owner's and the other guest's tokens still work.
    assert await _code(jp_fetch, token, "api", "kernels") == 200
    assert await _code(jp_fetch, other, "api", "kernels") == 200
    # Itself: rotation keeps the expiry, then it may revoke itself.
    expires = store.get("guest").expires
    r = await jp_fetch(
        "colabremote", "api", "tokens", "guest", "rotate", method="POST", body="",
        headers={"Authorization": f"token {guest}"},
    )  # fmt: skip
    guest = json.loads(r.body)["token"]
    assert store.get("guest").expires == expires
    assert (
        await _code(jp_fetch, guest, "colabremote", "api", "tokens", "guest", method="DELETE")
        == 204
    )
    # The owner (no expiry) sees and manages every token.
    listed = json.loads((await jp_fetch("colabremote", "api", "tokens")).body)
    assert {r["name"] for r in listed["tokens"]} == {"test", "other-guest"}
    assert (
        await _code(jp_fetch, token, "colabremote", "api", "tokens", "other-guest", method="DELETE")
        == 204
    )


async def test_forward_report_sets_the_colab_port(jp_fetch, jp_http_port):
    """When the companion reports its local port, the panel's URL uses it."""
    status = json.loads((await jp_fetch("colabremote", "api", "status")).body)
    assert status["colab_port"] == jp_http_port
    r = await jp_fetch(
        "colabremote", "api", "forward", method="PUT",
        body=json.dumps({"local_port": 9000, "client": "laptop"}),
    )  # fmt: skip
    assert r.code == 204
    status = json.loads((await jp_fetch("colabremote", "api", "status")).body)
    assert status["colab_port"] == 9000
    assert status["forwards"]["laptop"]["local_port"] == 9000
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("colabremote", "api", "forward", method="PUT", body='{"local_port": 0}')
    assert e.value.code == 400


async def test_colab_kernel_connections_counted(jp_fetch, jp_ws_fetch):
    """The status bar's "Colab: N clients" counts kernel connections from Colab's origin."""
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "python3"}))
    kid = json.loads(r.body)["id"]
    try:
        colab = await jp_ws_fetch(
            "api", "kernels", kid, "channels", headers={"Origin": COLAB_ORIGIN}
        )
        plain = await jp_ws_fetch("api", "kernels", kid, "channels")
        await execute(colab, "1")
        status = json.loads((await jp_fetch("colabremote", "api", "status")).body)
        assert status["connections"]["colab_kernel_websockets"] == 1
        assert status["connections"]["kernel_websockets"] == 2
        colab.close()
        plain.close()
    finally:
        await jp_fetch("api", "kernels", kid, method="DELETE")


class DenyColabRemote(Authorizer):
    """An Authorizer that refuses the extension's own API and allows everything else."""

    def is_authorized(self, handler, user, action, resource) -> bool:
        return resource != "colabremote"


class TestAuthorizer:
    """The token and forward controls ask jupyter_server's Authorizer (resource
    `colabremote`), so a deployment can restrict them."""

    @pytest.fixture
    def jp_server_config(self, jp_server_config):
        """The production settings with an Authorizer denying the `colabremote` resource."""
        return {
            **jp_server_config,
            "ServerApp": {**jp_server_config["ServerApp"], "authorizer_class": DenyColabRemote},
        }

    async def test_denied_rotate_revoke_and_forward_answer_403(
        self, jp_fetch, colab_app, token_file, token
    ):
        """Refused, and nothing changes: the token still works, no forward is recorded."""
        requests = [
            (("tokens", "test", "rotate"), {"method": "POST", "body": ""}),
            (("tokens", "test"), {"method": "DELETE"}),
            (("forward",), {"method": "PUT", "body": json.dumps({"local_port": 9000})}),
        ]
        for path, kwargs in requests:
            with pytest.raises(HTTPClientError) as e:
                await jp_fetch("colabremote", "api", *path, **kwargs)
            assert e.value.code == 403, path
            assert "not authorized" in json.loads(e.value.response.body)["message"]
        assert TokenStore(token_file).verify(token) is not None
        assert colab_app.forwards == {}
        # Other resources are the Authorizer's to allow: kernels still answer.
        assert (await jp_fetch("api", "kernels")).code == 200
