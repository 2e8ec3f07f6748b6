"""Where the realistic-size ONNX fp32 artifact spends its time (DistilBERT 6x768, vocab 30,522, random weights), from
onnxruntime's own profiler: op types and the heaviest nodes per call, batch 1, one thread (ML Commons' conditions), on
the ~300-word (374 tokens) and the short document. Printed, never asserted.

    python bench/onnx_profile.py
"""
import atexit
import json
import shutil
import sys
import tempfile
import time
import zipfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import LONG_DOC, SHORT_DOC, build  # noqa: E402

import onnxruntime as ort  # noqa: E402

from sparsepack.packaging.package import package  # noqa: E402
from sparsepack.packaging.parity import DjlStyleTokenizer  # noqa: E402

root = Path(tempfile.mkdtemp(prefix="sparsepack-bench-"))
atexit.register(shutil.rmtree, root, True)  # ~0.8 GB of model and package
m = package(str(build("realistic", root)), root / "pkg", artifact_format="onnx", log=lambda s: None)
art = m["artifacts"][0]
with zipfile.ZipFile(root / "pkg" / art["file"]) as zf:
    name = next(n for n in zf.namelist() if n.endswith(".onnx"))
    (root / name).write_bytes(zf.read(name)); tok = DjlStyleTokenizer(json.loads(zf.read("tokenizer.json")))
for label, text in (("long", LONG_DOC), ("short", SHORT_DOC)):
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1; o.enable_profiling = True
    o.profile_file_prefix = str(root / f"prof-{label}")
    s = ort.InferenceSession(str(root / name), o, providers=["CPUExecutionProvider"])
    b = tok.batch([text]); feed = {"input1.input_ids": b["input_ids"].numpy(), "input1.attention_mask": b["attention_mask"].numpy()}
    s.run(None, feed)
    runs = 5 if label == "long" else 30
    t0 = time.perf_counter()
    for _ in range(runs): s.run(None, feed)
    wall = (time.perf_counter() - t0) / runs * 1000
    path = s.end_profiling()
    ev = json.load(open(path))
    by_op, by_node = defaultdict(float), defaultdict(float)
    for e in ev:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]; by_node[(e["args"]["op_name"], e["name"][:-12], str(e["args"].get("output_type_shape", ""))[:80])] += e["dur"]
    total = sum(by_op.values())
    print(f"{label}: {b['input_ids'].shape[1]} tokens, wall {wall:.1f} ms/call, kernel {total / (runs + 1) / 1000:.1f} ms/call")
    for op, d in sorted(by_op.items(), key=lambda kv: -kv[1])[:12]:
        print(f"   {op:28s} {d / total * 100:5.1f}%  {d / (runs + 1) / 1000:7.1f} ms")
    print("  top nodes:")
    for (op, n, shp), d in sorted(by_node.items(), key=lambda kv: -kv[1])[:12]:
        print(f"   {op:20s} {d / (runs + 1) / 1000:7.1f} ms  {n[:50]} {shp}")
