#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: build the extension for this GPU, run the GPU kernel
# tests, run the benchmark suite, put the measurements next to the static model's predictions
# (measured_vs_predicted.md) and keep everything under benchmarks/results/<gpu-name>-<date>/; the measured
# times become hssn_kernels/gpu_table.json, which backend="auto" ranks CUDA backends by (commit it).
#
#   bash benchmarks/run_gpu.sh                    # build + tests + full suite (bf16)
#   bash benchmarks/run_gpu.sh --dtypes fp32 --shapes paper   # extra arguments go to python -m benchmarks
#   STEPS=bench bash benchmarks/run_gpu.sh        # any of build,test,bench (default all three)
#
# Run from the repository root with the project's Python environment active.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${STEPS:-build,test,bench}"
STATUS=0

python - <<'PY' || { echo "run_gpu.sh: no CUDA GPU visible to torch" >&2; exit 2; }
import torch, sys
sys.exit(0 if torch.cuda.is_available() else 1)
PY
SLUG="$(python -c 'import torch; from benchmarks.report import slug; print(slug(torch.cuda.get_device_name()))')"
ARCH="$(python -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')"
OUT="benchmarks/results/${SLUG}-$(date +%F)"
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

if [[ ",$STEPS," == *",build,"* ]]; then
  echo "== building the extension for sm ${ARCH}"
  TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$ARCH}" HSSN_FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-8}" \
    pip install --no-build-isolation -e . 2>&1 | tail -n 5
  python -c 'import hssn_kernels.backends as b, torch; print(b.available(torch.device("cuda")))'
fi

if [[ ",$STEPS," == *",test,"* ]]; then
  echo "== GPU kernel tests (log: $OUT/gpu-tests.log)"
  HSSN_TEST_GPU=1 python -m pytest tests -k "triton or native or cuda" -q -p no:cacheprovider \
    > "$OUT/gpu-tests.log" 2>&1 || STATUS=1  # failures are recorded; the benchmarks still run
  tail -n 15 "$OUT/gpu-tests.log"
fi

if [[ ",$STEPS," == *",bench,"* ]]; then
  echo "== benchmark suite -> $OUT"
  python -m benchmarks --out "$OUT" "$@" || STATUS=1
  MODEL_GPU="$(python -c 'import torch; print("h200" if "H200" in torch.cuda.get_device_name() else "h100-sxm")')"
  echo "== measured vs predicted (${MODEL_GPU} model) -> $OUT/measured_vs_predicted.md"
  python tools/gpu_cost.py --gpu "$MODEL_GPU" --measured "$OUT/results.json" \
    --gpu-table hssn_kernels/gpu_table.json | tail -n 30 || STATUS=1
fi
exit "$STATUS"
