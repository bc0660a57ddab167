"""The fused path's passes over the feature map as Triton kernels (CUDA).

Float32, float16 and bfloat16 inputs, contiguous or channels_last; every sum
in float32.  Four launches per forward + backward, and one PyTorch op (the
sum of the weight gradient's partial sums):

* forward: ``_pool_forward_kernel``, one program per (sample, chunk of
  positions), takes the chunk's logits over all channels (one reduction over
  the channels, after the loop), then its softmax-weighted context from a
  second sweep over the same chunk (served mostly from L2);
  ``_pool_merge_kernel`` merges the chunks as in a streaming softmax into
  the context and the attention (written over the logits).  ``y = x + t``
  is PyTorch's add.
* backward: ``_pool_backward_da_kernel``, ``da = dctx . x`` (one read) and
  each chunk's ``<a, da>``; ``_pool_backward_kernel``, one program per
  (sample, chunk of positions, block of channels), reads the source and the
  output gradient once each and writes ``dx = g + dctx a^T + w dl^T`` while
  it sums ``dw = x @ dl``.

Loads and stores along the unit-stride axis (positions, or channels for
channels_last) are vectorised up to 16 bytes: the host passes ``VEC``, the
largest power of two that divides the row starts and the row length there,
and the kernels round those values to multiples of ``VEC``, which tells
Triton's alignment analysis what holds.  Offsets from a sample's start are
32-bit (:meth:`TritonKernels.accepts` declines a sample whose offsets pass
2**31 - 1), the sample's own offset 64-bit; the grids keep within CUDA's
limits for any H*W.

Any exception from a launch (compiling, the launcher's C compiler, the
launch itself) makes the process warn once, naming the kernel, dtype, shape
and error, and run the PyTorch-ops kernels from then on (same results, same
memory saving).  ``GCNET_MM_TRITON=0`` leaves Triton out altogether
(``dispatch.py``).

Checked on the CPU with Triton's interpreter (``TRITON_INTERPRET=1``) and
compiled ahead of time for sm_80 and sm_90 (``tests/test_triton_kernels.py``:
vector widths, reductions per program); their speed is measured on a GPU by
``tools/gpu_check``.
"""
import contextlib
import os
import warnings
from typing import Optional

import torch
from torch import Tensor

from . import torch_kernels

try:  # Triton ships with PyTorch's CUDA builds on Linux
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - no usable Triton: PyTorch ops
    triton = None

__all__ = ['KERNELS', 'failure']

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Layouts of a (B, C, HW) view (``LAYOUT`` in the kernels): unit stride along
# the positions, along the channels, or tensors that disagree (no stride
# known to be one; no vector accesses).
_POSITIONS, _CHANNELS, _MIXED = 0, 1, 2

_BLOCK_C = 64  # channels per tile
_BLOCK_K = 64  # chunks' partial results per step of the merges
_BLOCK_N = 512  # positions per program of the merge's attention part

# Offsets within a sample are int32; CUDA's grid limits.
_INT32_MAX = 2**31 - 1
_GRID_X = 2**31 - 1
_GRID_YZ = 65535

# Integer arguments are not specialised on their values (alignment comes
# from VEC): one compiled variant per dtype, layout, VEC and block size.
_INTS = ['C', 'N', 'K']

