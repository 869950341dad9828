"""``csrc/kernels/common.h: ftm_walk, path_walk`` (the per-pixel walks the CUDA kernels run, over the
hierarchy's DFS tables) compiled as plain C++ on the host, in float64 and in float32 (the CUDA kernels' type:
its log1p series / log2 branch; on the host with libm's exp and log2 where the GPU runs their MUFU
approximations), and checked against the reference: loss and gradient, leaf and inner-node targets, NaN
logits, path inference; the DFS tables against the tree (ranges = descendants, depths, positions)."""
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import oracle as ref
from trees import cityscapes_like, random_tree

REPO = Path(__file__).resolve().parents[1]
HARNESS = r"""
#include <cstdio>
#include <vector>
#include "kernels/common.h"

// stdin: C D P gamma partial, then ancestors[C*D], dfs[4*C] (HierarchyTables.dfs), then per pixel: target, z[C].
// stdout per pixel: loss, the C gradient values, path_walk's leaf for the pixel alone (ftm_walk one pixel per
// call); then one line with the loss and gradient ftm_walk gives 4 pixels at a time (the CUDA kernel's
// kFtmPixels; pixels past P have no target) and one with the leaves path_walk gives 8 at a time
// (kArgmaxPixels). T: -DHSSN_T=float|double.
using T = HSSN_T;
template <int kPix>
void walk(int C, int D, const std::vector<int32_t>& anc, const std::vector<int32_t>& dfs, const std::vector<T>& zs,
          const std::vector<int>& ts, int p0, double gamma, bool partial, T* loss, T* g) {
  const int32_t *perm = dfs.data(), *size = perm + C, *depth = perm + 2 * C, *pos = perm + 3 * C;
  const int P = static_cast<int>(ts.size());
  int y_pos[kPix];
  const int32_t* rows[kPix];
  for (int k = 0; k < kPix; ++k) {
    const bool in = p0 + k < P;
    y_pos[k] = in ? pos[ts[p0 + k]] : -1;
    rows[k] = anc.data() + (in ? ts[p0 + k] : 0) * D;
  }
  auto z_at = [&](int c, int k) { return zs[static_cast<size_t>(p0 + k < P ? p0 + k : p0) * C + c]; };
  auto store = [&](int c, int k, T v) { g[k * C + c] = v; };
  const T gm = static_cast<T>(gamma);
  if (gamma == 2.0) hssn::ftm_walk<T, hssn::kMaxDepth, kPix, 2>(C, perm, size, depth, y_pos, rows, D, partial, z_at, store, gm, true, loss);
  else if (gamma == 0.0) hssn::ftm_walk<T, hssn::kMaxDepth, kPix, 0>(C, perm, size, depth, y_pos, rows, D, partial, z_at, store, gm, true, loss);
  else hssn::ftm_walk<T, hssn::kMaxDepth, kPix, 1>(C, perm, size, depth, y_pos, rows, D, partial, z_at, store, gm, true, loss);
}

int main() {
  int C, D, P, partial;
  double gamma;
  if (std::scanf("%d %d %d %lf %d", &C, &D, &P, &gamma, &partial) != 5) return 1;
  std::vector<int32_t> anc(C * D), dfs(4 * C);
  for (auto& x : anc) std::scanf("%d", &x);
  for (auto& x : dfs) std::scanf("%d", &x);
  const int32_t *perm = dfs.data(), *size = perm + C, *depth = perm + 2 * C;
  std::vector<T> zs(static_cast<size_t>(P) * C), g(4 * C);
  std::vector<int> ts(P);
  for (int p = 0; p < P; ++p) {
    std::scanf("%d", &ts[p]);
    for (int c = 0; c < C; ++c) {
      double zc;
      std::scanf("%lf", &zc);
      zs[static_cast<size_t>(p) * C + c] = static_cast<T>(zc);
    }
  }
  T loss[4];
  for (int p = 0; p < P; ++p) {
    for (int c = 0; c < C; ++c) g[c] = T(-7);  // poisoned: every entry is stored
    walk<1>(C, D, anc, dfs, zs, ts, p, gamma, partial != 0, loss, g.data());
    std::printf("%.17g", static_cast<double>(loss[0]));
    for (int c = 0; c < C; ++c) std::printf(" %.17g", static_cast<double>(g[c]));
    int leaf;
    const T* z = zs.data() + static_cast<size_t>(p) * C;
    hssn::path_walk<T, hssn::kMaxDepth, 1>(C, perm, size, depth, [&](int c, int) { return z[c]; }, &leaf);
    std::printf(" %d\n", leaf);
  }
  for (int p0 = 0; p0 < P; p0 += 4) {
    for (auto& x : g) x = T(-7);
    walk<4>(C, D, anc, dfs, zs, ts, p0, gamma, partial != 0, loss, g.data());
    for (int k = 0; k < 4 && p0 + k < P; ++k) {
      std::printf("%s%.17g", p0 + k ? " " : "", static_cast<double>(loss[k]));
      for (int c = 0; c < C; ++c) std::printf(" %.17g", static_cast<double>(g[k * C + c]));
    }
  }
  std::printf("\n");
  for (int p0 = 0; p0 < P; p0 += 8) {  // pixels past P repeat pixel p0
    int leaf[8];
    auto z8 = [&](int c, int k) { return zs[static_cast<size_t>(p0 + k < P ? p0 + k : p0) * C + c]; };
    hssn::path_walk<T, hssn::kMaxDepth, 8>(C, perm, size, depth, z8, leaf);
    for (int k = 0; k < 8 && p0 + k < P; ++k) std::printf("%s%d", p0 + k ? " " : "", leaf[k]);
  }
  std::printf("\n");
  return 0;
}
"""


