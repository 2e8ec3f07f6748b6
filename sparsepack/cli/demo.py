"""``demo``: the offline demo model, packaged, released to a local node (or --url), with a report."""

from __future__ import annotations

import os
from pathlib import Path

from .flags import add_opensearch_version
from .output import emit_report, err


def add_parser(subparsers) -> None:
    sp = subparsers.add_parser(
        "demo", help="build the offline demo model, package it, start the local node, release, report"
    )
    sp.add_argument(
        "--workdir",
        default=os.environ.get("SPARSEPACK_DEMO_DIR", "/tmp/sparsepack-demo"),
        help="where the model, package and report go (env SPARSEPACK_DEMO_DIR; default /tmp/sparsepack-demo)",
    )
    add_opensearch_version(
        sp, "--version", default="3.6.0", metavar="VERSION", help="OpenSearch version of the local node (default 3.6.0)"
    )
    sp.add_argument("--port", type=int, default=9200, help="HTTP port of the local node (default 9200)")
    sp.add_argument("--url", help="use this cluster instead of starting the local node")
    sp.add_argument("--report", help="where to write the JSON report (default WORKDIR/report.json)")
    sp.add_argument("--json", action="store_true", help="print the JSON report")
    sp.set_defaults(run=run)


def run(args) -> int:
    from ..demo import DemoSpec, build_demo_model, summary_lines
    from ..registry.connection import ConnectionOptions
    from ..rollout.options import ReleaseOptions
    from ..rollout.run import release
    from .node import start_local_cluster

    work = Path(args.workdir)
    model_dir = work / "demo-model"
    if not (model_dir / "modules.json").exists():
        err(f"building the demo model (random-weight BERT, offline) in {model_dir}")
        build_demo_model(model_dir, DemoSpec())
    url = args.url or start_local_cluster(args.opensearch_version, args.port).url
    report = release(
        str(model_dir),
        ConnectionOptions.from_env(url=url),
        ReleaseOptions(progress=False, clear_previous=True),
        package_dir=str(work / "demo-package"),
        targets=("2.x", "3.x"),
    )
    args.report = args.report or str(work / "report.json")
    code = emit_report(report, args)
    if not args.json:
        print(
            f"cluster {url} (OpenSearch {report.get('cluster', {}).get('version', '?')}); package {work / 'demo-package'}; "
            f"JSON report {args.report}"
        )
        if report["passed"]:
            print("\n".join(summary_lines(report, work / "demo-package", url, None if args.url else args.port)))
    return code
