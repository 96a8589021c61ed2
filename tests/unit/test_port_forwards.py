"""Forwarded ports' pure parts: option parsing, profiles, the lines shown, the runtime's report
checks, /proc/net/tcp parsing and process names. The forwards themselves run end to end in
tests/test_port_forwards.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from jupyter_colab_remote.companion.cli import _print_record, build_parser, main
from jupyter_colab_remote.companion.errors import CompanionError
from jupyter_colab_remote.companion.options import apply_defaults
from jupyter_colab_remote.companion.port_forwards import (
    REPORT_REFRESH_SECONDS,
    ForwardSpec,
    forward_lines,
    in_ranges,
    parse_forwards,
    parse_ignore,
    target_address,
)
from jupyter_colab_remote.companion.profiles import companion_settings, lookup
from jupyter_colab_remote.extension.listening_ports import (
    diag_listeners,
    proc_listeners,
    process_label,
)
from jupyter_colab_remote.extension.ports_api import REPORT_TTL_SECONDS, PortsState, parse_report


def test_forward_specs_from_the_command_line_and_profiles():
    """PORT and LOCAL:REMOTE, repeated, or a profile's list or comma-separated string."""
    assert parse_forwards(["6006", "18888:8888"]) == [
        ForwardSpec(6006, 6006),
        ForwardSpec(18888, 8888),
    ]
    assert parse_forwards("6006, 8501") == [ForwardSpec(6006, 6006), ForwardSpec(8501, 8501)]
    assert parse_forwards([6006]) == [ForwardSpec(6006, 6006)]
    assert parse_forwards(None) == []


@pytest.mark.parametrize("bad", ["abc", "0", "70000", "1:2:3", ":80", "6006:", "6006,6006"])
def test_bad_forward_specs_are_usage_errors(bad):
    """Each names what is wrong, with exit code 2 (usage)."""
    with pytest.raises(CompanionError) as e:
        parse_forwards(bad)
    assert e.value.exit_code == 2
    assert "--forward" in str(e.value)


def test_ignore_ranges():
    """`8888,9000-9100`: single ports and inclusive ranges; nonsense is a usage error."""
    ranges = parse_ignore(["8888", "9000-9100"])
    assert [p for p in (8887, 8888, 9000, 9050, 9100, 9101) if in_ranges(p, ranges)] == [
        8888,
        9000,
        9050,
        9100,
    ]
    for bad in ("9100-9000", "x", "0"):
        with pytest.raises(CompanionError):
            parse_ignore(bad)


def test_profiles_may_set_forwards(tmp_path):
    """`forward`, `auto_forward` and `auto_forward_ignore` are profile keys."""
    (tmp_path / "jupyter_colabremote_config.json").write_text(
        json.dumps(
            {
                "ColabRemoteCompanion": {
                    "profiles": {
                        "gpu": {
                            "host": "me@gpu",
                            "forward": ["6006", "18501:8501"],
                            "auto_forward": False,
                            "auto_forward_ignore": "8888",
                        }
                    }
                }
            }
        )
    )
    profile = lookup("gpu", companion_settings([str(tmp_path)]))
    assert parse_forwards(profile["forward"])[1] == ForwardSpec(18501, 8501)
    assert profile["auto_forward"] is False


def test_forward_needs_a_host():
    """Without a host the runtime's ports are local already: a one-line usage error."""
    with pytest.raises(CompanionError) as e:
        main(["start", "--forward", "6006"])
    assert e.value.exit_code == 2 and "needs a HOST" in str(e.value)


def test_where_sshd_connects_and_the_lines_shown():
    """Wildcard binds are reached on loopback; status/start lines name the process."""
    assert target_address("0.0.0.0") == "127.0.0.1"
    assert target_address("::") == "::1"
    assert target_address("10.0.0.5") == "10.0.0.5"
    lines = forward_lines(
        [
            {"url": "http://localhost:6006", "remote_port": 6006, "source": "explicit"},
            {"url": "http://localhost:8001", "remote_port": 8000, "source": "auto",
             "process": "http.server", "pid": 42, "kernel": "python3"},
        ]
    )  # fmt: skip
    assert lines == [
        "forward http://localhost:6006 -> port 6006 on the host (--forward)",
        "forward http://localhost:8001 -> port 8000 on the host (http.server, kernel python3, "
        "pid 42)",
    ]


