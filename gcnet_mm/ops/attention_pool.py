"""Lean attention pooling + additive fusion of a GC block (autograd Functions).

GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond,
https://arxiv.org/abs/1904.11492.  Same arithmetic as mmcv's ContextBlock
(``mmcv/cnn/bricks/context_block.py``) with ``pooling_type='att'`` and
``fusion_types=('channel_add',)``; written as two Functions so that forward +
backward touch the feature map in 7 streams instead of mmcv's ~15::

    forward   logits = w . x          (read x)            (B, HW)
              a      = softmax(logits) in float32           (B, HW)
              ctx    = x @ a          (read x)            (B, C)
              y      = x + t(ctx)     (read x, write y)
    backward  dt     = sum_p g        (read g)
              da     = dctx . x       (read x)            (B, HW)
              dl     = a * (da - <a, da>)                   (B, HW)
              dw     = x @ dl         (read x)            (C,)
              dx     = g + dctx a^T + w dl^T  (one baddbmm: read g, write dx)

``_FuseAdd`` (``y = x + t``) returns no gradient for ``x``: it hands ``g`` to
``_AttentionPool`` through a shared ``GradLink``, whose backward always runs
after it (``ctx -> t -> y``) and folds ``g`` into its own ``dx``.  So ``x``
gets one gradient and autograd never adds two full-size tensors.  The conv
bias gets an exact zero gradient (softmax ignores a constant shift).

Saved for backward: ``x`` and the attention ``a`` (B, HW).  When ``x`` is,
untouched, a batch-norm output (``affine_source.py``) the pooling saves
references to batch norm's saved input and statistics instead of ``x``: no new
full-size storage at all.
"""
import contextlib
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .affine_source import AffineSource

__all__ = ['GradLink', 'attention_pool', 'fuse_add', 'as_matrix']


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
    along C (``True``: channels_last), which BLAS reads in place.
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
    def forward(fctx, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                link: GradLink, source: Optional[AffineSource]) -> Tensor:
        with _no_autocast(x.device.type):
            b, c = x.shape[:2]
            x3, channels_last = as_matrix(x)  # (B, C, HW)
            w = weight.reshape(c).to(x.dtype)
            # The bias shifts every logit of a row alike: softmax ignores it.
            logits = _vec_mat(w, x3)  # (B, HW)
            acc = torch.promote_types(x.dtype, torch.float32)
            attn = torch.softmax(logits.to(acc), dim=1).to(x.dtype)
            context = _mat_vec(x3, attn)  # (B, C)
        fctx.channels_last = channels_last
        fctx.x_shape = x.shape
        fctx.link = link
        fctx.bias_meta = None if bias is None else (bias.shape, bias.dtype)
        if source is None:
            fctx.eps = None
            fctx.save_for_backward(x, attn, weight)
        else:
            # References to what batch norm saved already; no new storage.
            fctx.eps = source.eps
            fctx.save_for_backward(source.input, attn, weight, source.weight,
                                   source.invstd, source.var)
        return context

    @staticmethod
    @once_differentiable
    def backward(fctx, dcontext: Tensor):
        saved = fctx.saved_tensors
        src, attn, weight = saved[:3]
        link = fctx.link
        g, link.grad = link.grad, None
        need_x, need_w, need_b = fctx.needs_input_grad[:3]
        with _no_autocast(src.device.type):
            b, c = fctx.x_shape[:2]
            dtype = src.dtype
            s3, _ = as_matrix(src)
            if s3 is None:
                s3 = src.reshape(b, c, -1)
            dctx = dcontext.to(dtype)
            if fctx.eps is None:
                alpha = None
                dctx_src = dctx
            else:  # x = src * alpha + beta; beta drops out (see affine_source)
                alpha = AffineSource(src, *saved[3:], fctx.eps).alpha()
                dctx_src = (dctx * alpha).to(dtype)
            # d(logits) through the softmax, in float32 (or float64).
            acc = torch.promote_types(dtype, torch.float32)
            da = _vec_mat(dctx_src, s3).to(acc)  # (B, HW)
            a32 = attn.to(acc)
            dlogits = a32 * (da - (a32 * da).sum(1, keepdim=True))  # (B, HW)
            dl = dlogits.to(dtype)

            dx = dw = db = None
            if need_w:
                dw = _mat_vec(s3, dl, reduce_batch=True)  # (C,)
                if alpha is not None:
                    dw = dw * alpha
                dw = dw.to(weight.dtype).view_as(weight)
            if need_b and fctx.bias_meta is not None:
                db = attn.new_zeros(fctx.bias_meta[0], dtype=fctx.bias_meta[1])
            if need_x:
                w = weight.reshape(1, c).to(dtype).expand(b, c)
                u = torch.stack((dctx, w), dim=2)  # (B, C, 2)
                v = torch.stack((attn, dl), dim=1)  # (B, 2, HW)
                dx = _rank2_update(g, u, v, fctx.x_shape, fctx.channels_last,
                                   dtype)
        return dx, dw, db, None, None


