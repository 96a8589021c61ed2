"""Kernels that cannot start are refused up front, with advice naming the environment to fix.

Without a usable kernelspec stock jupyter_server answers `POST /api/kernels` with a bare 500
"Unhandled error" (no kernelspec at all), `POST /api/sessions` with a 501, or starts a kernel
whose Python lacks ipykernel and dies at once. Under `jupyter colabremote serve` these requests
are checked first: a kernelspec must be listed (what `/api/kernelspecs` shows Colab), its
program must exist, and a Python kernel's interpreter must have the module it runs
(`-m ipykernel_launcher`). A failed check answers a JSON error saying why and what to run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import sys
import time
import typing as t
from dataclasses import dataclass, field

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from jupyter_server.extension.handler import ExtensionHandlerMixin
from jupyter_server.services.kernels.handlers import MainKernelHandler
from jupyter_server.services.sessions.handlers import SessionRootHandler
from tornado import web

from . import gateway

#: Deadline for asking an interpreter whether it has a module; on timeout the start goes on.
PROBE_TIMEOUT = 10.0
#: Deadline for listing kernelspecs (a gateway's come over the network).
LIST_TIMEOUT = 10.0
#: How long an interpreter check is trusted (a burst of kernel starts probes once; the
#: polled status document does not start a process every few seconds).
CACHE_SECONDS = 30.0
#: The names jupyter_client replaces by the server's own interpreter (format_kernel_cmd).
SERVER_PYTHON_NAMES = {
    "python",
    f"python{sys.version_info[0]}",
    f"python{sys.version_info[0]}.{sys.version_info[1]}",
}


@dataclass
class KernelProblem:
    """Why a kernel cannot start: HTTP status, a sentence, and the command that fixes it."""

    status: int
    reason: str
    message: str
    advice: str | None
    kernelspecs: list[str] = field(default_factory=list)

    def body(self) -> dict[str, t.Any]:
        """The JSON error document."""
        return {
            "message": self.message,
            "reason": self.reason,
            "advice": self.advice,
            "kernelspecs": self.kernelspecs,
            "server_python": sys.executable,
            "server_prefix": sys.prefix,
        }


def server_environment() -> str:
    """The server's own environment, as the messages name it."""
    return f"Python {sys.executable} (environment {sys.prefix})"


def install_command(python: str) -> str:
    """The shell command that installs the Python kernel into `python`'s environment."""
    return f"{shlex.quote(python)} -m pip install ipykernel"


def interpreter(argv: list[str], env: dict[str, str]) -> str | None:
    """The program a kernelspec's argv runs, resolved as the kernel's start would resolve it."""
    if not argv:
        return None
    if argv[0] in SERVER_PYTHON_NAMES:
        return sys.executable
    return shutil.which(argv[0], path=env.get("PATH"))


def python_module(argv: list[str]) -> str | None:
    """The module of a `python ... -m MODULE` command line (ipykernel_launcher), else None."""
    name = os.path.basename(argv[0]) if argv else ""
    if not name.startswith("python") or "-m" not in argv[1:-1]:
        return None
    return argv[argv.index("-m", 1) + 1]


