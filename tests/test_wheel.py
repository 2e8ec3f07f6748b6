"""The wheel and sdist as users get them: built with `python -m build`, checked by twine, the wheel installed
non-editable into a fresh venv, and the CLI run from that install (with a node: the demo, and a 2.x node start, which
compiles the JNI shim from the wheel's own C++ source).

The fresh venv sees the test venv's third-party packages (torch & co., never reinstalled) through a .pth file that
points at a folder of links to them, leaving out the test venv's editable sparsepack, so `import sparsepack` can only
find the wheel's copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest
from conftest import PORT_BASE

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sparsepack"
# Files the code opens at run time from its own package folder (Path(__file__).with_name, importlib.resources):
# each one missing from the wheel breaks a command only when it runs there.
RUNTIME_FILES = (
    "sparsepack/node/native/djl_jni_compat.cpp",  # compiled for every 2.x node (node/assemble.py)
    "sparsepack/node/checksums.json",  # sha256 pins of Maven artifacts served without checksums (node/maven.py)
    "sparsepack/data/ops-1.13.1.json",  # libtorch op lists the trace is checked against (packaging/opcheck.py)
    "sparsepack/data/ops-2.5.1.json",
)
PORT_2X_FROM_WHEEL = PORT_BASE + 50  # a free slot of this suite's range (node_guard watches base..base+99)
BUILD_TIMEOUT = 600


def _source_files() -> list[str]:
    """The files a checkout would hand to the build: tracked plus untracked-but-not-ignored."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        return [f for f in out.splitlines() if (ROOT / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", "dist", "site", "__pycache__", ".pytest_cache", ".gpu-cache"}
        return [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(ROOT).parts) and ".egg-info" not in str(p)
        ]


def _child_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH: the tests run with the source tree on it, which would shadow the installed wheel."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def _run(cmd, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """wheel + sdist, built from a copy of the source tree so the checkout gets no build/ or egg-info."""
    work = tmp_path_factory.mktemp("wheel-build")
    src = work / "src"
    for rel in _source_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    # --no-isolation: the test venv already has the build backend (setuptools), and the build needs no network
    proc = _run(
        [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", work / "dist", src],
        timeout=BUILD_TIMEOUT,
        env=_child_env(),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return work / "dist"


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("sparsepack-*.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel (not editable); third-party packages come from the test venv by reference."""
    root = tmp_path_factory.mktemp("wheel-venv")
    env_dir = root / "venv"
    proc = _run([sys.executable, "-m", "venv", "--without-pip", env_dir], env=_child_env())
    assert proc.returncode == 0, proc.stderr
    python = env_dir / "bin" / "python"
    proc = _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", _wheel(dist)],
        env=_child_env(),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    deps = root / "deps"
    deps.mkdir()
    for site_dir in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(site_dir).iterdir():
            name = entry.name.lower()
            if name.startswith(("sparsepack", "__editable__")) or name in ("__pycache__",) or name.endswith(".pth"):
                continue
            if not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    purelib = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=_child_env()
    ).stdout.strip()
    Path(purelib, "_sparsepack_test_deps.pth").write_text(f"{deps}\n")
    return env_dir


def test_wheel_and_sdist_pass_twine_check(dist):
    files = sorted(str(p) for p in dist.iterdir())
    assert any(f.endswith(".whl") for f in files) and any(f.endswith(".tar.gz") for f in files), files
    proc = _run([sys.executable, "-m", "twine", "check", "--strict", *files], env=_child_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == len(files), proc.stdout


def test_wheel_carries_every_file_the_code_loads(dist):
    names = set(zipfile.ZipFile(_wheel(dist)).namelist())
    missing = [f for f in RUNTIME_FILES if f not in names]
    assert not missing, f"runtime files missing from the wheel: {missing}"
    templates = {p.name for p in (PACKAGE / "templates").glob("*.j2")}
    assert templates and {f"sparsepack/templates/{t}" for t in templates} <= names
    # whatever else sits in the package folder (a new data file, template or native source) ships too
    source = {
        str(p.relative_to(ROOT))
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc",)
    }
    assert not source - names, f"in sparsepack/ but not in the wheel: {sorted(source - names)}"
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(_wheel(dist)).read(meta).decode()
    assert "License-Expression: Apache-2.0" in metadata and "Author: sparsepack developers" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert (
        "console_scripts"
        in zipfile.ZipFile(_wheel(dist)).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    )


def test_sdist_carries_the_sources_and_project_files(dist):
    (sdist,) = dist.glob("sparsepack-*.tar.gz")
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "LICENSE", *RUNTIME_FILES} <= names, sorted(names)[:40]


