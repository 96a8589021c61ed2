"""The kernel check's reading of the runtime's answers (kernelspecs, status, errors).

The "runtime" is a real HTTP server on loopback answering canned JSON, so each odd answer a
runtime may give is checked in milliseconds; tests/test_companion_kernel_check.py runs the
check end to end against a real runtime.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from jupyter_colab_remote.companion.errors import CompanionError
from jupyter_colab_remote.companion.kernel_check import (
    NO_KERNEL_EXIT,
    python_kernelspec,
    verify_kernel,
)

TOKEN = "t0ken"


def spec(language: str) -> dict:
    """A kernelspec entry as /api/kernelspecs lists it."""
    return {"spec": {"language": language, "display_name": language}}


@contextlib.contextmanager
def runtime(answers: dict[tuple[str, str], tuple[int, bytes]]) -> Iterator[tuple[int, list]]:
    """An HTTP server on 127.0.0.1 answering (method, path) with (status, body); its port and
    the requests it saw (method, path, Authorization)."""
    seen: list[tuple[str, str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            seen.append((self.command, self.path, self.headers.get("Authorization")))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            code, body = answers.get((self.command, self.path), (404, b'{"message": "no"}'))
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def specs(default: str, **languages: str) -> tuple[int, bytes]:
    """A /api/kernelspecs answer."""
    body = {"default": default, "kernelspecs": {n: spec(lang) for n, lang in languages.items()}}
    return 200, json.dumps(body).encode()


def test_default_python_kernel_is_chosen_with_the_token():
    """The default spec if it is Python, asked for with the token in the header."""
    answers = {("GET", "/api/kernelspecs"): specs("py311", ir="R", py311="python")}
    with runtime(answers) as (port, seen):
        assert python_kernelspec(port, TOKEN, "gpu") == "py311"
    assert seen == [("GET", "/api/kernelspecs", f"token {TOKEN}")]


def test_first_python_kernel_when_the_default_is_not_python():
    """A default that is R: the first Python spec instead (any case of `Python`)."""
    answers = {("GET", "/api/kernelspecs"): specs("ir", ir="R", mine="Python", other="python")}
    with runtime(answers) as (port, _):
        assert python_kernelspec(port, TOKEN, "gpu") == "mine"


def test_no_python_kernel_repeats_the_runtimes_advice():
    """No Python spec: exit code 7 and the advice the runtime's status gives."""
    status = {"kernels_available": {"advice": "pip install ipykernel in /opt/venv"}}
    answers = {
        ("GET", "/api/kernelspecs"): specs("ir", ir="R"),
        ("GET", "/colabremote/api/status"): (200, json.dumps(status).encode()),
    }
    with runtime(answers) as (port, _), pytest.raises(CompanionError) as e:
        python_kernelspec(port, TOKEN, "gpu-box")
    assert e.value.exit_code == NO_KERNEL_EXIT
    assert str(e.value) == (
        "the runtime on gpu-box has no Python kernel (pip install ipykernel in /opt/venv)"
    )


@pytest.mark.parametrize(
    "kernelspecs",
    [(200, b"not json"), (200, b"[1, 2]"), (500, b"{}"), (200, b'{"kernelspecs": null}')],
)
def test_odd_answers_count_as_no_kernel_with_generic_advice(kernelspecs):
    """Unparsable or failed answers (and a status without advice): generic advice, no crash."""
    answers = {("GET", "/api/kernelspecs"): kernelspecs}
    with runtime(answers) as (port, _), pytest.raises(CompanionError) as e:
        python_kernelspec(port, TOKEN, "gpu")
    assert e.value.exit_code == NO_KERNEL_EXIT
    assert "python -m pip install ipykernel" in str(e.value)


@pytest.mark.parametrize(
    "body, shown",
    [(b'{"message": "No such kernel: ghost"}', "No such kernel: ghost"), (b"<html>", "HTTP 500")],
)
def test_kernel_start_failure_shows_the_servers_message(body, shown):
    """A refused kernel start: the server's JSON message, else the HTTP status."""
    answers = {
        ("GET", "/api/kernelspecs"): specs("python3", python3="python"),
        ("POST", "/api/kernels"): (500, body),
    }
    with runtime(answers) as (port, _), pytest.raises(CompanionError) as e:
        verify_kernel(port, TOKEN, "gpu", timeout=5)
    assert str(e.value) == f"the runtime on gpu cannot start a Python kernel: {shown}"
    assert e.value.exit_code == NO_KERNEL_EXIT
