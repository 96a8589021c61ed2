"""Tokens are masked in every log line, whichever logger writes it."""

from __future__ import annotations

import logging

from jupyter_colab_remote.extension.log_scrub import install, scrub

TOKEN = "ab" * 32


def test_scrub_masks_query_and_header_tokens():
    """URLs and Authorization headers lose the secret but keep the rest for debugging."""
    assert scrub(f"GET /api/kernels?token={TOKEN}&x=1") == "GET /api/kernels?token=[secret]&x=1"
    assert scrub(f"ws://h/api/k/c?session_id=s&token={TOKEN}") == (
        "ws://h/api/k/c?session_id=s&token=[secret]"
    )
    assert scrub(f"Authorization: token {TOKEN}") == "Authorization: token [secret]"
    assert scrub(f"Authorization: Bearer {TOKEN}") == "Authorization: Bearer [secret]"
    assert scrub("GET /api/kernels 200") == "GET /api/kernels 200"
    encoded = f"/http_over_websocket?jupyter_http_over_ws_auth_url=http%3A//h/%3Ftoken%3D{TOKEN}"
    assert TOKEN not in scrub(encoded)
    assert scrub(encoded).endswith("%3Ftoken%3D[secret]")


def test_scrub_masks_token_names_in_any_encoding():
    """Tornado decodes parameter names, so `%74oken` is a token; nested URLs too."""
    assert scrub(f"GET /?%74oken={TOKEN}&a=1") == "GET /?%74oken=[secret]&a=1"
    assert scrub(f"GET /?TO%4BEN={TOKEN}") == "GET /?TO%4BEN=[secret]"
    nested = f"/h?u=http%3A//h/%3F%2574oken%3D%61{TOKEN}%26b%3D1"
    assert scrub(nested) == "/h?u=http%3A//h/%3F%2574oken%3D[secret]%26b%3D1"
    assert scrub("GET /x?tokens=1&my_token=2") == "GET /x?tokens=1&my_token=2"


def test_filter_rewrites_tornado_error_records(caplog):
    """tornado.general logs raw URIs on errors: the filter masks them before any handler."""
    install()
    with caplog.at_level(logging.WARNING, logger="tornado.general"):
        logging.getLogger("tornado.general").warning("403 POST %s (127.0.0.1)", f"/x?token={TOKEN}")
    assert TOKEN not in caplog.text
    assert "token=[secret]" in caplog.text
