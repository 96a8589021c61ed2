"""Ports that the runtime's own kernels (and their child processes) listen on, watched cheaply.

Every WATCH_INTERVAL the watcher walks each local kernel's process tree
(`/proc/PID/task/*/children`), adds the processes of the kernel's session that left it (an
app started with `&` from a shell; a new pid's session is read once), and lists the TCP
socket inodes of those processes (`/proc/PID/fd`; a new socket's protocol is asked once).
Only when that set differs from the last round does it ask the kernel for the listening TCP
sockets (sock_diag over netlink, LISTEN only; /proc/net/tcp{,6} as a fallback), so a busy
server's thousands of unrelated sockets cost nothing while nothing changes in the kernels
(bench/bench_port_watch.py measures it). Processes of another account are never listed, nor
a kernel's own listeners: those it has once all its connection-file ports listen (its ZMQ
channels, ipykernel's IOPub pipe), taken as its baseline; user code can run only after that.
Off Linux, psutil's per-process connections replace /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import struct
import sys
import time
import typing as t

import psutil

#: Seconds between rounds (a new listener is reported within about this long).
WATCH_INTERVAL = 0.5
#: Rounds a new socket that is not yet listening stays "pending" (socket() comes before
#: listen(); a round falling in between must not miss the listen).
PENDING_ROUNDS = 4
#: Rounds between two looks at the kernels' sessions when nothing hints at an orphan.
SESSION_EVERY = 10
#: TCP state LISTEN in /proc/net/tcp.
TCP_LISTEN = "0A"
#: sock_diag over netlink (linux/sock_diag.h, linux/netlink.h).
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
NLM_F_REQUEST, NLM_F_DUMP, NLMSG_ERROR, NLMSG_DONE = 1, 0x300, 2, 3
#: Kernel connection-file ports, never forwarded.
KERNEL_PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
LINUX = sys.platform.startswith("linux")


def _hex_address(text: str) -> str:
    """/proc/net/tcp's address (little-endian hex words) as text."""
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    return str(ipaddress.IPv6Address(b"".join(words)))


def proc_listeners(proc_net: str = "/proc/net") -> dict[int, tuple[str, int]]:
    """Every listening TCP socket of this network namespace from /proc/net/tcp{,6}:
    inode -> (address, port). The kernel prints every socket, TIME_WAIT included: slow on
    a busy server (tens of ms), so only a fallback for sock_diag."""
    out: dict[int, tuple[str, int]] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(os.path.join(proc_net, name)) as f:
            next(f, None)  # header
            for line in f:
                fields = line.split()
                if len(fields) < 10 or fields[3] != TCP_LISTEN:
                    continue
                addr, _, port = fields[1].partition(":")
                out[int(fields[9])] = (_hex_address(addr), int(port, 16))
    return out


def diag_listeners() -> dict[int, tuple[str, int]]:
    """The same from the kernel's sock_diag netlink interface, asking for LISTEN sockets only
    (the kernel filters: ~0.1 ms however many connections the server has). OSError if the
    interface is not there."""
    out: dict[int, tuple[str, int]] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as s:
        s.settimeout(2.0)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            # inet_diag_req_v2: family, protocol, extensions, pad, states; a zero socket id.
            req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << 10) + bytes(48)
            flags = NLM_F_REQUEST | NLM_F_DUMP
            s.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, flags, seq, 0) + req)
            done = False
            while not done:
                data = s.recv(65536)
                off = 0
                while off + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, off)
                    if kind == NLMSG_DONE:
                        done = True
                        break
                    if kind == NLMSG_ERROR or length < 16:
                        raise OSError("sock_diag refused the request")
                    # inet_diag_msg: family, state, timer, retrans, id (sport, dport, src,
                    # dst, if, cookie), expires, rqueue, wqueue, uid, inode.
                    msg = data[off + 16 : off + length]
                    fam = msg[0]
                    port = struct.unpack_from("!H", msg, 4)[0]
                    src = msg[8:24] if fam == socket.AF_INET6 else msg[8:12]
                    inode = struct.unpack_from("=I", msg, 68)[0]
                    out[inode] = (socket.inet_ntop(fam, src), port)
                    off += (length + 3) & ~3
                if not data:
                    break
    return out


