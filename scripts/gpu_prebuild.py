"""Build, on this CPU-only machine, the packages a GPU check then verifies where CUDA is (``sparsepack verify``): the
case users have, a package made by a CPU CI job and loaded onto a GPU ML node by another torch.

    python scripts/gpu_prebuild.py DIR          # writes a package per model: DIR/<name>
    python scripts/gpu_prebuild.py --verify DIR DEVICES OUT.jsonl   # there: each model rebuilt, then `sparsepack
                                                    # verify` in a fresh process; prints a line per artifact and device
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sparsepack.demo import build_demo_model  # noqa: E402
from sparsepack.packaging.package import package  # noqa: E402
from sparsepack.wheel_models import build_trained_splade  # noqa: E402

# One of each architecture and mode the fixtures cover, plus the trained SPLADE-tiny. Models are rebuilt there (the
# fixtures from their specs, SPLADE-tiny from the carried wheel), as a user loads the model again: only packages travel.
FIXTURES = ("bert-if-log1p", "distil-bi-log1p", "bert-bi-sum")


def main(out: Path) -> None:
    from conftest import FIXTURE_SPECS

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="sparsepack-prebuild-") as tmp:
        for name in FIXTURES:
            model = build_demo_model(Path(tmp) / name, FIXTURE_SPECS[name])
            package(str(model), out / name, verify_devices="cpu", log=lambda m: None)
            print(f"packaged {name} on CPU")
        model = build_trained_splade(Path(tmp) / "splade-tiny")
        package(str(model), out / "splade-tiny", verify_devices="cpu", log=lambda m: None)
        print("packaged splade-tiny on CPU")


def build_model(name: str, out: Path) -> Path:
    from conftest import FIXTURE_SPECS

    return build_trained_splade(out) if name == "splade-tiny" else build_demo_model(out, FIXTURE_SPECS[name])


def verify_all(prebuilt: Path, devices: str, out: Path) -> int:
    """Every prebuilt package through ``sparsepack verify --json`` (its own process: the saved zips loaded fresh, as
    an ML node loads them); one JSON report per line into ``out``; the worst exit code."""
    import json
    import subprocess

    worst = 0
    with tempfile.TemporaryDirectory(prefix="sparsepack-verify-models-") as tmp, out.open("w") as sink:
        for pkg in sorted(p for p in prebuilt.iterdir() if (p / "manifest.json").exists()):
            model = build_model(pkg.name, Path(tmp) / pkg.name)
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sparsepack.cli",
                    "verify",
                    str(pkg),
                    "--model",
                    str(model),
                    "--devices",
                    devices,
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            worst = max(worst, proc.returncode)
            try:
                report = json.loads(proc.stdout)
            except json.JSONDecodeError:
                report = {"name": pkg.name, "artifacts": []}
            report.update(exit_code=proc.returncode, error=(proc.stderr.strip().splitlines() or [""])[-1])
            sink.write(json.dumps(report) + "\n")
            for art in report["artifacts"]:
                for device, figures in art.get("by_device", {}).items():
                    print(
                        f"{pkg.name}: {art['file']} ({art['format']}) on {device} {figures.get('name', '')}: max |d| "
                        f"{figures['max_abs_diff']:.1e}, identical token sets {figures['identical_token_sets']}, "
                        f"passed {figures['passed']}"
                    )
            if proc.returncode:
                print(f"{pkg.name}: verify exit {proc.returncode}: {report['error']}")
    return worst


if __name__ == "__main__":
    if sys.argv[1] == "--verify":
        sys.exit(verify_all(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])))
    main(Path(sys.argv[1]))
