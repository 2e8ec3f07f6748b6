"""One core's fp32 matrix-multiply rate, with torch and with onnxruntime, on the shapes a 374-token document costs at
realistic size (DistilBERT 6x768, vocab 30,522): the ceiling any fp32 document artifact runs into on a CPU ML node,
where each inference gets one thread.

    python bench/gemm_peak.py [--seconds S]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_line

SHAPES = {  # (m, k, n): m = tokens
    "FFN up 374x768x3072": (374, 768, 3072),
    "attention proj 374x768x768": (374, 768, 768),
    "tied decoder 374x768x30522": (374, 768, 30522),
    "square 2048": (2048, 2048, 2048),
}


def rate(fn, flop: float, seconds: float) -> float:
    fn()
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
    return flop * calls / (time.perf_counter() - t0) / 1e9


def onnx_matmul(k: int, n: int, weight: np.ndarray, path: Path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    print(machine_line(), flush=True)
    seconds = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 3.0
    torch.set_num_threads(1)
    print(f"one thread; torch {torch.__version__}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, (m, k, n) in SHAPES.items():
            x, w = torch.randn(m, k), torch.randn(k, n)
            flop = 2.0 * m * k * n
            w_rows = w.t().contiguous()  # nn.Linear's layout [out, in]: how the model (and its trace) holds weights
            with torch.inference_mode():
                t = rate(lambda: torch.nn.functional.linear(x, w_rows), flop, seconds)
            sess = onnx_matmul(k, n, w.numpy(), Path(tmp) / f"{n}.onnx")
            feed = {"x": x.numpy()}
            o = rate(lambda: sess.run(["y"], feed), flop, seconds)
            print(
                f"  {label:30s} torch linear {t:6.1f} GFLOP/s   onnxruntime {o:6.1f} GFLOP/s   ({flop / 1e9:.2f} GFLOP per call)"
            )


if __name__ == "__main__":
    main()
