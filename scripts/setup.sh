#!/usr/bin/env bash
# Create .venv and install sparsepack with its test extras. Safe to re-run; pip's cache (~/.cache/pip) makes the
# torch download (a CUDA build from PyPI, several GB) a one-time cost per machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "sparsepack needs Python >= 3.10")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# setuptools prints a boxed BuildBackendWarning on every editable install ("Editable installation ... folders with the
# same name as your package"); it is advice for package authors, not for this install, so only that one is filtered.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e ".[test]"
# The local OpenSearch node needs Java 21+ (3.x) and Java 11-23 (2.x), and g++ to build the 2.x JNI shim.
missing=()
command -v g++ >/dev/null || missing+=(g++)
ls /usr/lib/jvm/*17* >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "sparsepack installed in .venv ($(.venv/bin/sparsepack --version))"
