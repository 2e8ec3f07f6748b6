"""A loopback HTTP proxy between client and node that injects faults a healthy node never produces:
429/503 answers, dropped connections (before or after the node saw the request), 401s, filtered responses."""

from __future__ import annotations

import http.client
import json
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    method: str
    path: str  # regex searched in the request path
    action: (
        str  # "status:429" | "drop-before" | "drop-after" | "outage" (drop-after, then the node is gone) | "rewrite"
    )
    times: int = 1
    rewrite: Callable[[bytes], bytes] | None = None
    before: Callable[[], None] | None = None  # action "call": run this (e.g. stop the node), then forward
    reason: str = "injected"  # action "status:N": the error reason answered, e.g. the node's own words for a refusal
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.hits < self.times and self.method in (method, "*") and re.search(self.path, path) is not None


@dataclass
class FaultProxy:
    upstream_port: int
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, str]] = field(default_factory=list)
    headers: list[dict] = field(default_factory=list)
    tls_context: ssl.SSLContext | None = None
    down: bool = False  # set by an "outage" fault: every later request is dropped, as if the node had stopped

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                proxy.headers.append(dict(self.headers.items()))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.down:
                    proxy.log.append((self.command, self.path, "down"))
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                fault = next((f for f in proxy.faults if f.matches(self.command, self.path)), None)
                if fault:
                    fault.hits += 1
                proxy.log.append((self.command, self.path, fault.action if fault else "pass"))
                if fault and fault.action.startswith("status:"):
                    code = int(fault.action.split(":")[1])
                    error = {"reason": fault.reason, "type": "injected"}
                    payload = json.dumps({"error": error, "status": code}).encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault and fault.action == "call" and fault.before:
                    fault.before()
                if fault and fault.action == "drop-before":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")
                }
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except OSError:  # the node is down: the client sees a dropped connection, as it would directly
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                finally:
                    conn.close()
                if fault and fault.action == "outage":
                    proxy.down = True
                if fault and fault.action in ("drop-after", "outage"):
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault and fault.action == "rewrite" and fault.rewrite:
                    data = fault.rewrite(data)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if self.tls_context:
            self.server.socket = self.tls_context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_context else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
