"""The least-privilege rule for other origins, on paths as clients may spell them."""

from __future__ import annotations

import pytest

from jupyter_colab_remote.extension.origins import OriginPolicy

COLAB = "https://colab.research.google.com"
HOST = "localhost:8888"


@pytest.mark.parametrize(
    "path",
    [
        "/api/terminals",
        "/api/terminals/1",
        "/terminals/websocket/1",
        "/colabremote/api/tokens",
        "/colabremote/api/tokens/default/rotate",
        "/colabremote/api/forward",
        "/colabremote/api/ports",
        "/api/%74erminals",  # escapes must not slip past the rule
        "//api/terminals",
        "/base/api/terminals",
    ],
)
def test_colab_origin_refused_shell_and_token_paths(path):
    """Whatever the spelling, Colab's origin gets no terminal and no token API."""
    base = "/base/" if path.startswith("/base/") else "/"
    assert not OriginPolicy().allows_path(COLAB, HOST, path, base)


@pytest.mark.parametrize(
    "path",
    ["/api/kernels", "/api/sessions", "/api/contents/x", "/api/colab/resources",
     "/http_over_websocket", "/api/terminalsx", "/colabremote/api/status"],
)  # fmt: skip
def test_colab_origin_keeps_what_colab_needs(path):
    """Kernels, sessions, contents, Colab's endpoints and the tunnel stay open to Colab."""
    assert OriginPolicy().allows_path(COLAB, HOST, path)


@pytest.mark.parametrize("origin", [None, "", f"http://{HOST}"])
def test_own_pages_and_scripts_keep_everything(origin):
    """JupyterLab (same origin) and clients without an Origin are not limited."""
    assert OriginPolicy().allows_path(origin, HOST, "/api/terminals")
    assert OriginPolicy().allows_path(origin, HOST, "/colabremote/api/tokens")