def listening_inodes() -> dict[int, tuple[str, int]]:
    """Every listening TCP socket of this network namespace: inode -> (address, port)."""
    try:
        return diag_listeners()
    except OSError:
        return proc_listeners()


def socket_fds(pid: int) -> dict[int, str]:
    """The sockets a process holds: inode -> one of its /proc/PID/fd/N paths."""
    found: dict[int, str] = {}
    with contextlib.suppress(OSError), os.scandir(f"/proc/{pid}/fd") as it:
        for entry in it:
            with contextlib.suppress(OSError):
                target = os.readlink(entry.path)
                if target.startswith("socket:["):
                    found.setdefault(int(target[8:-1]), entry.path)
    return found


def is_tcp(fd_path: str) -> bool:
    """Whether the socket behind /proc/PID/fd/N is TCP (IPv4 or IPv6); unknown counts as TCP."""
    try:
        return os.getxattr(fd_path, "system.sockprotoname").rstrip(b"\0") in (b"TCP", b"TCPv6")
    except OSError:
        return True


def process_tree(pid: int) -> list[int]:
    """The process and its descendants, from the kernel's children lists (no /proc scan)."""
    if not LINUX:
        with contextlib.suppress(psutil.Error):
            return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
        return []
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        with contextlib.suppress(OSError), os.scandir(f"/proc/{p}/task") as tasks:
            for task in tasks:
                with contextlib.suppress(OSError), open(f"{task.path}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return tree


def family(tree: list[int], session: set[int]) -> list[int]:
    """A kernel's processes: its tree, and its session's processes that left the tree (with
    their own trees)."""
    tree = list(tree)
    for orphan in sorted(session - set(tree)):
        if orphan not in tree:
            tree += process_tree(orphan)
    return tree


def _stat_field(pid: int, index: int) -> int | None:
    """A numeric field of /proc/PID/stat, counted from the state (field 3) on."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[index])
    except (OSError, ValueError, IndexError):
        return None


def session_of(pid: int) -> int | None:
    """The session id of a process (field 6 of /proc/PID/stat), None if it is gone."""
    return _stat_field(pid, 3)


def reaped_faults(pid: int) -> int:
    """cminflt (field 11): page faults of the children a process has reaped. It grows
    whenever a child exits and is waited for, e.g. the shell of `!app &` (0 if gone)."""
    return _stat_field(pid, 8) or 0


class Sessions:
    """Which processes belong to which session, learning each new pid's session once.

    A kernel is started as a session leader (jupyter_client's start_new_session), and what it
    starts inherits the session even when orphaned: `!streamlit run app.py &` runs through a
    shell that exits at once, so the app is reparented away from the kernel's tree but keeps
    its session. Listing /proc's pids costs ~0.6 ms per thousand processes, so the watcher
    does it only when a process of a kernel's tree exited (see PortWatcher.scan); new pids'
    stat files are read once.
    """

    def __init__(self) -> None:
        self._known: set[int] = set()
        self._by_session: dict[int, set[int]] = {}

    def members(self, leaders: set[int]) -> dict[int, set[int]]:
        """leader pid -> the live pids in its session (the leader's descendants mostly)."""
        try:
            pids = {int(n) for n in os.listdir("/proc") if n.isdigit()}
        except OSError:
            return {}
        for pid in pids - self._known:  # set operations: no Python loop over every pid
            sid = session_of(pid)
            if sid is not None:
                self._by_session.setdefault(sid, set()).add(pid)
        self._known = pids
        if len(self._by_session) > 4 * len(leaders) + 1024:  # forget sessions gone since
            self._by_session = {
                sid: members & pids for sid, members in self._by_session.items() if members & pids
            }
        out = {}
        for leader in leaders:
            out[leader] = self._by_session[leader] = self._by_session.get(leader, set()) & pids
        return out


def owner(pid: int) -> int | None:
    """The (effective) uid a process runs as, None if it is gone."""
    if LINUX:
        try:
            return os.stat(f"/proc/{pid}").st_uid
        except OSError:
            return None
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).uids().effective
    return None


def process_label(pid: int) -> str:
    """A name a person recognises: `tensorboard`, `http.server` (for python -m), `streamlit`."""
    try:
        proc = psutil.Process(pid)
        argv, name = proc.cmdline(), proc.name()
    except psutil.Error:
        return "a process"
    if argv and os.path.basename(argv[0]).startswith("python"):
        rest = argv[1:]
        while rest and rest[0].startswith("-") and rest[0] not in ("-m", "-c"):
            rest = rest[1:]
        if len(rest) >= 2 and rest[0] == "-m":
            return rest[1]
        if rest and rest[0] != "-c":
            return os.path.basename(rest[0]).removesuffix(".py")
    return name or "a process"


def kernel_processes(kernel_manager: t.Any) -> list[tuple[str, str, int, set[int]]]:
    """(kernel id, kernel name, pid, its own ZMQ ports) for each local kernel with a pid."""
    out = []
    for kid in list(kernel_manager.list_kernel_ids()):
        try:
            km = kernel_manager.get_kernel(kid)
        except KeyError:
            continue
        provisioner = getattr(km, "provisioner", None)
        pid = getattr(provisioner, "pid", None) or getattr(
            getattr(provisioner, "process", None), "pid", None
        )
        if not isinstance(pid, int):
            continue  # a kernel on a gateway or a remote provisioner: nothing to watch here
        own = {getattr(km, n, 0) for n in KERNEL_PORT_NAMES} - {0, None}
        out.append((kid, getattr(km, "kernel_name", "") or "", pid, own))
    return out


class PortWatcher:
    """The ports kernels listen on, and a version that changes when they do."""

    def __init__(self, kernel_manager: t.Any, uid: int | None = None) -> None:
        self.kernel_manager = kernel_manager
        self.uid = os.getuid() if uid is None else uid
        #: Changes whenever `ports` does; starts with this process's start, so a restarted
        #: runtime never repeats an old version.
        self._epoch = f"{os.getpid()}.{int(time.time())}"
        self._serial = 0
        self.ports: list[dict[str, t.Any]] = []
        self._inodes: set[int] = set()
        self._pending: dict[int, int] = {}
        self._labels: dict[tuple[int, float], str] = {}
        #: Kernel pid -> the ports it listened on once ready (its own, never forwarded).
        self._baseline: dict[int, set[int]] = {}
        self._unsettled = False
        self._sessions = Sessions()
        #: Kernel pid -> its session's processes outside its tree (orphaned apps).
        self._orphans: dict[int, set[int]] = {}
        self._signature: tuple[frozenset[int], int] | None = None
        self._session_wait = 0
        self.session_scans = 0
        #: Socket inode -> whether it is TCP (asked once per socket).
        self._tcp: dict[int, bool] = {}
        self._changed: asyncio.Event | None = None
        self.rounds = self.table_reads = 0

    @property
    def version(self) -> str:
        """The current version of `ports`."""
        return f"{self._epoch}.{self._serial}"

    def needs_baseline(self) -> bool:
        """True while a kernel has not been seen ready yet (its own ports are not known)."""
        kernels = kernel_processes(self.kernel_manager)
        return any(pid not in self._baseline for _, _, pid, _ in kernels)

    def scan(self) -> bool:
        """One round; True if the listed ports changed."""
        self.rounds += 1
        kernels = kernel_processes(self.kernel_manager)
        plain = {pid: process_tree(pid) for _, _, pid, _ in kernels}
        if LINUX and plain:
            self._update_sessions(plain)
        trees = [
            (kid, name, pid, own, family(plain[pid], self._orphans.get(pid, set())))
            for kid, name, pid, own in kernels
        ]
        live = {pid for _, _, pid, _, _ in trees}
        self._baseline = {pid: b for pid, b in self._baseline.items() if pid in live}
        if LINUX:
            listeners = self._listeners_proc(trees)
            if listeners is None:
                return False  # no socket opened or closed since the last round
        else:
            listeners = self._listeners_psutil(trees)
        found = []
        for kid, name, kpid, own, tree in trees:
            members = set(tree)
            mine = [(pid, a, port) for pid, a, port in listeners if pid in members]
            if kpid not in self._baseline:
                # The kernel's own listeners (ZMQ channels, ipykernel's IOPub pipe) are those
                # present once all its connection-file ports listen: user code runs later.
                ports_now = {port for pid, _, port in mine if pid == kpid}
                if not own <= ports_now:
                    self._unsettled = True
                    continue
                self._baseline[kpid] = ports_now
            for pid, address, port in mine:
                if not (pid == kpid and port in self._baseline[kpid]):
                    found.append((kid, name, pid, address, port))
        return self._publish(found)

    def _update_sessions(self, plain: dict[int, list[int]]) -> None:
        """Look for processes that left the kernels' trees (by session), but only when they
        may have: a tree process exited or reaped a child, a kernel is new, or every
        SESSION_EVERY rounds (a safety net, e.g. a grandchild reaped outside the tree)."""
        signature = (
            frozenset(p for tree in plain.values() for p in tree),
            sum(reaped_faults(p) for tree in plain.values() for p in tree),
        )
        self._session_wait -= 1
        if signature == self._signature and self._session_wait > 0:
            return
        self._signature, self._session_wait = signature, SESSION_EVERY
        self.session_scans += 1
        members = self._sessions.members(set(plain))
        self._orphans = {k: m - set(plain[k]) for k, m in members.items()}

    def _listeners_proc(self, trees: list[t.Any]) -> list[tuple[int, str, int]] | None:
        """(pid, address, port) of the trees' listening sockets; None when unchanged.

        Only TCP sockets count (a kernel's UNIX, UDP and netlink sockets come and go without
        a table read); a TCP socket's protocol is asked once, when it first appears.
        """
        held: dict[int, int] = {}  # inode -> pid holding it
        seen: set[int] = set()
        for *_, tree in trees:
            for pid in tree:
                for inode, path in socket_fds(pid).items():
                    seen.add(inode)
                    if inode not in held:
                        if inode not in self._tcp:
                            self._tcp[inode] = is_tcp(path)
                        if self._tcp[inode]:
                            held[inode] = pid
        if len(self._tcp) > 2 * len(seen) + 64:  # forget sockets closed since
            self._tcp = {i: v for i, v in self._tcp.items() if i in seen}
        inodes = set(held)
        # Pending: new sockets that were not listening yet when last looked at.
        self._pending = {i: n - 1 for i, n in self._pending.items() if n > 1 and i in inodes}
        if inodes == self._inodes and not self._pending and not self._unsettled:
            return None
        new = inodes - self._inodes
        self._inodes, self._unsettled = inodes, False
        self.table_reads += 1
        table = listening_inodes()
        for inode in new:
            # Not listening yet (or a connection): look again for a few rounds.
            if inode not in table:
                self._pending[inode] = PENDING_ROUNDS
        return [(pid, *table[inode]) for inode, pid in held.items() if inode in table]

    def _listeners_psutil(self, trees: list[t.Any]) -> list[tuple[int, str, int]]:
        found = []
        for *_, tree in trees:
            for pid in tree:
                with contextlib.suppress(psutil.Error):
                    for c in psutil.Process(pid).net_connections("tcp"):
                        if c.status == psutil.CONN_LISTEN:
                            found.append((pid, c.laddr.ip, c.laddr.port))
        return found

    def _label(self, pid: int) -> str:
        with contextlib.suppress(psutil.Error):
            key = (pid, psutil.Process(pid).create_time())
            if key not in self._labels:
                self._labels[key] = process_label(pid)
            return self._labels[key]
        return "a process"

    def _publish(self, found: list[tuple[str, str, int, str, int]]) -> bool:
        ports: dict[int, dict[str, t.Any]] = {}
        for kid, name, pid, address, port in sorted(found, key=lambda f: (f[4], ":" in f[3])):
            # Only this account's processes: a kernel's child may have switched users.
            if port in ports or owner(pid) != self.uid:
                continue
            ports[port] = {
                "port": port,
                "address": address,
                "pid": pid,
                "process": self._label(pid),
                "kernel_id": kid,
                "kernel_name": name,
            }
        listed = sorted(ports.values(), key=lambda p: p["port"])
        if listed == self.ports:
            return False
        self.ports = listed
        self._serial += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        return True

    async def wait_change(self, since: str, timeout: float) -> None:
        """Return once the version differs from `since`, or after `timeout` seconds."""
        if since != self.version:
            return
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
