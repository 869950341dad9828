"""Ahead-of-time compile every hssn Triton kernel for an NVIDIA target and print registers / spills.

No GPU needed: ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` produces the
cubin, and the ``cuobjdump --dump-resource-usage`` shipped inside the triton package reads its
registers and stack (spills show as STACK / spill bytes in the PTXAS log).

    python tools/triton_resources.py [--arch 90 80] [--channels 26 166] [--depth 3 6 16] [--dtype fp32 bf16]
        [--json out.json]

Must run WITHOUT ``TRITON_INTERPRET=1`` (the interpreter replaces the compiler).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("tools/triton_resources.py compiles real kernels: unset TRITON_INTERPRET")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hssn_kernels import _triton_utils as _tu  # noqa: E402
from hssn_kernels import focal_tree_min as ftm  # noqa: E402
from hssn_kernels import path_argmax as pam  # noqa: E402
from hssn_kernels import tree_triplet as tt  # noqa: E402
from hssn_kernels import upsample_triton as upt  # noqa: E402


def _sig(fn, types: dict[str, str], constexprs: dict[str, object]) -> dict[str, str]:
    """Full signature: every non-constexpr argument typed from ``types`` (default i32)."""
    return {name: ("constexpr" if name in constexprs else types.get(name, "i32")) for name in fn.arg_names}


def specialise(fn, types: dict[str, str], constexprs: dict, values: dict[str, int]) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) as Triton's launcher specialises them for these argument values: an
    int equal to 1 becomes a constexpr, pointers (fresh allocations) and ints divisible by 16 get
    ``tt.divisibility`` 16 (what lets the compiler vectorise)."""
    constexprs = dict(constexprs)
    constexprs.update({k: 1 for k, v in values.items() if v == 1})
    sig = _sig(fn, types, constexprs)
    attrs = {}
    for i, name in enumerate(fn.arg_names):
        if sig[name].startswith("*") or (sig[name] == "i32" and values.get(name, 0) % 16 == 0 and name in values):
            attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, constexprs, attrs


def kernel_specs(channels: int, depth: int, logits_dtype: str = "fp32", image: tuple[int, int, int] = (1, 512, 1024)):
    """(label, jit fn, signature, constexprs, attrs, launch options) of every loss / argmax kernel at ``channels`` /
    ``depth``, specialised as the launcher does for contiguous (B, C, H, W) logits of ``image`` = (B, H, W)."""
    nb, nh, nw = image
    hw = nh * nw
    block_p, options = _tu.pixel_config(hw, depth)
    d_pad = triton.next_power_of_2(depth)
    plane = dict(HW=hw, C=channels, W=nw, s_zb=channels * hw, s_zc=hw, s_zh=nw, s_zw=1)
    ptr32 = {n: "*i32" for n in ("perm_ptr", "size_ptr", "depth_ptr", "path_ptr")}
    ftm_types = {"z_ptr": f"*{logits_dtype}", "t_ptr": "*i64", "gout_ptr": "*fp32", "loss_ptr": "*fp32",
                 "grad_ptr": f"*{logits_dtype}", "count_ptr": "*i64", "gamma": "fp32", **ptr32}
    specs = []
    for label, red, loss, grad, per_pixel, partial in (("ftm fwd+grad (mean)", 2, True, True, False, False),
                                                      ("ftm fwd only (none)", 0, True, False, False, False),
                                                      ("ftm bwd (none)", 0, False, True, True, False),
                                                      ("ftm fwd+grad (mean, partial labels)", 2, True, True, False,
                                                       True)):
        cx = dict(DEPTH=depth, D_PAD=d_pad, S_PAD=triton.next_power_of_2(max(depth - 1, 1)), BLOCK_P=block_p,
                  PLANE=True, GAMMA2=True, REDUCTION=red,
                  COMPUTE_LOSS=loss, COMPUTE_GRAD=grad, GRAD_PER_PIXEL=per_pixel, FP64=False, PARTIAL=partial)
        values = dict(plane, s_tb=hw, s_th=nw, s_tw=1, s_ob=hw if per_pixel else 0, s_oh=nw, s_ow=1,
                      s_gb=channels * hw if grad else 0, s_gc=hw if grad else 0, s_gh=nw, s_gw=1, ignore_index=255)
        specs.append((f"{label} C={channels} {logits_dtype}", ftm._ftm_kernel,
                      *specialise(ftm._ftm_kernel, ftm_types, cx, values), options))
    cx = dict(DEPTH=depth, S_PAD=triton.next_power_of_2(max(depth - 1, 1)), BLOCK_P=block_p, PLANE=True, FP64=False)
    pam_types = {"z_ptr": f"*{logits_dtype}", "perm_ptr": "*i32", "size_ptr": "*i32", "depth_ptr": "*i32",
                 "leaf_out_ptr": "*i64"}
    specs.append((f"path_argmax C={channels} {logits_dtype}", pam._path_argmax_kernel,
                  *specialise(pam._path_argmax_kernel, pam_types, cx, plane), options))
    return specs + upsampled_specs(channels, depth, logits_dtype, image)


