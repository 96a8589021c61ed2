"""A fake Colab page over https, and headless Chromium pointed at it, for browser tests.

The page is a tiny HTML document whose script offers a few helpers (`window.fakeColab`)
that do what Colab's frontend does with a local runtime: fetch the REST API with the
token from the pasted URL, and talk to a kernel over its WebSocket. Tests drive those
helpers with selenium's `execute_async_script` and assert in Python.

Chromium is told that `colab.research.google.com` (or any other name) lives at the
page server's loopback port (`--host-resolver-rules`), to accept its self-signed
certificate, and that this address counts as *public* (`--ip-address-space-overrides`),
so Local Network Access treats the page exactly as it treats the real Colab.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import json
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

PAGE_JS = r"""
"use strict";
function headersOf(resp) {
  const out = {};
  resp.headers.forEach((v, k) => { out[k] = v; });
  return out;
}
function withTimeout(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(what + " timed out after " + ms + " ms")), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}
window.fakeColab = {
  // One HTTP request; never throws: network/CORS failures come back as {error}.
  async request(url, init, ms) {
    const t0 = performance.now();
    try {
      const resp = await withTimeout(fetch(url, init || {}), ms || 10000, "fetch " + url);
      const text = await resp.text();
      return {ok: resp.ok, status: resp.status, text: text, headers: headersOf(resp),
              ms: performance.now() - t0};
    } catch (e) {
      return {error: String(e), ms: performance.now() - t0};
    }
  },
  // Open a kernel WebSocket and run `code`; collects what the kernel answers.
  execute(wsUrl, code, ms) {
    return new Promise((resolve) => {
      const session = crypto.randomUUID();
      const msgId = crypto.randomUUID();
      const result = {opened: false, messages: [], executeResult: null, reply: null};
      let ws;
      let settled = false;
      const finish = (extra) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        Object.assign(result, extra || {});
        try { ws.close(); } catch (e) { /* already closed */ }
        resolve(result);
      };
      const timer = setTimeout(() => finish({error: "timed out after " + ms + " ms"}), ms);
      try {
        ws = new WebSocket(wsUrl);
      } catch (e) {
        finish({error: String(e)});
        return;
      }
      ws.onopen = () => {
        result.opened = true;
        ws.send(JSON.stringify({
          header: {msg_id: msgId, session: session, username: "colab",
                   msg_type: "execute_request", version: "5.3",
                   date: new Date().toISOString()},
          parent_header: {}, metadata: {}, channel: "shell", buffers: [],
          content: {code: code, silent: false, store_history: true,
                    user_expressions: {}, allow_stdin: false, stop_on_error: true},
        }));
      };
      ws.onmessage = (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch (e) { return; }
        if (!msg.parent_header || msg.parent_header.msg_id !== msgId) return;
        const type = msg.header.msg_type;
        result.messages.push(msg.channel + ":" + type);
        if (type === "execute_result") result.executeResult = msg.content;
        if (type === "execute_reply") result.reply = msg.content;
        if (result.reply && result.executeResult) finish();
      };
      ws.onerror = () => { result.sawError = true; };
      ws.onclose = (ev) => finish({closeCode: ev.code});
    });
  },
};
"""

PAGE_HTML = (
    "<!doctype html><html><head><meta charset='utf-8'><title>fake Colab</title>"
    f"<script>{PAGE_JS}</script></head><body>fake Colab</body></html>"
).encode()


def browser_available() -> str | None:
    """None when Chromium and chromedriver are installed, else why the test cannot run."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    return (
        f"missing {', '.join(missing)} (Debian packages chromium, chromium-driver)"
        if missing
        else None
    )


def make_cert(hostname: str, directory: Path) -> tuple[Path, Path]:
    """A fresh self-signed certificate and key for `hostname` (PEM files in `directory`)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{hostname}.crt"
    key_path = directory / f"{hostname}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _PageHandler(http.server.BaseHTTPRequestHandler):
    """Serves the fake Colab page at every path (and an empty favicon)."""

    def do_GET(self) -> None:
        body = b"" if self.path.startswith("/favicon") else PAGE_HTML
        self.send_response(200 if body else 204)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class PageServer:
    """An https server on 127.0.0.1 that Chromium will believe is `https://<hostname>`."""

    hostname: str
    port: int
    server: http.server.ThreadingHTTPServer = field(repr=False)

    @property
    def origin(self) -> str:
        return f"https://{self.hostname}"


@contextlib.contextmanager
def serve_page(hostname: str, cert_dir: Path) -> Iterator[PageServer]:
    """Serve the fake page over TLS from a thread; shut it down afterwards."""
    cert, key = make_cert(hostname, cert_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name=f"https-{hostname}", daemon=True)
    thread.start()
    try:
        yield PageServer(hostname, server.server_address[1], server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def chromium_args(pages: list[PageServer], user_data_dir: Path) -> list[str]:
    """The flags that make `pages` look like public https sites to headless Chromium."""
    rules = ", ".join(f"MAP {p.hostname} 127.0.0.1:{p.port}" for p in pages)
    spaces = ",".join(f"127.0.0.1:{p.port}=public" for p in pages)
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={user_data_dir}",
        f"--host-resolver-rules={rules}",
        "--ignore-certificate-errors",
        f"--ip-address-space-overrides={spaces}",
    ]


@contextlib.contextmanager
def chromium(pages: list[PageServer], script_timeout: float = 30.0) -> Iterator[Browser]:
    """Headless Chromium under chromedriver, with a fresh profile; always quit afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="colab-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in chromium_args(pages, profile):
        options.add_argument(arg)
    # Network events (the performance log) show what the browser did with each request.
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    driver = None
    try:
        driver = webdriver.Chrome(options=options, service=service)
        driver.set_page_load_timeout(20)
        driver.set_script_timeout(script_timeout)
        yield Browser(driver)
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _lower(headers: dict) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@dataclass
class Exchange:
    """One request as the browser's network log saw it."""

    url: str
    method: str
    preflight: bool
    request_headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    cors_error: str | None = None


