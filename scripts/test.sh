#!/usr/bin/env bash
# The test command: install, then run the whole suite. The suite starts real OpenSearch nodes (3.6.0 and 2.19.6)
# unless OPENSEARCH_URL points at a cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
