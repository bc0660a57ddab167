"""The fused path's passes over the feature map as Triton kernels (CUDA).

Float32, float16 and bfloat16 inputs, contiguous or channels_last; every sum
in float32.  Per forward + backward the feature map is streamed:

* forward, one kernel per (sample, chunk of positions): the logits of the
  chunk over all channels, then the chunk's softmax-weighted context from a
  second sweep over the same chunk (served mostly from L2); the chunks are
  merged as in a streaming softmax.  ``y = x + t`` is PyTorch's add.
* backward: ``da = dctx . x`` (one read), then one kernel per (sample, chunk
  of positions, block of channels) reads the source and the output gradient
  once each and writes ``dx = g + dctx a^T + w dl^T`` while it sums
  ``dw = x @ dl``.

Checked on the CPU with Triton's interpreter (``TRITON_INTERPRET=1``); their
speed is measured on a GPU by ``tools/gpu_check``.
"""
from typing import Optional

import torch
from torch import Tensor

try:  # Triton ships with PyTorch's CUDA builds on Linux
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - no Triton: the PyTorch-ops kernels
    triton = None

__all__ = ['KERNELS']

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

if triton is not None:

    @triton.jit
    def _pool_forward_kernel(x_ptr, w_ptr, logit_ptr, part_ctx_ptr,
                             part_max_ptr, part_sum_ptr, C, N, K, stride_b,
                             stride_c, stride_p, BLOCK_C: tl.constexpr,
                             BLOCK_P: tl.constexpr):
        b = tl.program_id(0)
        k = tl.program_id(1)
        offs_p = k * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < N
        x_base = x_ptr + b * stride_b
        logits = tl.zeros([BLOCK_P], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            w = tl.load(w_ptr + offs_c, mask=mask_c, other=0.).to(tl.float32)
            xt = tl.load(
                x_base + offs_c[:, None] * stride_c +
                offs_p[None, :] * stride_p,
                mask=mask_c[:, None] & mask_p[None, :],
                other=0.).to(tl.float32)
            logits += tl.sum(xt * w[:, None], axis=0)
        tl.store(logit_ptr + b * N + offs_p, logits, mask=mask_p)
        logits = tl.where(mask_p, logits, float('-inf'))
        m = tl.max(logits, axis=0)
        e = tl.where(mask_p, tl.exp(logits - m), 0.)
        tl.store(part_max_ptr + b * K + k, m)
        tl.store(part_sum_ptr + b * K + k, tl.sum(e, axis=0))
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            xt = tl.load(
                x_base + offs_c[:, None] * stride_c +
                offs_p[None, :] * stride_p,
                mask=mask_c[:, None] & mask_p[None, :],
                other=0.).to(tl.float32)
            tl.store(part_ctx_ptr + (b * K + k) * C + offs_c,
                     tl.sum(xt * e[None, :], axis=1), mask=mask_c)

    @triton.jit
    def _vec_mat_kernel(x_ptr, v_ptr, out_ptr, C, N, stride_b, stride_c,
                        stride_p, BLOCK_C: tl.constexpr,
                        BLOCK_P: tl.constexpr):
        # out[b, p] = sum_c v[b, c] x[b, c, p], in float32
        b = tl.program_id(0)
        k = tl.program_id(1)
        offs_p = k * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < N
        acc = tl.zeros([BLOCK_P], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            mask_c = offs_c < C
            v = tl.load(v_ptr + b * C + offs_c, mask=mask_c,
                        other=0.).to(tl.float32)
            xt = tl.load(
                x_ptr + b * stride_b + offs_c[:, None] * stride_c +
                offs_p[None, :] * stride_p,
                mask=mask_c[:, None] & mask_p[None, :],
                other=0.).to(tl.float32)
            acc += tl.sum(xt * v[:, None], axis=0)
        tl.store(out_ptr + b * N + offs_p, acc, mask=mask_p)

    @triton.jit
    def _pool_backward_kernel(s_ptr, g_ptr, dx_ptr, attn_ptr, dl_ptr,
                              dctx_ptr, w_ptr, part_dw_ptr, C, N, K,
                              s_stride_b, s_stride_c, s_stride_p,
                              g_stride_b, g_stride_c, g_stride_p,
                              dx_stride_b, dx_stride_c, dx_stride_p,
                              HAS_G: tl.constexpr, NEED_X: tl.constexpr,
                              NEED_W: tl.constexpr, BLOCK_C: tl.constexpr,
                              BLOCK_P: tl.constexpr):
        b = tl.program_id(0)
        k = tl.program_id(1)
        offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        offs_p = k * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_c = offs_c < C
        mask_p = offs_p < N
        mask = mask_c[:, None] & mask_p[None, :]
        dl = tl.load(dl_ptr + b * N + offs_p, mask=mask_p, other=0.)
        if NEED_W:
            st = tl.load(
                s_ptr + b * s_stride_b + offs_c[:, None] * s_stride_c +
                offs_p[None, :] * s_stride_p,
                mask=mask, other=0.).to(tl.float32)
            tl.store(part_dw_ptr + (b * K + k) * C + offs_c,
                     tl.sum(st * dl[None, :], axis=1), mask=mask_c)
        if NEED_X:
            a = tl.load(attn_ptr + b * N + offs_p, mask=mask_p, other=0.)
            dctx = tl.load(dctx_ptr + b * C + offs_c, mask=mask_c, other=0.)
            w = tl.load(w_ptr + offs_c, mask=mask_c, other=0.)
            val = dctx[:, None] * a[None, :] + w[:, None] * dl[None, :]
            if HAS_G:
                val += tl.load(
                    g_ptr + b * g_stride_b + offs_c[:, None] * g_stride_c +
                    offs_p[None, :] * g_stride_p,
                    mask=mask, other=0.).to(tl.float32)
            tl.store(
                dx_ptr + b * dx_stride_b + offs_c[:, None] * dx_stride_c +
                offs_p[None, :] * dx_stride_p,
                val.to(dx_ptr.dtype.element_ty), mask=mask)


def _block_p(batch: int, positions: int) -> int:
    """Positions per program: enough programs to fill a large GPU."""
    for block in (64, 32):
        if batch * triton.cdiv(positions, block) >= 256:
            return block
    return 16


_BLOCK_C = 64


class TritonKernels:
    """See :class:`~gcnet_mm.ops.torch_kernels.TorchKernels`.

    Accepts CUDA tensors; CPU tensors too under ``TRITON_INTERPRET=1``
    (Triton's interpreter), which only tests ask for.
    """

    name = 'triton'

    @staticmethod
    def accepts(x: Tensor) -> bool:
        if triton is None or x.dtype not in _DTYPES:
            return False
        if x.device.type != 'cuda' and not _interpreting():
            return False
        from .attention_pool import as_matrix
        return as_matrix(x)[0] is not None

    @staticmethod
    def forward(x3: Tensor, weight: Tensor):
        b, c, n = x3.shape
        block_p = _block_p(b, n)
        k = triton.cdiv(n, block_p)
        f32 = dict(dtype=torch.float32, device=x3.device)
        logits = torch.empty(b, n, **f32)
        part_ctx = torch.empty(b, k, c, **f32)
        part_max = torch.empty(b, k, **f32)
        part_sum = torch.empty(b, k, **f32)
        w = weight.reshape(c).contiguous()
        _pool_forward_kernel[(b, k)](
            x3, w, logits, part_ctx, part_max, part_sum, c, n, k,
            x3.stride(0), x3.stride(1), x3.stride(2),
            BLOCK_C=_BLOCK_C, BLOCK_P=block_p)
        top = part_max.max(dim=1, keepdim=True).values  # (B, 1)
        scale = torch.exp(part_max - top)  # (B, K)
        total = (part_sum * scale).sum(dim=1, keepdim=True)  # (B, 1)
        context = torch.bmm(scale.unsqueeze(1), part_ctx).squeeze(1) / total
        attn = torch.exp(logits - top) / total  # (B, HW), float32
        return context.to(x3.dtype), attn

    @staticmethod
    def backward(s3: Tensor, attn: Tensor, dctx_src: Tensor, dctx: Tensor,
                 weight: Tensor, g: Optional[Tensor], need_x: bool,
                 need_w: bool, channels_last: bool):
        b, c, n = s3.shape
        block_p = _block_p(b, n)
        k = triton.cdiv(n, block_p)
        f32 = dict(dtype=torch.float32, device=s3.device)
        a32 = attn.to(torch.float32).contiguous()
        da = torch.empty(b, n, **f32)
        _vec_mat_kernel[(b, k)](
            s3, dctx_src.to(torch.float32).contiguous(), da, c, n,
            s3.stride(0), s3.stride(1), s3.stride(2),
            BLOCK_C=_BLOCK_C, BLOCK_P=block_p)
        dl = (a32 * (da - (a32 * da).sum(1, keepdim=True))).contiguous()
        dx = None
        if need_x:
            if channels_last:  # (B, HW, C) memory, viewed as (B, C, HW)
                dx = torch.empty(b, n, c, dtype=s3.dtype,
                                 device=s3.device).transpose(1, 2)
            else:
                dx = torch.empty(b, c, n, dtype=s3.dtype, device=s3.device)
        part_dw = torch.empty(b, k, c, **f32) if need_w else dl
        g3 = None if g is None or not need_x else g.reshape(b, c, n)
        ref = s3 if g3 is None else g3
        out = s3 if dx is None else dx
        _pool_backward_kernel[(b, k, triton.cdiv(c, _BLOCK_C))](
            s3, ref, out, a32, dl, dctx.to(torch.float32).contiguous(),
            weight.reshape(c).to(torch.float32).contiguous(), part_dw, c, n,
            k, s3.stride(0), s3.stride(1), s3.stride(2), ref.stride(0),
            ref.stride(1), ref.stride(2), out.stride(0), out.stride(1),
            out.stride(2), HAS_G=g3 is not None, NEED_X=need_x,
            NEED_W=need_w, BLOCK_C=_BLOCK_C, BLOCK_P=block_p)
        dw = part_dw.sum(dim=(0, 1)) if need_w else None
        return dx, dw


def _interpreting() -> bool:
    import os
    return os.environ.get('TRITON_INTERPRET') == '1'


KERNELS = TritonKernels()
