"""The README's main job, end to end, against the session's node."""
import json
import subprocess
import sys


def test_demo_builds_packages_releases_and_reports(node_3x, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sparsepack.cli", "demo", "--url", node_3x, "--workdir", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] and report["failed_step"] is None
    assert set(report["steps"]) == {"package", "verify", "preflight", "register", "deploy", "smoke_predict", "smoke_retrieval"}
    manifest = json.loads((tmp_path / "demo-package" / "manifest.json").read_text())
    assert manifest["mode"] == "inference-free" and manifest["compatible_opensearch"] == ["2.x", "3.x"]
    assert "smoke_retrieval" in proc.stdout and "FAILED" not in proc.stdout
    # a second run reuses the deterministic package's models instead of uploading again
    again = subprocess.run([sys.executable, "-m", "sparsepack.cli", "demo", "--url", node_3x, "--workdir", str(tmp_path), "--json"],
                           capture_output=True, text=True)
    second = json.loads(again.stdout)
    assert second["passed"] and second["model_ids"] == report["model_ids"]
