"""What a local node of a given OpenSearch version is assembled from (all Maven Central coordinates)."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ..errors import LocalEnvironmentError, SparsepackError
from .maven import Coordinate

DEFAULT_VERSION = "3.6.0"
# Newest line of each major for which every artifact below is served (probed 2026-11-25).
SUPPORTED_VERSIONS = ("3.6.0", "2.19.6", "2.19.1")
# The security plugin must match OpenSearch exactly. Maven serves opensearch-security only for 2.11.1.0, 2.19.1.0,
# 2.19.3.0, 2.19.4.0 and 3.4.0.0, but ML Commons and neural-search only for 2.19.1.0 and 3.6.0.0 among those lines
# (probed 2026-11-26): 2.19.1 is the one version where every plugin is served together, so it is the secured line.
SECURE_VERSIONS = ("2.19.1",)
DEFAULT_SECURE_VERSION = "2.19.1"

# ML Commons forces libtorch 1.13.1 on 2.x and 2.5.1 on 3.x, through DJL 0.31.1.
# Maven serves neither DJL's precxx11 natives for these versions nor pytorch-jni 2.5.1-0.31.1; the cxx11
# ("cpu") natives with the matching cxx11 JNI build are used instead, placed where DJL looks.
_TORCH = {
    "2": ("1.13.1", Coordinate("ai.djl.pytorch", "pytorch-jni", "1.13.1-0.22.0")),
    "3": ("2.5.1", Coordinate("ai.djl.pytorch", "pytorch-jni", "2.5.1-0.32.0")),
}

JAVA_CANDIDATES = {
    # 2.x needs the Security Manager, gone from JDK 24; 3.x needs 21+.
    "2": (
        "/usr/lib/jvm/java-17-openjdk-amd64",
        "/usr/lib/jvm/temurin-17-jdk-amd64",
        "/usr/lib/jvm/java-21-openjdk-amd64",
    ),
    "3": (
        "/usr/lib/jvm/temurin-25-jdk-amd64",
        "/usr/lib/jvm/temurin-21-jdk-amd64",
        "/usr/lib/jvm/java-21-openjdk-amd64",
    ),
}
JAVA_RANGE = {"2": (11, 23), "3": (21, 99)}


@dataclass(frozen=True)
class NodePlan:
    version: str

    @property
    def major(self) -> str:
        return self.version.split(".")[0]

    @property
    def plugin_version(self) -> str:
        return f"{self.version}.0"

    @property
    def descriptor_java(self) -> str:
        return "21" if self.major == "3" else "11"

    @property
    def libtorch_version(self) -> str:
        return _TORCH[self.major][0]

    @property
    def core(self) -> Coordinate:
        return Coordinate("org.opensearch.distribution.integ-test-zip", "opensearch", self.version, "zip")

    @property
    def plugins(self) -> list[Coordinate]:
        """In install order: each one's extended plugins come before it."""
        pv = self.plugin_version
        return [
            Coordinate("org.opensearch.plugin", "opensearch-job-scheduler", pv, "zip"),
            Coordinate("org.opensearch.plugin", "opensearch-knn", pv, "zip"),
            Coordinate("org.opensearch.plugin", "opensearch-ml-plugin", pv, "zip"),
            Coordinate("org.opensearch.plugin", "neural-search", pv, "zip"),
        ] + ([Coordinate("org.opensearch.plugin", "opensearch-security", pv, "zip")] if self.securable else [])

    @property
    def securable(self) -> bool:
        """The install carries the security plugin (disabled unless the node starts with --secure)."""
        return self.version in SECURE_VERSIONS

    @property
    def modules(self) -> dict[str, Coordinate]:
        """Modules the plugins need, by module name -> its Maven jar (assembled when the distribution lacks them):
        k-NN extends lang-painless, rank_features lives in mapper-extras, model deletion runs a delete-by-query."""
        return {
            "lang-painless": Coordinate("org.opensearch.plugin", "lang-painless", self.version),
            "mapper-extras": Coordinate("org.opensearch.plugin", "mapper-extras-client", self.version),
            "reindex": Coordinate("org.opensearch.plugin", "reindex-client", self.version),
        }

    @property
    def libtorch(self) -> Coordinate:
        return Coordinate("ai.djl.pytorch", "pytorch-native-cpu", self.libtorch_version, "jar", "linux-x86_64")

    @property
    def jni(self) -> Coordinate:
        return _TORCH[self.major][1]

    def java_home(self) -> Path:
        override = os.environ.get("SPARSEPACK_JAVA_HOME")
        candidates = (override,) if override else JAVA_CANDIDATES[self.major]
        lo, hi = JAVA_RANGE[self.major]
        for cand in candidates:
            if cand and (Path(cand) / "bin" / "java").exists():
                found = java_major(Path(cand))
                if lo <= found <= hi:
                    return Path(cand)
                if override:
                    raise LocalEnvironmentError(
                        f"SPARSEPACK_JAVA_HOME={cand} is Java {found}; OpenSearch {self.version} needs Java {lo}-{hi}"
                    )
        raise LocalEnvironmentError(
            f"no Java {lo}-{hi} found for OpenSearch {self.version} (looked in {', '.join(c for c in candidates if c)}); "
            f"install one (e.g. apt-get install openjdk-17-jdk-headless for 2.x) or set SPARSEPACK_JAVA_HOME"
        )


