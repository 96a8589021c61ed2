"""`start --gateway-url URL`: the runtime's kernels on a Jupyter Kernel/Enterprise Gateway.

The URL is the gateway as the *host* reaches it (e.g. a Kubernetes service from a login
node), so it is not checked from here beyond its form; the runtime's status, read through the
tunnel once it is up, says whether the host reaches it. The gateway's token is taken from this
machine's environment and travels only in the agent's stdin request; on the host it reaches
the runtime as JUPYTER_GATEWAY_AUTH_TOKEN in its environment, never on a command line.
"""

from __future__ import annotations

import typing as t
import urllib.parse

from ..protocol.errors import ExitCode
from .env_file import secret_from_environment
from .errors import CompanionError

#: Where the gateway token is looked for: these variables, in the environment or ./.env.
GATEWAY_TOKEN_VARIABLES = ("COLABREMOTE_GATEWAY_TOKEN", "JUPYTER_GATEWAY_AUTH_TOKEN")


def check_gateway_url(url: str) -> str:
    """The URL if it is an http(s) URL without credentials in it, else a one-line error."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CompanionError(
            f"--gateway-url must be an http:// or https:// URL, not {url!r}",
            exit_code=ExitCode.USAGE,
        )
    if parts.username or parts.password:
        raise CompanionError(
            "--gateway-url must not contain credentials (they would show on the host's "
            f"command line); put the token in {GATEWAY_TOKEN_VARIABLES[0]} instead",
            exit_code=ExitCode.USAGE,
        )
    if parts.query or parts.fragment:
        raise CompanionError("--gateway-url takes no query or fragment", exit_code=ExitCode.USAGE)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def gateway_token_from_environment(env_file: str = ".env") -> str | None:
    """The gateway token from the local environment, else from a .env file (never printed)."""
    return secret_from_environment(GATEWAY_TOKEN_VARIABLES, env_file)


def gateway_warning(status: dict[str, t.Any]) -> str | None:
    """A warning line when the runtime reports its gateway unreachable (from its status)."""
    gw = status.get("gateway")
    if not gw or gw.get("reachable"):
        return None
    return (
        f"warning: the runtime cannot reach the kernel gateway {gw.get('url')}: "
        f"{gw.get('error')}; kernels will fail to start until it can"
    )
