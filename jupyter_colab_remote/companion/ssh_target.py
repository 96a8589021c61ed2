"""Where to connect: `[user@]host[:port]` resolved through ~/.ssh/config, like OpenSSH does."""

from __future__ import annotations

import dataclasses
import getpass
import os
from pathlib import Path

import paramiko

from .errors import CompanionError

DEFAULT_IDENTITIES = ("id_ed25519", "id_ecdsa", "id_rsa")


@dataclasses.dataclass
class SSHTarget:
    """One SSH hop with everything needed to reach and authenticate to it."""

    alias: str
    hostname: str
    port: int = 22
    user: str = dataclasses.field(default_factory=getpass.getuser)
    identity_files: list[str] = dataclasses.field(default_factory=list)
    known_hosts_files: list[str] = dataclasses.field(default_factory=list)
    proxy_jump: list[SSHTarget] = dataclasses.field(default_factory=list)
    proxy_command: str | None = None
    identities_only: bool = False
    #: ~/.ssh/config's ServerAliveInterval / ServerAliveCountMax (None: not set there).
    server_alive_interval: float | None = None
    server_alive_count_max: int | None = None

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH uses for this host in known_hosts."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def describe(self) -> str:
        """user@host[:port], for messages."""
        port = f":{self.port}" if self.port != 22 else ""
        return f"{self.user}@{self.hostname}{port}"


def ssh_dir() -> Path:
    """The user's ~/.ssh."""
    return Path(os.path.expanduser("~")) / ".ssh"


def load_ssh_config(path: str | os.PathLike[str] | None = None) -> paramiko.SSHConfig:
    """Parse ~/.ssh/config (or `path`); a missing file is an empty config."""
    cfg_path = Path(path) if path else ssh_dir() / "config"
    if not cfg_path.exists():
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(cfg_path))
    except (OSError, paramiko.ConfigParseError) as e:
        raise CompanionError(f"cannot read SSH config {cfg_path}: {e}") from e


def split_spec(spec: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` -> (user, host, port); IPv6 as `[::1]:port`."""
    user = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
        if not user:
            raise CompanionError(f"invalid host {spec!r}: empty user name")
    port = None
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:])
    elif spec.count(":") == 1:
        spec, port_text = spec.split(":")
        port = _port(port_text)
        host = spec
    else:
        host = spec
    if user is not None and not valid_user(user):
        raise CompanionError(f"invalid user name {user!r}", exit_code=2)
    if not valid_host(host):
        raise CompanionError(
            f"invalid host {host!r}: no spaces, control or shell characters, and none of "
            "known_hosts' pattern characters (, * ? !)",
            exit_code=2,
        )
    return user, host, port


#: What OpenSSH (9.6+, ssh.c valid_hostname) refuses in a host name from the command line:
#: it may reach a shell through `%h` in ProxyCommand or `Match exec`. Plus the pattern
#: characters of known_hosts, so `--accept-new-host-key` never writes a wildcard entry.
_BAD_HOST_CHARS = set("'`\"$\\;&<>|(){}") | set(",*?!")


def valid_host(host: str) -> bool:
    """A host name OpenSSH would accept on its command line, and no known_hosts pattern."""
    return (
        bool(host)
        and not host.startswith("-")
        and not any(c in _BAD_HOST_CHARS or c.isspace() or not c.isprintable() for c in host)
    )


def valid_user(user: str) -> bool:
    """A user name OpenSSH (9.6+, ssh.c valid_ruser) would accept on its command line."""
    if not user or user.startswith("-") or user.endswith("\\"):
        return False
    for i, c in enumerate(user):
        if c in "'`\";&<>|(){}" or not c.isprintable():
            return False
        if c.isspace() and user[i + 1 : i + 2] == "-":
            return False
    return True


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise CompanionError(f"invalid port {text!r}")
    return port


def resolve(spec: str, config: paramiko.SSHConfig | None = None, _depth: int = 0) -> SSHTarget:
    """Resolve a host spec with ~/.ssh/config: HostName, User, Port, IdentityFile, ProxyJump..."""
    if _depth > 8:
        raise CompanionError("ProxyJump chain is too long (loop in ~/.ssh/config?)")
    config = config if config is not None else load_ssh_config()
    user, alias, port = split_spec(spec)
    entry = config.lookup(alias)
    target = SSHTarget(
        alias=alias,
        hostname=entry.get("hostname", alias),
        port=port or int(entry.get("port", 22)),
        user=user or entry.get("user") or getpass.getuser(),
        identity_files=[os.path.expanduser(p) for p in entry.get("identityfile", [])],
        identities_only=entry.get("identitiesonly", "no").lower() == "yes",
    )
    target.server_alive_interval = config_number(entry, "ServerAliveInterval", float, 0)
    count = config_number(entry, "ServerAliveCountMax", int, 1)
    target.server_alive_count_max = None if count is None else int(count)
    known = entry.get("userknownhostsfile")
    files = known.split() if isinstance(known, str) else list(known or [])
    target.known_hosts_files = [os.path.expanduser(f) for f in files] or [
        str(ssh_dir() / "known_hosts")
    ]
    if not target.identity_files:
        target.identity_files = [
            str(ssh_dir() / n) for n in DEFAULT_IDENTITIES if (ssh_dir() / n).exists()
        ]
    jump = entry.get("proxyjump")
    if jump and jump.lower() != "none":
        target.proxy_jump = [resolve(hop.strip(), config, _depth + 1) for hop in jump.split(",")]
    command = entry.get("proxycommand")
    if command and command.lower() != "none" and not target.proxy_jump:
        target.proxy_command = command
    return target


def config_number(
    entry: paramiko.SSHConfigDict, name: str, kind: type[float] | type[int], minimum: float
) -> float | None:
    """A numeric ssh_config option (None if unset); a bad value is a one-line error."""
    value = entry.get(name.lower())
    if value is None:
        return None
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise CompanionError(
            f"~/.ssh/config: {name} {value!r} is not a number >= {minimum}", exit_code=2
        )
    return number