class Browser:
    """The selenium driver plus the few things the tests ask of it."""

    def __init__(self, driver) -> None:
        self.driver = driver
        self._events: list[dict] = []

    def open(self, origin: str) -> None:
        """Load the fake page at `origin` and wait (bounded) until its script is ready."""
        self.driver.get(origin + "/")
        deadline = time.monotonic() + 10
        while not self.driver.execute_script("return !!window.fakeColab"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake page at {origin} did not load")
            time.sleep(0.05)

    def grant_loopback(self, origin: str) -> None:
        """What the user's click on "Allow" in Chrome's local-network prompt does."""
        self.driver.execute_cdp_cmd(
            "Browser.grantPermissions", {"origin": origin, "permissions": ["loopbackNetwork"]}
        )

    def reset_permissions(self) -> None:
        """Forget every granted permission (back to the prompt)."""
        self.driver.execute_cdp_cmd("Browser.resetPermissions", {})

    def request(self, url: str, init: dict | None = None, ms: int = 10000) -> dict:
        """`fetch(url, init)` from the page: {ok, status, text, headers} or {error}."""
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.fakeColab.request(arguments[0], arguments[1], arguments[2])"
            ".then(done, (e) => done({error: 'uncaught: ' + e}));",
            url,
            init or {},
            ms,
        )

    def execute(self, ws_url: str, code: str, ms: int = 20000) -> dict:
        """Run `code` in a kernel through its WebSocket from the page."""
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "window.fakeColab.execute(arguments[0], arguments[1], arguments[2])"
            ".then(done, (e) => done({error: 'uncaught: ' + e}));",
            ws_url,
            code,
            ms,
        )

    def run_cell(self, url: str, code: str, ms: int = 30000) -> tuple[str, dict]:
        """What Colab does with a pasted Backend URL: start a kernel through it and run `code`
        over the kernel's WebSocket; (kernel id, the run as `execute` returns it)."""
        base, token = self.driver.execute_script(
            "const u = new URL(arguments[0]); return [u.origin, u.searchParams.get('token')];",
            url,
        )
        started = self.request(
            f"{base}/api/kernels?token={token}",
            {"method": "POST", "headers": {"Content-Type": "application/json"}, "body": "{}"},
            ms=ms,
        )
        assert started.get("status") == 201, started
        kernel_id = json.loads(started["text"])["id"]
        ws_base = base.replace("http", "ws", 1)
        ws_url = (
            f"{ws_base}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
            f"&token={token}"
        )
        return kernel_id, self.execute(ws_url, code, ms)

    def network_events(self) -> list[dict]:
        """Every CDP Network.* event logged so far (the log is drained on each read)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method", "").startswith("Network."):
                self._events.append(message)
        return self._events

    def exchanges(self, url_part: str = "") -> list[Exchange]:
        """The HTTP requests the browser made (preflights included), oldest first."""
        events = self.network_events()
        found: dict[str, Exchange] = {}
        for event in events:
            if event["method"] == "Network.requestWillBeSent":
                params = event["params"]
                request = params["request"]
                found[params["requestId"]] = Exchange(
                    url=request["url"],
                    method=request["method"],
                    preflight=params.get("initiator", {}).get("type") == "preflight",
                    request_headers=_lower(request.get("headers", {})),
                )
        # Extra-info events may come before the request they belong to: a second pass.
        for event in events:
            params = event["params"]
            exchange = found.get(params.get("requestId", ""))
            if exchange is None:
                continue
            method = event["method"]
            if method == "Network.requestWillBeSentExtraInfo":
                exchange.request_headers.update(_lower(params.get("headers", {})))
            elif method == "Network.responseReceived":
                exchange.status = params["response"]["status"]
                exchange.response_headers.update(_lower(params["response"]["headers"]))
            elif method == "Network.responseReceivedExtraInfo":
                # The raw answer; for a response CORS rejected, the only record of it.
                exchange.response_headers.update(_lower(params.get("headers", {})))
                exchange.status = exchange.status or params.get("statusCode")
            elif method == "Network.loadingFailed":
                exchange.error = params.get("errorText")
                exchange.cors_error = (params.get("corsErrorStatus") or {}).get("corsError")
        return [x for x in found.values() if url_part in x.url]

    def console(self) -> list[str]:
        """The page's console messages so far (drained on each read)."""
        return [e.get("message", "") for e in self.driver.get_log("browser")]
