"""Global context pooling + fusion, the heavy part of a GC block.

GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond,
https://arxiv.org/abs/1904.11492; same arithmetic as mmcv's ContextBlock.

Two paths behind one signature, chosen by
:func:`gcnet_mm.ops.dispatch.fused_kernels` (see there):

* fused (``attention_pool.py``): attention pooling with additive fusion;
  fewer passes over the feature map than mmcv's block, and after a batch
  norm no saved copy of ``x`` (``norm_source.py``).
* reference (:func:`reference_global_context`): plain differentiable ops,
  written with ops tracing and export know (``matmul``, not a 1x1 conv, for
  the attention logits); the transforms run as the modules they are.
"""
import functools
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .attention_pool import (GradLink, as_matrix, attention_pool, depends_on,
                             fuse_add)
from .dispatch import fused_kernels
from .norm_source import NormTracker
from .threads import one_thread

__all__ = ['global_context', 'reference_global_context']

Transform = Callable[[Tensor], Tensor]


def global_context(x: Tensor,
                   mask_weight: Optional[Tensor],
                   mask_bias: Optional[Tensor],
                   add_transform: Optional[Transform] = None,
                   mul_transform: Optional[Transform] = None,
                   *,
                   norm_tracker: Optional[NormTracker] = None) -> Tensor:
    """``out = x * sigmoid(mul_transform(ctx)) + add_transform(ctx)``.

    Args:
        x: features, (B, C, H, W), any memory layout.
        mask_weight: weight of the 1x1 conv giving attention logits,
            (1, C, 1, 1); ``None`` for average pooling.
        mask_bias: its bias, (1,), or ``None``.
        add_transform / mul_transform: maps the context (B, C, 1, 1) to a
            (B, C, 1, 1) term; ``None`` skips that fusion.
        norm_tracker: lets the fused path keep a batch norm's input instead
            of ``x`` for the backward pass when ``x`` is that batch norm's
            output (``ContextBlock`` passes its own).

    Returns:
        (B, C, H, W), in the memory layout of ``x``.
    """
    kernels = fused_kernels(x, mask_weight, add_transform, mul_transform)
    if kernels is None:
        return reference_global_context(x, mask_weight, mask_bias,
                                        add_transform, mul_transform)
    return _fused_global_context(kernels, x, mask_weight, mask_bias,
                                 add_transform, norm_tracker)


def reference_global_context(x: Tensor,
                             mask_weight: Optional[Tensor],
                             mask_bias: Optional[Tensor],
                             add_transform: Optional[Transform] = None,
                             mul_transform: Optional[Transform] = None,
                             ) -> Tensor:
    """:func:`global_context` in plain differentiable ops (mmcv's
    arithmetic)."""
    b, c, h, w = x.shape
    if mask_weight is None:
        context = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    else:
        x_mat = x.reshape(b, c, h * w)  # (B, C, HW); a view for usual layouts
        # A batched product with the weight expanded over B: matmul would
        # fold (1, 1, C) @ (B, C, HW) into one product with a transposed
        # copy of x, which autograd then keeps.
        w = mask_weight.reshape(1, 1, c).to(x.dtype).expand(b, 1, c)
        logits = torch.matmul(w, x_mat)  # (B, 1, HW)
        if mask_bias is not None:
            logits = logits + mask_bias.to(logits.dtype)
        acc = torch.promote_types(logits.dtype, torch.float32)
        attn = logits.to(acc).softmax(dim=2).to(x_mat.dtype)  # (B, 1, HW)
        context = torch.matmul(x_mat, attn.transpose(1, 2))  # (B, C, 1)
        context = context.view(b, c, 1, 1)
    out = x
    if mul_transform is not None:
        out = out * torch.sigmoid(mul_transform(context))
    if add_transform is not None:
        out = out + add_transform(context)
    return out


