"""Packaging time, and the artifact's docs/s at ML Commons conditions (batch 1, one thread) vs
SparseEncoder.encode_document, for the tiny demo model and a realistic-size random DistilBERT
(6 layers, 768 hidden, 30,522 vocab), on a short and a ~300-word document. Prints ratios; the goal is >= 1.5x."""
from __future__ import annotations

import atexit
import json
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import LONG_DOC, SHORT_DOC, build, docs_per_second  # noqa: E402

from sparsepack._st_compat import sparse_encoder_class  # noqa: E402
from sparsepack.packaging.package import package  # noqa: E402
from sparsepack.packaging.parity import DjlStyleTokenizer  # noqa: E402


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # ML Commons runs each CPU inference on one thread
    root = Path(tempfile.mkdtemp(prefix="sparsepack-bench-"))
    atexit.register(shutil.rmtree, root, True)  # realistic-size runs leave ~1 GB of models and zips
    print(f"torch {torch.__version__}, 1 thread, batch 1")
    for kind in ("tiny", "realistic"):
        model_dir = build(kind, root)
        t0 = time.perf_counter()
        manifest = package(str(model_dir), root / f"pkg-{kind}", log=lambda m: None)
        pack_s = time.perf_counter() - t0
        doc = next(a for a in manifest["artifacts"] if a["role"] == "document")
        with zipfile.ZipFile(root / f"pkg-{kind}" / doc["file"]) as zf:
            pt = next(n for n in zf.namelist() if n.endswith(".pt"))
            (root / pt).write_bytes(zf.read(pt))
            tok = DjlStyleTokenizer(json.loads(zf.read("tokenizer.json")))
        artifact = torch.jit.load(str(root / pt))
        encoder = sparse_encoder_class()(str(model_dir), device="cpu")  # as users load it (default attention)
        print(f"\n{kind}: vocab {manifest['vocab_size']}, max_length {manifest['max_length']}, packaging {pack_s:.1f}s, "
              f"document zip {doc['size_bytes'] / 1e6:.1f} MB")
        for label, text in (("short", SHORT_DOC), ("300-word", LONG_DOC)):
            with torch.inference_mode():
                art = docs_per_second(lambda t: artifact(tok.batch([t])), text)
                eager = docs_per_second(lambda t: encoder.encode_document([t], batch_size=1, convert_to_tensor=True), text)
            print(f"  {label:9s} artifact {art:8.1f} docs/s   encode_document {eager:8.1f} docs/s   ratio {art / eager:5.2f}x")


def pooling_step() -> None:
    """The step the artifact changes: SpladePooling activates [1, seq, vocab]; the artifact pools first, then
    activates [1, vocab]."""
    from sparsepack._st_compat import sparse_module
    from sparsepack.packaging.wrapper import splade_activation

    pooling = sparse_module("SpladePooling")(activation_function="log1p_relu").eval()
    for seq in (32, 512):
        logits = torch.randn(1, seq, 30522)
        mask = torch.ones(1, seq)

        def splade(_):
            return pooling({"token_embeddings": logits.clone(), "attention_mask": mask})["sentence_embedding"]

        def ours(_):
            return splade_activation(torch.amax(logits * mask.unsqueeze(-1), dim=1), "log1p_relu")

        with torch.inference_mode():
            a, b = docs_per_second(ours, ""), docs_per_second(splade, "")
        print(f"  pooling+activation only, seq {seq:3d} x vocab 30522: pool-then-activate {a:8.1f}/s   "
              f"SpladePooling {b:8.1f}/s   ratio {a / b:5.2f}x")


if __name__ == "__main__":
    pooling_step()
    main()
