#!/usr/bin/env bash
# The test command: install, then run the whole suite. The suite starts real OpenSearch nodes (3.6.0 and 2.19.6)
# unless OPENSEARCH_URL points at a cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Lint, format and types first: each prints only what is wrong (and a one-line summary), and any failure stops the run.
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy --no-error-summary || { echo "mypy found type errors (above)" >&2; exit 1; }
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 "$@"
