"""The fused path of a GC block: attention pooling and the additive fusion as
two autograd Functions.

GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond,
https://arxiv.org/abs/1904.11492.  Same arithmetic as mmcv's ContextBlock
(``mmcv/cnn/bricks/context_block.py``) with ``pooling_type='att'`` and
``fusion_types=('channel_add',)``, in fewer passes over the feature map::

    forward   logits = w . x                                   (B, HW)
              a      = softmax(logits) in float32              (B, HW)
              ctx    = x @ a                                   (B, C)
              y      = x + t(ctx)
    backward  dt     = sum_p g
              da     = dctx . x                                (B, HW)
              dl     = a * (da - <a, da>)                      (B, HW)
              dw     = x @ dl                                  (C,)
              dx     = g + dctx a^T + w dl^T

The passes over x run in a kernel set chosen by
:func:`~gcnet_mm.ops.dispatch.fused_kernels` (CPU loops, Triton or PyTorch
ops; each module says how many streams over the feature map it takes).
Besides ``y`` and ``dx`` nothing of the size of x is allocated.

``_FuseAdd`` (``y = x + t``) returns no gradient for ``x``: it hands ``g`` to
``_AttentionPool`` through a shared ``GradLink``, whose backward always runs
after it (``ctx -> t -> y``) and folds ``g`` into its own ``dx``.  So ``x``
gets one gradient and autograd never adds two full-size tensors.  The conv
bias gets an exact zero gradient (softmax ignores a constant shift).

Saved for backward: ``x`` and the attention ``a`` (B, HW); or, when ``x`` is a
batch norm's output (``norm_source.py``), references to that batch norm's
input and the per-channel slope instead of ``x``: no new full-size storage.
"""
import contextlib
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .norm_source import NormSource

__all__ = ['GradLink', 'attention_pool', 'fuse_add', 'as_matrix',
           'depends_on']


class GradLink:
    """Carries dL/dy from ``_FuseAdd``'s backward to ``_AttentionPool``'s."""
    __slots__ = ('grad', )

    def __init__(self) -> None:
        self.grad: Optional[Tensor] = None


def as_matrix(x: Tensor) -> Tuple[Optional[Tensor], bool]:
    """View (B, C, H, W) as (B, C, HW) without copying, if its layout allows.

    Returns ``(view, channels_last)``; ``view`` is ``None`` for layouts that
    would need a copy.  Each (C, HW) matrix of the view has unit stride along
    HW (``channels_last=False``: contiguous, or a channel slice of it) or
    along C (``True``: channels_last), which BLAS and the kernels read in
    place.
    """
    b, c, h, w = x.shape
    n = h * w
    try:
        m = x.view(b, c, n)
    except RuntimeError:
        return None, False
    if m.stride(2) == 1 and (c == 1 or m.stride(1) >= n):
        return m, False
    if m.stride(1) == 1 and (n == 1 or m.stride(2) >= c):
        return m, True
    return None, False


def _no_autocast(device_type: str):
    if (torch.amp.is_autocast_available(device_type)
            and torch.is_autocast_enabled(device_type)):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class _AttentionPool(torch.autograd.Function):
    """``ctx[b, c] = sum_p x[b, c, p] softmax_p(w . x[b, :, p] + bias)``."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                link: GradLink, kernels, source: Optional[NormSource]):
        with _no_autocast(x.device.type):
            x_mat, channels_last = as_matrix(x)  # (B, C, HW)
            # The bias shifts every logit of a row alike: softmax ignores it.
            context, attn = kernels.forward(x_mat, weight)
        ctx.kernels = kernels
        ctx.channels_last = channels_last
        ctx.x_shape = x.shape
        ctx.link = link
        ctx.bias_meta = None if bias is None else (bias.shape, bias.dtype)
        # Always four tensors of the same kinds, so that activation
        # checkpointing recomputes a match whichever is saved.
        if source is None:
            ones = x.new_ones(x.shape[1],
                              dtype=torch.promote_types(x.dtype,
                                                        torch.float32))
            ctx.save_for_backward(x, attn, weight, ones)
        else:  # references to what batch norm saved already
            ctx.save_for_backward(source.input, attn, weight, source.alpha)
        return context

    @staticmethod
    @once_differentiable
    def backward(ctx, dcontext: Tensor):
        src, attn, weight, alpha = ctx.saved_tensors
        link = ctx.link
        g, link.grad = link.grad, None
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        with _no_autocast(src.device.type):
            b, c = ctx.x_shape[:2]
            src_mat, _ = as_matrix(src)
            dctx = dcontext.to(src.dtype)  # (B, C)
            # x = src * alpha + beta: beta drops out (see norm_source.py);
            # alpha is all ones where src is x itself.
            dctx_src = (dctx * alpha).to(src.dtype)
            dx, dw = ctx.kernels.backward(src_mat, attn, dctx_src, dctx,
                                          weight.reshape(c), g, need_x,
                                          need_w, ctx.channels_last)
            db = None
            if need_w:
                dw = (dw * alpha).to(weight.dtype).view_as(weight)
            if need_b and ctx.bias_meta is not None:
                db = attn.new_zeros(ctx.bias_meta[0], dtype=ctx.bias_meta[1])
            if need_x:
                dx = dx.view(ctx.x_shape)
        return dx, dw, db, None, None, None


class _FuseAdd(torch.autograd.Function):
    """``y = x + t``; dL/dx is left to the pooling node through ``link``."""

    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor, link: GradLink) -> Tensor:
        ctx.link = link
        ctx.t_dtype = t.dtype
        with _no_autocast(x.device.type):
            return x + t

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        if ctx.needs_input_grad[0]:
            ctx.link.grad = g
        dt = None
        if ctx.needs_input_grad[1]:
            # The gradient of the broadcast (B, C, 1, 1) term, summed in
            # float32 or wider.
            acc = torch.promote_types(g.dtype, torch.float32)
            dt = g.sum(dim=(2, 3), keepdim=True, dtype=acc).to(ctx.t_dtype)
        return None, dt, None


def attention_pool(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                   link: GradLink, kernels,
                   source: Optional[NormSource] = None) -> Tensor:
    """Attention-pooled context (B, C) of ``x`` (B, C, H, W); see module doc.

    ``x`` must be viewable by :func:`as_matrix` and accepted by ``kernels``
    (as must ``source.input`` if a source is given:
    ``x == source.input * source.alpha + beta`` per channel).
    """
    return _AttentionPool.apply(x, weight, bias, link, kernels, source)


def fuse_add(x: Tensor, t: Tensor, link: GradLink) -> Tensor:
    """``x + t`` whose dL/dx is produced by the pooling node sharing ``link``.

    Only valid when that pooling node's backward runs whenever this one's
    does, i.e. ``t`` depends differentiably on the pooled context; the caller
    checks this (:func:`depends_on`) and falls back to ``x + t`` otherwise.
    """
    return _FuseAdd.apply(x, t, link)


def depends_on(t: Tensor, node, max_nodes: int = 256) -> bool:
    """Whether autograd node ``node`` lies on ``t``'s backward graph."""
    if node is None or t.grad_fn is None:
        return False
    seen = set()
    stack = [t.grad_fn]
    while stack and len(seen) < max_nodes:
        fn = stack.pop()
        if fn is node:
            return True
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions if f is not None)
    return False
