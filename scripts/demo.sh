#!/usr/bin/env bash
# The main job on the embedded default: build the demo model offline, package it, start the local node, release it
# (register, deploy, smoke test) and print the report.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/sparsepack demo "$@"