def _fused_global_context(kernels, x: Tensor, mask_weight: Tensor,
                          mask_bias: Optional[Tensor],
                          add_transform: Transform,
                          norm_tracker: Optional[NormTracker]) -> Tensor:
    b, c = x.shape[:2]
    source = None
    if norm_tracker is not None and (x.requires_grad
                                     or mask_weight.requires_grad):
        source = norm_tracker.source(x)
        if source is not None and not (
                kernels.accepts(source.input)
                and as_matrix(source.input)[0] is not None):
            source = None
    if as_matrix(x)[0] is None:
        x = x.contiguous()  # one copy; the pooling reads x twice
    link = GradLink()
    context = attention_pool(x, mask_weight, mask_bias, link, kernels, source)
    t = flat_transform(add_transform)(context.view(b, c, 1, 1))  # (B, C, 1, 1)
    if x.requires_grad and not depends_on(t, context.grad_fn):
        return x + t  # dL/dx would never reach the pooling node
    return fuse_add(x, t, link)


def flat_transform(branch: Transform) -> Transform:
    """``branch`` as one callable on the (B, C, 1, 1) context.

    A 1x1 conv and a ``LayerNorm([P, 1, 1])`` on a (B, C, 1, 1) tensor are a
    linear layer and a ``LayerNorm(P)`` on its (B, C) view; run that way, with
    the same parameters viewed as matrices and vectors, the transform skips
    the fixed cost of a convolution forward and backward.  On the CPU the
    flat form runs, forward and backward, on one thread (:class:`_OneThread`).
    Other branches run as they are.  Only the fused path flattens; the
    reference path (tracing, export, ``set_fused(False)``) calls every layer
    as a module, so hooks on the layers see them there.
    """
    if not isinstance(branch, nn.Sequential) or not all(
            map(_has_flat_form, branch)):
        return branch
    return functools.partial(_run_flat_serial, branch)


def _has_flat_form(layer: nn.Module) -> bool:
    if type(layer) is nn.Conv2d:
        return (layer.kernel_size == (1, 1) and layer.stride == (1, 1)
                and layer.padding == (0, 0) and layer.dilation == (1, 1)
                and layer.groups == 1)
    if type(layer) is nn.LayerNorm:
        return tuple(layer.normalized_shape[1:]) == (1, 1)
    return type(layer) is nn.ReLU


def _run_flat(branch: nn.Sequential, context: Tensor) -> Tensor:
    b = context.shape[0]
    z = context.reshape(b, -1)  # (B, C)
    for layer in branch:
        if type(layer) is nn.Conv2d:
            weight = layer.weight.view(layer.out_channels, layer.in_channels)
            z = F.linear(z, weight, layer.bias)  # (B, out_channels)
        elif type(layer) is nn.LayerNorm:
            shape = layer.normalized_shape[:1]
            z = F.layer_norm(
                z, shape,
                None if layer.weight is None else layer.weight.view(shape),
                None if layer.bias is None else layer.bias.view(shape),
                layer.eps)
        else:
            z = F.relu(z, inplace=layer.inplace)
    return z.view(b, -1, 1, 1)  # (B, C, 1, 1)


def _run_flat_serial(branch: nn.Sequential, context: Tensor) -> Tensor:
    """:func:`_run_flat`, forward and backward, on one thread on the CPU."""
    if context.device.type != 'cpu' or torch.get_num_threads() == 1:
        return _run_flat(branch, context)
    if not torch.is_grad_enabled():
        with one_thread(context.device):
            return _run_flat(branch, context)
    return _OneThread.apply(branch, context, *branch.parameters())


class _OneThread(torch.autograd.Function):
    """``_run_flat(branch, context)`` with its own small graph, whose forward
    and backward run on one thread; the parameters are inputs, so that
    autograd accumulates their gradients as usual."""

    @staticmethod
    def forward(ctx, branch: nn.Sequential, context: Tensor,
                *params: Tensor) -> Tensor:
        with torch.enable_grad(), one_thread(context.device):
            inner = context.detach().requires_grad_(context.requires_grad)
            out = _run_flat(branch, inner)
        ctx.graph = (inner, out, params)
        return out.detach()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        inner, out, params = ctx.graph
        wanted = [t for t, need in zip((inner, ) + params,
                                       ctx.needs_input_grad[1:]) if need]
        if not wanted or out.grad_fn is None:
            return (None, ) * (len(params) + 2)
        with one_thread(grad.device):
            grads = iter(torch.autograd.grad(out, wanted, grad,
                                             retain_graph=True,
                                             allow_unused=True))
        return (None, ) + tuple(
            next(grads) if need else None
            for need in ctx.needs_input_grad[1:])
