"""The CPU kernels' vector paths (csrc/cpu/tile_kernels.h): tile tails, layouts, target dtypes, and every
instruction-set build this machine can run (ATEN_CPU_CAPABILITY picks it, as for torch's own kernels)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import hssn_kernels as hk
from hssn_kernels import native
import oracle as R
from trees import cityscapes_like, random_tree

pytestmark = pytest.mark.skipif(native.unavailable_reason(torch.device("cpu")) is not None,
                                reason="native extension unavailable")

TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float64: 1e-9}


def _inputs(h, n, dtype, seed, partial=False, ignore_frac=0.2):
    """(n, C) logits and n labels: leaves (any node with ``partial``), some ignored."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, h.num_channels, generator=g) * 3).to(dtype)
    pool = torch.arange(h.num_channels) if partial else torch.tensor(h.leaves)
    t = pool[torch.randint(len(pool), (n,), generator=g)]
    t[torch.rand(n, generator=g) < ignore_frac] = 255
    return x, t


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-6)).item()


@pytest.mark.parametrize("n", [1, 7, 17, 33, 63, 65, 129])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("partial", [False, True])
def test_tile_tails(n, dtype, partial):
    """Pixel counts that leave a tile partly empty: loss, gradient and path argmax equal the reference."""
    h = random_tree(n + 3 * partial, max_channels=40)
    x, t = _inputs(h, n, dtype, seed=n, partial=partial)
    for tdt in (torch.int64, torch.int32, torch.uint8):
        xa, xb = x.clone().requires_grad_(True), x.double().requires_grad_(True)
        la = hk.focal_tree_min_loss(xa, t.to(tdt), h, reduction="sum", backend="cpu", partial_labels=partial)
        lb = R.focal_tree_min_loss(xb, t, h, reduction="sum", partial_labels=partial)
        assert _rel(la, lb) <= TOL[dtype]
        assert _rel(torch.autograd.grad(la, xa)[0], torch.autograd.grad(lb, xb)[0]) <= TOL[dtype]
    none = hk.focal_tree_min_loss(x, t, h, reduction="none", backend="cpu", partial_labels=partial)
    assert _rel(none, R.focal_tree_min_loss(x.double(), t, h, reduction="none", partial_labels=partial)) <= TOL[dtype]
    assert torch.equal(hk.hierarchical_argmax(x, h, backend="cpu"), R.hierarchical_argmax(x, h))


@pytest.mark.parametrize("seed", [3, 8, 21])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("gamma", [2.0, 0.0, 1.5])
def test_a_nan_logit_in_any_channel_gives_its_pixel_a_nan_loss(seed, dtype, partial, gamma):
    """One NaN logit per pixel, in every channel in turn (leaves, inner nodes, on and off the label's path,
    below an inner label): exactly the labelled pixels with a NaN get a NaN loss, as in the reference (the
    kernel relies on NaN reaching a term except below a partial label, which it flags)."""
    h = random_tree(seed, max_channels=30)
    c = h.num_channels
    x, t = _inputs(h, 3 * c, dtype, seed=seed, partial=partial)
    x[torch.arange(3 * c), torch.arange(3 * c) % c] = float("nan")
    got = hk.focal_tree_min_loss(x, t, h, gamma, reduction="none", backend="cpu", nan_policy="propagate",
                                 partial_labels=partial)
    want = R.focal_tree_min_loss(x.double(), t, h, gamma, reduction="none", nan_policy="propagate",
                                 partial_labels=partial)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isnan(), t != 255)


def test_channels_last_and_strided_views():
    """Non-contiguous logits take the gather path of a tile; results equal the contiguous call's."""
    h = random_tree(11, max_channels=30)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, h.num_channels, 9, 70, generator=g) * 3
    t = torch.tensor(h.leaves)[torch.randint(h.num_leaves, (2, 9, 70), generator=g)]
    for view, tv in ((x.contiguous(memory_format=torch.channels_last), t), (x[:, :, :, 1::3], t[:, :, 1::3])):
        xa = view.clone(memory_format=torch.preserve_format).requires_grad_(True)
        xb = view.contiguous().requires_grad_(True)
        la = hk.focal_tree_min_loss(xa, tv, h, backend="cpu")
        lb = hk.focal_tree_min_loss(xb, tv.contiguous(), h, backend="cpu")
        assert torch.equal(la, lb)
        assert torch.equal(torch.autograd.grad(la, xa)[0], torch.autograd.grad(lb, xb)[0])
        assert torch.equal(hk.hierarchical_argmax(view, h, backend="cpu"), hk.hierarchical_argmax(xb.detach(), h))