async def has_module(python: str, module: str, env: dict[str, str]) -> bool:
    """Whether `python` (run with the kernel's environment) can import `module`'s top package.

    A probe that cannot run in time counts as success: the start then goes on as usual.
    """
    probe = "import importlib.util as u, sys; sys.exit(u.find_spec(sys.argv[1]) is None)"
    try:
        proc = await asyncio.create_subprocess_exec(
            python,
            "-c",
            probe,
            module.split(".")[0],
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return False
    try:
        return await asyncio.wait_for(proc.wait(), PROBE_TIMEOUT) == 0
    except asyncio.TimeoutError:
        proc.kill()
        return True


_found: dict[tuple[str, str, int], tuple[float, bool]] = {}


async def has_cached(
    python: str, module: str, env: dict[str, str], trust_missing: bool = True
) -> bool:
    """has_module, remembered for CACHE_SECONDS. A kernel start passes trust_missing=False:
    a missing module is probed again, so installing it takes effect at once."""
    key = (python, module, hash(frozenset(env.items())))
    hit = _found.get(key)
    if hit and time.monotonic() - hit[0] < CACHE_SECONDS and (hit[1] or trust_missing):
        return hit[1]
    ok = await has_module(python, module, env)
    _found[key] = (time.monotonic(), ok)
    return ok


async def has_cached_or_probe(python: str, module: str, env: dict[str, str]) -> bool:
    """The check a kernel start uses: a recent success, else a fresh probe."""
    return await has_cached(python, module, env, trust_missing=False)


def no_kernel_advice() -> tuple[str, str]:
    """(message, command) when the server's environment offers no kernelspec at all."""
    command = install_command(sys.executable)
    message = (
        "This runtime has no Jupyter kernel to start: no kernelspec is available to the "
        f"server, which runs on {server_environment()}. Install the Python kernel into that "
        f"environment: {command}"
    )
    return message, command


async def spec_problem(
    name: str, spec: dict[str, t.Any], check: t.Callable[..., t.Awaitable[bool]]
) -> KernelProblem | None:
    """What keeps one listed kernelspec from starting, or None."""
    kspec = spec.get("spec") or {}
    argv = list(kspec.get("argv") or [])
    provisioner = (kspec.get("metadata") or {}).get("kernel_provisioner") or {}
    if provisioner.get("provisioner_name", "local-provisioner") != "local-provisioner":
        return None  # the kernel runs elsewhere (a container, a remote host): not ours to check
    env = {**os.environ, **(kspec.get("env") or {})}
    where = spec.get("resource_dir") or "?"
    program = interpreter(argv, env)
    if program is None:
        command = f"jupyter kernelspec remove {shlex.quote(name)}"
        message = (
            f"The kernel {name!r} cannot start: its program {argv[0] if argv else '(none)'!r} "
            f"(kernelspec in {where}) is not found. Reinstall that kernel, or remove its "
            f"kernelspec: {command}. The server runs on {server_environment()}."
        )
        return KernelProblem(503, "Kernel cannot start", message, command)
    module = python_module(argv)
    if module is None or await check(program, module, env):
        return None
    lacks = "has no ipykernel" if module.startswith("ipykernel") else f"cannot import {module}"
    command = install_command(program) if module.startswith("ipykernel") else None
    message = (
        f"The kernel {name!r} cannot start: its Python {program} (kernelspec in {where}) "
        f"{lacks}. The server itself runs on {server_environment()}."
    )
    if command:
        message += f" Install the kernel into the kernel's Python: {command}"
    return KernelProblem(503, "Kernel cannot start", message, command)


async def list_specs(ksm: t.Any) -> dict[str, t.Any]:
    """All kernelspecs by name, as `/api/kernelspecs` lists them (bounded for a gateway)."""
    return await asyncio.wait_for(ensure_async(ksm.get_all_specs()), LIST_TIMEOUT)


async def kernel_problem(
    specs: dict[str, t.Any],
    requested: str | None,
    default_name: str,
    check: t.Callable[..., t.Awaitable[bool]] = has_cached_or_probe,
) -> KernelProblem | None:
    """Why the kernel `requested` (None: the default) cannot start, or None if it can."""
    names = sorted(specs)
    if not specs:
        message, command = no_kernel_advice()
        return KernelProblem(503, "No kernel available", message, command, names)
    name = (requested or default_name or "").lower()
    if name not in specs:
        command = install_command(sys.executable)
        chosen = f"kernel {name!r}" if requested else f"default kernel {name!r}"
        message = (
            f"The {chosen} is not installed on this runtime (available: {', '.join(names)}). "
            f"The server runs on {server_environment()}; for its Python kernel: {command}"
        )
        # Asking for a name that does not exist is the client's choice; a missing default not.
        status = 400 if requested else 503
        return KernelProblem(status, "No such kernel", message, command, names)
    problem = await spec_problem(name, specs[name], check)
    if problem is not None:
        problem.kernelspecs = names
    return problem


def is_python(spec: dict[str, t.Any]) -> bool:
    """Whether a kernelspec model is a Python kernel."""
    return str((spec.get("spec") or {}).get("language") or "").lower() == "python"


async def availability(ksm: t.Any, default_name: str, local: bool = True) -> dict[str, t.Any]:
    """The status document's `kernels_available`: is there a usable Python kernel, and if
    not (or the default kernel cannot start), what to run. `local=False` (kernels on a
    gateway): the kernelspecs are the gateway's, and their interpreters are not ours to check."""
    result: dict[str, t.Any] = {"python": None, "kernelspecs": [], "default": default_name}
    try:
        specs = await list_specs(ksm)
    except Exception as e:  # a gateway that is down: the status' `gateway` entry says why
        result["advice"] = f"cannot list the kernelspecs: {str(e) or type(e).__name__}"
        return result
    result["kernelspecs"] = sorted(specs)
    python = False
    for name, spec in specs.items():
        if is_python(spec) and (not local or not await spec_problem(name, spec, has_cached)):
            python = True
            break
    advice = None
    if local and (problem := await kernel_problem(specs, None, default_name, has_cached)):
        advice = problem.message
    elif specs and not python:
        advice = (
            f"This runtime has no Python kernel (kernelspecs: {', '.join(sorted(specs))}). "
            f"The server runs on {server_environment()}; for its Python kernel: "
            f"{install_command(sys.executable)}"
        )
    elif not specs:
        advice = no_kernel_advice()[0]
    result.update(python=python, advice=advice)
    return result


class KernelCannotStart(web.HTTPError):
    """The HTTP error for a kernel that cannot start; its JSON body is the problem's."""

    def __init__(self, problem: KernelProblem) -> None:
        # tornado's log line applies `%` formatting to log_message: escape it.
        super().__init__(problem.status, problem.message.replace("%", "%%"), reason=problem.reason)
        self.problem = problem


async def check_startable(handler: CheckedHandlerMixin, requested: t.Any) -> None:
    """Under `serve`: raise KernelCannotStart when the kernel `requested` cannot start."""
    app = handler.extensionapp
    if not app.is_runtime or gateway.gateway_client(app.serverapp):
        return  # a plain Jupyter server keeps its behaviour; a gateway has its own errors
    name = requested if isinstance(requested, str) and requested else None
    default = handler.kernel_manager.default_kernel_name
    try:
        specs = await list_specs(handler.kernel_spec_manager)
    except Exception as e:  # unreadable kernelspecs: the start itself will say more
        handler.log.warning("colabremote: cannot check the kernelspecs: %s", e)
        return
    problem = await kernel_problem(specs, name, default)
    if problem is not None:
        raise KernelCannotStart(problem)


class CheckedHandlerMixin(ExtensionHandlerMixin):
    """For jupyter_server's kernel-starting handlers: the request's JSON object, and the
    JSON error (with advice) of a kernel that cannot start."""

    def json_object(self) -> dict[str, t.Any]:
        """The request's JSON object body; {} when absent or not an object."""
        model = self.get_json_body()  # type: ignore[attr-defined]
        return model if isinstance(model, dict) else {}

    def write_error(self, status_code: int, **kwargs: t.Any) -> None:
        """KernelCannotStart: the problem's document; anything else as APIHandler writes it."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(error, KernelCannotStart):
            super().write_error(status_code, **kwargs)  # type: ignore[misc]
            return
        self.set_header("Content-Type", "application/json")  # type: ignore[attr-defined]
        self.finish(json.dumps(error.problem.body()))  # type: ignore[attr-defined]


class CheckedKernelsHandler(CheckedHandlerMixin, MainKernelHandler):
    """`POST /api/kernels`, refusing a kernel that cannot start (JSON error, with advice)."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Check the kernelspec, then start the kernel as jupyter_server does."""
        await check_startable(self, self.json_object().get("name"))
        await super().post()


class CheckedSessionsHandler(CheckedHandlerMixin, SessionRootHandler):
    """`POST /api/sessions`, refusing a new session whose kernel cannot start."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Check the kernelspec when the session would start a kernel, then go on as usual."""
        model = self.json_object()
        kernel = model.get("kernel") or {}
        path = model.get("path")
        if isinstance(kernel, dict) and not kernel.get("id") and isinstance(path, str):
            exists = await ensure_async(self.session_manager.session_exists(path=path))
            if not exists:
                await check_startable(self, kernel.get("name"))
        await super().post()


KERNEL_CHECK_HANDLERS = [
    (r"/api/kernels", CheckedKernelsHandler),
    (r"/api/sessions", CheckedSessionsHandler),
]
