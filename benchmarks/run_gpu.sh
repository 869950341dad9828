#!/usr/bin/env bash
# The GPU run, in stages that each fit one short command on a fresh machine (8 minutes on an H200 with 16
# cores, estimated by --dry-run). Every stage writes into OUT (default benchmarks/results/<gpu>-<date>/), so a
# caller can collect it; commit that folder (and, after `bench`, OUT/gpu_table.json as
# hssn_kernels/gpu_table.json) with the device named.
#
#   bash benchmarks/run_gpu.sh smoke [OUT]    # build (sm_90 only) + GPU kernel tests + headline numbers + 1 train step
#   bash benchmarks/run_gpu.sh tests [OUT]    # the rest of HSSN_TEST_GPU=1 pytest
#   bash benchmarks/run_gpu.sh bench [OUT]    # the full suite, resumable: rerun the same command to continue
#   bash benchmarks/run_gpu.sh STAGE [OUT] --dry-run   # print the plan and its time estimate, run nothing
#
# Run from the repository root with the machine's own Python environment active. Nothing is fetched: every stage
# first checks that what it imports is installed (python -m benchmarks.preflight STAGE names anything missing,
# exit 2), and installs the project, when not yet built here, with pip install --no-build-isolation --no-deps
# --no-index -e . against the machine's torch. Exit status: 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE="${1:-}"
OUT_ARG="${2:-}"
DRY=0
for a in "$@"; do [[ "$a" == "--dry-run" ]] && DRY=1; done
[[ "$OUT_ARG" == "--dry-run" ]] && OUT_ARG=""
case "$STAGE" in smoke|tests|bench) ;; *)
  echo "usage: bash benchmarks/run_gpu.sh smoke|tests|bench [OUT] [--dry-run]" >&2; exit 2 ;;
esac

# The GPU kernel tests of `smoke` (the `tests` stage runs everything else).
KERNEL_TESTS="tests/test_triton_ftm.py tests/test_triton_argmax.py tests/test_triton_triplet.py tests/test_triton_ops.py
tests/test_upsample_triton.py tests/test_native_ops.py tests/test_partial_labels.py tests/test_convergence.py"
# The headline cases: every GPU backend and the reference at the paper shapes, bf16 and fp32.
HEADLINE=(--ops ftm,argmax,ftm_upsample,ftm_interp,triplet --modes full,no_grad --shapes cityscapes,mapillary_v2
          --dtypes bf16,fp32 --backends reference,triton,cuda)

plan() {  # name, estimated seconds, command: printed in --dry-run, run otherwise
  local name="$1" secs="$2"; shift 2
  TOTAL=$((TOTAL + secs))
  if [[ $DRY == 1 ]]; then
    printf '  %-44s ~%4d s   %s\n' "$name" "$secs" "$*"
  else
    echo "== $name (estimate ${secs} s): $*"
    local t0=$SECONDS
    eval "$@" || STATUS=1
    echo "== $name took $((SECONDS - t0)) s"
  fi
}

STATUS=0
TOTAL=0
if [[ $DRY == 1 ]]; then
  OUT="${OUT_ARG:-benchmarks/results/<gpu>-$(date +%F)}"
  echo "run_gpu.sh $STAGE -> $OUT (dry run: estimates for a fresh H200, 16 cores; nothing is run)"
else
  if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "run_gpu.sh: no CUDA GPU visible to torch" >&2; exit 2
  fi
  python -m benchmarks.preflight "$STAGE" || exit 2
  SLUG="$(python -c 'import torch; from benchmarks.report import slug; print(slug(torch.cuda.get_device_name()))')"
  OUT="${OUT_ARG:-benchmarks/results/${SLUG}-$(date +%F)}"
  mkdir -p "$OUT"
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
fi

# The offline install (sm_90 only), run by every stage on a machine where the extension is not built yet.
INSTALL="TORCH_CUDA_ARCH_LIST=9.0 HSSN_FORCE_CUDA=1 MAX_JOBS=16 pip install --no-build-isolation --no-deps --no-index -e . > '$OUT/build.log' 2>&1 && tail -n 3 '$OUT/build.log'"
BUILT=0
[[ $DRY == 0 ]] && python -c 'import hssn_kernels._C' 2>/dev/null && BUILT=1

if [[ "$STAGE" == smoke ]]; then
  # estimates: nvcc for one arch at MAX_JOBS=16 (~90 s here at 2 jobs for two archs, scaled); the kernel tests
  # compile each Triton specialisation once (~150 s); 84 headline cases at ~1.5 s each (timing + fp64 oracle);
  # two training configurations of deeplabv3plus_r101 (model build + 7 steps each)
  plan "build the extension for sm_90" 120 "$INSTALL"
  plan "GPU kernel tests" 150 \
    "HSSN_TEST_GPU=1 python -m pytest $(echo $KERNEL_TESTS) -q -p no:cacheprovider > '$OUT/gpu-kernel-tests.log' 2>&1; S=\$?; tail -n 15 '$OUT/gpu-kernel-tests.log'; exit \$S"
  plan "headline benchmark cases" 130 \
    "python -m benchmarks ${HEADLINE[*]} --out '$OUT/headline' --resume --no-progress | tail -n 30"
  plan "one training step, deeplabv3plus_r101 2x512x1024 bf16" 60 \
    "python -m benchmarks.train_step deeplabv3plus_r101_cityscapes --batch 2 --size 512 1024 --out '$OUT'"
elif [[ "$STAGE" == tests ]]; then
  [[ $BUILT == 1 ]] || plan "build the extension for sm_90 (a fresh machine)" 120 "$INSTALL"
  # estimate: the CPU suite takes ~15 min on 2 cores (30 core-minutes, most of it the interpreter cases that the
  # smoke stage's files hold); the rest on 14 workers, doubled for start-up and the Triton compiles
  plan "HSSN_TEST_GPU=1 pytest (all but the smoke stage's files)" 300 \
    "HSSN_TEST_GPU=1 python -m pytest tests -q -p no:cacheprovider -n 14 $(for f in $KERNEL_TESTS; do printf -- '--ignore=%s ' "$f"; done) > '$OUT/gpu-tests.log' 2>&1; S=\$?; tail -n 20 '$OUT/gpu-tests.log'; exit \$S"
else
  [[ $BUILT == 1 ]] || plan "build the extension for sm_90 (a fresh machine)" 120 "$INSTALL"
  # ~400 cases at ~1 s each on the GPU; a run cut short keeps its cases (OUT/bench/cases.jsonl) and the same
  # command continues it, so the estimate is per call (what the stage's 480 s leave): the suite needs two or three
  SUITE=$((440 - TOTAL))
  plan "benchmark suite (resumable)" $SUITE \
    "timeout $SUITE python -m benchmarks --out '$OUT/bench' --resume --no-progress | tail -n 30"
  plan "results of the cases so far, measured vs predicted" 40 \
    "python -m benchmarks --out '$OUT/bench' --resume --report-only --no-progress | tail -n 3 &&
     python tools/gpu_cost.py --gpu h200 --measured '$OUT/bench/results.json' --gpu-table '$OUT/gpu_table.json' | tail -n 30"
fi

if [[ $DRY == 1 ]]; then
  echo "  total ~${TOTAL} s (budget: 480 s per stage)"
  [[ $TOTAL -le 480 ]] || { echo "run_gpu.sh: the $STAGE plan exceeds 480 s" >&2; exit 1; }
fi
exit "$STATUS"
