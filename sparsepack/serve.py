"""``sparsepack serve PACKAGE_DIR``: a read-only static server for a package's artifacts (air-gapped setups, demos).

It serves exactly the files the manifest lists (plus the manifest), checked against their sha256 at start, GET and
HEAD only; anything else is 404 or 405. It is not meant to face the internet: bind it to a private address.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

from .contract.package_dir import MANIFEST, load_package, verify_package_files


class ArtifactServer:
    def __init__(self, package_dir: str | Path, port: int = 0, bind: str = "127.0.0.1", log=None):
        package = load_package(package_dir)
        verify_package_files(package)
        files = {a.file: package.path_of(a) for a in package.artifacts}
        files[MANIFEST] = package.package_root / MANIFEST
        self.files = files
        self._log = log
        handler = self._handler()
        self.httpd = http.server.ThreadingHTTPServer((bind, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        assert isinstance(host, str)  # an AF_INET server: the address is (host, port), never a socket path
        return f"http://{host}:{port}"

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, body: bool) -> None:
                name = self.path.split("?", 1)[0].lstrip("/")
                path = server.files.get(name)
                if path is None:
                    self.send_error(404, "not an artifact of this package")
                    return
                size = path.stat().st_size
                self.send_response(200)
                self.send_header("Content-Type", "application/json" if name == MANIFEST else "application/zip")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if body:
                    with open(path, "rb") as fh:
                        while chunk := fh.read(1 << 20):
                            self.wfile.write(chunk)

            def do_GET(self):  # noqa: N802 - http.server's naming
                self._send(True)

            def do_HEAD(self):  # noqa: N802
                self._send(False)

            def _refuse(self):
                self.send_error(405, "read-only")

            do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

            def log_message(self, fmt, *args):
                if server._log:
                    server._log(f"{self.address_string()} {fmt % args}")

        return Handler

    def start(self) -> ArtifactServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        # shutdown() waits for a serve_forever loop to end: only the thread start() launched runs one then. In the
        # foreground, Ctrl-C has already ended the loop, or came before it began (shutdown() would then wait forever).
        if self._thread is not None:
            self.httpd.shutdown()
        self.httpd.server_close()
