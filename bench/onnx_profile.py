"""Where the realistic-size ONNX fp32 artifact spends its time (DistilBERT 6x768, vocab 30,522, random weights), from
onnxruntime's own profiler: op types and the heaviest nodes per call, batch 1, one thread (ML Commons' conditions), on
the ~300-word (374 tokens) and the short document. Printed, never asserted.

    python bench/onnx_profile.py
"""

from __future__ import annotations

import atexit
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import LONG_DOC, SHORT_DOC, build, machine_line, unzip_artifact  # noqa: E402

from sparsepack.packaging.onnx_export import INPUT_NAMES  # noqa: E402
from sparsepack.packaging.package import package  # noqa: E402


def profile(model_path: Path, feed: dict, runs: int, prefix: Path) -> tuple[float, dict, dict]:
    """Wall ms per call, and kernel microseconds summed by op type and by (op, node, output shape), over warm-up + runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(prefix)
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    session.run(None, feed)
    t0 = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    wall_ms = (time.perf_counter() - t0) / runs * 1000
    by_op, by_node = defaultdict(float), defaultdict(float)
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            by_op[op] += event["dur"]
            by_node[(op, event["name"][:-12], str(event["args"].get("output_type_shape", ""))[:80])] += event["dur"]
    return wall_ms, by_op, by_node


def main() -> None:
    print(machine_line(), flush=True)
    root = Path(tempfile.mkdtemp(prefix="sparsepack-bench-"))
    atexit.register(shutil.rmtree, root, True)  # ~0.8 GB of model and package
    manifest = package(str(build("realistic", root)), root / "pkg", artifact_format="onnx", log=lambda m: None)
    model_path, tok = unzip_artifact(root / "pkg" / manifest["artifacts"][0]["file"], ".onnx", root)
    for label, text, runs in (("long", LONG_DOC, 5), ("short", SHORT_DOC, 30)):
        batch = tok.batch([text])
        feed = {INPUT_NAMES[0]: batch["input_ids"].numpy(), INPUT_NAMES[1]: batch["attention_mask"].numpy()}
        wall_ms, by_op, by_node = profile(model_path, feed, runs, root / f"prof-{label}")
        total, calls = sum(by_op.values()), runs + 1
        print(
            f"{label}: {batch['input_ids'].shape[1]} tokens, wall {wall_ms:.1f} ms/call, "
            f"kernel {total / calls / 1000:.1f} ms/call"
        )
        for op, dur in sorted(by_op.items(), key=lambda kv: -kv[1])[:12]:
            print(f"   {op:28s} {dur / total * 100:5.1f}%  {dur / calls / 1000:7.1f} ms")
        print("  top nodes:")
        for (op, node, shape), dur in sorted(by_node.items(), key=lambda kv: -kv[1])[:12]:
            print(f"   {op:20s} {dur / calls / 1000:7.1f} ms  {node[:50]} {shape}")


if __name__ == "__main__":
    main()
