"""Download artifacts from Maven Central into a local cache, verified against Maven's checksum files."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import SparsepackError

MAVEN_REPO = os.environ.get("SPARSEPACK_MAVEN_REPO", "https://repo1.maven.org/maven2")


@dataclass(frozen=True)
class Coordinate:
    group: str
    artifact: str
    version: str
    ext: str = "jar"
    classifier: str = ""

    @property
    def path(self) -> str:
        name = f"{self.artifact}-{self.version}"
        if self.classifier:
            name += f"-{self.classifier}"
        return f"{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{name}.{self.ext}"

    def __str__(self) -> str:
        tail = f":{self.classifier}" if self.classifier else ""
        return f"{self.group}:{self.artifact}:{self.version}@{self.ext}{tail}"


def _open(url: str):
    try:
        return urllib.request.urlopen(url, timeout=120)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise SparsepackError(
            f"download of {url} failed with HTTP {exc.code}; retry later or set SPARSEPACK_MAVEN_REPO to a mirror"
        ) from None
    except urllib.error.URLError as exc:
        raise SparsepackError(
            f"cannot reach {url} ({exc.reason}); check the network or set SPARSEPACK_MAVEN_REPO to a mirror"
        ) from None


def exists(coord: Coordinate) -> bool:
    req = urllib.request.Request(f"{MAVEN_REPO}/{coord.path}", method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=60):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise SparsepackError(f"probe of {coord} failed with HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise SparsepackError(f"cannot reach {MAVEN_REPO} ({exc.reason}); check the network") from None


_PINS_FILE = Path(__file__).with_name("checksums.json")


def _pinned() -> dict[str, str]:
    return json.loads(_PINS_FILE.read_text()) if _PINS_FILE.exists() else {}


def expected_digest(coord: Coordinate) -> tuple[str, str]:
    """(algorithm, hex digest) from Maven's checksum file, else from the sha256 pins shipped with sparsepack.

    Some mirrors serve an artifact without its checksum files; the pins, recorded from Maven Central, cover that.
    """
    for algo in ("sha512", "sha256", "sha1"):
        resp = _open(f"{MAVEN_REPO}/{coord.path}.{algo}")
        if resp is not None:
            with resp:
                return algo, resp.read().decode().split()[0].strip().lower()
    pin = _pinned().get(coord.path)
    if pin:
        return "sha256", pin
    if os.environ.get("SPARSEPACK_RECORD_PINS") == "1":
        return "record", ""
    raise SparsepackError(
        f"{coord} has no checksum file on {MAVEN_REPO} and no pin in {_PINS_FILE.name}; refusing an unverified download"
    )


def record_pin(coord: Coordinate, digest: str) -> None:
    pins = _pinned()
    pins[coord.path] = digest
    _PINS_FILE.write_text(json.dumps(dict(sorted(pins.items())), indent=1) + "\n")


def fetch(coord: Coordinate, cache_dir: Path, alternatives: str = "", progress: bool = True) -> Path:
    """Return the cached file for ``coord``, downloading and verifying it first if needed."""
    target = cache_dir / "maven" / coord.path
    if target.exists():
        return target
    resp = _open(f"{MAVEN_REPO}/{coord.path}")
    if resp is None:
        hint = f"; {alternatives}" if alternatives else ""
        raise SparsepackError(f"{coord} is not served by {MAVEN_REPO}{hint}")
    algo, expected = expected_digest(coord)
    target.parent.mkdir(parents=True, exist_ok=True)
    total = int(resp.headers.get("Content-Length") or 0)
    bar = _progress_bar(total, coord.path.rsplit("/", 1)[-1]) if progress else None
    digest = hashlib.new("sha256" if algo == "record" else algo)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    try:
        with resp, os.fdopen(fd, "wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                if bar:
                    bar.update(len(chunk))
        if algo == "record":
            record_pin(coord, digest.hexdigest())
        elif digest.hexdigest() != expected:
            raise SparsepackError(
                f"{coord}: {algo} {digest.hexdigest()} does not match the expected {expected}; delete {target.parent} and retry"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the node's service user reads copies of these
        os.replace(tmp, target)
    finally:
        if bar:
            bar.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _progress_bar(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but downloads must not need it
        return None
    return tqdm(
        total=total or None,
        unit="B",
        unit_scale=True,
        desc=desc,
        file=sys.stderr,
        leave=False,
        disable=not sys.stderr.isatty() and os.environ.get("SPARSEPACK_PROGRESS") != "1",
    )
