"""`.env` files and the secrets the companion reads from the environment or `./.env`."""

from __future__ import annotations

import os
import re

from .errors import CompanionError

#: Where `--git` looks for a token: these variables, in the environment or a local .env file.
GIT_TOKEN_VARIABLES = ("GIT_TOKEN", "GITHUB_TOKEN", "GH_TOKEN", "GITLAB_TOKEN")


def parse_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines (comments, blank lines and `export ` allowed), as python-dotenv reads."""
    env = {}
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        raise CompanionError(f"cannot read env file {path}: {e.strerror}") from e
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise CompanionError(f"{path}:{n}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


def secret_from_environment(names: tuple[str, ...], env_file: str = ".env") -> str | None:
    """The first of `names` set in the local environment, else in a .env file (never printed)."""
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    if os.path.exists(env_file):
        values = parse_env_file(env_file)
        for name in names:
            if values.get(name):
                return values[name]
    return None


def git_token_from_environment(env_file: str = ".env") -> str | None:
    """A git token from the local environment, else from a .env file (never printed)."""
    return secret_from_environment(GIT_TOKEN_VARIABLES, env_file)
