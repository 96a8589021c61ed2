"""The client side of SSH in tests: key pairs, known_hosts and ssh_config files, a fake HOME."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from .processes import run_command

if TYPE_CHECKING:
    from .sshd import SSHServer

SSH = "/usr/bin/ssh"


def known_hosts_name(host: str, port: int) -> str:
    """The host field OpenSSH writes to known_hosts: `host` for port 22, else `[host]:port`."""
    return host if port == 22 else f"[{host}]:{port}"


@dataclass
class KeyPair:
    """An OpenSSH key pair on disk: `path` (private, no passphrase) and `path`.pub."""

    path: Path

    @property
    def pub_path(self) -> Path:
        """The public key file."""
        return self.path.with_name(self.path.name + ".pub")

    @property
    def public_line(self) -> str:
        """`ssh-ed25519 AAAA... comment`, as in authorized_keys."""
        return self.pub_path.read_text().strip()

    @property
    def key_type(self) -> str:
        """The key type, e.g. ssh-ed25519."""
        return self.public_line.split()[0]

    @property
    def public_key(self) -> paramiko.PKey:
        """The public key as a paramiko PKey."""
        kind, b64 = self.public_line.split()[:2]
        return paramiko.PKey.from_type_string(kind, base64.b64decode(b64))

    @property
    def pkey(self) -> paramiko.PKey:
        """The private key as a paramiko PKey."""
        return paramiko.PKey.from_path(self.path)


def make_keypair(path: Path, comment: str = "colabremote-test") -> KeyPair:
    """Generate a fresh ed25519 key pair at path (ssh-keygen -q -t ed25519 -N '')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return KeyPair(path)


@dataclass
class _HostEntry:
    """One `Host` block of the generated ssh_config."""

    alias: str
    server: SSHServer
    user: str
    proxy_jump: str | None
    extra: dict[str, str]


class SSHClientFiles:
    """A client identity with known_hosts and ssh_config files, as a user's ~/.ssh holds them.

    `add_host(alias, server)` authorizes the key on the server, appends the server's host key
    to known_hosts and writes a `Host alias` block (HostName, Port, User, IdentityFile,
    UserKnownHostsFile, IdentitiesOnly, StrictHostKeyChecking yes, BatchMode yes, ProxyJump).
    """

    def __init__(self, directory: Path) -> None:
        """Create DIR with a fresh ed25519 key pair (id_ed25519), empty known_hosts and config."""
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = make_keypair(directory / "id_ed25519", comment="colabremote-test-client")
        self.known_hosts = directory / "known_hosts"
        self.known_hosts.write_text("")
        self.config_path = directory / "ssh_config"
        self.hosts: dict[str, _HostEntry] = {}
        self.clients: list[paramiko.SSHClient] = []
        self._write_config()

    def add_host(
        self,
        alias: str,
        server: SSHServer,
        *,
        user: str = "root",
        proxy_jump: str | None = None,
        authorize: bool = True,
        extra: dict[str, str] | None = None,
    ) -> None:
        """Trust server, optionally authorize our key for user there, add a `Host alias` block."""
        if authorize:
            server.authorize(self.key, user)
        with open(self.known_hosts, "a") as f:
            f.write(server.known_hosts_line + "\n")
        self.hosts[alias] = _HostEntry(alias, server, user, proxy_jump, dict(extra or {}))
        self._write_config()

    def config_text(self, *, explicit_paths: bool = True) -> str:
        """The ssh_config text; without explicit_paths, IdentityFile/UserKnownHostsFile are
        left to their ~/.ssh defaults (for a fake HOME)."""
        out = []
        for h in self.hosts.values():
            out.append(f"Host {h.alias}")
            opts = {
                "HostName": h.server.host,
                "Port": str(h.server.port),
                "User": h.user,
                "StrictHostKeyChecking": "yes",
                "BatchMode": "yes",
                "IdentitiesOnly": "yes",
            }
            if explicit_paths:
                opts["IdentityFile"] = str(self.key.path)
                opts["UserKnownHostsFile"] = str(self.known_hosts)
                opts["GlobalKnownHostsFile"] = "/dev/null"
            if h.proxy_jump:
                opts["ProxyJump"] = h.proxy_jump
            opts.update(h.extra)
            out += [f"    {k} {v}" for k, v in opts.items()]
            out.append("")
        return "\n".join(out)

    def _write_config(self) -> None:
        """Rewrite the ssh_config file."""
        self.config_path.write_text(self.config_text())

    def paramiko_config(self) -> paramiko.SSHConfig:
        """The ssh_config parsed by paramiko."""
        return paramiko.SSHConfig.from_path(str(self.config_path))

    def ssh_argv(self, *args: str) -> list[str]:
        """An OpenSSH client command line using this config: ssh -F CONFIG ARGS."""
        return [SSH, "-F", str(self.config_path), *args]

    def connect(self, alias: str, *, timeout: float = 10.0) -> paramiko.SSHClient:
        """A paramiko client for alias resolved through the ssh_config (incl. one-hop
        ProxyJump chains), RejectPolicy against our known_hosts; closed by close()."""
        cfg = self.paramiko_config().lookup(alias)
        sock = None
        if "proxyjump" in cfg:
            jump = self.connect(cfg["proxyjump"], timeout=timeout)
            sock = jump.get_transport().open_channel(
                "direct-tcpip", (cfg["hostname"], int(cfg.get("port", 22))), ("127.0.0.1", 0)
            )
        client = paramiko.SSHClient()
        client.load_host_keys(os.path.expanduser(cfg["userknownhostsfile"].split()[0]))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.clients.append(client)
        client.connect(
            cfg["hostname"],
            int(cfg.get("port", 22)),
            username=cfg.get("user"),
            key_filename=[os.path.expanduser(p) for p in cfg["identityfile"]],
            look_for_keys=False,
            allow_agent=False,
            sock=sock,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
        return client

    def make_home(self, home: Path, *, explicit_paths: bool = False) -> Path:
        """A fake HOME with .ssh/config, .ssh/known_hosts, .ssh/id_ed25519(.pub); returns it.

        By default the config relies on the ~/.ssh defaults for key and known_hosts, so code
        under test must find them itself (paramiko honours $HOME; OpenSSH ignores it).
        """
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        ssh_dir.chmod(0o700)
        (ssh_dir / "config").write_text(self.config_text(explicit_paths=explicit_paths))
        shutil.copyfile(self.known_hosts, ssh_dir / "known_hosts")
        shutil.copyfile(self.key.path, ssh_dir / "id_ed25519")
        shutil.copyfile(self.key.pub_path, ssh_dir / "id_ed25519.pub")
        for name in ("config", "known_hosts", "id_ed25519"):
            (ssh_dir / name).chmod(0o600)
        return home

    def close(self) -> None:
        """Close every client opened by connect()."""
        for c in reversed(self.clients):
            with contextlib.suppress(Exception):
                c.close()
        self.clients.clear()
