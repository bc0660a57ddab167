"""The fused path's passes over the feature map in PyTorch ops (any device,
any floating dtype, contiguous or channels_last).

Batched matrix-vector products (``bmm`` with a one-row left operand, which
reads each (C, HW) matrix in place, transposed where needed) and in-place
elementwise updates; nothing of the size of ``x`` is allocated but ``dx``.
"""
from typing import Optional

import torch
from torch import Tensor

__all__ = ['KERNELS', 'vec_mat', 'mat_vec']


def vec_mat(v: Tensor, m: Tensor) -> Tensor:
    """``out[k, p] = sum_c v[k, c] m[k, c, p]``."""
    return torch.bmm(v.unsqueeze(1), m).squeeze(1)


def mat_vec(m: Tensor, v: Tensor) -> Tensor:
    """``out[k, c] = sum_p m[k, c, p] v[k, p]``."""
    return torch.bmm(v.unsqueeze(1), m.transpose(1, 2)).squeeze(1)


class TorchKernels:
    """See the module doc; the interface every kernel set implements."""

    name = 'torch'

    @staticmethod
    def accepts(x: Tensor) -> bool:
        return x.is_floating_point()

    @staticmethod
    def forward(x_mat: Tensor, weight: Tensor):
        """(context (B, C), attention (B, HW)) of ``x_mat`` (B, C, HW) under
        logits ``weight . x`` (weight (C,)), both in ``x_mat``'s dtype."""
        b, c = x_mat.shape[:2]
        w = weight.reshape(1, c).to(x_mat.dtype).expand(b, c)
        acc = torch.promote_types(x_mat.dtype, torch.float32)
        logits = vec_mat(w, x_mat)  # (B, HW)
        attn = torch.softmax(logits, dim=1, dtype=acc).to(x_mat.dtype)
        return mat_vec(x_mat, attn), attn  # (B, C), (B, HW)

    @staticmethod
    def backward(src_mat: Tensor, attn: Tensor, dctx_src: Tensor, dctx: Tensor,
                 weight: Tensor, g: Optional[Tensor], need_x: bool,
                 need_w: bool, channels_last: bool):
        """(dx as (B, C, HW) in the layout of x, dw in source space).

        ``src_mat`` (B, C, HW) is the pooled tensor or a source it is a
        per-channel affine map of (``dctx_src`` is then ``dctx`` scaled by
        its slope); ``g`` the gradient of the fused output, or ``None``.
        dl from one read of the source, dw from another, dx in two
        elementwise passes (a gemm with K = 2 is slower on the CPU).
        """
        b, c, n = src_mat.shape
        dtype = src_mat.dtype
        acc = torch.promote_types(dtype, torch.float32)
        # d(logits) through the softmax, in float32 (or float64).
        da = vec_mat(dctx_src.to(dtype), src_mat).to(acc)  # (B, HW)
        a32 = attn.to(acc)
        dl = (a32 * (da - (a32 * da).sum(1, keepdim=True))).to(dtype)
        dx = dw = None
        if need_w:
            dw = mat_vec(src_mat, dl).sum(0)  # (C,)
        if need_x:
            if channels_last:  # (B, HW, C) memory, viewed as (B, C, HW)
                dx = torch.empty(b, n, c, dtype=dtype,
                                 device=src_mat.device).transpose(1, 2)
            else:
                dx = torch.empty(b, c, n, dtype=dtype, device=src_mat.device)
            a3 = attn.to(dtype).view(b, 1, n)
            if g is None:
                torch.mul(dctx.to(dtype).view(b, c, 1), a3, out=dx)
            else:
                torch.addcmul(g.to(dtype).reshape(b, c, n),
                              dctx.to(dtype).view(b, c, 1), a3, out=dx)
            dx.addcmul_(weight.view(1, c, 1).to(dtype), dl.view(b, 1, n))
        return dx, dw


KERNELS = TorchKernels()
