"""`start`'s options, and what a connection record remembers of them."""

from __future__ import annotations

import dataclasses
import typing as t

from .remote import python_command


@dataclasses.dataclass
class StartOptions:
    """Everything `start` was asked to do."""

    host: str | None = None
    port: int = 9000
    profile: str = "default"
    accept_new_host_key: bool = False
    remote_python: str | None = None
    remote_venv: str | None = None
    remote_conda: str | None = None
    remote_uv: bool = False
    #: The interpreter argv a previous `start` used (from the connection record), when the
    #: command line names none.
    remote_prefix: list[str] | None = None
    install: bool = False
    wheel: str | None = None
    wheelhouse: str | None = None
    workdir: str | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    git: str | None = None
    git_token: str | None = None
    gateway_url: str | None = None
    gateway_token: str | None = None
    image: str | None = None
    gpus: str | None = None
    engine: str | None = None
    json: bool = False
    open_browser: bool = False
    stop_on_exit: bool = False
    give_up_after: float = 24 * 3600.0


#: The interpreter options: when none is given, the remembered interpreter is used.
INTERPRETER_OPTIONS = ("remote_python", "remote_venv", "remote_conda", "remote_uv")


def interpreter(choice: t.Any) -> list[str]:
    """The remote interpreter argv for StartOptions or parsed arguments: the interpreter
    options given, else the one remembered from `start` (`remote_prefix`), else the default."""
    chosen = [getattr(choice, k, None) for k in INTERPRETER_OPTIONS]
    remembered = getattr(choice, "remote_prefix", None)
    if not any(chosen) and remembered:
        return list(remembered)
    return python_command(*chosen)


#: What a connection record keeps of `start`'s options (never secrets: no env, no tokens);
#: the container's image, engine and GPUs come with container_record().
REMEMBERED = ("workdir", "git", "gateway_url", "image", "gpus", "engine")
#: What a record keeps of a container runtime.
CONTAINER_FIELDS = ("container", "image", "engine", "gpus")


def remembered_options(opts: StartOptions, prefix: list[str] | None) -> dict[str, t.Any]:
    """How the runtime was started, as the connection record keeps it."""
    return {
        "host": opts.host,
        "profile": opts.profile,
        "python": prefix,
        **{k: getattr(opts, k) for k in REMEMBERED if k not in CONTAINER_FIELDS},
    }
