"""Static GPU cost model of the hssn GPU kernels: compile for sm_90, read the SASS, predict a lower bound.

No GPU is needed and none is used: every figure this prints is a PREDICTION from the compiled code, never a
measurement. Method (docs/benchmarks.md, "GPU cost model"):

1. Compile each kernel (``tools/triton_resources.kernel_specs``, the launch configuration of a large image)
   for sm_90 and disassemble the cubin with the ``nvdisasm`` shipped in the triton package.
2. Loops are the backward branches of the SASS. Their trip counts come from the kernel's design, given per
   nesting depth: depth 1 = the walk over the ``C`` channel rows, depth 2 = the subtree scans of the loss
   (``sum over nodes of |Dsc| - 1`` rows in all). An instruction executes (product of its loops' trip
   counts) times per thread; conditional code inside a loop is counted at every trip (an upper bound on
   that part). A kernel whose SASS has a loop structure the model does not know raises.
3. Per pixel: warp instructions, shuffles, MUFU ops, shared-memory instructions, and the global bytes
   the load / store instructions request (L1 traffic, the subtree re-reads included) from the SASS; the DRAM
   bytes are the op's compulsory traffic (every logit read once, every gradient written once, targets and
   outputs; the re-reads are assumed to hit L1 / L2).
4. Occupancy from the documented H100 limits (65536 registers, 64 warps, 32 blocks, 228 KB shared memory
   per SM; registers allocated per warp in 256s).
5. Predicted lower bound = max(DRAM bytes / bandwidth, warp instructions / (SMs x 4 schedulers x clock),
   MUFU ops / (SMs x 16 per clock), shared-memory wavefronts / (SMs x clock)), and its ratio to the memory
   floor (the DRAM term). A separate latency column (Little's law: bytes in flight per SM from the
   occupancy and one outstanding row load per warp, against an assumed 600 ns DRAM latency) says when the
   kernel would rather be latency-bound; it is not part of the lower bound.
6. The native CUDA loss and argmax (``predict_cuda``, from the built extension's sm_90 code; several
   pixels per thread, 256 threads per block) get the same columns from a coarser loop model (its docstring).
7. The fused-upsampling loss (``upsample_table``: its loss and fold kernels, per output pixel) beside the
   same-resolution loss on upsampled logits and ``F.interpolate`` + that loss + the interpolate backward.

    python tools/gpu_cost.py [--gpu h100-sxm] [--out DIR] [--gpu-table hssn_kernels/gpu_table.json]
    python tools/gpu_cost.py --gpu h200 --measured RUN/results.json [--gpu-table hssn_kernels/gpu_table.json]

The first prints the predicted table (--out writes predicted.md / .json, --gpu-table the rows backend="auto"
ranks by); the second puts a GPU run's measurements next to the predictions (run by benchmarks/run_gpu.sh).

Must run WITHOUT ``TRITON_INTERPRET=1`` (the interpreter replaces the compiler).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import triton_resources as tr  # noqa: E402  (refuses TRITON_INTERPRET=1)
import triton  # noqa: E402

from benchmarks.cases import get_tree  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Gpu:
    """Published figures of one GPU (the model's only inputs besides the SASS)."""
    name: str
    sms: int
    clock_hz: float          # boost clock
    dram_bytes_per_s: float  # HBM bandwidth
    regs_per_sm: int = 65536
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32
    smem_per_sm: int = 228 * 1024
    mufu_per_sm_clk: int = 16      # special-function unit lanes per SM per clock
    schedulers_per_sm: int = 4     # one warp instruction issued per scheduler per clock
    dram_latency_s: float = 600e-9  # assumed load latency under load (the latency column only)


GPUS = {g.name: g for g in (Gpu("h100-sxm", 132, 1.98e9, 3.35e12), Gpu("h200", 132, 1.98e9, 4.8e12))}
"""H100 SXM5 and H200 (the kind this project may be lent): 132 SMs at 1.98 GHz; 3.35 / 4.8 TB/s HBM."""

CASES = (("cityscapes", 2, 512, 1024), ("channels-150", 8, 512, 1024), ("mapillary_v2", 2, 512, 1024),
         ("channels-1000", 1, 512, 1024))
"""(tree, B, H, W): the paper shapes of the benchmark suite at 26 and 177 channels, the issue's
8 x 150 x 512 x 1024 and the 1000-channel sweep point."""

KERNELS = ("ftm fwd+grad (mean)", "ftm bwd (none)", "path_argmax")
DTYPES = {"bf16": 2, "fp32": 4}


# ----------------------------------------------------------------------------- SASS
_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[0-9T]\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_BRANCH = re.compile(r"`\((\.L_x_\d+)\)")


@dataclasses.dataclass
class Instr:
    addr: int
    op: str          # full opcode with modifiers, e.g. LDG.E.64
    operands: str
    loop: int = -1   # index of the innermost loop holding it, -1 outside every loop
    target: int = -1  # a branch's target address


@dataclasses.dataclass
class Loop:
    lo: int          # address of the first instruction (the backward branch's target)
    hi: int          # address of the backward branch
    depth: int = 1
    row_loads: int = 0  # logit-row loads directly inside (not in a nested loop): the unroll factor
    trips: float = 0.0


def _nvdisasm(cubin: bytes) -> str:
    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        return subprocess.run([str(nvdisasm), "-c", str(path)], capture_output=True, text=True, check=True).stdout


def parse(text: str) -> tuple[list[Instr], list[Loop]]:
    """Instructions and loops (the backward branches) of one kernel's SASS text, each instruction tagged with
    its innermost loop."""
    instrs: list[Instr] = []
    labels: dict[str, int] = {}
    pending: list[str] = []
    for line in text.splitlines():
        lab = _LABEL.match(line.strip())
        if lab:
            pending.append(lab.group(1))
            continue
        m = _INSTR.search(line)
        if m:
            addr = int(m.group(1), 16)
            for name in pending:
                labels[name] = addr
            pending = []
            instrs.append(Instr(addr, m.group(3), m.group(4)))
    loops = []
    for ins in instrs:
        tgt = _BRANCH.search(ins.operands) if ins.op.startswith("BRA") else None
        ins.target = labels.get(tgt.group(1), -1) if tgt else -1
        if 0 <= ins.target < ins.addr:  # a backward branch closes a loop (not the branch-to-self that pads
            loops.append(Loop(ins.target, ins.addr))  # the end of every kernel)
    for lp in loops:
        lp.depth = sum(o.lo <= lp.lo and lp.hi <= o.hi for o in loops)
    for ins in instrs:
        inside = [k for k, lp in enumerate(loops) if lp.lo <= ins.addr <= lp.hi]
        if inside:
            ins.loop = max(inside, key=lambda k: loops[k].depth)
    return instrs, loops


def _access_bytes(op: str) -> int:
    """Bytes per thread of a global / shared access opcode (LDG.E.64 -> 8, LDG.E.U16 -> 2, LDG.E -> 4)."""
    for suffix, size in ((".128", 16), (".64", 8), (".U16", 2), (".S16", 2), (".U8", 1), (".S8", 1)):
        if suffix in op:
            return size
    return 4


def _scan_rows(h) -> list[int]:
    """Rows each inner node's subtree scan reads (|Dsc| - 1), in channel order."""
    return [len(h.descendants(c)) - 1 for c in range(h.num_channels) if not h.is_leaf(c)]


def count_row_loads(instrs: list[Instr], loops: list[Loop], row_bytes: int) -> None:
    """``Loop.row_loads``: the LDGs of ``row_bytes`` (one logit row per thread) directly inside each loop."""
    for ins in instrs:
        if ins.loop >= 0 and ins.op.startswith("LDG") and _access_bytes(ins.op) == row_bytes:
            loops[ins.loop].row_loads += 1


def split_scan_setup(instrs: list[Instr], loops: list[Loop], walk: int, scans: list[Loop], depth: int, trips: float,
                     what: str) -> None:
    """Move the subtree scans' set-up / unrolled remainder (the code the walk's first branch past every scan
    loop skips at leaves) out of the walk into a region of its own, appended to ``loops`` with ``depth`` and
    ``trips``; ``what`` names the kernel in the error raised when no such branch exists."""
    first, last = min(lp.lo for lp in scans), max(lp.hi for lp in scans)
    skip = next((i for i in instrs if i.loop == walk and i.addr < first and i.target > last), None)
    if skip is None:
        raise ValueError(f"no branch skips the subtree scans at leaves{what}")
    loops.append(Loop(skip.addr + 1, skip.target - 1, depth=depth, trips=trips))
    for ins in instrs:
        if ins.loop == walk and skip.addr < ins.addr < skip.target:
            ins.loop = len(loops) - 1


def assign_trips(instrs: list[Instr], loops: list[Loop], row_bytes: int, channels: int, scans: list[int]) -> None:
    """Trip counts per thread of every loop of freshly parsed SASS. Depth 1 = the channel walk: ``channels``
    trips. Depth 2 = the subtree scans, ``scans`` = rows scanned per inner node: ptxas unrolls a scan into
    loops of ``U`` rows per trip (``U`` = the logit-row loads in the loop, an LDG of ``row_bytes``) plus
    straight-line set-up and remainder code; rows are given to the widest loop first (``n // U`` trips), the
    rest to the narrower ones. The set-up / remainder code (what the walk's branch skips at leaves) becomes a
    region run once per inner node, all of it (an upper bound). Any other structure raises."""
    by_depth: dict[int, list[Loop]] = {}
    for lp in loops:
        by_depth.setdefault(lp.depth, []).append(lp)
    if set(by_depth) - {1, 2} or len(by_depth.get(1, [])) != 1:
        raise ValueError(f"unexpected loop structure {[(lp.depth, hex(lp.lo), hex(lp.hi)) for lp in loops]}")
    walk = loops.index(by_depth[1][0])
    inner = by_depth.get(2, [])
    if inner:  # run once per inner node (its straight-line rows counted as if all ran)
        split_scan_setup(instrs, loops, walk, inner, depth=1, trips=len(scans), what="")
    count_row_loads(instrs, loops, row_bytes)
    if loops[walk].row_loads != 1:
        raise ValueError(f"the channel walk has {loops[walk].row_loads} row loads per trip, expected 1")
    loops[walk].trips = channels
    inner = sorted(inner, key=lambda lp: -lp.row_loads)
    if any(lp.row_loads == 0 for lp in inner):
        raise ValueError(f"a nested loop without row loads {[(lp.depth, lp.row_loads) for lp in loops]}")
    rest = list(scans)
    for lp in inner:
        lp.trips = sum(n // lp.row_loads for n in rest)
        rest = [n % lp.row_loads for n in rest]


@dataclasses.dataclass
class Counts:
    """Dynamic per-thread counts of one program."""
    instrs: float = 0.0
    shfl: float = 0.0
    mufu: float = 0.0
    shared: float = 0.0
    ldg_bytes: float = 0.0
    stg_bytes: float = 0.0
    row_ops: tuple[str, ...] = ()  # the global access opcodes inside the channel walk (vector width check)


def count(instrs: list[Instr], loops: list[Loop]) -> Counts:
    """Execute-weighted counts: an instruction in a loop runs that loop's trips times (1 outside loops;
    conditional code inside a loop is counted at every trip)."""
    out = Counts()
    ops = set()
    for ins in instrs:
        if ins.op.startswith("NOP"):
            continue
        n = loops[ins.loop].trips if ins.loop >= 0 else 1.0
        out.instrs += n
        base = ins.op.split(".")[0]
        if base == "SHFL":
            out.shfl += n
        elif base == "MUFU":
            out.mufu += n
        elif base in ("LDS", "STS", "LDSM", "ATOMS"):
            out.shared += n
        elif base in ("LDG", "STG"):
            if base == "LDG":
                out.ldg_bytes += n * _access_bytes(ins.op)
            else:
                out.stg_bytes += n * _access_bytes(ins.op)
            if ins.loop >= 0 and _access_bytes(ins.op) > 4:
                ops.add(ins.op)
    out.row_ops = tuple(sorted(ops))
    return out


# ----------------------------------------------------------------------------- model
def compile_kernel(label: str, dtype: str, h, image: tuple[int, int, int], compiled: dict) -> tuple:
    """(SASS text, regs, shared bytes, num_warps, constexprs) of the kernel ``label`` at sm_90, specialised for
    contiguous logits of tree ``h`` x ``image`` (B, H, W) as the launcher would be; ``compiled`` caches it
    across calls. ``label`` is a ``tools/triton_resources.kernel_specs`` label up to its " C=" / dtype suffix."""
    key = (label, dtype, h.height, h.num_channels, image)
    if key not in compiled:
        for lab, fn, sig, cx, attrs, options in tr.kernel_specs(h.num_channels, h.height, dtype, image):
            if lab.startswith(label + " C=") or lab == f"{label} {dtype}":
                kernel = tr.compile_for(fn, sig, cx, attrs, options, 90)
                res = tr.cubin_resources(kernel.asm["cubin"])
                if res.get("STACK", 0):
                    raise RuntimeError(f"{label} {dtype} spills ({res['STACK']} stack bytes): the model assumes none")
                compiled[key] = (_nvdisasm(kernel.asm["cubin"]), res["REG"], int(kernel.metadata.shared),
                                 options["num_warps"], cx)
                break
        else:
            raise KeyError(label)
    return compiled[key]


def occupancy(gpu: Gpu, regs: int, shared: int, warps: int) -> int:
    """Resident warps per SM."""
    regs_per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    blocks = min(gpu.max_blocks_per_sm, gpu.regs_per_sm // (regs_per_warp * warps), gpu.max_warps_per_sm // warps)
    if shared:
        blocks = min(blocks, gpu.smem_per_sm // shared)
    return blocks * warps


def dram_bytes(label: str, channels: int, elem: int) -> int:
    """Compulsory DRAM bytes per pixel: logits once, int64 target / leaf map, the outputs."""
    if label == "path_argmax":
        return channels * elem + 8
    if label == "ftm bwd (none)":
        return 2 * channels * elem + 8 + 4  # logits, gradient, target, fp32 per-pixel weight
    return 2 * channels * elem + 8          # logits, gradient, target (the loss is one float per program)


def predict(gpu: Gpu, label: str, dtype: str, tree: str, batch: int, height: int, width: int,
            compiled: dict | None = None) -> dict:
    """One row of the predicted table (a dict of the figures, all per pixel unless named otherwise);
    ``compiled`` caches the SASS text of each specialisation across calls."""
    h = get_tree(tree)
    text, regs, shared, warps, cx = compile_kernel(label, dtype, h, (batch, height, width),
                                                   {} if compiled is None else compiled)
    block_p = cx["BLOCK_P"]
    instrs, loops = parse(text)
    assign_trips(instrs, loops, int(block_p / (32 * warps) * DTYPES[dtype]), h.num_channels, _scan_rows(h))
    return _row(gpu, f"triton {label}", label, dtype, tree, (batch, height, width), count(instrs, loops), regs,
                shared, warps, block_p, "/".join(f"{lp.depth}:{lp.row_loads}x{lp.trips:g}" for lp in loops))


GOAL_X_FLOOR = 1.5
"""The goal for every GPU kernel (issue 24): predicted time within this factor of its memory floor."""


def _why(x_floor: float, limiter: str, per_logit: dict[str, float], budget: dict[str, float]) -> str:
    """Why a row misses GOAL_X_FLOOR: its limiter's count per logit (per thread) against what the goal allows
    at this dtype's bytes; empty when it meets the goal."""
    if x_floor <= GOAL_X_FLOOR:
        return ""
    what = {"issue": "instructions", "MUFU": "MUFU ops", "shared": "shared-memory instructions"}[limiter]
    return (f"{limiter}-bound: {per_logit[limiter]:.3g} {what} per logit per thread; {GOAL_X_FLOOR}x the DRAM floor "
            f"allows {budget[limiter]:.3g}")


def _row(gpu: Gpu, kernel: str, label: str, dtype: str, tree: str, image: tuple[int, int, int], c: Counts,
         regs: int, shared: int, warps: int, block_p: int, loops: str, dram: float | None = None) -> dict:
    """The table row of a kernel from its per-thread counts ``c`` (one program of ``block_p`` pixels on
    ``warps`` warps): per-pixel figures, occupancy, the four bounds and the latency column; ``dram``: the
    compulsory DRAM bytes per pixel when not :func:`dram_bytes` of ``label``."""
    batch, height, width = image
    h = get_tree(tree)
    channels, elem = h.num_channels, DTYPES[dtype]
    per_thread_px = block_p / (32 * warps)
    warp_px = 32 * per_thread_px
    pixels = batch * height * width
    warps_sm = occupancy(gpu, regs, shared, warps)
    dram = dram_bytes(label, channels, elem) if dram is None else dram
    t_dram = pixels * dram / gpu.dram_bytes_per_s
    t_issue = pixels * c.instrs / warp_px / (gpu.sms * gpu.schedulers_per_sm * gpu.clock_hz)
    t_mufu = pixels * c.mufu * 32 / warp_px / (gpu.sms * gpu.mufu_per_sm_clk * gpu.clock_hz)
    t_smem = pixels * c.shared / warp_px / (gpu.sms * gpu.clock_hz)
    bound = max(t_dram, t_issue, t_mufu, t_smem)
    limiter = {t_dram: "DRAM", t_issue: "issue", t_mufu: "MUFU", t_smem: "shared"}[bound]
    # per logit and thread (a thread runs per_thread_px pixels x C logits), and what the goal's time allows
    rate = {"issue": 32 * gpu.sms * gpu.schedulers_per_sm * gpu.clock_hz,  # thread-logits per second
            "MUFU": gpu.sms * gpu.mufu_per_sm_clk * gpu.clock_hz, "shared": 32 * gpu.sms * gpu.clock_hz}
    per_logit = {"issue": c.instrs / (per_thread_px * channels), "MUFU": c.mufu / (per_thread_px * channels),
                 "shared": c.shared / (per_thread_px * channels)}
    budget = {k: GOAL_X_FLOOR * t_dram * v / (pixels * channels) for k, v in rate.items()}
    row_bytes = warp_px * elem  # one outstanding row load per warp in the channel walk
    t_latency = pixels * channels * elem / (gpu.sms * warps_sm * row_bytes / gpu.dram_latency_s)
    return {
        "kernel": kernel, "dtype": dtype, "tree": tree, "shape": f"{batch}x{channels}x{height}x{width}",
        "channels": channels, "depth": h.height, "regs": regs, "shared_bytes": shared, "num_warps": warps,
        "block_p": block_p, "warps_per_sm": warps_sm, "occupancy": warps_sm / gpu.max_warps_per_sm,
        "warp_instr_per_px": c.instrs / warp_px, "shfl_per_px": c.shfl / warp_px, "mufu_per_px": c.mufu / per_thread_px,
        "shared_per_px": c.shared / warp_px, "l1_bytes_per_px": (c.ldg_bytes + c.stg_bytes) / per_thread_px,
        "dram_bytes_per_px": dram, "row_access": "/".join(c.row_ops) or "scalar",
        "loops": loops,
        "t_dram_ms": t_dram * 1e3, "t_issue_ms": t_issue * 1e3, "t_mufu_ms": t_mufu * 1e3, "t_smem_ms": t_smem * 1e3,
        "predicted_ms": bound * 1e3, "limiter": limiter, "x_floor": bound / t_dram, "t_latency_ms": t_latency * 1e3,
        "why_above_goal": _why(bound / t_dram, limiter, per_logit, budget),
    }


def table(gpu: Gpu, cases=CASES, kernels=KERNELS, dtypes=tuple(DTYPES)) -> list[dict]:
    """Every Triton row, then the native CUDA rows (the loss and the argmax) when the extension holds sm_90
    code."""
    compiled: dict = {}
    rows = [predict(gpu, k, d, tree, b, hh, ww, compiled) for tree, b, hh, ww in cases for d in dtypes
            for k in kernels]
    cuda = cuda_kernels() if EXTENSION.exists() else {}
    if any(_CUDA_NAMES[("path_argmax", "fp32")] in k for k in cuda):
        rows += [predict_cuda(gpu, k, d, tree, b, hh, ww, cuda) for tree, b, hh, ww in cases for d in dtypes
                 for k in OPS]
    return rows


def markdown(gpu: Gpu, rows: list[dict]) -> str:
    head = (f"# PREDICTED GPU cost of the Triton and CUDA kernels ({gpu.name}, sm_90): a static model, not a "
            "measurement\n\n"
            f"`python tools/gpu_cost.py --gpu {gpu.name}` (method: tools/gpu_cost.py, docs/benchmarks.md). "
            f"{gpu.sms} SMs, {gpu.clock_hz / 1e9:.2f} GHz, {gpu.dram_bytes_per_s / 1e12:.2f} TB/s. Per pixel: "
            "warp instructions, shuffles, MUFU ops (per thread-pixel), L1 bytes requested (SASS), DRAM bytes "
            "(compulsory). Predicted = max(DRAM, issue, MUFU, shared) bound; x floor = predicted / DRAM time. "
            "Latency = the Little's-law time with one row load in flight per warp (not in the bound). "
            f"why_above_goal: for a row above {GOAL_X_FLOOR}x, its limiter's count per logit per thread against "
            f"what {GOAL_X_FLOOR}x the DRAM time allows at its dtype's bytes.\n\n")
    cols = ("kernel", "dtype", "shape", "regs", "warps_per_sm", "warp_instr_per_px", "shfl_per_px", "mufu_per_px",
            "l1_bytes_per_px", "dram_bytes_per_px", "row_access", "t_dram_ms", "predicted_ms", "limiter", "x_floor",
            "t_latency_ms", "why_above_goal")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- fused upsampling
UPSAMPLE_CASES = (("cityscapes", 2, 512, 1024), ("mapillary_v2", 2, 512, 1024), ("channels-150", 8, 1024, 2048))
"""(tree, B, H, W) of the fused-upsampling rows: logits at 1/4 of (H, W) (Cityscapes and Mapillary at 2 x
128x256 -> 512x1024, 8 x 150 at 1/4 of 1024x2048)."""
UPSAMPLE_RATIO = 4


def predict_upsampled(gpu: Gpu, dtype: str, tree: str, batch: int, height: int, width: int,
                      compiled: dict | None = None) -> list[dict]:
    """The fused-upsampling loss (fwd+grad, mean) at logits of 1/``UPSAMPLE_RATIO`` of (height, width): the loss
    kernel's row, the fold kernel's row, and their sum ("triton upsampled ftm (total)"), per OUTPUT pixel.

    Loss kernel loops (per thread, from the outside): the anchor row's output rows (``R`` = H / h trips), the
    column chunks (``X`` per program, averaged from the launch plan), the channel walk (``C`` per chunk) and
    the subtree scans (their rows / ``U`` per chunk, ``U`` = a scan trip's tap loads / 4); trips are totals per
    thread, as in :func:`assign_trips` (the two parity launches of the loss kernel together make one pass).
    DRAM: the low-res logits once, the int64 target, the two fp32 partial sums per low-res value written by
    the even anchor rows' launch and read and written back by the odd rows'; the fold reads them and writes
    the low-res gradient."""
    from hssn_kernels import upsample_triton as upt

    compiled = {} if compiled is None else compiled
    h = get_tree(tree)
    channels, elem = h.num_channels, DTYPES[dtype]
    lh, lw = height // UPSAMPLE_RATIO, width // UPSAMPLE_RATIO
    text, regs, shared, warps, cx = compile_kernel("upsampled ftm fwd+grad (mean)", dtype, h, (batch, height, width),
                                                   compiled)
    plan = upt._Plan(lh, lw, height, width, False, False, "cpu", cx["KX"])
    rows_per_program = height / lh
    chunks = float(plan.col_chunks.float().mean())
    instrs, loops = parse(text)
    depths = sorted({lp.depth for lp in loops})
    if depths != [1, 2, 3, 4] or sum(lp.depth == 3 for lp in loops) != 1:
        raise ValueError(f"unexpected loop structure {[(lp.depth, hex(lp.lo), hex(lp.hi)) for lp in loops]}")
    scans = sum(_scan_rows(h))
    for k, lp in enumerate(loops):
        loads = sum(1 for i in instrs if i.loop == k and i.op.startswith("LDG"))
        lp.row_loads = loads
        per_chunk = {1: 1 / chunks, 2: 1, 3: channels}.get(lp.depth)
        if per_chunk is None:  # a scan loop: U rows per trip (4 taps + 1 perm entry per row)
            per_chunk = scans / max(loads // 5, 1)
        lp.trips = rows_per_program * chunks * per_chunk
    c = count(instrs, loops)
    block_px = height * width / (lh * plan.blocks)
    low = channels * elem / UPSAMPLE_RATIO ** 2
    partials = 8 * channels / UPSAMPLE_RATIO ** 2  # two fp32 values per low-res value, once
    loss_row = _row(gpu, "triton upsampled ftm fwd+grad (mean)", "upsampled", dtype, tree, (batch, height, width), c,
                    regs, shared, warps, int(block_px), "/".join(f"{lp.depth}:{lp.trips:g}" for lp in loops),
                    dram=low + 8 + 3 * partials)
    ftext, fregs, fshared, fwarps, fcx = compile_kernel("upsampled fold", dtype, h, (batch, height, width), compiled)
    finstrs, floops = parse(ftext)
    if floops:
        raise ValueError("the fold kernel has no loops in the model")
    # one fold thread per low-res value: per output pixel 1 / ratio^2 threads per channel
    fold_px = fcx["BLOCK"] * UPSAMPLE_RATIO ** 2 / channels
    fold_row = _row(gpu, "triton upsampled fold", "upsampled", dtype, tree, (batch, height, width),
                    count(finstrs, floops), fregs, fshared, fwarps, int(fold_px), "-", dram=partials + low)
    total = dict(loss_row, kernel="triton upsampled ftm (total)")
    for key in ("t_dram_ms", "t_issue_ms", "t_mufu_ms", "t_smem_ms", "predicted_ms", "dram_bytes_per_px",
                "warp_instr_per_px", "l1_bytes_per_px", "t_latency_ms"):
        total[key] = loss_row[key] + fold_row[key]
    total["limiter"] = f"{loss_row['limiter']}+{fold_row['limiter']}"
    total["x_floor"] = total["predicted_ms"] / total["t_dram_ms"]
    return [loss_row, fold_row, total]


def predict_interpolate_path(gpu: Gpu, dtype: str, tree: str, batch: int, height: int, width: int,
                             compiled: dict | None = None) -> dict:
    """``F.interpolate`` + the same-resolution fused loss + the interpolate backward, per output pixel: the
    Triton loss row at full resolution plus both interpolations at their DRAM floors (the upsampled logits
    written and read back, the full-resolution gradient read by the backward, the low-res values once each
    way): a LOWER bound on that path, so the comparison favours it."""
    h = get_tree(tree)
    elem = DTYPES[dtype]
    ftm = predict(gpu, "ftm fwd+grad (mean)", dtype, tree, batch, height, width, compiled)
    low = h.num_channels * elem / UPSAMPLE_RATIO ** 2
    interp_bytes = (low + h.num_channels * elem) + (h.num_channels * elem + low)  # forward + backward
    t_interp = batch * height * width * interp_bytes / gpu.dram_bytes_per_s * 1e3
    row = dict(ftm, kernel="interpolate + triton ftm + interpolate backward")
    row["t_dram_ms"] = ftm["t_dram_ms"] + t_interp
    row["predicted_ms"] = ftm["predicted_ms"] + t_interp
    row["dram_bytes_per_px"] = ftm["dram_bytes_per_px"] + interp_bytes
    row["limiter"] = f"{ftm['limiter']}+DRAM"
    row["x_floor"] = row["predicted_ms"] / row["t_dram_ms"]
    return row


def upsample_table(gpu: Gpu, cases=UPSAMPLE_CASES, dtypes=tuple(DTYPES)) -> list[dict]:
    """Per case and dtype: the fused-upsampling rows, the same-resolution fused loss on already-upsampled logits
    and the interpolate path, with ``vs_same_res`` / ``vs_interpolate`` (the fused total over each)."""
    compiled: dict = {}
    rows = []
    for tree, b, hh, ww in cases:
        for d in dtypes:
            fused = predict_upsampled(gpu, d, tree, b, hh, ww, compiled)
            same = predict(gpu, "ftm fwd+grad (mean)", d, tree, b, hh, ww, compiled)
            interp = predict_interpolate_path(gpu, d, tree, b, hh, ww, compiled)
            fused[-1]["vs_same_res"] = fused[-1]["predicted_ms"] / same["predicted_ms"]
            fused[-1]["vs_interpolate"] = fused[-1]["predicted_ms"] / interp["predicted_ms"]
            rows += fused + [interp]
    return rows


def upsample_markdown(rows: list[dict]) -> str:
    cols = ("kernel", "dtype", "shape", "regs", "warps_per_sm", "warp_instr_per_px", "dram_bytes_per_px", "t_dram_ms",
            "predicted_ms", "limiter", "x_floor", "vs_same_res", "vs_interpolate")
    lines = ["\n## Fused upsampling (PREDICTED): logits at 1/4 of the shape's H x W, figures per output pixel\n",
             "`vs_same_res` = the fused total / the same-resolution Triton loss on already-upsampled logits "
             "(same table); `vs_interpolate` = the fused total / `F.interpolate` + that loss + the interpolate "
             "backward (the interpolations at their DRAM floor: a lower bound on that path).\n",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.3g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- CUDA kernels (coarser)
EXTENSION = Path(__file__).resolve().parents[1] / "hssn_kernels" / "_C.abi3.so"
_LAUNCH_H = (Path(__file__).resolve().parents[1] / "csrc" / "cuda" / "launch.h").read_text()
CUDA_THREADS, FTM_PIXELS, ARGMAX_PIXELS = (int(re.search(rf"constexpr int {name} = (\d+);", _LAUNCH_H).group(1))
                                           for name in ("kPixelThreads", "kFtmPixels", "kArgmaxPixels"))
"""Threads per block of the native walk kernels, and pixels per thread of the loss's and the argmax's."""
_CUDA_NAMES = {("ftm fwd+grad (mean)", "bf16"): "ftm_kernelI13__nv_bfloat16Li2EiEE", ("ftm fwd+grad (mean)", "fp32"):
               "ftm_kernelIfLi2EiEE", ("path_argmax", "bf16"): "path_argmax_kernelI13__nv_bfloat16iE",
               ("path_argmax", "fp32"): "path_argmax_kernelIfiE"}
"""The modelled instantiations: gamma 2, 32-bit offsets (every case of CASES spans fewer than 2^31 elements)."""


def cuda_kernels(so: Path = EXTENSION) -> dict[str, tuple[str, dict]]:
    """{mangled name: (SASS text, {REG, STACK, SHARED})} of the extension's sm_90 CUDA kernels."""
    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(bin_dir / "cuobjdump"), "-xelf", "all", str(so)], cwd=tmp, capture_output=True, check=True)
        for cubin in sorted(Path(tmp).glob("*sm_90*.cubin")):
            text = _nvdisasm(cubin.read_bytes())
            res = subprocess.run([str(bin_dir / "cuobjdump"), "--dump-resource-usage", str(cubin)],
                                 capture_output=True, text=True, check=True).stdout
            usage = {m.group(1): {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED):(\d+)", m.group(2))}
                     for m in re.finditer(r"Function (\S+):\n(.*)", res)}
            parts = re.split(r"\n\s*\.text\.(\S+):\n", text)
            for name, body in zip(parts[1::2], parts[2::2]):
                out[name] = (body, usage.get(name, {}))
    return out


def predict_cuda(gpu: Gpu, label: str, dtype: str, tree: str, batch: int, height: int, width: int,
                 kernels: dict | None = None) -> dict:
    """A coarser row for the native CUDA kernel of ``label`` (FTM_PIXELS pixels per thread for the loss,
    ARGMAX_PIXELS for the argmax, sharing one walk): the walk is the deepest row-loading loop that holds other
    row-loading loops (the argmax: its deepest, then largest, row-loading loop), ``C`` trips; row-loading
    loops nested in it are the subtree scans (``rows / U`` trips, ``U`` the rows one trip reads: its row loads
    over the thread's pixels, in fp32 one more 4-byte load per row, its perm entry); the code the walk's
    first branch past every scan skips at leaves (the scans' set-up and unrolled remainder) runs once per
    inner node, all of it (an upper bound; the tree is the same for every lane, so a warp takes that branch
    as one); the loop around the walk is the grid-stride pixel loop (once per thread's pixels); other loops
    in it run ``depth`` times (each pixel's path); the rest once. Other conditional code is counted at every
    trip (an upper bound, looser than the Triton rows: a thread's branches diverge per pixel)."""
    kernels = kernels if kernels is not None else cuda_kernels()
    h = get_tree(tree)
    channels, elem = h.num_channels, DTYPES[dtype]
    scan_rows = _scan_rows(h)
    pixels = ARGMAX_PIXELS if label == "path_argmax" else FTM_PIXELS

    key = next(k for k in kernels if _CUDA_NAMES[(label, dtype)] in k)
    (instrs, loops), usage = parse(kernels[key][0]), kernels[key][1]
    row_unit = pixels + (elem == 4)  # the LDGs of the logits' width one scan row takes
    count_row_loads(instrs, loops, elem)
    direct = [lp.row_loads for lp in loops]

    def inside(k, j):  # loop j nested in loop k
        return k != j and loops[k].lo <= loops[j].lo and loops[j].hi <= loops[k].hi

    loaders = [k for k in range(len(loops)) if direct[k]]
    if label != "path_argmax":  # the loss's walk holds the scans: the deepest loader holding a loader
        loaders_with_scans = [k for k in loaders if any(inside(k, j) for j in loaders)]
        if not loaders_with_scans:
            raise ValueError(f"no walk with subtree scans in {label} {dtype}")
        walk = max(loaders_with_scans, key=lambda k: loops[k].depth)
    elif loaders:  # the argmax has no scans: its deepest, then largest, loader
        walk = max(loaders, key=lambda k: (loops[k].depth, loops[k].hi - loops[k].lo))
    else:
        raise ValueError(f"no row-loading loop in {label} {dtype}")
    scans = [k for k in loaders if inside(walk, k)]
    for k, lp in enumerate(loops):
        if k == walk:
            lp.trips = channels
        elif k in scans:
            lp.trips = sum(scan_rows) / max(direct[k] // row_unit, 1)
        elif inside(k, walk):
            lp.trips = 1  # the grid-stride pixel loop: per thread's pixels
        elif any(inside(o, k) and inside(o, walk) for o in range(len(loops))):
            lp.trips = h.height  # a loop beside the walk inside the pixel loop: a pixel's path
        else:
            lp.trips = 1
    if scans:  # the scans' set-up / remainder code: once per inner node
        split_scan_setup(instrs, loops, walk, [loops[k] for k in scans], depth=loops[walk].depth + 1,
                         trips=len(scan_rows), what=f" in {label} {dtype}")
    return _row(gpu, f"cuda {label}", label, dtype, tree, (batch, height, width), count(instrs, loops),
                usage.get("REG", 255), usage.get("SHARED", 0), CUDA_THREADS // 32, CUDA_THREADS * pixels,
                "/".join(f"{lp.depth}:{lp.trips:g}" for lp in loops))


OPS = {"ftm fwd+grad (mean)": "focal_tree_min_loss", "path_argmax": "hierarchical_argmax"}
"""The model's kernels that the functional ops run (``hssn_kernels.gpu_table.json`` rows)."""
BENCH_OPS = {("ftm", "full"): "ftm fwd+grad (mean)", ("argmax", "no_grad"): "path_argmax"}
"""Benchmark-suite (op, mode) -> the model's kernel, for measured-vs-predicted."""


def gpu_table_rows(rows: list[dict]) -> list[dict]:
    """``hssn_kernels/gpu_table.json`` rows (time per megapixel) from predicted rows."""
    out = []
    for r in rows:
        backend, _, kernel = r["kernel"].partition(" ")
        if kernel in OPS:
            b, _, h, w = (int(v) for v in r["shape"].split("x"))
            out.append({"op": OPS[kernel], "backend": backend, "dtype": r["dtype"], "channels": r["channels"],
                        "ms_per_mpix": r["predicted_ms"] / (b * h * w / 1e6), "x_floor": r["x_floor"]})
    return out


def measured_vs_predicted(gpu: Gpu, results: dict) -> tuple[str, list[dict]]:
    """(Markdown table, gpu_table rows) from a benchmark ``results.json`` of a GPU run: every Triton and CUDA
    row the model covers, measured next to its prediction at the same shape; the gpu_table rows are the
    measured times of every backend."""
    compiled: dict = {}
    cuda = None
    lines = [f"# Measured vs PREDICTED ({gpu.name} model), {results['meta'].get('device', '?')}\n",
             "| op | backend | dtype | shape | measured ms | predicted ms | measured / predicted | floor ms |",
             "|---|---|---|---|---|---|---|---|"]
    table = []
    for r in results["results"]:
        kernel = BENCH_OPS.get((r["op"], r["mode"]))
        if kernel is None or r.get("status") != "ok" or r["dtype"] not in DTYPES:
            continue
        table.append({"op": OPS[kernel], "backend": r["backend"], "dtype": r["dtype"], "channels": r["channels"],
                      "ms_per_mpix": r["ms_median"] / (r["pixels"] / 1e6), "x_floor": None})
        if r["backend"] == "triton":
            p = predict(gpu, kernel, r["dtype"], r["tree"], r["batch"], r["height"], r["width"], compiled)
        elif r["backend"] == "cuda":
            cuda = cuda if cuda is not None else cuda_kernels()  # extracted once, for the first CUDA row
            p = predict_cuda(gpu, kernel, r["dtype"], r["tree"], r["batch"], r["height"], r["width"], cuda)
        else:
            continue
        lines.append(f"| {r['op']} | {r['backend']} | {r['dtype']} | {p['shape']} | {r['ms_median']:.3g} | "
                     f"{p['predicted_ms']:.3g} | {r['ms_median'] / p['predicted_ms']:.2f} | {p['t_dram_ms']:.3g} |")
    return "\n".join(lines) + "\n", table


def nvcc_release() -> str | None:
    """The ``nvcc --version`` release line (the CUDA rows depend on it; the Triton rows on ``triton.__version__``),
    or None without nvcc."""
    try:
        out = subprocess.run(["nvcc", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return next((line.strip() for line in out.splitlines() if "release" in line), None)


def write_gpu_table(path: Path, source: str, gpu: Gpu, command: str, rows: list[dict]) -> None:
    path.write_text(json.dumps({"source": source, "gpu": gpu.name, "command": command, "rows": rows}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", default="h100-sxm", choices=sorted(GPUS))
    parser.add_argument("--out", type=Path, help="folder for predicted.md and predicted.json")
    parser.add_argument("--gpu-table", type=Path, help="write these rows as hssn_kernels/gpu_table.json (auto's ranking)")
    parser.add_argument("--measured", type=Path, help="a GPU run's results.json: write measured_vs_predicted.md "
                                                       "next to it (and measured --gpu-table rows)")
    args = parser.parse_args(argv)
    gpu = GPUS[args.gpu]
    command = "python tools/gpu_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.measured:
        text, measured = measured_vs_predicted(gpu, json.loads(args.measured.read_text()))
        print(text)
        (args.measured.parent / "measured_vs_predicted.md").write_text(text)
        if args.gpu_table and measured:
            write_gpu_table(args.gpu_table, "measured", gpu, command, measured)
        return 0
    rows = table(gpu)
    ups = upsample_table(gpu)
    text = markdown(gpu, rows) + upsample_markdown(ups)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "predicted.md").write_text(text)
        (args.out / "predicted.json").write_text(json.dumps(
            {"gpu": dataclasses.asdict(gpu), "triton": triton.__version__, "nvcc": nvcc_release(), "rows": rows,
             "upsample_rows": ups}, indent=1) + "\n")
    if args.gpu_table:
        write_gpu_table(args.gpu_table, "predicted", gpu, command, gpu_table_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
