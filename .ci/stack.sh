#!/usr/bin/env bash
# CI's second leg: the test suite on another stack of hssn_kernels/tested_stacks.json (default: the GPU
# machine's, "gpu-machine"), in a fresh venv with that stack's Python, torch, torchvision and Triton, the
# project installed the README's way (no build isolation, the extension rebuilt against that torch).
#   bash .ci/stack.sh [NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-gpu-machine}"
start=$(date +%s)
read -r py torch_v vision_v triton_v < <(python3 - "$name" <<'PY'
import json, sys
stacks = {s["name"]: s for s in json.load(open("hssn_kernels/tested_stacks.json"))["stacks"]}
if sys.argv[1] not in stacks:
    sys.exit(f"no stack {sys.argv[1]!r} in hssn_kernels/tested_stacks.json; choose from {sorted(stacks)}")
s = stacks[sys.argv[1]]
print(s["python"], s["torch"], s["torchvision"], s["triton"])
PY
)
# the interpreter: python3.X on the PATH, else pyenv's newest 3.X
interp=""
if command -v "python$py" >/dev/null && "python$py" -c pass 2>/dev/null; then
    interp="python$py"
else
    interp=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$py".*/bin/python"$py" 2>/dev/null | sort -V | tail -n 1 || true)
fi
[ -n "$interp" ] || { echo "stack $name: no Python $py here (python$py or pyenv versions/$py.*)" >&2; exit 1; }

venv=".ci-venv-$name"
rm -rf "$venv" build hssn_kernels/_C*.so   # nothing of the other leg's build is reused
"$interp" -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
export HF_HUB_OFFLINE=1 MAX_JOBS=2
echo "== stack $name: $("$interp" --version), torch $torch_v, torchvision $vision_v, triton $triton_v"
pip install -q "torch==$torch_v" "torchvision==$vision_v" "triton==$triton_v"
pip install -q --no-build-isolation -e ".[test]"
echo "== stack $name: install took $(( $(date +%s) - start )) s"
python -m hssn_kernels.info | head -n 12
echo "== stack $name: triton resource report (sm_90, sm_80; exits 1 on any spill)"
python tools/triton_resources.py --arch 90 80 --channels 26 512 --depth 3 6 16 --dtype fp32 bf16 | tail -n 3
echo "== stack $name: pytest"
python -m pytest -q -n 2 -p no:cacheprovider
echo "== stack $name took $(( $(date +%s) - start )) s"
