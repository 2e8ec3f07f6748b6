#!/usr/bin/env bash
# Create .venv and install sparsepack with its test extras. Safe to re-run; pip's cache (~/.cache/pip) makes the
# torch download (a CUDA build from PyPI, several GB) a one-time cost per machine.
# System packages (g++, JDKs) are never installed behind the caller's back: a missing one is named with the command
# that installs it, and installed here only with SPARSEPACK_INSTALL_SYSTEM_PACKAGES=1 or CI=true (as root, apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "sparsepack needs Python >= 3.10")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# setuptools prints a boxed BuildBackendWarning on every editable install ("Editable installation ... folders with the
# same name as your package"); it is advice for package authors, not for this install, so only that one is filtered.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e ".[test]"

# The local OpenSearch node needs Java 11-23 for 2.x, Java 21+ for 3.x (the folders sparsepack/node/plan.py looks in),
# and g++ to build the 2.x JNI shim. Packaging, rendering and releasing to a remote cluster need none of them.
have_jdk() { for d in "$@"; do [ -x "$d/bin/java" ] && return 0; done; return 1; }
missing=()
command -v g++ >/dev/null || missing+=(g++)
[ -n "${SPARSEPACK_JAVA_HOME:-}" ] || have_jdk /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/temurin-17-jdk-amd64 \
  /usr/lib/jvm/java-21-openjdk-amd64 || missing+=(openjdk-17-jdk-headless)
[ -n "${SPARSEPACK_JAVA_HOME:-}" ] || have_jdk /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/temurin-21-jdk-amd64 \
  /usr/lib/jvm/java-21-openjdk-amd64 || missing+=(openjdk-21-jdk-headless)
if [ ${#missing[@]} -gt 0 ]; then
  install_cmd="apt-get update && apt-get install -y ${missing[*]}"
  if { [ "${SPARSEPACK_INSTALL_SYSTEM_PACKAGES:-}" = 1 ] || [ "${CI:-}" = true ]; } \
     && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} for the local OpenSearch node" >&2
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: the local OpenSearch node (sparsepack node start, sparsepack demo, the cluster tests) needs" \
         "${missing[*]}; install with:  sudo sh -c '$install_cmd'" \
         "(or re-run with SPARSEPACK_INSTALL_SYSTEM_PACKAGES=1 as root)" >&2
  fi
fi
echo "sparsepack installed in .venv ($(.venv/bin/sparsepack --version))"
