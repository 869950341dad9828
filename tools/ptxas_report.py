"""Compile the native CUDA kernels (csrc/cuda/*.cu) with ``nvcc -Xptxas=-v`` and report, per kernel,
registers, stack frame, spill stores / loads and shared memory. No GPU needed.

    python tools/ptxas_report.py [--arch 90] [--json out.json] [--timeout 300]

Exit status 1 when any kernel spills (spill stores or loads > 0), 2 when nvcc is missing or fails.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"

_FUNC = re.compile(r"Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\d+)'")
_STACK = re.compile(r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads")
_REGS = re.compile(r"Used (?P<regs>\d+) registers.*?(?:(?P<smem>\d+) bytes smem)?(?:,|$)")


def find_nvcc() -> str | None:
    """nvcc of $CUDA_HOME, else of /usr/local/cuda, else on PATH."""
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and Path(root, "bin", "nvcc").exists():
            return str(Path(root, "bin", "nvcc"))
    return shutil.which("nvcc")


def demangle(names: list[str]) -> dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def parse(log: str) -> list[dict]:
    """Kernel resource rows from a ptxas -v log."""
    rows, cur = [], None
    for line in log.splitlines():
        m = _FUNC.search(line)
        if m:
            cur = {"kernel": m["name"], "arch": m["arch"]}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = _STACK.search(line)
        if m:
            cur.update(stack=int(m["stack"]), spill_stores=int(m["stores"]), spill_loads=int(m["loads"]))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["registers"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            cur["static_smem"] = int(s.group(1)) if s else 0
    names = demangle([r["kernel"] for r in rows])
    for r in rows:
        name = names[r["kernel"]].replace("(anonymous namespace)::", "").replace("_NV_ANON_NAMESPACE::", "")
        r["kernel"] = re.sub(r"^void ", "", re.sub(r"\([^()]*\)$", "", name))
    return rows


def compile_one(nvcc: str, source: Path, arch: int, timeout: float) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [nvcc, "-c", str(source), "-o", str(Path(tmp) / "k.o"), "-O3", "-std=c++20", "--expt-relaxed-constexpr",
               f"-arch=sm_{arch}", "-Xptxas=-v", f"-I{ROOT / 'csrc'}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"nvcc failed on {source.name}:\n{proc.stderr[-4000:]}")
        return proc.stderr + proc.stdout


def report(arch: int = 90, timeout: float = 300.0) -> list[dict]:
    nvcc = find_nvcc()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set CUDA_HOME)")
    sources = sorted(CUDA_DIR.glob("*.cu"))
    with ThreadPoolExecutor(max_workers=max(1, min(len(sources), os.cpu_count() or 1))) as pool:
        logs = list(pool.map(lambda s: (s, compile_one(nvcc, s, arch, timeout)), sources))
    rows = []
    for source, log in logs:
        for r in parse(log):
            r["source"] = source.name
            rows.append(r)
    return rows


def table(rows: list[dict]) -> str:
    head = "| source | kernel | arch | registers | stack (B) | spill stores (B) | spill loads (B) | static smem (B) |"
    lines = [head, "|" + "---|" * 8]
    for r in sorted(rows, key=lambda r: (r["source"], r["kernel"])):
        lines.append(f"| {r['source']} | `{r['kernel']}` | {r['arch']} | {r.get('registers', '?')} | "
                     f"{r.get('stack', '?')} | {r.get('spill_stores', '?')} | {r.get('spill_loads', '?')} | "
                     f"{r.get('static_smem', 0)} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per .cu file")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    try:
        rows = report(args.arch, args.timeout)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as err:
        print(f"ptxas report failed: {err}", file=sys.stderr)
        return 2
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    spills = [r for r in rows if r.get("spill_stores", 0) or r.get("spill_loads", 0)]
    return 1 if spills else 0


if __name__ == "__main__":
    sys.exit(main())
