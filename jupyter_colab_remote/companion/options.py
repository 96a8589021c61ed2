"""`start`'s options, defined once: the parser, StartOptions, profiles' keys and their help,
and the built-in defaults all come from the fields below (and what a record remembers)."""

from __future__ import annotations

import argparse
import dataclasses
import typing as t

from .remote import python_command

#: Argument groups, in the order `--help` shows them.
INTERPRETER_GROUP = "remote interpreter (default: the --install venv, else python3)"
CONTAINER_GROUP = "container (instead of the native runtime)"


def option(
    default: t.Any,
    *flags: str,
    help: str,
    section: str = "start",
    group: str | None = None,
    profile: bool = True,
    **argparse_kwargs: t.Any,
) -> t.Any:
    """A StartOptions field that is also a command-line option.

    `section`: `connection` options are shared by every command that talks to a host,
    `container` ones by `start` and `doctor`, `start` ones are start's own. `profile`: whether
    a named profile may set it. The field's default is the built-in one, used when neither
    the command line, a profile nor the connection record set the option.
    """
    spec = {
        "flags": flags,
        "help": help,
        "section": section,
        "group": group,
        "profile": profile,
        "argparse": argparse_kwargs,
    }
    return dataclasses.field(default=default, metadata={"cli": spec})


def switch(flag: str, *, help: str, **kwargs: t.Any) -> t.Any:
    """An option() that is off unless `flag` is given."""
    return option(False, flag, action="store_true", help=help, **kwargs)


#: option()'s placement of the interpreter choices and of the container options.
INTERPRETER: dict[str, t.Any] = {"section": "connection", "group": INTERPRETER_GROUP}
CONTAINER: dict[str, t.Any] = {"section": "container", "group": CONTAINER_GROUP}


@dataclasses.dataclass
class StartOptions:
    """Everything `start` was asked to do."""

    host: str | None = option(
        None, help="a profile name, [user@]host[:port] or a ~/.ssh/config alias", nargs="?"
    )
    port: int = option(9000, "--port", type=int, help="local port for Colab (default 9000)")
    profile: str = option(
        "default",
        "--profile",
        help="runtime name on the host (default: the profile's name, else 'default')",
        section="connection",
        profile=False,
    )
    accept_new_host_key: bool = switch(
        "--accept-new-host-key",
        help="trust an unknown SSH host key and save it to known_hosts (trust on first use)",
        section="connection",
    )
    server_alive_interval: float | None = option(
        None,
        "--server-alive-interval",
        type=float,
        metavar="SECONDS",
        help="send a request the server must answer after this long without traffic; 0: off "
        "(default: ~/.ssh/config's ServerAliveInterval, else 1)",
        section="connection",
    )
    server_alive_count_max: int | None = option(
        None,
        "--server-alive-count-max",
        type=int,
        metavar="N",
        help="declare the link dead after N intervals without an answer, then reconnect "
        "(default: ~/.ssh/config's ServerAliveCountMax, else 4)",
        section="connection",
    )
    remote_python: str | None = option(
        None, "--remote-python", metavar="PATH", help="python executable on the host", **INTERPRETER
    )
    remote_venv: str | None = option(
        None, "--remote-venv", metavar="DIR", help="virtual environment on the host", **INTERPRETER
    )
    remote_conda: str | None = option(
        None, "--remote-conda", metavar="ENV", help="conda/mamba environment name", **INTERPRETER
    )
    remote_uv: bool = switch("--remote-uv", help="run through `uv run`", **INTERPRETER)
    install: bool = switch(
        "--install",
        help="install this version of jupyter-colab-remote on the host if missing (into "
        "--remote-venv/--remote-python's venv, else a private venv)",
    )
    wheel: str | None = option(
        None,
        "--wheel",
        help="with --install: upload this wheel of the package instead of this one's",
    )
    wheelhouse: str | None = option(
        None,
        "--wheelhouse",
        metavar="DIR",
        help="with --install: upload the *.whl in DIR for the host's pip (a host without an "
        "index); `start --install` says how to fill it",
    )
    workdir: str | None = option(
        None, "--workdir", help="directory on the host that becomes the runtime's root"
    )
    env_file: str | None = option(
        None, "--env-file", help="KEY=VALUE file: variables for the runtime's kernels"
    )
    git: str | None = option(
        None,
        "--git",
        metavar="URL[#BRANCH]",
        help="clone this repository into --workdir (default ~/NAME) or update it on re-attach; "
        "a token is taken from GIT_TOKEN/GITHUB_TOKEN/GH_TOKEN or ./.env",
    )
    gateway_url: str | None = option(
        None,
        "--gateway-url",
        metavar="URL",
        help="run kernels on this Jupyter Kernel/Enterprise Gateway (as the host reaches it); "
        "its token is taken from COLABREMOTE_GATEWAY_TOKEN/JUPYTER_GATEWAY_AUTH_TOKEN or ./.env",
    )
    image: str | None = option(
        None,
        "--image",
        help="run this container image on the host, e.g. "
        "us-docker.pkg.dev/colab-images/public/runtime (pulled if missing)",
        **CONTAINER,
    )
    gpus: str | None = option(
        None, "--gpus", metavar="all|0,1", help="GPUs to pass into the container", **CONTAINER
    )
    engine: str | None = option(
        None,
        "--engine",
        choices=("docker", "podman"),
        help="default: podman or docker on the host",
        **CONTAINER,
    )
    json: bool = switch("--json", help="print a JSON record instead of the URL", profile=False)
    open_browser: bool = switch("--open", help="open Colab in the browser", profile=False)
    stop_on_exit: bool = switch(
        "--stop-on-exit",
        help="stop the remote runtime and its kernels when this command exits",
        profile=False,
    )
    give_up_after: float = option(
        24 * 3600.0,
        "--give-up-after",
        type=float,
        metavar="SECONDS",
        help="stop retrying after this long without a connection (default a day)",
    )
    forward: list[str] | None = option(
        None,
        "--forward",
        action="append",
        metavar="[LOCAL:]REMOTE",
        help="also forward this port of the host (to the same local port, or LOCAL); "
        "repeatable; healed with the tunnel",
    )
    auto_forward: bool = option(
        True,
        "--no-auto-forward",
        action="store_false",
        help="do not forward the ports that the runtime's kernels (and their children) "
        "start listening on (forwarded by default)",
    )
    auto_forward_ignore: list[str] | None = option(
        None,
        "--auto-forward-ignore",
        action="append",
        metavar="PORT[-PORT]",
        help="never forward these ports automatically (repeatable, or comma-separated)",
    )
    # Not options of their own: read from the files and environment the options name.
    #: The interpreter argv a previous `start` used (from the connection record), when the
    #: command line names none.
    remote_prefix: list[str] | None = None
    #: The kernels' variables (from --env-file), and the secrets from the environment or .env.
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    git_token: str | None = None
    gateway_token: str | None = None


