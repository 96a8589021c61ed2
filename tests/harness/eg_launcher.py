"""A kernel launcher for Jupyter Enterprise Gateway's remote process proxies (our own, for tests).

EG 3.3.0 starts a remote kernel with `nohup ARGV &` over SSH and then waits on its response
socket for the kernel's connection info. This script is that ARGV. It runs on the "remote"
host with the EG venv's python (ipykernel 6) and implements the launcher side of the protocol
as EG's `RemoteProcessProxy` / `ResponseManager` read it (processproxy.py):

1. The kernel binds its five ZMQ ports itself (port 0 = any free port; no pick-then-bind race),
   on 0.0.0.0 so that EG reaches them on the host's address.
2. A TCP "comm" socket (any free port) is opened for EG's requests.
3. The connection info (ports, key, transport, signature scheme) plus `pid`, `pgid`,
   `comm_port` and `kernel_id` is sent, encrypted, to `--response-address` as one
   base64(JSON) "version 1" payload: {"version": 1, "key": b64(RSA-PKCS1v1.5(aes_key)),
   "conn_info": b64(AES-128-ECB(json, PKCS7 padding))}, the RSA key being EG's public key
   (`--public-key`, base64 DER without PEM armour). EG reads until EOF, so we close after it.
4. A daemon thread answers the comm socket: each connection carries one JSON object,
   `{"signum": N}` (0 = liveness poll, 2 = interrupt, 15 = terminate: sent to this process,
   which is the kernel) or `{"shutdown": 1}` (stop listening). EG treats a refused connect as
   "the kernel is gone", so the socket must live exactly as long as the kernel does: it is
   this process's, and closes when the kernel exits.

Not implemented (not needed by DistributedProcessProxy here): port ranges (`--port-range`),
Spark/Dask namespaces, version-0 payloads, custom kernel classes.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import tempfile
import threading
from pathlib import Path

from Cryptodome.Cipher import AES, PKCS1_v1_5
from Cryptodome.PublicKey import RSA
from Cryptodome.Util.Padding import pad


def encrypt_payload(info: dict, public_key_b64: str) -> bytes:
    """EG's version-1 payload: AES-encrypted JSON, the AES key RSA-encrypted for EG."""
    aes_key = secrets.token_bytes(16)
    conn_info = AES.new(aes_key, AES.MODE_ECB).encrypt(pad(json.dumps(info).encode(), 16))
    rsa = RSA.import_key(base64.b64decode(public_key_b64))
    payload = {
        "version": 1,
        "key": base64.b64encode(PKCS1_v1_5.new(rsa).encrypt(aes_key)).decode(),
        "conn_info": base64.b64encode(conn_info).decode(),
    }
    return base64.b64encode(json.dumps(payload).encode())


def send_response(address: str, payload: bytes, timeout: float = 10.0) -> None:
    """Send the payload to EG's response socket (HOST:PORT); EOF marks its end."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)


def serve_requests(sock: socket.socket) -> None:
    """Answer EG's comm-port requests until it asks us to stop (daemon thread)."""
    while True:
        conn, _ = sock.accept()
        with conn:
            conn.settimeout(5.0)  # EG sends a few bytes and closes; never hang on a peer
            data = b""
            try:
                while chunk := conn.recv(4096):
                    data += chunk
                request = json.loads(data or b"{}")
            except (OSError, ValueError):
                continue
        # signum 0 is EG's liveness poll: accepting the connection was the answer.
        if request.get("signum") is not None and int(request["signum"]) > 0:
            # ipykernel raises KeyboardInterrupt in the main thread while it executes.
            os.kill(os.getpid(), int(request["signum"]))
        if request.get("shutdown"):
            sock.close()  # from now on EG's polls are refused: the kernel counts as gone
            return


def main() -> None:
    """Start an IPython kernel here and report it to Enterprise Gateway."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel-id", required=True)
    parser.add_argument("--response-address", required=True)
    parser.add_argument("--public-key", required=True)
    args = parser.parse_args()

    # A connection file with the session key and the bind address (ipykernel reads its
    # settings from one); it is private (mkstemp: 0600) and removed once the ports are bound.
    fd, path = tempfile.mkstemp(prefix=f"kernel-{args.kernel_id}-", suffix=".json")
    os.close(fd)
    conn_file = Path(path)
    info = {"key": secrets.token_hex(16), "ip": "0.0.0.0", "transport": "tcp"}
    info["signature_scheme"] = "hmac-sha256"
    conn_file.write_text(json.dumps(info))

    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance(connection_file=str(conn_file))
    try:
        app.initialize([])  # binds the five ZMQ sockets and rewrites the file with their ports
    finally:
        conn_file.unlink(missing_ok=True)  # EG gets the info below; nothing is left behind
    ports = {n: getattr(app, n) for n in ("shell_port", "iopub_port", "stdin_port")}
    ports |= {n: getattr(app, n) for n in ("hb_port", "control_port")}

    comm = socket.create_server(("0.0.0.0", 0))
    threading.Thread(target=serve_requests, args=(comm,), daemon=True).start()

    send_response(
        args.response_address,
        encrypt_payload(
            {
                **info,
                **ports,
                "pid": os.getpid(),
                "pgid": os.getpgid(0),
                "comm_port": comm.getsockname()[1],
                "kernel_id": args.kernel_id,
            },
            args.public_key,
        ),
    )
    app.start()


if __name__ == "__main__":
    main()
