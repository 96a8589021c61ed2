"""Check the chain through the tunnel as Colab will use it, before printing the URL."""

from __future__ import annotations

import http.client
import json
import typing as t

from .errors import CompanionError

COLAB_ORIGIN = "https://colab.research.google.com"


def _request(
    port: int, method: str, path: str, headers: dict[str, str], timeout: float
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Host": f"localhost:{port}", **headers})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise CompanionError(f"the tunnel does not answer on localhost:{port}: {e}") from e
    finally:
        conn.close()


def verify_chain(port: int, token: str, timeout: float = 15.0) -> dict[str, t.Any]:
    """Authenticated status, Colab's CORS preflight and its build-info probe; return status."""
    auth = {"Authorization": f"token {token}"}
    code, _, body = _request(port, "GET", "/colabremote/api/status", auth, timeout)
    if code == 403:
        raise CompanionError("the runtime refused the token (revoked? run start again)")
    if code != 200:
        raise CompanionError(f"the runtime's status check answered HTTP {code}")
    try:
        status = json.loads(body)
    except ValueError as e:
        raise CompanionError(
            "the runtime's status check answered something other than JSON; is it running "
            "under `jupyter colabremote serve`?"
        ) from e
    code, headers, _ = _request(
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
    code, _, body = _request(
        port, "GET", "/api/colab/build-info", {**auth, "Origin": COLAB_ORIGIN}, timeout
    )
    if code != 200 or not body.startswith(b")]}'"):
        raise CompanionError(f"Colab's probe /api/colab/build-info answered HTTP {code}")
    return status


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