def test_port_reports_are_checked():
    """The companion's PUT: ports in range, at most a bounded list, sources normalised."""
    client, forwards = parse_report(
        {"client": "laptop", "forwards": [{"remote_port": 1, "local_port": 2, "source": "x"}]}
    )
    assert (client, forwards) == ("laptop", [{"remote_port": 1, "local_port": 2, "source": "auto"}])
    for bad in ({}, {"forwards": [{"remote_port": 0, "local_port": 2}]}, {"forwards": "x"}, []):
        with pytest.raises((ValueError, KeyError, TypeError)):
            parse_report(bad)


def test_proc_net_tcp_parsing(tmp_path):
    """LISTEN entries only, IPv4 and IPv6 addresses decoded (a /proc/net/tcp copy)."""
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
    header += "  timeout inode\n"
    (tmp_path / "tcp").write_text(
        header
        + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 111 1\n"
        + "   1: 0100007F:1F91 0100007F:9C40 01 00000000:00000000 00:00000000 00000000 0 0 112 1\n"
    )
    (tmp_path / "tcp6").write_text(
        header + "   0: 00000000000000000000000001000000:1770 "
        "00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 "
        "0 0 113 1\n"
    )
    assert proc_listeners(str(tmp_path)) == {111: ("127.0.0.1", 8080), 113: ("::1", 6000)}


def test_sock_diag_agrees_with_proc_net_tcp():
    """The netlink answer lists the same listeners as /proc (a real socket of this process)."""
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
        try:
            diag = diag_listeners()
        except OSError:
            pytest.skip("no sock_diag here")
        # (Other processes on this machine may open listeners meanwhile: compare ours.)
        assert ("127.0.0.1", port) in diag.values()
        assert ("127.0.0.1", port) in proc_listeners().values()