TOL = {"double": 1e-12, "float": 2e-5}  # float: the series / log2 log1p (< 2^-17 relative) and fp32 sums


@pytest.fixture(scope="module", params=list(TOL))
def harness(request, tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    out = tmp_path_factory.mktemp("ftm_walk")
    (out / "harness.cpp").write_text(HARNESS)
    subprocess.run([cxx, "-O1", "-std=c++17", f"-DHSSN_T={request.param}", f"-I{REPO / 'csrc'}",
                    str(out / "harness.cpp"), "-o", str(out / "harness")], check=True, capture_output=True, text=True)
    return out / "harness", TOL[request.param]


def run(harness, h, z, t, gamma, partial):
    tabs = h.tables("cpu")
    lines = [f"{h.num_channels} {tabs.ancestors.shape[1]} {len(t)} {gamma!r} {int(partial)}",
             " ".join(map(str, tabs.ancestors.reshape(-1).tolist())), " ".join(map(str, tabs.dfs.reshape(-1).tolist()))]
    lines += [f"{int(t[i])} " + " ".join(repr(float(x)) for x in z[i]) for i in range(len(t))]
    proc = subprocess.run([str(harness)], input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    *lines, four, eight = proc.stdout.splitlines()
    rows = torch.tensor([[float(x) for x in line.split()] for line in lines], dtype=torch.float64)
    grouped = torch.tensor([float(x) for x in four.split()], dtype=torch.float64).view(len(t), -1)
    torch.testing.assert_close(grouped, rows[:, :-1], rtol=0, atol=0, equal_nan=True)  # 4 pixels per call
    assert torch.equal(torch.tensor([int(x) for x in eight.split()]), rows[:, -1].long())  # 8 pixels per call
    return rows[:, 0], rows[:, 1:-1], rows[:, -1].long()


@pytest.mark.parametrize("tree, partial", [("cityscapes", False), ("random", False), ("random", True)])
@pytest.mark.parametrize("gamma", [0.0, 2.0, 1.5])
def test_ftm_walk_matches_the_reference(harness, tree, partial, gamma):
    h = cityscapes_like() if tree == "cityscapes" else random_tree(9, max_depth=4, max_channels=30)
    gen = torch.Generator().manual_seed(int(gamma * 10) + partial)
    z = torch.randn(23, h.num_channels, generator=gen, dtype=torch.float64) * 3  # 23: last groups of 3 and 7
    nodes = list(range(h.num_channels)) if partial else list(h.leaves)
    t = torch.tensor(nodes)[torch.randint(len(nodes), (23,), generator=gen)]
    z[3, 1] = float("nan")  # a NaN logit: that pixel's loss is NaN
    binary, tol = harness
    if tol > 1e-12:
        z = z.float().double()  # what the float32 walk reads
    loss, grad, leaf = run(binary, h, z, t, gamma, partial)
    assert torch.equal(leaf, ref.hierarchical_argmax(z.to(torch.float32 if tol > 1e-12 else torch.float64), h))
    perm, size, depth, pos = h.tables("cpu").dfs.long()
    assert sorted(perm.tolist()) == list(range(h.num_channels)) and torch.equal(perm[pos], torch.arange(h.num_channels))
    for j, c in enumerate(perm.tolist()):  # Dsc(c) is the position range [j, j + size)
        assert sorted(perm[j:j + size[j]].tolist()) == sorted(h.descendants(c))
        assert depth[j] == h.level(c) - 1
    assert torch.isnan(loss[3])
    loss, grad, z, t = loss[4:], grad[4:], z[4:], t[4:]
    x = z.clone().requires_grad_()
    want = ref.focal_tree_min_loss(x, t, h, gamma, reduction="none", partial_labels=partial)
    want.sum().backward()
    torch.testing.assert_close(loss, want.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(grad, x.grad, rtol=tol, atol=tol)
    if partial:
        assert any(not h.is_leaf(int(c)) for c in t), "the case must hold inner-node targets"
