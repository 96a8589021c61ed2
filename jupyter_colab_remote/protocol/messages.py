"""The records companion and agent exchange: one JSON request on stdin, one JSON line back.

`python -m jupyter_colab_remote remote ACTION` reads one request (secrets travel only there,
never on a command line), writes progress lines prefixed with PROGRESS_PREFIX to stderr as
they come (an image pull), and answers one JSON line on stdout: the action's result with
`"ok": true`, or `{"ok": false, "error": ..., "exit_code": ...}`. The companion sends the
same records over SSH and, without a host, to a local agent process.
"""

from __future__ import annotations

import json
import typing as t

from .errors import ExitCode

#: Lines the agent writes to stderr with this prefix are shown by the companion as they come.
PROGRESS_PREFIX = "colabremote-progress: "

Action = t.Literal["info", "ensure", "stop", "status", "container-doctor"]
ACTIONS: tuple[Action, ...] = t.get_args(Action)


class Request(t.TypedDict, total=False):
    """Fields every request may carry."""

    profile: str


class TokenFields(t.TypedDict, total=False):
    """The companion's token, as `ensure` registers it (see agent.main.register_token)."""

    token: str
    token_name: str
    #: Whether this host accepted the token before (then a refusal means it was rotated).
    token_known: bool
    #: Registered instead when the saved token was rotated or revoked on the server.
    fallback_token: str
    #: Set by the agent itself (never sent): the profile's dead runtime left its port to
    #: another process, which an older companion may have sent the token; retire it.
    token_compromised: bool


class ContainerFields(t.TypedDict, total=False):
    """`--image`: Colab's image in a container instead of `serve`."""

    image: str | None
    gpus: str | None
    engine: str | None
    #: Container ports to publish on the host's loopback too (`--forward`'s remote ports);
    #: only a container created by this request gets them.
    publish: list[int]


class EnsureRequest(Request, TokenFields, ContainerFields, total=False):
    """`ensure`: re-attach to the profile's runtime, or start it detached."""

    workdir: str | None
    env: dict[str, str]
    git: str | None
    git_token: str | None
    gateway_url: str | None
    gateway_token: str | None
    #: The port to serve on (`start` without a host: the runtime's port is the local one).
    port: int
    token_file: str


class StopRequest(Request, total=False):
    """`stop`: the profile's runtime (or container) and its kernels."""

    engine: str | None


class Answer(t.TypedDict, total=False):
    """Every answer: `ok`, and on failure the error line and the exit code."""

    ok: bool
    error: str
    exit_code: int


class InfoAnswer(Answer, total=False):
    """`info`: the agent's version (same major.minor as the companion's) and interpreter."""

    version: str
    python: str
    executable: str


class EnsureAnswer(Answer, total=False):
    """`ensure`: the runtime (its runtime file's fields) and what became of the token."""

    port: int
    pid: int
    profile: str
    token_file: str
    reattached: bool
    log: str
    #: `native` (`serve`) or `container`; a container's own token comes back in `token`.
    mode: str
    token: str
    container: str | None
    image: str | None
    engine: str | None
    gpus: str | None
    #: A container's ports published on the host's loopback: [{"port", "host_port"}].
    published: list[dict[str, int]]
    gateway_url: str | None
    #: The workspace (`--git`): the repository and its checked-out commit.
    git: str
    head: str
    #: The name the token has in the server's store, and whether the fallback was registered.
    token_name: str
    token_reissued: bool


class StopAnswer(Answer, total=False):
    """`stop`: whether a runtime was stopped (and how many processes) or a container removed."""

    stopped: bool
    pid: int
    processes: int
    container: str
    image: str


class StatusAnswer(Answer, total=False):
    """`status`: this user's runtime files and managed containers (all profiles)."""

    runtimes: list[dict[str, t.Any]]
    containers: list[dict[str, t.Any]]


def success_line(result: t.Mapping[str, t.Any]) -> str:
    """The answer line of a successful action."""
    return json.dumps({"ok": True, **result})


def failure_line(error: str, exit_code: int = ExitCode.ERROR) -> str:
    """The answer line of a failed action."""
    return json.dumps({"ok": False, "error": error, "exit_code": int(exit_code)})


def parse_answer(stdout: str) -> Answer | None:
    """The last JSON object line of the agent's stdout, or None if there is none."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        return None
    try:
        answer = json.loads(lines[-1])
    except ValueError:
        return None
    return t.cast(Answer, answer) if isinstance(answer, dict) else None


def progress_text(stderr_line: str) -> str | None:
    """The progress report in one of the agent's stderr lines, or None."""
    if stderr_line.startswith(PROGRESS_PREFIX):
        return stderr_line[len(PROGRESS_PREFIX) :]
    return None