@pytest.mark.parametrize("cut", ["rows", "columns", "batch"])
def test_padded_views_take_runs_only_where_contiguous(cut):
    """A tile is read as one run only where its pixels are back to back: views padded after each image
    (rows cut), after each row (columns cut) or between images (every other image) give the contiguous
    call's loss, per-pixel losses, gradient under per-pixel weights, and path argmax, bit for bit."""
    h = random_tree(13, max_channels=30)
    g = torch.Generator().manual_seed(2)
    big = torch.randn(4, h.num_channels, 10, 70, generator=g) * 3
    tb = torch.tensor(h.leaves)[torch.randint(h.num_leaves, (4, 10, 70), generator=g)]
    tb[torch.rand(tb.shape, generator=g) < 0.1] = 255
    pick = {"rows": (slice(0, 2), slice(0, 9), slice(None)), "columns": (slice(0, 2), slice(None), slice(0, 67)),
            "batch": (slice(None, None, 2), slice(None), slice(None))}[cut]
    x, t = big[pick[0], :, pick[1], pick[2]], tb[pick]
    assert not x.is_contiguous() and not t.is_contiguous()
    w = torch.rand(t.shape, generator=g)
    for xv, tv in ((x, t), (x.contiguous(), t.contiguous())):
        xa = xv.detach().requires_grad_(True)
        per_pixel = hk.focal_tree_min_loss(xa, tv, h, reduction="none", backend="cpu")
        grad, = torch.autograd.grad((per_pixel * w).sum(), xa)
        mean = hk.focal_tree_min_loss(xa, tv, h, backend="cpu")
        out = (per_pixel, grad, mean, torch.autograd.grad(mean, xa)[0], hk.hierarchical_argmax(xv, h, backend="cpu"))
        if xv is x:
            strided = out
    for a, b in zip(strided, out):
        assert torch.equal(a, b)
    assert torch.equal(out[4], R.hierarchical_argmax(x.contiguous(), h))

def test_backward_hands_over_the_gradient_once():
    """The first backward takes the saved gradient without a copy; a retained graph's later backward gets its
    own tensor, a scaled loss the scaled gradient; changing the handed-over tensor in place before another
    backward of the retained graph is torch's in-place error, never a silently wrong gradient."""
    h = random_tree(3, max_channels=20)
    x, t = _inputs(h, 50, torch.float32, seed=3)
    xa = x.clone().requires_grad_(True)
    loss = hk.focal_tree_min_loss(xa, t, h, backend="cpu")
    g1 = torch.autograd.grad(loss, xa, retain_graph=True)[0]
    g2 = torch.autograd.grad(loss, xa, retain_graph=True)[0]
    assert torch.equal(g1, g2) and g1.data_ptr() != g2.data_ptr()
    assert torch.equal(torch.autograd.grad(0.5 * loss, xa, retain_graph=True)[0], 0.5 * g2)
    g1.mul_(7)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(loss, xa)
    xb = x.clone().requires_grad_(True)
    hk.focal_tree_min_loss(xb, t, h, backend="cpu").backward()  # .grad without a copy
    assert torch.equal(xb.grad, g2)