def upsampled_specs(channels: int, depth: int, logits_dtype: str, image: tuple[int, int, int]):
    """The fused-upsampling kernels (hssn_kernels.upsample_triton) at 1/4 of ``image``'s resolution."""
    nb, nh, nw = image
    h, w = nh // 4, nw // 4
    plan = upt._Plan(h, w, nh, nw, False, False, "cpu", upt.columns_per_thread(nw, w, depth))
    ptr32 = {n: "*i32" for n in ("perm_ptr", "size_ptr", "depth_ptr", "path_ptr", "y_start_ptr", "y_count_ptr",
                                 "x_start_ptr", "x_count_ptr", "col_chunks_ptr", "i0_y_ptr", "i0_x_ptr")}
    types = {"z_ptr": f"*{logits_dtype}", "t_ptr": "*i64", "gout_ptr": "*fp32", "loss_ptr": "*fp32",
             "part_ptr": "*fp32", "count_ptr": "*i64", "lam_y_ptr": "*fp32", "lam_x_ptr": "*fp32", "gamma": "fp32",
             "grad_ptr": f"*{logits_dtype}", "leaf_ptr": "*i64", "viol_ptr": "*i8", "n": "i64",
             **ptr32}
    values = dict(C=channels, h=h, w=w, H=nh, W=nw, s_zb=channels * h * w, s_zc=h * w, s_zh=w, s_zw=1,
                  s_tb=nh * nw, s_th=nw, s_tw=1, s_ob=nh * nw, s_oh=nw, s_ow=1, ignore_index=255)
    specs = []
    for label, red, loss, grad, per_pixel in (("upsampled ftm fwd+grad (mean)", 2, True, True, False),
                                              ("upsampled ftm bwd (none)", 0, False, True, True)):
        cx = dict(DEPTH=depth, D_PAD=triton.next_power_of_2(depth), S_PAD=triton.next_power_of_2(max(depth - 1, 1)),
                  BJ=plan.bj, KX=plan.kx, GAMMA2=True, REDUCTION=red, COMPUTE_LOSS=loss,
                  COMPUTE_GRAD=grad, GRAD_PER_PIXEL=per_pixel, FP64=False, PARTIAL=False)
        specs.append((f"{label} C={channels} {logits_dtype}", upt._upsampled_ftm_kernel,
                      *specialise(upt._upsampled_ftm_kernel, types, cx, values), upt.loss_config(depth, per_pixel)))
    cx = dict(BLOCK=upt.FOLD_BLOCK)
    specs.append((f"upsampled fold {logits_dtype}", upt._fold_kernel,
                  *specialise(upt._fold_kernel, types, cx, dict(w=w)), {"num_warps": 4}))
    block_p, options = _tu.pixel_config(nh * nw, depth, _tu.UPSAMPLED_MAX_REGISTERS)
    cx = dict(S_PAD=triton.next_power_of_2(max(depth - 1, 1)), BLOCK_P=block_p, FP64=False, VIOL=True)
    specs.append((f"upsampled argmax+violations C={channels} {logits_dtype}", upt._upsampled_argmax_kernel,
                  *specialise(upt._upsampled_argmax_kernel, types, cx,
                              {k: v for k, v in dict(values, HW=nh * nw).items()
                               if k in upt._upsampled_argmax_kernel.arg_names}), options))
    return specs


