"""A node's own log file (not the GC or slow logs), and its last lines for error messages and `node logs`."""

from __future__ import annotations

from pathlib import Path


def log_file(ndir: Path) -> Path | None:
    logs = sorted((ndir / "logs").glob("sparsepack-*.log"))
    logs = [p for p in logs if "_" not in p.name] or logs
    return logs[0] if logs else None


def log_tail(ndir: Path, n: int = 40) -> str:
    path = log_file(ndir)
    if path is None:
        return "(no log written)"
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
