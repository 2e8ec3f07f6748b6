"""Local node start time: cold (assemble from the download cache into a new home) vs warm (already assembled),
for each supported version. Deploy time and _predict latency: see bench/cluster.py. Printed, never asserted."""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import machine_line

from sparsepack.node import lifecycle


def main() -> None:
    print(machine_line(), flush=True)
    versions = sys.argv[1:] or ["3.6.0", "2.19.6"]
    home = Path(tempfile.mkdtemp(prefix="sparsepack-bench-node-", dir="/var/tmp"))
    atexit.register(shutil.rmtree, home, True)  # a whole node install per version
    for version in versions:
        for label in ("cold (assemble + start)", "warm (start)"):
            t0 = time.perf_counter()
            state = lifecycle.start(version, port=9290, home=home, log=lambda m: None)
            elapsed = time.perf_counter() - t0
            lifecycle.stop(9290, home=home, quiet=True)
            print(f"OpenSearch {state.version}: {label:24s} {elapsed:6.1f}s")


if __name__ == "__main__":
    main()