if triton is not None:

    @triton.jit
    def _round(v, VEC: tl.constexpr):
        # v itself (a multiple of VEC): tells Triton that it is one.
        return v // VEC * VEC

    @triton.jit
    def _layout(stride_c, stride_p, LAYOUT: tl.constexpr,
                VEC: tl.constexpr):
        # (channel stride, position stride) with the unit one a constant.
        if LAYOUT == 0:
            return _round(stride_c, VEC), 1
        elif LAYOUT == 1:
            return 1, _round(stride_p, VEC)
        else:
            return stride_c, stride_p

    @triton.jit
    def _extent(C, N, LAYOUT: tl.constexpr, VEC: tl.constexpr):
        # (C, N) with the unit-stride axis' length a multiple of VEC.
        if LAYOUT == 0:
            return C, _round(N, VEC)
        elif LAYOUT == 1:
            return _round(C, VEC), N
        else:
            return C, N

    @triton.jit(do_not_specialize=_INTS + ['stride_b', 'stride_c',
                                           'stride_p'])
    def _pool_forward_kernel(x_ptr, w_ptr, logit_ptr, part_ctx_ptr,
                             part_max_ptr, part_sum_ptr, C, N, K, stride_b,
                             stride_c, stride_p, LAYOUT: tl.constexpr,
                             VEC: tl.constexpr, BLOCK_C: tl.constexpr,
                             BLOCK_P: tl.constexpr):
        # Program (b, k): chunk k of sample b's positions.
        pid = tl.program_id(0)
        b = (pid // K).to(tl.int64)
        k = pid % K
        C, N = _extent(C, N, LAYOUT, VEC)
        stride_c, stride_p = _layout(stride_c, stride_p, LAYOUT, VEC)
        x_base = x_ptr + b * _round(stride_b, VEC)
        offs_p = k * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < N
        # logits = w . x over the chunk: products summed per lane, one
        # reduction over the channels after the loop.
        acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            w = tl.load(w_ptr + offs_c, mask=mask_c, other=0.).to(tl.float32)
            xt = tl.load(
                x_base + offs_c[:, None] * stride_c +
                offs_p[None, :] * stride_p,
                mask=mask_c[:, None] & mask_p[None, :],
                other=0.).to(tl.float32)
            acc += xt * w[:, None]
        logits = tl.sum(acc, axis=0)
        tl.store(logit_ptr + b * N + offs_p, logits, mask=mask_p)
        logits = tl.where(mask_p, logits, float('-inf'))
        m = tl.max(logits, axis=0)
        e = tl.where(mask_p, tl.exp(logits - m), 0.)
        tl.store(part_max_ptr + pid, m)
        tl.store(part_sum_ptr + pid, tl.sum(e, axis=0))
        # The chunk's context under its own softmax numerators.
        ctx_base = part_ctx_ptr + pid.to(tl.int64) * C
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            xt = tl.load(
                x_base + offs_c[:, None] * stride_c +
                offs_p[None, :] * stride_p,
                mask=mask_c[:, None] & mask_p[None, :],
                other=0.).to(tl.float32)
            tl.store(ctx_base + offs_c, tl.sum(xt * e[None, :], axis=1),
                     mask=mask_c)

    @triton.jit
    def _softmax_stats(part_max_ptr, part_sum_ptr, b, K,
                       BLOCK_K: tl.constexpr):
        # The largest logit of sample b and its softmax denominator, from
        # the K chunks' maxima and sums.
        offs = tl.arange(0, BLOCK_K)
        top = tl.full([BLOCK_K], float('-inf'), tl.float32)
        for k0 in range(0, K, BLOCK_K):
            top = tl.maximum(top, tl.load(part_max_ptr + b * K + k0 + offs,
                                          mask=k0 + offs < K,
                                          other=float('-inf')))
        top_all = tl.max(top, axis=0)
        total = tl.zeros([BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            mask = k0 + offs < K
            pm = tl.load(part_max_ptr + b * K + k0 + offs, mask=mask,
                         other=float('-inf'))
            ps = tl.load(part_sum_ptr + b * K + k0 + offs, mask=mask,
                         other=0.)
            total += tl.where(mask, ps * tl.exp(pm - top_all), 0.)
        return top_all, tl.sum(total, axis=0)

    @triton.jit(do_not_specialize=_INTS + ['CB', 'NB'])
    def _pool_merge_kernel(logit_ptr, part_ctx_ptr, part_max_ptr,
                           part_sum_ptr, ctx_ptr, C, N, K, CB, NB,
                           VEC_C: tl.constexpr, VEC_N: tl.constexpr,
                           BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
                           BLOCK_N: tl.constexpr):
        # Programs (b, j): j < CB, block j of sample b's context; else block
        # j - CB of its attention, written over its logits.
        pid = tl.program_id(0)
        b = (pid // (CB + NB)).to(tl.int64)
        j = pid % (CB + NB)
        C = _round(C, VEC_C)
        N = _round(N, VEC_N)
        top, total = _softmax_stats(part_max_ptr, part_sum_ptr, b, K,
                                    BLOCK_K)
        if j < CB:
            offs_c = j * BLOCK_C + tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            acc = tl.zeros([BLOCK_K, BLOCK_C], dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                mask_k = offs_k < K
                scale = tl.exp(tl.load(part_max_ptr + b * K + offs_k,
                                       mask=mask_k,
                                       other=float('-inf')) - top)
                pc = tl.load(
                    part_ctx_ptr + (b * K + offs_k[:, None]) * C +
                    offs_c[None, :], mask=mask_k[:, None] & mask_c[None, :],
                    other=0.)
                acc += pc * scale[:, None]
            ctx = tl.sum(acc, axis=0) / total
            tl.store(ctx_ptr + b * C + offs_c,
                     ctx.to(ctx_ptr.dtype.element_ty), mask=mask_c)
        else:
            offs_n = (j - CB) * BLOCK_N + tl.arange(0, BLOCK_N)
            mask_n = offs_n < N
            logits = tl.load(logit_ptr + b * N + offs_n, mask=mask_n,
                             other=0.)
            tl.store(logit_ptr + b * N + offs_n,
                     tl.exp(logits - top) / total, mask=mask_n)

    @triton.jit(do_not_specialize=_INTS + ['stride_b', 'stride_c',
                                           'stride_p'])
    def _pool_backward_da_kernel(s_ptr, v_ptr, attn_ptr, da_ptr, part_s_ptr,
                                 C, N, K, stride_b, stride_c, stride_p,
                                 LAYOUT: tl.constexpr, VEC: tl.constexpr,
                                 BLOCK_C: tl.constexpr,
                                 BLOCK_P: tl.constexpr):
        # da[b, p] = sum_c v[b, c] s[b, c, p] over chunk k of sample b, and
        # the chunk's sum of a * da.
        pid = tl.program_id(0)
        b = (pid // K).to(tl.int64)
        k = pid % K
        C, N = _extent(C, N, LAYOUT, VEC)
        stride_c, stride_p = _layout(stride_c, stride_p, LAYOUT, VEC)
        s_base = s_ptr + b * _round(stride_b, VEC)
        offs_p = k * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < N
        acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            v = tl.load(v_ptr + b * C + offs_c, mask=mask_c,
                        other=0.).to(tl.float32)
            st = tl.load(
                s_base + offs_c[:, None] * stride_c +
                offs_p[None, :] * stride_p,
                mask=mask_c[:, None] & mask_p[None, :],
                other=0.).to(tl.float32)
            acc += st * v[:, None]
        da = tl.sum(acc, axis=0)
        tl.store(da_ptr + b * N + offs_p, da, mask=mask_p)
        a = tl.load(attn_ptr + b * N + offs_p, mask=mask_p,
                    other=0.).to(tl.float32)
        tl.store(part_s_ptr + pid, tl.sum(a * da, axis=0))

    @triton.jit(do_not_specialize=_INTS + [
        's_stride_b', 's_stride_c', 's_stride_p', 'g_stride_b', 'g_stride_c',
        'g_stride_p', 'dx_stride_b', 'dx_stride_c', 'dx_stride_p'])
    def _pool_backward_kernel(s_ptr, g_ptr, dx_ptr, attn_ptr, da_ptr,
                              part_s_ptr, dctx_ptr, w_ptr, part_dw_ptr, C, N,
                              K, s_stride_b, s_stride_c, s_stride_p,
                              g_stride_b, g_stride_c, g_stride_p,
                              dx_stride_b, dx_stride_c, dx_stride_p,
                              HAS_G: tl.constexpr, NEED_X: tl.constexpr,
                              NEED_W: tl.constexpr, LAYOUT: tl.constexpr,
                              VEC: tl.constexpr, BLOCK_C: tl.constexpr,
                              BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
        # Program (b, k, j): chunk k of sample b's positions, block j of its
        # channels.
        pid = tl.program_id(0)
        b = (pid // K).to(tl.int64)
        k = pid % K
        C, N = _extent(C, N, LAYOUT, VEC)
        offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        offs_p = k * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_c = offs_c < C
        mask_p = offs_p < N
        mask = mask_c[:, None] & mask_p[None, :]
        # <a, da> of sample b from its chunks' sums; dl = a (da - <a, da>).
        offs_k = tl.arange(0, BLOCK_K)
        dot = tl.zeros([BLOCK_K], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            dot += tl.load(part_s_ptr + b * K + k0 + offs_k,
                           mask=k0 + offs_k < K, other=0.)
        a = tl.load(attn_ptr + b * N + offs_p, mask=mask_p,
                    other=0.).to(tl.float32)
        da = tl.load(da_ptr + b * N + offs_p, mask=mask_p, other=0.)
        dl = a * (da - tl.sum(dot, axis=0))
        if NEED_W:
            s_stride_c, s_stride_p = _layout(s_stride_c, s_stride_p, LAYOUT,
                                             VEC)
            st = tl.load(
                s_ptr + b * _round(s_stride_b, VEC) +
                offs_c[:, None] * s_stride_c + offs_p[None, :] * s_stride_p,
                mask=mask, other=0.).to(tl.float32)
            tl.store(part_dw_ptr + pid.to(tl.int64) * C + offs_c,
                     tl.sum(st * dl[None, :], axis=1), mask=mask_c)
        if NEED_X:
            dctx = tl.load(dctx_ptr + b * C + offs_c, mask=mask_c,
                           other=0.).to(tl.float32)
            w = tl.load(w_ptr + offs_c, mask=mask_c, other=0.).to(tl.float32)
            val = dctx[:, None] * a[None, :] + w[:, None] * dl[None, :]
            if HAS_G:
                g_stride_c, g_stride_p = _layout(g_stride_c, g_stride_p,
                                                 LAYOUT, VEC)
                val += tl.load(
                    g_ptr + b * _round(g_stride_b, VEC) +
                    offs_c[:, None] * g_stride_c +
                    offs_p[None, :] * g_stride_p,
                    mask=mask, other=0.).to(tl.float32)
            dx_stride_c, dx_stride_p = _layout(dx_stride_c, dx_stride_p,
                                               LAYOUT, VEC)
            tl.store(
                dx_ptr + b * _round(dx_stride_b, VEC) +
                offs_c[:, None] * dx_stride_c + offs_p[None, :] * dx_stride_p,
                val.to(dx_ptr.dtype.element_ty), mask=mask)


def _block_p(batch: int, positions: int) -> int:
    """Positions per program: enough programs to fill a large GPU."""
    for block in (64, 32):
        if batch * -(-positions // block) >= 256:
            return block
    return 16


def _unit_axis(t3: Tensor) -> Optional[int]:
    """The axis (1: channels, 2: positions) along which ``t3`` (B, C, HW)
    has unit stride, preferring the positions; ``None`` if neither."""
    b, c, n = t3.shape
    if n == 1 or t3.stride(2) == 1:
        return 2
    if c == 1 or t3.stride(1) == 1:
        return 1
    return None


def _layout_of(*tensors: Tensor) -> int:
    """The kernels' ``LAYOUT`` for (B, C, HW) tensors read or written in
    the same tile."""
    axes = {_unit_axis(t) for t in tensors}
    if axes == {2}:
        return _POSITIONS
    if axes == {1}:
        return _CHANNELS
    return _MIXED


def _vec(layout: int, *tensors: Tensor) -> int:
    """Elements per vector access along the unit-stride axis: the largest
    power of two (at most 16 bytes) that divides that axis' length and
    every other stride the kernels round with it."""
    if layout == _MIXED:
        return 1
    t0 = tensors[0]
    b, c, n = t0.shape
    values = [n if layout == _POSITIONS else c]
    for t in tensors:
        if b > 1:
            values.append(t.stride(0))
        if layout == _POSITIONS and c > 1:
            values.append(t.stride(1))
        if layout == _CHANNELS and n > 1:
            values.append(t.stride(2))
    return _pow2_divisor(values, 16 // t0.element_size())


def _pow2_divisor(values, most: int) -> int:
    """The largest power of two up to ``most`` that divides ``values`` (an
    int or a list of them)."""
    values = [values] if isinstance(values, int) else values
    vec = most
    while vec > 1 and any(v % vec for v in values):
        vec //= 2
    return vec


def fits(shape, strides) -> bool:
    """Whether the kernels address a (B, C, HW) tensor of these sizes and
    strides correctly: offsets within a sample (up to the last tile's far
    corner) within int32, and grids within CUDA's limits."""
    b, c, n = shape
    sb, sc, sp = strides
    if min(strides) < 0:
        return False
    # The last tile's far corner, masked lanes included.
    rows = -(-c // _BLOCK_C) * _BLOCK_C
    cols = -(-n // 64) * 64
    span = (rows - 1) * sc + (cols - 1) * sp
    chunks = b * -(-n // 16)  # the most programs along the grid's x axis
    return (span <= _INT32_MAX and chunks <= _GRID_X
            and -(-c // _BLOCK_C) <= _GRID_YZ
            and b * (c + n) <= _GRID_X)


class _KernelFailed(RuntimeError):
    """A launch of ``kernel`` raised (the original error is the cause)."""

    def __init__(self, kernel: str) -> None:
        super().__init__(kernel)
        self.kernel = kernel


def _launch(kernel, grid, *args, **constexprs) -> None:
    """``kernel[grid](*args, **constexprs)``; an exception names the
    kernel."""
    try:
        kernel[grid](*args, **constexprs)
    except Exception as e:
        raise _KernelFailed(kernel.fn.__name__) from e


def _on_device(t: Tensor):
    """Launches on ``t``'s GPU, whichever is current."""
    return (torch.cuda.device(t.device) if t.device.type == 'cuda' else
            contextlib.nullcontext())


# The first failure of the process: its warning, after which the PyTorch-ops
# kernels run instead.
failure: Optional[str] = None


def _fail(step: str, t3: Tensor, error: Exception) -> None:
    global failure
    kernel = step
    if isinstance(error, _KernelFailed):
        kernel, error = error.kernel, error.__cause__ or error
    text = ' '.join(f'{type(error).__name__}: {error}'.split())
    if len(text) > 600:
        text = text[:600] + ' [...]'
    failure = (
        f'gcnet_mm: the Triton kernel {kernel} failed on a {t3.dtype} '
        f'(B, C, H*W) = {tuple(t3.shape)} tensor with strides '
        f'{tuple(t3.stride())} on {t3.device}: {text}. This process runs '
        "the GC block's fused path on PyTorch ops from now on (same results, "
        'same memory saving); GCNET_MM_TRITON=0 leaves Triton out.')
    warnings.warn(failure, RuntimeWarning, stacklevel=4)


class TritonKernels:
    """See :class:`~gcnet_mm.ops.torch_kernels.TorchKernels`.

    Accepts CUDA tensors; CPU tensors too under ``TRITON_INTERPRET=1``
    (Triton's interpreter), which only tests ask for.  After a failure the
    work goes to the PyTorch-ops kernels (see the module doc).
    """

    name = 'triton'

    @staticmethod
    def accepts(x: Tensor) -> bool:
        if triton is None or failure is not None or x.dtype not in _DTYPES:
            return False
        if x.device.type != 'cuda' and not _interpreting():
            return False
        from .attention_pool import as_matrix
        x_mat = as_matrix(x)[0]
        return x_mat is not None and fits(x_mat.shape, x_mat.stride())

    @staticmethod
    def forward(x_mat: Tensor, weight: Tensor):
        if failure is None:
            try:
                with _on_device(x_mat):
                    return _forward(x_mat, weight)
            except Exception as e:
                _fail('forward', x_mat, e)
        return torch_kernels.KERNELS.forward(x_mat, weight)

    @staticmethod
    def backward(src_mat: Tensor, attn: Tensor, dctx_src: Tensor, dctx: Tensor,
                 weight: Tensor, g: Optional[Tensor], need_x: bool,
                 need_w: bool, channels_last: bool):
        args = (src_mat, attn, dctx_src, dctx, weight, g, need_x, need_w,
                channels_last)
        if failure is None:
            try:
                with _on_device(src_mat):
                    return _backward(*args)
            except Exception as e:
                _fail('backward', src_mat, e)
        return torch_kernels.KERNELS.backward(*args)


def _forward(x_mat: Tensor, weight: Tensor):
    """(context (B, C) in x_mat's dtype, attention (B, HW) in float32)."""
    b, c, n = x_mat.shape
    block_p = _block_p(b, n)
    k = triton.cdiv(n, block_p)
    f32 = dict(dtype=torch.float32, device=x_mat.device)
    attn = torch.empty(b, n, **f32)  # the logits first
    part_ctx = torch.empty(b * k, c, **f32)
    part_max = torch.empty(b * k, **f32)
    part_sum = torch.empty(b * k, **f32)
    context = torch.empty(b, c, dtype=x_mat.dtype, device=x_mat.device)
    layout = _layout_of(x_mat)
    _launch(_pool_forward_kernel, (b * k, ), x_mat,
            weight.reshape(c).contiguous(), attn, part_ctx, part_max,
            part_sum, c, n, k, *x_mat.stride(), LAYOUT=layout,
            VEC=_vec(layout, x_mat), BLOCK_C=_BLOCK_C, BLOCK_P=block_p)
    cb, nb = triton.cdiv(c, _BLOCK_C), triton.cdiv(n, _BLOCK_N)
    _launch(_pool_merge_kernel, (b * (cb + nb), ), attn, part_ctx, part_max,
            part_sum, context, c, n, k, cb, nb, VEC_C=_pow2_divisor(c, 4),
            VEC_N=_pow2_divisor(n, 4), BLOCK_C=_BLOCK_C, BLOCK_K=_BLOCK_K,
            BLOCK_N=_BLOCK_N)
    return context, attn


def _backward(src_mat: Tensor, attn: Tensor, dctx_src: Tensor, dctx: Tensor,
              weight: Tensor, g: Optional[Tensor], need_x: bool, need_w: bool,
              channels_last: bool):
    b, c, n = src_mat.shape
    block_p = _block_p(b, n)
    k = triton.cdiv(n, block_p)
    f32 = dict(dtype=torch.float32, device=src_mat.device)
    attn = attn.contiguous()
    da = torch.empty(b, n, **f32)
    part_s = torch.empty(b * k, **f32)
    layout = _layout_of(src_mat)
    _launch(_pool_backward_da_kernel, (b * k, ), src_mat,
            dctx_src.contiguous(), attn, da, part_s, c, n, k,
            *src_mat.stride(), LAYOUT=layout,
            VEC=_vec(layout, src_mat), BLOCK_C=_BLOCK_C, BLOCK_P=block_p)
    dx = None
    if need_x:
        if channels_last:  # (B, HW, C) memory, viewed as (B, C, HW)
            dx = torch.empty(b, n, c, dtype=src_mat.dtype,
                             device=src_mat.device).transpose(1, 2)
        else:
            dx = torch.empty(b, c, n, dtype=src_mat.dtype,
                             device=src_mat.device)
    part_dw = torch.empty(b * k, c, **f32) if need_w else da
    g_mat = None if g is None or not need_x else g.reshape(b, c, n)
    ref = src_mat if g_mat is None else g_mat
    out = src_mat if dx is None else dx
    tile = [src_mat] + [t for t in (g_mat, dx) if t is not None]
    layout = _layout_of(*tile)
    _launch(_pool_backward_kernel, (b * k, triton.cdiv(c, _BLOCK_C)), src_mat,
            ref, out, attn, da, part_s, dctx.contiguous(),
            weight.reshape(c).contiguous(), part_dw, c, n, k,
            *src_mat.stride(), *ref.stride(), *out.stride(),
            HAS_G=g_mat is not None, NEED_X=need_x, NEED_W=need_w,
            LAYOUT=layout, VEC=_vec(layout, *tile), BLOCK_C=_BLOCK_C,
            BLOCK_P=block_p, BLOCK_K=_BLOCK_K)
    dw = part_dw.sum(0) if need_w else None
    return dx, dw


def _interpreting() -> bool:
    return os.environ.get('TRITON_INTERPRET') == '1'


KERNELS = TritonKernels()