def triplet_specs(embed: int = 256) -> list[tuple[str, object, dict, dict, int]]:
    cx = dict(MODE=0, BLOCK=tt.SAMPLE_BLOCK)
    types = {"t_ptr": "*i64", "csum_ptr": "*i32", "leaf_index_ptr": "*i32", "dist_ptr": "*i32",
             "out_ptr": "*i64", "count_ptr": "*i64", "seed": "i64"}
    four = {"num_warps": 4}
    specs = [("sample_triplets", tt._sample_kernel, _sig(tt._sample_kernel, types, cx), cx, {},
              {"num_warps": tt.SAMPLE_WARPS})]
    block_e = tt._block_e(embed)
    cx = dict(HIER_MARGIN=True, DIST=0, COMPUTE_GRAD=True, BLOCK_E=block_e)
    types = {"e_ptr": "*fp32", "t_ptr": "*i64", "trip_ptr": "*i64", "count_ptr": "*i64", "leaf_index_ptr": "*i32",
             "dist_ptr": "*i32", "hinge_ptr": "*fp32", "part_ptr": "*fp32", "margin_eps": "fp32",
             "margin_scale": "fp32", "inv_two_height": "fp32", "eps": "fp32"}
    specs.append((f"triplet fwd+grad E={embed}", tt._triplet_kernel, _sig(tt._triplet_kernel, types, cx), cx, {}, four))
    cx = dict(BLOCK_E=block_e)
    types = {"part_ptr": "*fp32", "key_ptr": "*i64", "order_ptr": "*i64", "run_end_ptr": "*i64", "grad_ptr": "*fp32"}
    specs.append((f"triplet grad gather E={embed}", tt._gather_grad_kernel,
                  _sig(tt._gather_grad_kernel, types, cx), cx, {}, four))
    return specs


def _cuobjdump() -> str:
    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")


def compile_for(fn, signature: dict, constexprs: dict, attrs: dict, options: dict, arch: int):
    """The compiled kernel (``.asm["cubin"]``, ``.asm["ptx"]``, ``.metadata``) for sm_``arch``, no GPU needed;
    ``options`` = the launch options (num_warps, maxnreg)."""
    return triton.compile(ASTSource(fn, signature=signature, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", arch, 32), options=options)


def cubin_resources(cubin: bytes) -> dict:
    """{REG, STACK, SHARED} of a one-kernel cubin, from ``cuobjdump --dump-resource-usage``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        text = subprocess.run([_cuobjdump(), "--dump-resource-usage", str(path)], capture_output=True,
                              text=True, check=True).stdout
    return {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED):(\d+)", text)}


def resources(fn, signature: dict, constexprs: dict, attrs: dict, options: dict, arch: int) -> dict:
    """Compile for sm_``arch`` and return {regs, stack, shared, local_decls_in_ptx}."""
    kernel = compile_for(fn, signature, constexprs, attrs, options, arch)
    found = cubin_resources(kernel.asm["cubin"])
    spill_lines = re.findall(r"\.local\b", kernel.asm["ptx"])
    return {"regs": found.get("REG", -1), "stack": found.get("STACK", -1),
            "shared": int(kernel.metadata.shared), "local_decls_in_ptx": len(spill_lines)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80])
    parser.add_argument("--channels", type=int, nargs="+", default=[26, 166])
    parser.add_argument("--depth", type=int, nargs="+", default=[3, 6, 16])
    parser.add_argument("--dtype", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    specs = [(f"{label} D={depth}", *rest) for depth in args.depth for c in args.channels for d in args.dtype
             for label, *rest in kernel_specs(c, depth, d)] + triplet_specs()
    rows = []
    print(f"{'kernel':40s} {'arch':>5s} {'warps':>5s} {'regs':>5s} {'stack':>6s} {'smem':>6s}")
    for arch in args.arch:
        for label, fn, sig, cx, attrs, options in specs:
            res = resources(fn, sig, cx, attrs, options, arch)
            warps = options["num_warps"]
            rows.append({"kernel": label, "arch": arch, "num_warps": warps, **res})
            print(f"{label:40s} {arch:5d} {warps:5d} {res['regs']:5d} {res['stack']:6d} {res['shared']:6d}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 1 if any(r["stack"] != 0 for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