def cli_fields(section: str | None = None) -> list[dataclasses.Field[t.Any]]:
    """StartOptions' command-line options (of one section), in `--help` order."""
    return [
        f
        for f in dataclasses.fields(StartOptions)
        if "cli" in f.metadata and section in (None, f.metadata["cli"]["section"])
    ]


def add_options(parser: argparse.ArgumentParser, section: str | None = None) -> None:
    """Add StartOptions' options (of one section) to a parser; every default is None, so a
    profile, the connection record and then the built-in default can fill what is unset."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in cli_fields(section):
        spec = f.metadata["cli"]
        target: t.Any = parser
        if spec["group"]:
            if spec["group"] not in groups:
                groups[spec["group"]] = parser.add_argument_group(spec["group"])
            target = groups[spec["group"]]
        kwargs = {"help": spec["help"], **spec["argparse"]}
        if not spec["flags"]:  # the positional host
            target.add_argument(f.name, **kwargs)
        else:
            target.add_argument(*spec["flags"], dest=f.name, default=None, **kwargs)


#: Keys a named profile may set: start's options of the same name.
PROFILE_KEYS = tuple(f.name for f in cli_fields() if f.metadata["cli"]["profile"])


def apply_defaults(args: argparse.Namespace) -> None:
    """Built-in values for options neither the command line, a profile nor a record set."""
    for f in cli_fields():
        if hasattr(args, f.name) and getattr(args, f.name) is None:
            setattr(args, f.name, f.default)


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
CONTAINER_FIELDS = ("container", "image", "engine", "gpus", "published")


def remembered_options(opts: StartOptions, prefix: list[str] | None) -> dict[str, t.Any]:
    """How the runtime was started, as the connection record keeps it."""
    return {
        "host": opts.host,
        "profile": opts.profile,
        "python": prefix,
        **{k: getattr(opts, k) for k in REMEMBERED if k not in CONTAINER_FIELDS},
    }
