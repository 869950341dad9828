"""What the fused loss ops of every backend share, each written once: their autograd (:func:`register_fused_loss`
for the native ``hssn::ftm_forward``, the Triton ``hssn::triton_ftm_forward`` and the fused-upsampling
``hssn::upsampled_ftm``, the same schema up to their tables; :func:`register_triplet_loss` for
``hssn::triplet_forward`` and ``hssn::triton_triplet_forward``), their fake kernels (:func:`fake_fused_loss`,
:func:`fake_triplet_loss`), and the backend functions built on them (:func:`fused_loss`, :func:`triplet_loss`).

Schema of all three: ``(logits, target, *tables, gamma, ignore_index, reduction, compute_grad, partial) ->
(loss, grad)`` (``tables``: tensors or settings that backward passes on unchanged; ``partial``: targets may be
inner nodes, README "Partial labels");
``grad`` is d loss / d logits when the forward computed it (reduction sum / mean), else empty. Backward:

* gradient fused into the forward: only that tensor is saved (never the logits); backward returns it
  times ``grad_output`` (one new tensor of its size: scaling in place would break ``retain_graph=True``);
* otherwise the per-pixel weights (``grad_output``, / the valid count for mean) go to the op's backward
  kernel ``kernel_backward(weights, logits, target, *tables, gamma, ignore_index, partial)``.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import _checks
from ._checks import no_double_backward


def loss_dtype(logits: torch.Tensor) -> torch.dtype:
    """The dtype of a loss and of its per-pixel weights: float64 for float64 logits, else float32."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def valid_count(target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """0-d int64 count of non-ignored pixels, at least 1 (the divisor of ``reduction="mean"``), on the device."""
    return (target != ignore_index).sum().clamp(min=1)


def per_pixel_weights(grad_loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, ignore_index: int,
                      reduction: int) -> torch.Tensor:
    """The backward's per-pixel weights of a loss with ``reduction`` (0 none, 1 sum, 2 mean), target-shaped,
    in the loss dtype; no host sync."""
    weight = grad_loss.to(loss_dtype(logits))
    if reduction != 0:
        if reduction == 2:
            weight = weight / valid_count(target, ignore_index)
        weight = weight.expand(target.shape)
    return weight


def scaled_gradient(ctx, grad: torch.Tensor, grad_loss: torch.Tensor) -> torch.Tensor:
    """``grad * grad_loss``. On CPU, when ``grad_loss`` is 1 (the usual ``loss.backward()``), the saved
    gradient itself the first time (no pass over a logits-sized tensor); a retained graph's later backward
    gets a copy, so no two results share memory. Traced (compile, fake or functional tensors): the product."""
    if (type(grad_loss) is torch.Tensor and grad_loss.device.type == "cpu" and grad_loss.numel() == 1
            and not getattr(ctx, "handed_out", False)
            and not (torch.compiler.is_compiling() or torch.jit.is_tracing()) and grad_loss.item() == 1):
        ctx.handed_out = True
        return grad
    return grad * grad_loss.to(grad.dtype)


def fake_fused_loss(logits: torch.Tensor, pixel_shape: tuple[int, ...], reduction: int, compute_grad: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The fake (shape-only) outputs of a fused loss op (schema above): the loss (``pixel_shape`` for reduction
    none, else 0-d; :func:`loss_dtype`) and the gradient (logits-shaped when computed, else empty)."""
    torch._check(reduction in (0, 1, 2), lambda: f"reduction index must be 0, 1 or 2, got {reduction}")
    loss = logits.new_empty(tuple(pixel_shape) if reduction == 0 else (), dtype=loss_dtype(logits))
    grad = logits.new_empty(logits.shape) if compute_grad and reduction != 0 else logits.new_empty(0)
    return loss, grad


