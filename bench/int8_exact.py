"""Does this CPU's onnxruntime int8 kernel compute exact integer sums? For trained SPLADE-tiny with every MatMul int8,
8-bit weights (onnxruntime's default) against the 7-bit weights sparsepack packages, on a short and a ~300-word
document: how many ``MatMulInteger`` sums differ from the exact integer product. Non-VNNI x86 kernels (AVX2, and
AVX-512 before Cascade Lake) add pairs of uint8 x int8 products in 16 bits and saturate with 8-bit weights; VNNI, AMX
and ARM's dot-product instructions do not. Counts, not timings: load does not change them.

    python bench/int8_exact.py [--work-dir DIR]    (about a minute; DIR keeps the model between runs)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import LONG_DOC, SHORT_DOC, machine_line, unzip_artifact  # noqa: E402

from sparsepack.packaging.package import package  # noqa: E402
from sparsepack.packaging.quantize import inexact_integer_sums, max_matmul_weight, quantize_int8  # noqa: E402
from sparsepack.wheel_models import build_trained_splade  # noqa: E402


def eight_bit(src: Path, dst: Path) -> None:
    """Every constant-weight MatMul int8 with onnxruntime's defaults (8-bit weights): what sparsepack used to write."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # its advice to pre-process is for CNNs
    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=False,
        op_types_to_quantize=["MatMul"],
        extra_options={"MatMulConstBOnly": True},
    )


def main() -> None:
    import onnx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, help="keep the model and its package here and reuse them")
    opts = parser.parse_args()
    print(machine_line(), flush=True)
    root = opts.work_dir or Path(tempfile.mkdtemp(prefix="sparsepack-int8-exact-"))
    model = build_trained_splade(root / "model-trained")
    pkg = root / "pkg-trained-onnx"
    if not (pkg / "manifest.json").exists():
        package(str(model), pkg, artifact_format="onnx", log=lambda m: None)
    art = json.loads((pkg / "manifest.json").read_text())["artifacts"][0]
    fp32, tokenizer = unzip_artifact(pkg / art["file"], ".onnx", root)
    eight_bit(fp32, root / "int8-8bit.onnx")
    quantize_int8(fp32, root / "int8-7bit.onnx")
    for label in ("8bit", "7bit"):
        path = root / f"int8-{label}.onnx"
        widest = max_matmul_weight(onnx.load(str(path)))
        for doc_label, text in (("short", SHORT_DOC), ("300-word", LONG_DOC)):
            wrong, total = inexact_integer_sums(path, tokenizer.batch([text]))
            print(
                f"  {label} weights (max |w| {widest:3d}), {doc_label:8s}: {wrong:7,d} of {total:9,d} integer sums "
                f"differ from the exact product ({100 * wrong / total:.2f}%)"
            )


if __name__ == "__main__":
    main()
