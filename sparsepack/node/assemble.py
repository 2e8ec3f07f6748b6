"""Assemble an OpenSearch install with job-scheduler, k-NN, ML Commons and neural-search from Maven Central.

Facts established here (2026-11-25), where they differ from the reference recipe:
- 3.6.0's integ-test zip already carries lang-painless, mapper-extras and reindex; 2.19.6's carries only transport-netty4,
  so those modules are assembled from their Maven jars (reindex: ML Commons deletes models by delete-by-query).
- The neural-search zip's artifact id is ``neural-search`` (not ``opensearch-neural-search``).
- Maven serves no precxx11 DJL natives for libtorch 1.13.1 / 2.5.1 and no ``pytorch-jni`` 2.5.1-0.31.1; the cxx11
  ``pytorch-native-cpu`` libs with the cxx11 JNI from ``pytorch-jni`` 2.5.1-0.32.0 / 1.13.1-0.22.0 are seeded where
  ML Commons' DJL looks, so no deploy ever downloads.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import LocalEnvironmentError, SparsepackError
from .maven import Coordinate, fetch
from .plan import SUPPORTED_VERSIONS, NodePlan, pom_dependencies

ASSEMBLED_MARKER = ".sparsepack-assembled"
# Bump when the assembly changes (a module added, the seed laid out differently): older installs are rebuilt.
ASSEMBLY_REVISION = 3
DJL_VERSION = "0.31.1"  # what ML Commons 2.19 / 3.x bundle


def download_all(plan: NodePlan, cache: Path) -> dict[str, Path]:
    hint = (
        f"sparsepack node assembles {', '.join(SUPPORTED_VERSIONS)}; another version needs every plugin served "
        f"at the same version"
    )
    files = {"core": fetch(plan.core, cache, hint)}
    for coord in plan.plugins:
        files[coord.artifact] = fetch(coord, cache, hint)
    files["libtorch"] = fetch(plan.libtorch, cache, "DJL publishes pytorch-native-cpu for 1.13.1 and 2.5.1")
    files["jni"] = fetch(plan.jni, cache)
    return files


def _module_jars(root_coord: Coordinate, lib: Path, cache: Path) -> list[Path]:
    """The module jar plus its runtime dependencies, minus what the distribution's lib/ already has (jar hell)."""
    present = {re.sub(r"-\d[\w.]*\.jar$", "", p.name) for p in lib.glob("*.jar")}
    jars, seen, queue = [], set(), [root_coord]
    while queue:
        coord = queue.pop(0)
        if coord.artifact in seen or coord.artifact in present:
            continue
        seen.add(coord.artifact)
        jars.append(fetch(coord, cache))
        pom = Coordinate(coord.group, coord.artifact, coord.version, "pom")
        queue.extend(pom_dependencies(fetch(pom, cache)))
    return jars


# 3.x renamed the module classes (PainlessPlugin -> PainlessModulePlugin); the jar says which one it has.
_MODULE_CLASSES = {
    "lang-painless": ("org.opensearch.painless.PainlessModulePlugin", "org.opensearch.painless.PainlessPlugin"),
    "mapper-extras": (
        "org.opensearch.index.mapper.MapperExtrasModulePlugin",
        "org.opensearch.index.mapper.MapperExtrasPlugin",
    ),
    "reindex": ("org.opensearch.index.reindex.ReindexModulePlugin", "org.opensearch.index.reindex.ReindexPlugin"),
}
_PAINLESS_POLICY = """grant {
  permission java.lang.RuntimePermission "createClassLoader";
  permission java.lang.RuntimePermission "getClassLoader";
};
"""


def _plugin_class(name: str, jars: list[Path]) -> str:
    for jar in jars:
        with zipfile.ZipFile(jar) as zf:
            entries = set(zf.namelist())
        for cls in _MODULE_CLASSES[name]:
            if cls.replace(".", "/") + ".class" in entries:
                return cls
    raise SparsepackError(
        f"none of {_MODULE_CLASSES[name]} found in the {name} jars; this OpenSearch version is not supported"
    )


def _add_module(install: Path, name: str, jars: list[Path], plan: NodePlan) -> None:
    target = install / "modules" / name
    target.mkdir(parents=True)
    for jar in jars:
        shutil.copyfile(jar, target / jar.name)
        (target / jar.name).chmod(0o644)
    (target / "plugin-descriptor.properties").write_text(
        f"description={name} module assembled by sparsepack\nversion={plan.version}\nname={name}\n"
        f"classname={_plugin_class(name, jars)}\njava.version={plan.descriptor_java}\nopensearch.version={plan.version}\n"
        f"extended.plugins=\nhas.native.controller=false\n"
    )
    if name == "lang-painless":
        (target / "plugin-security.policy").write_text(_PAINLESS_POLICY)