def test_process_labels():
    """`python -m MODULE` is MODULE, `python script.py` is `script`, else the process name."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Right after the fork the child still shows this process's command line: wait for
        # the exec (bounded).
        end = time.monotonic() + 10
        while process_label(proc.pid) != "http.server" and time.monotonic() < end:
            time.sleep(0.05)
        assert process_label(proc.pid) == "http.server"
    finally:
        proc.kill()
        proc.wait(10)


def test_auto_forward_is_on_unless_turned_off():
    """The default forwards automatically; --no-auto-forward turns it off."""
    for argv, expected in ((["start", "h"], True), (["start", "h", "--no-auto-forward"], False)):
        args = build_parser().parse_args(argv)
        apply_defaults(args)
        assert args.auto_forward is expected


def test_start_prints_the_forwards(capsys):
    """The URL block names each extra forward."""
    record = {
        "url": "http://localhost:9000/?token=t",
        "local_port": 9000,
        "reattached": False,
        "remote_pid": 1,
        "forwards": [{"url": "http://localhost:6006", "remote_port": 6006, "source": "explicit"}],
    }
    _print_record(record, as_json=False)
    out = capsys.readouterr().out
    assert "  forward http://localhost:6006 -> port 6006 on the host (--forward)\n" in out
    assert "0.0.0.0" not in out  # the container hint: only for a container's ports


def test_reconcile_opens_and_closes_local_ports(capsys):
    """From the runtime's ports document: a kernel's port is listened on here (the same port,
    else the next free one, said so), an ignored port or another companion's --forward is not,
    and a port gone from the document is closed. (No SSH link: only the local side.)"""
    from jupyter_colab_remote.companion.forwarder import Link
    from jupyter_colab_remote.companion.port_forwards import PortForwards
    from jupyter_colab_remote.companion.ui import UI

    def kernel_port(port: int) -> dict:
        return {"port": port, "address": "0.0.0.0", "pid": 7, "process": "gradio",
                "kernel_name": "python3", "source": "kernel"}  # fmt: skip

    held = socket.create_server(("127.0.0.1", 0))
    free = socket.create_server(("127.0.0.1", 0))
    taken, wanted = held.getsockname()[1], free.getsockname()[1]
    free.close()
    ignored = socket.create_server(("127.0.0.1", 0))
    ignored_port = ignored.getsockname()[1]
    ignored.close()
    ports = PortForwards(Link(), [], UI(), ignore=[(ignored_port, ignored_port)])
    try:
        explicit_elsewhere = {**kernel_port(ignored_port + 1), "source": "explicit"}
        docs = [kernel_port(wanted), kernel_port(taken), kernel_port(ignored_port)]
        assert ports.reconcile([*docs, explicit_elsewhere])
        by_remote = {r["remote_port"]: r["local_port"] for r in ports.records()}
        assert by_remote[wanted] == wanted and by_remote[taken] > taken
        assert set(by_remote) == {wanted, taken}
        err = capsys.readouterr().err
        assert f"gradio (kernel python3, pid 7) -> http://localhost:{wanted}\n" in err
        assert f"(port {taken} is in use here)" in err
        assert not ports.reconcile([*docs, explicit_elsewhere])  # nothing new
        with socket.create_connection(("127.0.0.1", by_remote[taken]), timeout=5):
            pass  # listening here
        assert ports.reconcile([kernel_port(wanted)])
        assert "stopped listening" in capsys.readouterr().err
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", by_remote[taken]), timeout=5)
    finally:
        ports.close()
        held.close()


def test_container_forwards_aim_at_published_ports(capsys):
    """Container mode: each --forward aims at the host port its container port is published
    on; one lacking (a re-attached container) says so in one line and aims at the host's own
    port; a native runtime's forwards aim at the host's ports. (No SSH link: the targets.)"""
    from jupyter_colab_remote.companion.forwarder import Link
    from jupyter_colab_remote.companion.port_forwards import PortForwards
    from jupyter_colab_remote.companion.session import container_forwards
    from jupyter_colab_remote.companion.ui import UI
    from tests.harness.processes import free_port

    specs = parse_forwards([f"{free_port()}:{p}" for p in (6006, 7000, 8080)])
    ports = PortForwards(Link(), specs, UI())
    try:
        ports.bind_explicit()
        runtime = {"mode": "container", "container": "colabremote-default", "port": 41000,
                   "published": [{"port": 6006, "host_port": 46006}]}  # fmt: skip
        container_forwards(ports, runtime, UI())
        targets = {p: f.forwarder.link.remote for p, f in ports.forwards.items()}
        assert targets == {6006: ("127.0.0.1", 46006), 7000: ("127.0.0.1", 7000),
                           8080: ("127.0.0.1", 41000)}  # fmt: skip
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "does not publish port 7000 (ports are published" in err
        lines = forward_lines(ports.records())
        assert any(line.endswith("-> port 6006 in the container (host port 46006) (--forward)")
                   for line in lines)  # fmt: skip
        record = {"url": "http://localhost:9000/?token=t", "local_port": 9000, "remote_pid": 1,
                  "reattached": True, "mode": "container", "container": "c", "image": "i",
                  "forwards": ports.records()}  # fmt: skip
        _print_record(record, as_json=False)
        assert "must listen on all its addresses: 0.0.0.0" in capsys.readouterr().out
        container_forwards(ports, {"mode": "native", "port": 41000}, UI())
        assert ports.forwards[6006].forwarder.link.remote == ("127.0.0.1", 6006)
        assert ports.forwards[6006].host_port is None
    finally:
        ports.close()


class _NoKernels:
    """A kernel manager with no kernels: the reports alone decide the document."""

    def list_kernel_ids(self) -> list[str]:
        return []


def test_reports_of_a_silent_companion_expire():
    """A companion killed with kill -9 never withdraws its links: the runtime forgets a report
    not refreshed for REPORT_TTL_SECONDS, and a live companion refreshes well inside that."""
    state = PortsState(_NoKernels())
    now = time.time()

    def report(port: int, age: float) -> dict:
        forward = {"remote_port": port, "local_port": port, "source": "explicit"}
        return {"forwards": [forward], "reported": now - age}

    state.reports["killed"] = report(7000, REPORT_TTL_SECONDS + 1)
    state.reports["live"] = report(7001, REPORT_REFRESH_SECONDS)
    doc = state.document()
    assert doc["clients"] == ["live"]
    assert [(p["port"], p["forwards"]) for p in doc["ports"]] == [
        (7001, [{"client": "live", "local_port": 7001}])
    ]
    assert REPORT_REFRESH_SECONDS * 2 < REPORT_TTL_SECONDS
