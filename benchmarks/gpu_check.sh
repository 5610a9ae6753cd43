#!/usr/bin/env bash
# The GPU check in one go (≤ 8 minutes on one H100): the gpu-marked tests, bf16 and fp32 teacher
# scoring (pairs/s, % of the bf16 matmul peak), encoding throughput, FAISS GPU vs CPU equality and
# 50 bf16 training steps of all-MiniLM-L6-v2, each under its own timeout; figures in one JSON.
#
#   benchmarks/gpu_check.sh                  # writes $OUT/gpu_check.json, else runs/gpu_check.json
#   benchmarks/gpu_check.sh --out FILE.json  # or there; --steps scoring,faiss runs a subset
#
# Models come from the offline Hugging Face cache (HF_HOME, default ../shared/hf) and SciFact and
# the MS MARCO sample from ../shared/data. Exits 2, having run nothing, when no CUDA GPU is visible;
# 1 when a step failed or timed out; 0 otherwise. The steps are described in benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
export HF_HOME="${HF_HOME:-../shared/hf}" HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
export RETRODISTILL_DATA="${RETRODISTILL_DATA:-../shared/data/beir}"
# The whole check must end within 8 minutes even if a step hangs past its own timeout.
exec timeout --kill-after=10 490 "$PYTHON" benchmarks/gpu_check.py "$@"
