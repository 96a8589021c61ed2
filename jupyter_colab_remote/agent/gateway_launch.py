"""How the remote agent starts a runtime whose kernels run on a gateway (light imports only).

The request's `gateway_url` becomes `--GatewayClient.url=URL` (jupyter_server then manages
kernels through the gateway); its `gateway_token` goes into the runtime's environment as
JUPYTER_GATEWAY_AUTH_TOKEN, which GatewayClient reads: never onto a command line or into a
file. Names (not values) of the request's kernel variables become GatewayClient.allowed_envs,
so they reach the gateway's kernels too (if the gateway allows them); KERNEL_* variables
(KERNEL_LAUNCH_TIMEOUT, KERNEL_NAMESPACE, KERNEL_USERNAME...) always go to the gateway, and
JUPYTER_GATEWAY_* variables configure jupyter_server's gateway client itself.
"""

from __future__ import annotations

import typing as t

from ..protocol.gateway import GATEWAY_TOKEN_ENV, public_url

__all__ = ["GATEWAY_TOKEN_ENV", "mismatch", "public_url", "serve_args", "serve_env"]


def serve_args(request: dict[str, t.Any]) -> list[str]:
    """`serve` arguments for the request's gateway (none without one)."""
    url = request.get("gateway_url")
    if not url:
        return []
    args = [f"--GatewayClient.url={url}"]
    # KERNEL_* variables reach the gateway anyway; JUPYTER_GATEWAY_* configure the client.
    names = sorted(
        str(k)
        for k in (request.get("env") or {})
        if not str(k).startswith(("KERNEL_", "JUPYTER_GATEWAY_"))
    )
    if names:
        args.append(f"--GatewayClient.allowed_envs={','.join(names)}")
    return args


def serve_env(request: dict[str, t.Any]) -> dict[str, str]:
    """Environment variables for `serve`: the gateway token, when one was sent."""
    token = request.get("gateway_token")
    return {GATEWAY_TOKEN_ENV: str(token)} if request.get("gateway_url") and token else {}


def mismatch(info: dict[str, t.Any], request: dict[str, t.Any], profile: str) -> str | None:
    """Why the running runtime cannot serve a request for another gateway (None if it can)."""
    wanted = public_url(request.get("gateway_url"))
    running = info.get("gateway_url")
    if not wanted or wanted == running:
        return None
    where = f"on the gateway {running}" if running else "on this host"
    return (
        f"the running runtime of profile {profile!r} runs its kernels {where}, not on "
        f"{wanted}; stop it first (jupyter colabremote stop) or choose another --profile"
    )