# Up to this batch size the matrix-vector products loop over the batch with
# ``torch.mv`` (BLAS gemv, about 3x faster than ``bmm`` with one column on the
# CPU); beyond it one ``bmm`` call beats the Python loop.
_MV_MAX_BATCH = 8


def _vec_mat(v: Tensor, m: Tensor) -> Tensor:
    """``out[b, p] = sum_c v[(b,) c] m[b, c, p]``; ``v`` is (C,) or (B, C)."""
    b = m.shape[0]
    if b > _MV_MAX_BATCH:
        v = v.expand(b, m.shape[1]) if v.dim() == 1 else v
        return torch.bmm(v.unsqueeze(1), m).squeeze(1)
    out = m.new_empty(b, m.shape[2])
    for i in range(b):
        torch.mv(m[i].t(), v if v.dim() == 1 else v[i], out=out[i])
    return out


def _mat_vec(m: Tensor, v: Tensor, reduce_batch: bool = False) -> Tensor:
    """``out[b, c] = sum_p m[b, c, p] v[b, p]``, summed over b if asked."""
    b = m.shape[0]
    if b > _MV_MAX_BATCH:
        out = torch.bmm(m, v.unsqueeze(2)).squeeze(2)
        return out.sum(0) if reduce_batch else out
    if reduce_batch:
        out = torch.mv(m[0], v[0])
        for i in range(1, b):
            out = torch.addmv(out, m[i], v[i])
        return out
    out = m.new_empty(b, m.shape[1])
    for i in range(b):
        torch.mv(m[i], v[i], out=out[i])
    return out


def _rank2_update(g: Optional[Tensor], u: Tensor, v: Tensor, shape,
                  channels_last: bool, dtype) -> Tensor:
    """``g + u @ v`` as (B, C, H, W), laid out like the block's input."""
    b, c, h, w = shape
    if channels_last:  # compute (B, HW, C) row-major = channels_last
        if g is None:
            out = torch.bmm(v.transpose(1, 2), u.transpose(1, 2))
        else:
            gt = g.to(dtype).permute(0, 2, 3, 1).reshape(b, h * w, c)
            out = torch.baddbmm(gt, v.transpose(1, 2), u.transpose(1, 2))
        return out.view(b, h, w, c).permute(0, 3, 1, 2)
    if g is None:
        out = torch.bmm(u, v)
    else:
        out = torch.baddbmm(g.to(dtype).reshape(b, c, h * w), u, v)
    return out.view(b, c, h, w)


class _FuseAdd(torch.autograd.Function):
    """``y = x + t``; dL/dx is left to the pooling node through ``link``."""

    @staticmethod
    def forward(fctx, x: Tensor, t: Tensor, link: GradLink) -> Tensor:
        fctx.link = link
        fctx.t_dtype = t.dtype
        with _no_autocast(x.device.type):
            return x + t

    @staticmethod
    @once_differentiable
    def backward(fctx, g: Tensor):
        if fctx.needs_input_grad[0]:
            fctx.link.grad = g
        dt = None
        if fctx.needs_input_grad[1]:
            acc = torch.promote_types(g.dtype, torch.float32)
            dt = g.sum(dim=(2, 3), keepdim=True, dtype=acc)
            dt = dt.to(fctx.t_dtype)
        return None, dt, None


def attention_pool(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                   link: GradLink,
                   source: Optional[AffineSource] = None) -> Tensor:
    """Attention-pooled context (B, C) of ``x`` (B, C, H, W); see module doc.

    ``x`` must be contiguous or channels_last.  ``source``, if given, holds
    tensors with ``x == source.input * alpha + beta`` per channel.
    """
    return _AttentionPool.apply(x, weight, bias, link, source)


def fuse_add(x: Tensor, t: Tensor, link: GradLink) -> Tensor:
    """``x + t`` whose dL/dx is produced by the pooling node sharing ``link``.

    Only valid when that pooling node's backward runs whenever this one's
    does, i.e. ``t`` depends differentiably on the pooled context; the caller
    checks this (``depends_on``) and falls back to ``x + t`` otherwise.
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
