"""Network namespaces acting as remote hosts, joined to this host by a veth link that can be cut.

Traffic stays inside veth links between this host and namespaces created here
(10.231.0.0/16, /30 per namespace). A link cut with `ip link set DEV down` removes the
connected route; the fallback dead-end route keeps those packets from following the default
route off the host. Leftovers of crashed runs (their creating PID is gone) are removed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from .processes import file_lock, run_command, stop_processes

NETNS_PREFIX = "crtest"
NETNS_SUBNET = "10.231"
_LOCK_DIR = Path("/run")
_ns_counter = itertools.count(1)
_live_netns: set[str] = set()
_NS_NAME = re.compile(r"^(?P<prefix>.+)-(?P<pid>\d+)-(?P<n>\d+)$")
_NETNS_LOCK = _LOCK_DIR / "colabremote-netns.lock"
_DEV_NAME = re.compile(r"^cr[hd](?P<pid>\d+)-(?P<n>\d+)$")


@dataclass
class NetNS:
    """A network namespace acting as a remote host, joined to this host by a veth link.

    `addr` is the remote's address (inside), `host_addr` this host's end. While the link is
    down, packets to `addr` are silently dropped (a fallback route through a dead-end veth
    keeps them from following the default route off the machine), so connects time out as
    on a real network failure and established connections stall.
    """

    name: str
    host_dev: str
    ns_dev: str
    deadend_dev: str
    host_addr: str
    addr: str

    @property
    def path(self) -> str:
        """The namespace's bind mount, for nsenter --net=."""
        return f"/run/netns/{self.name}"

    def nsenter(self, argv: list[str]) -> list[str]:
        """argv prefixed to run inside the namespace's network stack."""
        return ["nsenter", f"--net={self.path}", *argv]

    def run(self, argv: list[str], *, timeout: float = 10.0, check: bool = True):
        """Run a command inside the namespace (bounded), returning CompletedProcess."""
        return run_command(self.nsenter(argv), timeout=timeout, check=check)

    def link_down(self) -> None:
        """Cut the link (ip link set HOST_DEV down): packets are dropped silently."""
        run_command(["ip", "link", "set", self.host_dev, "down"])

    def link_up(self) -> None:
        """Restore the link (ip link set HOST_DEV up)."""
        run_command(["ip", "link", "set", self.host_dev, "up"])

    def pids(self) -> list[int]:
        """PIDs of processes inside the namespace."""
        out = run_command(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(x) for x in out.split()]

    def exists(self) -> bool:
        """Whether the namespace still exists."""
        return self.name in _netns_names()