ISA_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    import hssn_kernels as hk
    sys.path.insert(0, sys.argv[1])
    import oracle as R
    from trees import random_tree
    out = {"isa": torch.ops.hssn.cpu_isa(), "errors": [], "argmax_equal": True}
    for seed in range(4):
        h = random_tree(seed, max_channels=60)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, h.num_channels, 5, 37, generator=g) * 3
        t = torch.tensor(h.leaves)[torch.randint(h.num_leaves, (2, 5, 37), generator=g)]
        xa, xb = x.clone().requires_grad_(True), x.double().requires_grad_(True)
        la, lb = hk.focal_tree_min_loss(xa, t, h, backend="cpu"), R.focal_tree_min_loss(xb, t, h)
        ga, gb = torch.autograd.grad(la, xa)[0].double(), torch.autograd.grad(lb, xb)[0]
        out["errors"].append(max(abs(la.item() - lb.item()) / abs(lb.item()),
                                 ((ga - gb).abs().max() / gb.abs().max()).item()))
        out["argmax_equal"] &= bool(torch.equal(hk.hierarchical_argmax(x, h, backend="cpu"),
                                                R.hierarchical_argmax(x, h)))
    print(json.dumps(out))
""")


def _isas():
    """The builds this CPU runs: torch's capability and every one below it."""
    order = ["default", "avx2", "avx512"]
    best = torch.backends.cpu.get_cpu_capability().lower()
    return order[:order.index(best) + 1] if best in order else ["default"]


@pytest.mark.parametrize("isa", ["default", "avx2", "avx512"])
def test_every_instruction_set(isa):
    if isa not in _isas():
        pytest.skip(f"this CPU does not run {isa} (torch reports {torch.backends.cpu.get_cpu_capability()})")
    env = dict(os.environ, ATEN_CPU_CAPABILITY=isa)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    res = subprocess.run([sys.executable, "-c", ISA_SCRIPT, tests_dir], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["isa"] == isa
    assert max(out["errors"]) <= 1e-4 and out["argmax_equal"], out


def test_instruction_set_code_stays_in_its_builds():
    """No AVX (VEX / EVEX) instruction outside the isa_avx2 / isa_avx512 builds: the shared code and the
    baseline build must run on any x86-64 CPU (a template instantiated under a target pragma would not)."""
    import platform
    import re
    import shutil

    from hssn_kernels import _C

    if platform.machine() != "x86_64" or shutil.which("objdump") is None:
        pytest.skip("needs x86-64 and objdump")
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", _C.__file__], capture_output=True,
                         text=True, check=True).stdout
    name, bad = "", {}
    for line in dis.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if head:
            name = head.group(1)
        elif re.search(r"\t(v[a-z0-9]+|k[a-z]+[bwdq])\s", line) and "isa_avx" not in name:
            bad[name] = bad.get(name, 0) + 1
    assert "isa_avx512" in dis and not bad, sorted(bad)[:10]


def _huge_kb(address: int) -> int:
    """AnonHugePages (kB) of the mapping of this process holding ``address`` (/proc/self/smaps)."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            start, end = (int(v, 16) for v in head.split("-"))
            if start <= address < end:
                for field in lines[i + 1:]:
                    if field.startswith("AnonHugePages:"):
                        return int(field.split()[1])
                    if "-" in field.split()[0] and ":" not in field.split()[0]:
                        break
    return 0


def test_the_gradient_is_advised_into_huge_pages():
    """The forward's gradient (a fresh allocation the kernel writes once) lies in transparent huge pages where
    Linux offers them on request (THP "madvise" or "always"): 2 MiB first-touch faults instead of 4 KiB ones."""
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not Path("/proc/self/smaps").exists() or not mode.exists() or "[never]" in mode.read_text():
        pytest.skip("no transparent huge pages here")
    h = cityscapes_like()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, h.num_channels, 256, 512, generator=g).requires_grad_(True)  # a 27 MB gradient
    t = torch.tensor(h.leaves)[torch.randint(h.num_leaves, (2, 256, 512), generator=g)]
    hk.focal_tree_min_loss(x, t, h, backend="cpu").backward()
    huge = 2 << 20
    inside = (x.grad.data_ptr() + huge - 1) // huge * huge  # the advice covers the buffer's whole 2 MiB pages
    assert _huge_kb(inside) >= 2048, "the gradient's mapping holds no huge page"
    if "[madvise]" in mode.read_text():  # huge pages only on request: a fresh buffer without the advice has none
        plain = torch.empty_like(x.grad).fill_(1.0)
        assert _huge_kb((plain.data_ptr() + huge - 1) // huge * huge) == 0
