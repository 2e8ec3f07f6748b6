"""The README's main job, end to end, against the session's node."""

import json
import subprocess
import sys


def test_demo_builds_packages_releases_and_reports(node_3x, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sparsepack.cli", "demo", "--url", node_3x, "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] and report["failed_step"] is None
    # every step of the main job ran (release may add its own, e.g. upgrade_plan and clear_previous)
    assert {"package", "verify", "preflight", "register", "deploy", "smoke_predict", "smoke_retrieval"} <= set(
        report["steps"]
    )
    manifest = json.loads((tmp_path / "demo-package" / "manifest.json").read_text())
    assert manifest["mode"] == "inference-free" and manifest["compatible_opensearch"] == ["2.x", "3.x"]
    assert "smoke_retrieval" in proc.stdout and "FAILED" not in proc.stdout
    # readable: a sample query with its top hit from the smoke test, the parity figures, what to run next
    sample = next(q for q in report["steps"]["smoke_retrieval"]["queries"] if q["checkable"] and q["passed"])
    assert (
        f'sample query "{sample["query"]}" -> top hit "' in proc.stdout
        and f"score {sample['score']:.4f}" in proc.stdout
    )
    assert "parity (package): documents max |d|" in proc.stdout and "queries identical" in proc.stdout
    assert "sparsepack package YOUR-MODEL" in proc.stdout and "sparsepack release my-package/" in proc.stdout
    assert "node stop" not in proc.stdout  # --url: the demo started no node, so there is none to stop
    # a second run reuses the deterministic package's models instead of uploading again
    again = subprocess.run(
        [sys.executable, "-m", "sparsepack.cli", "demo", "--url", node_3x, "--workdir", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
    )
    second = json.loads(again.stdout)
    assert second["passed"] and second["model_ids"] == report["model_ids"]