def fake_triplet_loss(embeddings: torch.Tensor, compute_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The fake outputs of a triplet loss op: the 0-d loss (:func:`loss_dtype`) and the embeddings-shaped
    gradient when computed, else empty."""
    grad = embeddings.new_empty(embeddings.shape) if compute_grad else embeddings.new_empty(0)
    return embeddings.new_empty((), dtype=loss_dtype(embeddings)), grad


def fused_loss(kernel: Callable, logits: torch.Tensor, target: torch.Tensor, hierarchy, gamma: float = 2.0,
               ignore_index: int = 255, reduction: str = "mean", partial: bool = False) -> torch.Tensor:
    """The ``focal_tree_min_loss`` backend function on a fused kernel ``kernel(logits, target, hierarchy, gamma,
    ignore_index, reduction_index, compute_grad, partial) -> (loss, grad)``: the gradient computed in the forward
    when autograd will ask for it (reduction sum / mean); the loss in the logits' dtype."""
    red = _checks.REDUCTIONS.index(reduction)
    compute_grad = torch.is_grad_enabled() and logits.requires_grad and red != 0
    loss, _ = kernel(logits, target, hierarchy, float(gamma), int(ignore_index), red, compute_grad, bool(partial))
    return loss.to(logits.dtype)


def eager_autograd(qualname: str, setup_context: Callable, backward: Callable) -> Callable:
    """``torch.library.register_autograd(qualname, backward, setup_context=...)``, and the op's eager entry: a
    callable with the op's arguments that, with grad mode on outside ``torch.compile`` / tracing, runs the op
    as a ``torch.autograd.Function`` with the same ``setup_context`` and ``backward``, else the op itself.
    torch.library's autograd wrapper costs about 0.13 ms per call on CPU (it rebuilds the schema's argument
    list in Python, measured with torch 2.14); the Function about 0.01 ms. Traced code sees the registered op."""
    torch.library.register_autograd(qualname, backward, setup_context=setup_context)
    namespace, name = qualname.split("::")
    op = getattr(getattr(torch.ops, namespace), name)

    class Eager(torch.autograd.Function):  # ctx-style forward: no per-call signature binding
        @staticmethod
        def forward(ctx, *args):
            with torch._C._AutoDispatchBelowAutograd():  # the op's kernel itself, as torch.library's wrapper
                output = op(*args)
            setup_context(ctx, args, output)
            return output

    Eager.backward = staticmethod(backward)

    def call(*args):
        if torch.is_grad_enabled() and not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
            return Eager.apply(*args)
        return op(*args)

    return call


def register_fused_loss(qualname: str, kernel_backward: Callable) -> Callable:
    """Register the autograd of ``qualname`` (schema above) with ``kernel_backward`` for per-pixel weights;
    returns the op's eager entry (:func:`eager_autograd`)."""

    def setup_context(ctx, inputs, output):
        logits, target = inputs[:2]
        tables, (gamma, ignore_index, reduction, _, partial) = inputs[2:-5], inputs[-5:]
        grad = output[1]
        ctx.fused = reduction != 0 and grad.numel() == logits.numel() and logits.numel() > 0
        ctx.save_for_backward(*((grad,) if ctx.fused else (logits, target)))
        ctx.tables = () if ctx.fused else tables  # constant per-tree tables and settings, never modified
        ctx.gamma, ctx.ignore_index, ctx.reduction, ctx.partial = gamma, ignore_index, reduction, partial
        ctx.num_inputs = len(inputs)
        ctx.set_materialize_grads(False)  # no logits-sized zero tensor for the unused gradient output

    def backward(ctx, grad_loss, _grad_of_grad):
        no_double_backward(qualname)
        nones = (None,) * (ctx.num_inputs - 1)
        if grad_loss is None:  # only the (non-differentiable) gradient output was used
            return (None,) + nones
        if ctx.fused:
            (grad,) = ctx.saved_tensors
            return (scaled_gradient(ctx, grad, grad_loss),) + nones
        logits, target = ctx.saved_tensors
        weight = per_pixel_weights(grad_loss, logits, target, ctx.ignore_index, ctx.reduction)
        out = kernel_backward(weight, logits, target, *ctx.tables, ctx.gamma, ctx.ignore_index, ctx.partial)
        return (out,) + nones

    return eager_autograd(qualname, setup_context, backward)


def register_triplet_loss(qualname: str, forward: Callable) -> Callable:
    """Register the autograd of the triplet op ``qualname``: ``(embeddings, target, triplets, count, leaf_index,
    tree_distance, margin_eps, margin_scale, height, hierarchy_margin, distance, compute_grad) -> (loss,
    grad)``. Backward scales the gradient the forward computed, or runs ``forward`` with ``compute_grad``.
    Returns the op's eager entry (:func:`eager_autograd`)."""

    def setup_context(ctx, inputs, output):
        ctx.args = inputs[6:11]
        ctx.save_for_backward(*inputs[:6], output[1])
        ctx.set_materialize_grads(False)

    def backward(ctx, grad_loss, _grad_of_grad):
        no_double_backward(qualname)
        if grad_loss is None:
            return (None,) * 12
        embeddings, target, triplets, count, leaf_index, tree_distance, grad = ctx.saved_tensors
        if grad.numel() != embeddings.numel():  # the forward ran without the gradient
            grad = forward(embeddings, target, triplets, count, leaf_index, tree_distance, *ctx.args, True)[1]
        return (scaled_gradient(ctx, grad, grad_loss),) + (None,) * 11

    return eager_autograd(qualname, setup_context, backward)


def triplet_loss(sample: Callable, forward: Callable, embeddings: torch.Tensor, target: torch.Tensor, hierarchy,
                 num_triplets: int, margin_eps: float, margin_scale: float, hierarchy_margin: bool, distance: str,
                 seed: int, ignore_index: int, mode: str) -> torch.Tensor:
    """The ``tree_triplet_loss`` backend function on a backend's sampler (``sample_triplets_padded``
    interface) and triplet op ``forward``: the mean hinge over the sampled triplets (0 if none), in the
    embeddings' dtype."""
    table, count = sample(target, hierarchy, num_triplets, seed, ignore_index, mode)
    tabs = hierarchy.tables(embeddings.device)
    compute_grad = torch.is_grad_enabled() and embeddings.requires_grad
    loss, _ = forward(embeddings, target, table, count, tabs.leaf_index, tabs.tree_distance, float(margin_eps),
                      float(margin_scale), hierarchy.height, bool(hierarchy_margin), _checks.DISTANCES.index(distance),
                      compute_grad)
    return loss.to(embeddings.dtype)
