"""Opening the runtime's URL in a browser: JupyterLab when it is there, else a page for people.

Real `jupyter colabremote serve` processes. "JupyterLab absent" is a runtime started with
JupyterLab's server extension disabled (`--ServerApp.jpserver_extensions=jupyterlab=False`):
the same check decides the default URL as for an environment without the package, which
this venv (with the test extra) cannot be.
"""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.request

import pytest

from jupyter_colab_remote import __version__
from tests.harness.runtime import run_runtime
from tests.harness.runtime_api import rest

pytestmark = [pytest.mark.e2e]

NO_LAB = ["--ServerApp.jpserver_extensions=jupyterlab=False"]


def browse(url: str):
    """GET as a browser does (redirects followed, cookies kept): (final URL, response, body)."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    with opener.open(url, timeout=30) as r:
        return r.url, r, r.read().decode()


def test_without_jupyterlab_the_url_opens_a_page_not_json(tmp_path):
    """`/?token=` lands on an HTML page saying what this is and how to use the URL in Colab,
    with no token in it and no Referer leaving it; without a token there is no page."""
    with run_runtime(tmp_path, extra_args=NO_LAB) as rt:
        final, response, body = browse(f"{rt.base}/?token={rt.token}")
        assert final.split("?")[0] == f"{rt.base}/colabremote"
        assert response.headers["Content-Type"].startswith("text/html")
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert rt.token not in body
        assert "Colab local runtime" in body
        assert "Connect to a local runtime" in body
        assert f"jupyter-colab-remote {__version__}" in body
        assert "0 kernels running" in body
        assert 'href="/colabremote/api/status"' in body
        assert "jupyter-colab-remote[lab]" in body  # how to get JupyterLab
        # Self-contained: no scripts, nothing loaded from elsewhere.
        assert "<script" not in body and not re.search(r'(src|href)="(https?:)?//', body)

        code, _, _ = rest(rt, "POST", "/api/kernels", {"name": "python3"})
        assert code == 201
        assert "1 kernel running" in browse(f"{rt.base}/colabremote?token={rt.token}")[2]

        try:
            final, _, body = browse(f"{rt.base}/colabremote")
        except urllib.error.HTTPError as e:
            final, body = e.url, ""
        assert "/login" in final and "kernel" not in body


def test_with_jupyterlab_the_url_opens_lab(runtime):
    """With JupyterLab installed (the `lab` extra), `/?token=` opens JupyterLab."""
    final, response, body = browse(f"{runtime.base}/?token={runtime.token}")
    assert final.split("?")[0] == f"{runtime.base}/lab"
    assert response.headers["Content-Type"].startswith("text/html")
