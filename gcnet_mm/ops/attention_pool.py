"""Lean attention pooling + additive fusion of a GC block (autograd Functions).

GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond,
https://arxiv.org/abs/1904.11492.  Same arithmetic as mmcv's ContextBlock
(``mmcv/cnn/bricks/context_block.py``) with ``pooling_type='att'`` and
``fusion_types=('channel_add',)``; written as two Functions so that forward +
backward touch the feature map in 11 streams (7 in the fused CPU loops
below) instead of mmcv's ~15::

    forward   logits = w . x          (read x)            (B, HW)
              a      = softmax(logits) in float32           (B, HW)
              ctx    = x @ a          (read x)            (B, C)
              y      = x + t(ctx)     (read x, write y)
    backward  dt     = sum_p g        (read g)
              da     = dctx . x       (read x)            (B, HW)
              dl     = a * (da - <a, da>)                   (B, HW)
              dw     = x @ dl         (read x)            (C,)
              dx     = g + dctx a^T + w dl^T  (addcmul: read g, write dx;
                                               addcmul_: read, write dx)

Two implementations of the passes over x, same results:

* fused CPU loops (``gcnet_mm/csrc``, built into ``gcnet_mm._ext`` by
  setup.py): float32/float64 on the CPU with unit stride along HW.  The
  logits, softmax and context come from one read of x, ``da`` and ``dw`` from
  one read, and ``dx`` from one pass (read g, write dx): 7 streams instead of
  11.  ``GCNET_MM_EXT=0`` (or :func:`use_extension`) switches them off.
* PyTorch ops, for everything else (channels_last, float16/bfloat16, CUDA)
  and without the extension: batched matrix-vector products (``bmm`` with one
  row, reading each (C, HW) matrix in place, transposed where needed; on the
  CPU faster than per-sample ``torch.mv`` or ``bmm`` with one column, see
  ``_vec_mat``), never building a full-size temporary.

Besides ``y`` and ``dx`` nothing of the size of x is allocated (on the CPU
each new page of a fresh allocation costs a fault).

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
import importlib
import os
import warnings
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .affine_source import AffineSource

__all__ = [
    'GradLink', 'attention_pool', 'fuse_add', 'fuse_residual', 'as_matrix',
    'extension_isa', 'use_extension'
]


def _load_extension():
    """``gcnet_mm._ext``, the fused CPU loops (gcnet_mm/csrc) that setup.py
    builds when it can, or ``None``; one that is built but does not load
    (compiled against another torch) says so once."""
    try:
        return importlib.import_module('gcnet_mm._ext')
    except ModuleNotFoundError:
        return None  # not built: the PyTorch-ops path, as documented
    except ImportError as e:
        warnings.warn(
            f'gcnet_mm._ext does not load ({e}); the GC block runs its '
            'PyTorch-ops path (same results, slower on the CPU). Rebuild it '
            'against this torch: pip install --no-build-isolation -e .')
        return None


_ext = _load_extension()
# GCNET_MM_EXT=0 runs the PyTorch-ops path even where _ext is built.
_ext_enabled = os.environ.get('GCNET_MM_EXT', '1') != '0'


def extension_isa() -> Optional[str]:
    """Instruction set of the fused CPU loops in use (``'avx2'`` or
    ``'generic'``), or ``None`` when they are not built or switched off."""
    return _ext.isa() if _ext is not None and _ext_enabled else None


@contextlib.contextmanager
def use_extension(enabled: bool) -> Iterator[None]:
    """Run the fused CPU loops (``True``, where built) or the PyTorch-ops path
    (``False``) inside the ``with`` block; for tests and benchmarks."""
    global _ext_enabled
    before, _ext_enabled = _ext_enabled, enabled
    try:
        yield
    finally:
        _ext_enabled = before


def _fused(m: Tensor) -> bool:
    """Whether the fused CPU loops take the (B, C, HW) matrix ``m``: float32
    or float64 on the CPU, unit stride along HW (not channels_last)."""
    return (_ext is not None and _ext_enabled and m.device.type == 'cpu'
            and m.dtype in (torch.float32, torch.float64)
            and (m.shape[2] == 1 or m.stride(2) == 1))


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
            # The bias shifts every logit of a row alike: softmax ignores it.
            if _fused(x3):
                w = weight.reshape(c).to(x.dtype).contiguous()
                context, attn = _ext.attention_pool_forward(x3, w)
            else:
                w = weight.reshape(1, c).to(x.dtype).expand(b, c)
                acc = torch.promote_types(x.dtype, torch.float32)
                logits = _vec_mat(w, x3)  # (B, HW)
                attn = torch.softmax(logits, dim=1, dtype=acc).to(x.dtype)
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
        channels_last = fctx.channels_last
        with _no_autocast(src.device.type):
            b, c, h, w_ = fctx.x_shape
            n = h * w_
            dtype = src.dtype
            s3, _ = as_matrix(src)
            if s3 is None:
                s3 = src.reshape(b, c, n)
            dctx = dcontext.to(dtype)  # (B, C)
            if fctx.eps is None:
                alpha = None
                dctx_src = dctx
            else:  # x = src * alpha + beta; beta drops out (see affine_source)
                alpha = AffineSource(src, *saved[3:], fctx.eps).alpha()
                dctx_src = (dctx * alpha).to(dtype)
            grads = _fused_grads if _fused(s3) else _ops_grads
            dx, dw = grads(s3, attn, dctx_src, dctx, weight.reshape(c), g,
                           need_x, need_w, channels_last)
            db = None
            if need_w:
                if alpha is not None:
                    dw = dw * alpha
                dw = dw.to(weight.dtype).view_as(weight)
            if need_b and fctx.bias_meta is not None:
                db = attn.new_zeros(fctx.bias_meta[0], dtype=fctx.bias_meta[1])
            if need_x:
                dx = dx.view(fctx.x_shape)
        return dx, dw, db, None, None


def _ops_grads(s3: Tensor, attn: Tensor, dctx_src: Tensor, dctx: Tensor,
               weight: Tensor, g: Optional[Tensor], need_x: bool,
               need_w: bool, channels_last: bool):
    """(dx as (B, C, HW) in the layout of x, dw in source space) in PyTorch
    ops: dl from one read of the source, dw from another, dx in two
    elementwise passes."""
    b, c, n = s3.shape
    dtype = s3.dtype
    acc = torch.promote_types(dtype, torch.float32)
    # d(logits) through the softmax, in float32 (or float64).
    da = _vec_mat(dctx_src, s3).to(acc)  # (B, HW)
    a32 = attn.to(acc)
    dl = (a32 * (da - (a32 * da).sum(1, keepdim=True))).to(dtype)
    dx = dw = None
    if need_w:
        dw = _mat_vec(s3, dl).sum(0)  # (C,)
    if need_x:
        # dx = g + dctx attn^T + w dl^T: two elementwise passes, in the
        # layout of x (a gemm with K = 2 is slower on the CPU).
        if channels_last:  # (B, HW, C) memory, viewed as (B, C, HW)
            dx = torch.empty(b, n, c, dtype=dtype,
                             device=s3.device).transpose(1, 2)
        else:
            dx = torch.empty(b, c, n, dtype=dtype, device=s3.device)
        a3 = attn.view(b, 1, n)
        if g is None:
            torch.mul(dctx.view(b, c, 1), a3, out=dx)
        else:
            torch.addcmul(g.to(dtype).reshape(b, c, n), dctx.view(b, c, 1),
                          a3, out=dx)
        dx.addcmul_(weight.view(1, c, 1).to(dtype), dl.view(b, 1, n))
    return dx, dw


def _fused_grads(s3: Tensor, attn: Tensor, dctx_src: Tensor, dctx: Tensor,
                 weight: Tensor, g: Optional[Tensor], need_x: bool,
                 need_w: bool, channels_last: bool):
    """:func:`_ops_grads` in the fused CPU loops: one read of the source,
    and dx in one pass (read g, write dx); a contiguous dx."""
    b, c, n = s3.shape
    dtype = s3.dtype
    g3 = None
    if g is not None and need_x:
        g3 = g.to(dtype).reshape(b, c, n).contiguous()
    return _ext.attention_pool_backward(
        s3, attn, dctx_src.contiguous(), dctx.contiguous(),
        weight.to(dtype).contiguous(), g3, need_x, need_w)


# Both products are ``bmm`` calls with a one-row left operand, the form BLAS
# ran fastest on the CPU of tools/benchmark/benchmark_blocks.py's figures
# (ahead of the one-column form ``bmm(m, v[..., None])`` and of a loop of
# per-sample ``torch.mv``, which the block used before).


def _vec_mat(v: Tensor, m: Tensor) -> Tensor:
    """``out[k, p] = sum_c v[k, c] m[k, c, p]``."""
    return torch.bmm(v.unsqueeze(1), m).squeeze(1)


def _mat_vec(m: Tensor, v: Tensor) -> Tensor:
    """``out[k, c] = sum_p m[k, c, p] v[k, p]``."""
    return torch.bmm(v.unsqueeze(1), m.transpose(1, 2)).squeeze(1)


def _channel_sums(g: Tensor) -> Tensor:
    """``sum_p g`` per sample and channel, (B, C, 1, 1), accumulated in
    float32 or wider: the gradient of a broadcast (B, C, 1, 1) term."""
    acc = torch.promote_types(g.dtype, torch.float32)
    return g.sum(dim=(2, 3), keepdim=True, dtype=acc)


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
            dt = _channel_sums(g).to(fctx.t_dtype)
        return None, dt, None


class _FuseResidual(torch.autograd.Function):
    """``out = x + t + identity``, then ReLU when ``relu``: the end of a
    Bottleneck whose last layer is a GC block, where mmdet runs ``y = x + t``,
    ``y += identity`` and an in-place ReLU (three passes, seven streams over
    the feature map).  The fused CPU loops take one pass (read x and
    identity, write out) and, in backward, one more (read the gradient and
    ``out``, write ``g``) that also sums ``dt``, which ``_FuseAdd`` reads
    ``g`` again for.  Like ``_FuseAdd``, dL/dx goes to the pooling node
    through ``link``; ``identity`` gets ``g``.  Saved for backward: ``out``
    (with ``relu``), which the ReLU after mmdet's residual add saves too.
    """

    @staticmethod
    def forward(fctx, x: Tensor, t: Tensor, identity: Tensor, link: GradLink,
                relu: bool, overwrite_x: bool) -> Tensor:
        fctx.link = link
        fctx.relu = relu
        fctx.t_dtype = t.dtype
        with _no_autocast(x.device.type):
            if _fused_elementwise(x, t, identity):
                b, c = x.shape[:2]
                if overwrite_x:  # x's storage, as mmdet's in-place add
                    out = x
                    fctx.mark_dirty(x)
                else:
                    out = torch.empty_like(x)
                _ext.residual_forward(x, t.reshape(b, c).contiguous(),
                                      identity, relu, out)
            else:  # mmdet's ops, in its order
                out = x + t
                out += identity
                if relu:
                    out.relu_()
        if relu:
            fctx.save_for_backward(out)
        return out

    @staticmethod
    @once_differentiable
    def backward(fctx, grad: Tensor):
        relu = fctx.relu
        out = fctx.saved_tensors[0] if relu else None
        need_x, need_t, need_id = fctx.needs_input_grad[:3]
        b, c = grad.shape[:2]
        if _fused_elementwise(grad, None, out if relu else grad):
            g, dt = _ext.residual_backward(grad, out if relu else grad, relu)
            if g is None:  # no ReLU: the gradient passes unchanged
                g = grad
        else:
            g = torch.where(out > 0, grad, 0) if relu else grad
            dt = _channel_sums(g)
        if need_x:
            fctx.link.grad = g
        dt = dt.view(b, c, 1, 1).to(fctx.t_dtype) if need_t else None
        return None, dt, g if need_id else None, None, None, None


def _fused_elementwise(x: Tensor, t: Optional[Tensor],
                       other: Tensor) -> bool:
    """Whether the fused CPU loops take ``_FuseResidual``'s pass over ``x``
    and ``other``: both contiguous, of one shape and dtype (float32 or
    float64, on the CPU), and ``t`` (if given) of that dtype too."""
    return (_ext is not None and _ext_enabled and x.device.type == 'cpu'
            and x.dtype in (torch.float32, torch.float64)
            and other.dtype == x.dtype and other.shape == x.shape
            and other.device == x.device and x.is_contiguous()
            and other.is_contiguous()
            and (t is None or (t.dtype == x.dtype
                               and t.numel() == x.shape[0] * x.shape[1])))


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


def fuse_residual(x: Tensor, t: Tensor, identity: Tensor, link: GradLink,
                  relu: bool = True, overwrite_x: bool = False) -> Tensor:
    """``x + t + identity`` (then ReLU) whose dL/dx is produced by the pooling
    node sharing ``link``; the same condition as :func:`fuse_add` applies.

    ``overwrite_x=True`` lets the fused loops write the result into ``x``'s
    storage (as mmdet's ``out += identity`` does): only for an ``x`` that
    nothing else reads or has saved for backward.
    """
    return _FuseResidual.apply(x, t, identity, link, relu, overwrite_x)


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