def _netns_names() -> list[str]:
    """Names from `ip netns list`."""
    out = run_command(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _link_names() -> list[str]:
    """Interface names in this namespace (without @peer suffixes)."""
    out = run_command(["ip", "-o", "link", "show"], check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _stale(pid: str, name: str) -> bool:
    """Whether an object named for pid belongs to no live harness (crashed or finished run)."""
    if int(pid) == os.getpid():
        return name not in _live_netns
    return not psutil.pid_exists(int(pid))


def cleanup_stale_netns(prefix: str = NETNS_PREFIX, *, deadline: float = 15.0) -> list[str]:
    """Delete namespaces/links left by crashed runs (their creating PID is gone); return names."""
    with file_lock(_NETNS_LOCK, deadline):
        return _cleanup_stale_netns(prefix)


def _cleanup_stale_netns(prefix: str) -> list[str]:
    """cleanup_stale_netns, with the lock held."""
    removed = []
    for ns in _netns_names():
        m = _NS_NAME.match(ns)
        if m and m["prefix"] == prefix and _stale(m["pid"], ns):
            _delete_netns(ns)
            removed.append(ns)
    live_tags = {_NS_NAME.match(n)["pid"] + "-" + _NS_NAME.match(n)["n"] for n in _live_netns}
    for dev in _link_names():
        m = _DEV_NAME.match(dev)
        if not m:
            continue
        tag = f"{m['pid']}-{m['n']}"
        mine = int(m["pid"]) == os.getpid()
        if (mine and tag not in live_tags) or (not mine and not psutil.pid_exists(int(m["pid"]))):
            run_command(["ip", "link", "del", dev], check=False)
            removed.append(dev)
    return removed


def _delete_netns(name: str) -> None:
    """Kill every process inside the namespace, then delete it."""
    out = run_command(["ip", "netns", "pids", name], check=False).stdout
    procs = []
    for pid in out.split():
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(int(pid)))
    stop_processes(procs, timeout=3.0)
    run_command(["ip", "netns", "del", name], check=False)


def _used_subnets() -> set[int]:
    """Indexes of 10.231.X.Y/30 blocks already used by addresses or routes on this host."""
    used = set()
    text = run_command(["ip", "-o", "-4", "addr", "show"], check=False).stdout
    text += run_command(["ip", "-4", "route", "show"], check=False).stdout
    for a, b in re.findall(rf"\b{re.escape(NETNS_SUBNET)}\.(\d+)\.(\d+)", text):
        used.add(int(a) * 64 + int(b) // 4)
    return used


@contextlib.contextmanager
def remote_host_netns(
    name_prefix: str = NETNS_PREFIX, *, deadline: float = 15.0
) -> Iterator[NetNS]:
    """A fresh network namespace linked to this host by veth; everything removed on exit.

    Inside: lo up, DEV with 10.231.X.Y+2/30. Host side: DEV with .Y+1/30, plus a dead-end veth
    route (metric 9999) so traffic for the /30 is dropped, never routed off the machine, while
    the link is down. Names carry this PID and a counter; leftovers of dead PIDs are removed
    first. Skips the test if namespaces cannot be created (no root / no CAP_SYS_ADMIN).
    """
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing (iproute2 / util-linux)")
    n = next(_ns_counter)
    pid = os.getpid()
    ns = None
    try:
        with file_lock(_NETNS_LOCK, deadline):
            _cleanup_stale_netns(name_prefix)
            free = next(i for i in range(1, 64 * 256) if i not in _used_subnets())
            base = f"{NETNS_SUBNET}.{free // 64}.{(free % 64) * 4}"
            prefix3, last = base.rsplit(".", 1)
            name = f"{name_prefix}-{pid}-{n}"
            res = run_command(["ip", "netns", "add", name], check=False)
            if res.returncode != 0:
                pytest.skip(f"cannot create a network namespace here: {res.stderr.strip()}")
            _live_netns.add(name)
            ns = NetNS(
                name=name,
                host_dev=f"crh{pid}-{n}",
                ns_dev=f"crn{pid}-{n}",
                deadend_dev=f"crd{pid}-{n}",
                host_addr=f"{prefix3}.{int(last) + 1}",
                addr=f"{prefix3}.{int(last) + 2}",
            )
            # The dead-end route first: traffic for the /30 can never leave through eth0.
            peer = f"cre{pid}-{n}"
            res = run_command(
                ["ip", "link", "add", ns.deadend_dev, "type", "veth", "peer", "name", peer],
                check=False,
            )
            if res.returncode != 0:
                pytest.skip(f"cannot create a veth pair here: {res.stderr.strip()}")
            run_command(["ip", "link", "set", ns.deadend_dev, "up"])  # its peer stays down
            run_command(
                ["ip", "route", "add", f"{base}/30", "dev", ns.deadend_dev, "metric", "9999"]
            )
            run_command(
                ["ip", "neigh", "replace", ns.addr, "lladdr", "02:00:00:00:00:01"]
                + ["dev", ns.deadend_dev, "nud", "permanent"]
            )
            run_command(
                ["ip", "link", "add", ns.host_dev, "type", "veth"]
                + ["peer", "name", ns.ns_dev, "netns", name]
            )
            run_command(["ip", "addr", "add", f"{ns.host_addr}/30", "dev", ns.host_dev])
            run_command(["ip", "link", "set", ns.host_dev, "up"])
            run_command(["ip", "-n", name, "link", "set", "lo", "up"])
            run_command(["ip", "-n", name, "addr", "add", f"{ns.addr}/30", "dev", ns.ns_dev])
            run_command(["ip", "-n", name, "link", "set", ns.ns_dev, "up"])
        yield ns
    finally:
        name = f"{name_prefix}-{pid}-{n}"
        if name in _live_netns:
            _delete_netns(name)
            _live_netns.discard(name)
        for dev in (f"crh{pid}-{n}", f"crd{pid}-{n}"):
            if dev in _link_names():
                run_command(["ip", "link", "del", dev], check=False)