def java_major(home: Path) -> int:
    release = home / "release"
    if release.exists():
        m = re.search(r'JAVA_VERSION="(\d+)', release.read_text())
        if m:
            return int(m.group(1))
    import subprocess

    out = subprocess.run([str(home / "bin" / "java"), "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        raise LocalEnvironmentError(f"cannot tell the Java version of {home}; set SPARSEPACK_JAVA_HOME to a JDK")
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 else major


def plan_for(version: str | None, secure: bool = False) -> NodePlan:
    """``secure``: the node runs the security plugin, which Maven serves with every other plugin only for 2.19.1."""
    if version is None:
        version = DEFAULT_SECURE_VERSION if secure else DEFAULT_VERSION
    if secure and version in ("2", "2.x", "2.19"):
        version = DEFAULT_SECURE_VERSION
    if version in ("3", "3.x", "latest"):
        version = DEFAULT_VERSION
    if version in ("2", "2.x", "2.19"):
        version = "2.19.6"
    if version not in SUPPORTED_VERSIONS:
        raise SparsepackError(
            f"OpenSearch {version} is not assembled by sparsepack node; use one of {', '.join(SUPPORTED_VERSIONS)} "
            f"(the newest lines for which Maven Central serves every plugin)"
        )
    if secure and version not in SECURE_VERSIONS:
        raise SparsepackError(
            f"--secure needs OpenSearch {', '.join(SECURE_VERSIONS)}: the security plugin must match the "
            f"OpenSearch version exactly, and Maven Central serves it with ML Commons and neural-search "
            f"only there (opensearch-security is not served for {version}); pass --version {DEFAULT_SECURE_VERSION}"
        )
    return NodePlan(version)


def pom_dependencies(pom: Path) -> list[Coordinate]:
    """Runtime dependencies a POM declares (compile/runtime scope, not optional)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(pom).getroot()
    deps = []
    for dep in root.findall("./m:dependencies/m:dependency", ns):
        scope = dep.findtext("m:scope", default="compile", namespaces=ns)
        if scope not in ("compile", "runtime") or dep.findtext("m:optional", default="false", namespaces=ns) == "true":
            continue
        version = dep.findtext("m:version", namespaces=ns)
        group, artifact = dep.findtext("m:groupId", namespaces=ns), dep.findtext("m:artifactId", namespaces=ns)
        if not group or not artifact or not version or "${" in version:
            continue
        deps.append(Coordinate(group, artifact, version))
    return deps
