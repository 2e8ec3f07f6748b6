"""As root, nodes run as a dedicated non-root service user (OpenSearch refuses root); otherwise as the caller."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from ..errors import SparsepackError

SERVICE_USER = os.environ.get("SPARSEPACK_NODE_USER", "sparsepack")


def ensure_service_user() -> tuple[int, int] | None:
    """As root: the service user's (uid, gid), the user created once. Otherwise: None, the node runs as the caller."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        proc = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise SparsepackError(
                f"cannot create the service user {SERVICE_USER}: {proc.stderr.strip()}; "
                f"create it or set SPARSEPACK_NODE_USER to an existing non-root user"
            ) from None
        pw = pwd.getpwnam(SERVICE_USER)
    return pw.pw_uid, pw.pw_gid


def chown_tree(path: Path, ids: tuple[int, int] | None) -> None:
    if ids is None:
        return
    for root, _dirs, files in os.walk(path):
        os.chown(root, *ids)
        for name in files:
            os.chown(os.path.join(root, name), *ids, follow_symlinks=False)


def make_readable(path: Path) -> None:
    """As root: every parent of ``path`` must be traversable by the service user."""
    if os.geteuid() != 0:
        return
    home = Path.home()
    for parent in [path, *path.parents]:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if mode & 0o001:
            continue
        if home != Path("/") and parent == home:
            raise SparsepackError(
                f"{path} lies under {home}, which the service user cannot read; "
                f"set SPARSEPACK_HOME to e.g. /var/lib/sparsepack"
            )
        parent.chmod(mode | 0o055)
