"""What every command prints: one-line messages on stderr, JSON on stdout, the release/smoke report."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def err(msg: str) -> None:
    print(f"sparsepack: {msg}", file=sys.stderr, flush=True)


def print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def report_exit_code(report: dict) -> int:
    """A failed report's exit code. The release library records it today; once the report carries the error's type,
    this maps the type through exits.exit_code_for like every other failure."""
    return 0 if report["passed"] else int(report.get("exit_code", 4))


def emit_report(report: dict, args) -> int:
    """Print a release or smoke report (JSON or lines), write it to --report, return the exit code."""
    if getattr(args, "report", None):
        Path(args.report).write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        print_json(report)
    else:
        for name, step in report["steps"].items():
            print(f"  {name:16s} {'ok' if step.get('passed') else 'FAILED'}  {step.get('seconds', 0):.1f}s")
        if report.get("model_ids"):
            print(f"  model ids: {report['model_ids']}")
        for change in report["steps"].get("switch_pipelines", {}).get("pipelines", []):
            ids = change["model_ids"]
            print(
                f"  {change['kind']} pipeline {change['name']}: {', '.join(ids['before'])} -> {', '.join(ids['after'])}"
            )
        for warning in report.get("warnings", []):
            err(f"warning: {warning}")
        if report.get("kept"):
            err(f"kept the new version {report['kept']['model_ids']}: {report['kept']['why']}")
    if not report["passed"]:
        err(f"release failed at {report['failed_step']}: {report.get('error', '')}")
    return report_exit_code(report)
