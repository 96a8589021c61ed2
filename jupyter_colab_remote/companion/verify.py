"""Check the chain through the tunnel as Colab will use it, before printing the URL."""

from __future__ import annotations

import http.client
import json
import typing as t

from .errors import CompanionError
from .terminal_text import printable_tree

COLAB_ORIGIN = "https://colab.research.google.com"


def request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    timeout: float,
    body: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to localhost:PORT as Colab sends it; a one-line error if none answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Host": f"localhost:{port}", **headers})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise CompanionError(f"the tunnel does not answer on localhost:{port}: {e}") from e
    finally:
        conn.close()


def verify_chain(
    port: int, token: str, timeout: float = 15.0, mode: str = "native"
) -> dict[str, t.Any]:
    """Authenticated status, Colab's CORS preflight and its build-info probe; return status.

    `mode="container"`: the runtime is Colab's image (plain Jupyter), see verify_container.
    """
    if mode == "container":
        return verify_container(port, token, timeout)
    auth = {"Authorization": f"token {token}"}
    code, _, body = request(port, "GET", "/colabremote/api/status", auth, timeout)
    if code == 403:
        raise CompanionError("the runtime refused the token (revoked? run start again)")
    if code != 200:
        raise CompanionError(f"the runtime's status check answered HTTP {code}")
    try:
        status = printable_tree(json.loads(body))
    except ValueError as e:
        raise CompanionError(
            "the runtime's status check answered something other than JSON; is it running "
            "under `jupyter colabremote serve`?"
        ) from e
    code, headers, _ = request(
        port,
        "OPTIONS",
        "/api/colab/build-info",
        {
            "Origin": COLAB_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
        timeout,
    )
    if headers.get("access-control-allow-origin") != COLAB_ORIGIN:
        raise CompanionError(
            f"the runtime does not allow Colab's origin (preflight answered HTTP {code}); is "
            "it running under `jupyter colabremote serve`?"
        )
    code, _, body = request(
        port, "GET", "/api/colab/build-info", {**auth, "Origin": COLAB_ORIGIN}, timeout
    )
    if code != 200 or not body.startswith(b")]}'"):
        raise CompanionError(f"Colab's probe /api/colab/build-info answered HTTP {code}")
    return status


def verify_container(port: int, token: str, timeout: float = 15.0) -> dict[str, t.Any]:
    """The same chain for a container running Colab's image, with what that image serves.

    Its Jupyter knows nothing of /colabremote/api/status: the token is checked on
    /api/kernelspecs, Colab's origin on that path's CORS preflight (the image allows it with
    `allow_origin_pat`), and /api/colab/build-info only if the image serves it (Colab's does,
    through its own server extension; a plain Jupyter image answers 404).
    """
    auth = {"Authorization": f"token {token}"}
    code, _, body = request(port, "GET", "/api/kernelspecs", auth, timeout)
    if code == 403:
        raise CompanionError(
            "the container refused its token (restarted with a new one? run start)"
        )
    try:
        specs = json.loads(body)["kernelspecs"] if code == 200 else None
    except (ValueError, KeyError, TypeError):
        specs = None
    if not isinstance(specs, dict):
        raise CompanionError(f"the container's /api/kernelspecs answered HTTP {code}, not Jupyter")
    preflight = {
        "Origin": COLAB_ORIGIN,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    code, headers, _ = request(port, "OPTIONS", "/api/kernelspecs", preflight, timeout)
    if headers.get("access-control-allow-origin") not in (COLAB_ORIGIN, "*"):
        raise CompanionError(
            f"the container's Jupyter does not allow Colab's origin (preflight answered HTTP "
            f"{code}); start it with --ServerApp.allow_origin_pat='https://colab\\.(sandbox|"
            "research)\\.google\\.com' --ServerApp.allow_credentials=True"
        )
    code, _, body = request(
        port, "GET", "/api/colab/build-info", {**auth, "Origin": COLAB_ORIGIN}, timeout
    )
    if code == 200 and not body.startswith(b")]}'"):
        raise CompanionError("the container's /api/colab/build-info lacks Colab's )]}' prefix")
    if code not in (200, 404):
        raise CompanionError(f"Colab's probe /api/colab/build-info answered HTTP {code}")
    return {"mode": "container", "kernelspecs": sorted(specs), "build_info": code == 200}


def report_forward(port: int, token: str, client: str, timeout: float = 10.0) -> None:
    """Tell the runtime which local port Colab uses (the launcher panel shows that URL)."""
    body = json.dumps({"local_port": port, "client": client})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "PUT",
            "/colabremote/api/forward",
            body=body,
            headers={
                "Host": f"localhost:{port}",
                "Authorization": f"token {token}",
                "Content-Type": "application/json",
            },
        )
        code = conn.getresponse().status
    except (OSError, http.client.HTTPException) as e:
        raise CompanionError(f"could not report the forward to the runtime: {e}") from e
    finally:
        conn.close()
    if code not in (200, 204):
        raise CompanionError(f"the runtime refused the forward report (HTTP {code})")


def url_problem(port: int, token: str, mode: str) -> str | None:
    """Why the URL with this port and token would fail now, or None if the runtime accepts it."""
    path = "/api/kernelspecs" if mode == "container" else "/colabremote/api/status"
    try:
        code, _, _ = request(port, "GET", path, {"Authorization": f"token {token}"}, 10.0)
    except CompanionError:
        return f"nothing answers on localhost:{port}"
    if code == 403:
        return "its token was rotated or revoked on the server"
    return None if code == 200 else f"the runtime answered HTTP {code}"
