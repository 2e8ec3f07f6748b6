"""``serve``: a package's artifacts over read-only HTTP, for registration by URL."""

from __future__ import annotations

from ..errors import SparsepackError
from .output import err


def add_parser(subparsers) -> None:
    sp = subparsers.add_parser("serve", help="serve a package's artifacts read-only over HTTP, for URL registration")
    sp.add_argument("package", help="package directory")
    sp.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    sp.add_argument("--bind", default="127.0.0.1", help="address to listen on (default loopback only)")
    sp.set_defaults(run=run)


def run(args) -> int:
    from ..serve import ArtifactServer

    if not 0 < args.port < 65536:
        raise SparsepackError(f"--port {args.port} is out of range; use 1-65535")
    try:
        server = ArtifactServer(args.package, args.port, args.bind, log=err)
    except OSError as exc:
        raise SparsepackError(f"cannot listen on {args.bind}:{args.port}: {exc.strerror}; pick another --port") from exc
    print(
        f"serving {len(server.files) - 1} artifact(s) of {args.package} at {server.url}/ "
        f"(release with --artifact-base-url {server.url}); Ctrl-C stops",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.stop()
    return 0