def ensure_install(plan: NodePlan, home: Path, cache: Path, log=print) -> Path:
    """Return ``home/dist/opensearch-V`` with the four plugins installed, assembling it once."""
    install = home / "dist" / f"opensearch-{plan.version}"
    marker = f"{plan.version} assembly {ASSEMBLY_REVISION}\n"
    if (install / ASSEMBLED_MARKER).exists() and (install / ASSEMBLED_MARKER).read_text() == marker:
        return install
    files = download_all(plan, cache)
    java_home = plan.java_home()
    install.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".opensearch-{plan.version}.", dir=install.parent))
    try:
        log(f"unpacking OpenSearch {plan.version}")
        with zipfile.ZipFile(files["core"]) as zf:
            zf.extractall(staging)
        root = staging / f"opensearch-{plan.version}"
        for path in (root / "bin").iterdir():
            path.chmod(0o755)
        for path in (root / "jdk" / "bin").glob("*") if (root / "jdk").exists() else []:
            path.chmod(0o755)
        for name, coord in plan.modules.items():
            if not (root / "modules" / name).exists():
                log(f"assembling module {name}")
                _add_module(root, name, _module_jars(coord, root / "lib", cache), plan)
        env = {**os.environ, "OPENSEARCH_JAVA_HOME": str(java_home), "JAVA_HOME": str(java_home)}
        for coord in plan.plugins:
            log(f"installing {coord.artifact} {coord.version}")
            proc = subprocess.run(
                [
                    str(root / "bin" / "opensearch-plugin"),
                    "install",
                    "--batch",
                    files[coord.artifact].resolve().as_uri(),
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                raise SparsepackError(f"installing {coord} failed: {tail}")
        _seed_libtorch(plan, files, root / "libtorch")
        if plan.major == "2":
            log("building the JNI compatibility shim for libtorch 1.13.1")
            build_jni_compat(root / "libtorch", java_home, cache)
        (root / ASSEMBLED_MARKER).write_text(marker)
        shutil.rmtree(install, ignore_errors=True)
        root.rename(install)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return install


def _seed_libtorch(plan: NodePlan, files: dict[str, Path], target: Path) -> None:
    """libtorch + JNI, flat, as DJL expects them in ``<path.data>/ml_cache/pytorch/<ver>-<flavor>-<classifier>/``."""
    target.mkdir(parents=True)
    with zipfile.ZipFile(files["libtorch"]) as zf:
        for name in zf.namelist():
            if name.startswith("pytorch/cpu/linux-x86_64/") and not name.endswith("/"):
                with zf.open(name) as src, open(target / Path(name).name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    with zipfile.ZipFile(files["jni"]) as zf:
        (target / f"{DJL_VERSION}-libdjl_torch.so").write_bytes(zf.read("jnilib/linux-x86_64/cpu/libdjl_torch.so"))
    system_cxx = Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6")
    if (target / "libstdc++.so.6").exists() and system_cxx.exists():
        (target / "libstdc++.so.6").unlink()  # the bundled, older copy breaks other native code in the JVM
    if not (target / "libtorch.so").exists():
        raise SparsepackError(f"{plan.libtorch} holds no libtorch.so for linux-x86_64; delete the cached jar and retry")


JNI_COMPAT_SOURCE = Path(__file__).with_name("native") / "djl_jni_compat.cpp"
TORCH_HEADERS_WHEEL = "torch==1.13.1"


def torch_headers(cache: Path) -> Path:
    """libtorch 1.13.1's C++ headers, from the PyPI wheel (the only registry that serves them)."""
    include = cache / "torch-1.13.1-include"
    if (include / "torch" / "torch.h").exists() or (
        include / "torch" / "csrc" / "api" / "include" / "torch" / "torch.h"
    ).exists():
        return include
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("torch-1.13.1-*.whl"))
    if not found:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.10",
                "--platform",
                "manylinux1_x86_64",
                "-q",
                "-d",
                str(wheels),
                TORCH_HEADERS_WHEEL,
            ],
            capture_output=True,
            text=True,
        )
        found = sorted(wheels.glob("torch-1.13.1-*.whl"))
        if proc.returncode != 0 or not found:
            raise SparsepackError(
                f"cannot download {TORCH_HEADERS_WHEEL} (for its C++ headers): {proc.stderr.strip()[-200:]}"
            )
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=".include-"))
    with zipfile.ZipFile(found[0]) as zf:
        for name in zf.namelist():
            if name.startswith("torch/include/") and not name.endswith("/"):
                dest = staging / name[len("torch/include/") :]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    shutil.rmtree(include, ignore_errors=True)
    staging.rename(include)
    return include


def build_jni_compat(libdir: Path, java_home: Path, cache: Path) -> None:
    """Maven serves pytorch-jni for libtorch 1.13.1 only up to DJL 0.22.0, which lacks three entry points DJL 0.31.1
    (ML Commons 2.19) calls. Build a small library that provides them and links the real JNI as a dependency."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise LocalEnvironmentError(
            "OpenSearch 2.x needs a C++ compiler to build the DJL JNI shim; apt-get install g++"
        )
    include = torch_headers(cache)
    real = libdir / f"{DJL_VERSION}-libdjl_torch.so"
    real.rename(libdir / "libdjl_torch.so")  # the real JNI's SONAME, found through the shim's $ORIGIN runpath
    out = libdir / f"{DJL_VERSION}-libdjl_torch.so"
    cmd = [
        compiler,
        "-shared",
        "-fPIC",
        "-O2",
        "-std=c++17",
        "-D_GLIBCXX_USE_CXX11_ABI=1",
        "-w",
        f"-I{include}",
        f"-I{include}/torch/csrc/api/include",
        f"-I{java_home}/include",
        f"-I{java_home}/include/linux",
        str(JNI_COMPAT_SOURCE),
        f"-L{libdir}",
        "-Wl,--no-as-needed",
        "-ldjl_torch",
        "-ltorch_cpu",
        "-lc10",
        "-Wl,-rpath,$ORIGIN",
        "-o",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LocalEnvironmentError(f"building the DJL JNI shim failed: {proc.stderr.strip()[-300:]}")


def seed_dirs(plan: NodePlan) -> list[str]:
    """Folder names DJL may look in; ML Commons sets PYTORCH_PRECXX11, so the precxx11 name is the one used."""
    return [f"{plan.libtorch_version}-cpu-precxx11-linux-x86_64", f"{plan.libtorch_version}-cpu-linux-x86_64"]