def test_installed_wheel_runs_version_and_render(venv, tmp_path):
    python, cli = venv / "bin" / "python", venv / "bin" / "sparsepack"
    where = _run([python, "-c", "import sparsepack; print(sparsepack.__file__)"], env=_child_env(), cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve()), (
        where.stdout
    )  # the wheel, not the checkout
    version = _run([python, "-c", "import sparsepack; print(sparsepack.__version__)"], env=_child_env(), cwd=tmp_path)
    proc = _run([cli, "--version"], env=_child_env(), cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == f"sparsepack {version.stdout.strip()}", (
        proc.stdout + proc.stderr
    )

    listing = _run([cli, "render", "--list"], env=_child_env(), cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    for template in (PACKAGE / "templates").glob("*.json.j2"):
        assert template.name.removesuffix(".json.j2") in listing.stdout
    out = tmp_path / "mapping.json"
    proc = _run(
        [cli, "render", "index-mapping", "--target-version", "3.6", "--set", "field_type=sparse_vector", "-o", out],
        env=_child_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    body = json.loads(out.read_text())
    assert body["settings"]["index"]["sparse"] is True
    assert any(f.get("type") == "sparse_vector" for f in body["mappings"]["properties"].values())
    # a feature the target lacks is refused as bad input, from the installed package's version table
    proc = _run(
        [cli, "render", "index-mapping", "--target-version", "2.19", "--set", "field_type=sparse_vector"],
        env=_child_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "needs OpenSearch 3." in proc.stderr, proc.stderr


@pytest.mark.cluster
def test_installed_wheel_runs_the_demo_on_the_3x_node(venv, node_3x, tmp_path):
    proc = _run(
        [venv / "bin" / "sparsepack", "demo", "--url", node_3x, "--workdir", tmp_path / "demo", "--json"],
        timeout=900,
        env=_child_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["passed"] and report["failed_step"] is None, report.get("failed_step")
    assert {"package", "register", "deploy", "smoke_predict", "smoke_retrieval"} <= set(report["steps"])


@pytest.mark.cluster
def test_installed_wheel_starts_a_2x_node(venv):
    """2.x nodes need the JNI shim compiled from node/native/djl_jni_compat.cpp: a fresh home makes the wheel's
    install assemble the node (from the download cache) and build the shim from its own copy of the source."""
    if os.environ.get("OPENSEARCH_URL_2X"):
        pytest.skip("external 2.x cluster: no local node to start")
    home = Path(tempfile.mkdtemp(prefix="sparsepack-wheel-home-", dir="/tmp" if os.geteuid() == 0 else None))
    home.chmod(0o755)  # the node runs as the service user
    env = _child_env(SPARSEPACK_HOME=str(home))
    cli, port = venv / "bin" / "sparsepack", PORT_2X_FROM_WHEEL
    try:
        proc = _run(
            [
                cli,
                "node",
                "start",
                "--version",
                "2.19.6",
                "--port",
                port,
                "--heap",
                "768m",
                "--timeout",
                "400",
                "--json",
            ],
            timeout=900,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads(proc.stdout)["version"] == "2.19.6"
        status = _run([cli, "node", "status", "--port", port], timeout=120, env=env)
        assert status.returncode == 0 and json.loads(status.stdout)["healthy"] is True, status.stdout + status.stderr
        libdir = home / "dist" / "opensearch-2.19.6" / "libtorch"
        # build_jni_compat renames the real JNI to its SONAME and writes the compiled shim under DJL's file name
        assert (libdir / "libdjl_torch.so").is_file() and list(libdir.glob("*-libdjl_torch.so")), sorted(
            libdir.iterdir()
        )
    finally:
        stop = _run([cli, "node", "stop", "--port", port], timeout=300, env=env)
        if stop.returncode != 0:  # the wheel's CLI failed to stop it: stop it from the source tree, then report
            from sparsepack.node import cluster

            cluster.stop(port, home=home, quiet=True)
        shutil.rmtree(home, ignore_errors=True)
    assert stop.returncode == 0, stop.stderr
