"""The fused path's passes over the feature map in the fused CPU loops
(``gcnet_mm/csrc``, built into ``gcnet_mm._ext`` by setup.py).

Float32/float64 CPU tensors with unit stride along H*W (contiguous, not
channels_last).  The logits, softmax and context come from one read of x,
``da`` and ``dw`` from one read of the source, and ``dx`` from one pass (read
g, write dx): 7 streams over the feature map per forward + backward where the
PyTorch ops take 11.  ``GCNET_MM_EXT_ISA=generic`` runs the portable copy of
the loops instead of the AVX2 + FMA one (for tests).
"""
import importlib
import warnings
from typing import Optional

import torch
from torch import Tensor

__all__ = ['KERNELS', 'extension_isa']


def _load_extension():
    """``gcnet_mm._ext``, or ``None``; one that is built but does not load
    (compiled against another torch) says so once."""
    try:
        return importlib.import_module('gcnet_mm._ext')
    except ModuleNotFoundError:
        return None  # not built: the other kernels, as documented
    except ImportError as e:
        warnings.warn(
            f'gcnet_mm._ext does not load ({e}); the GC block runs its '
            'fused path in PyTorch ops (same results, slower on the CPU). '
            'Rebuild it against this torch: '
            'pip install --no-build-isolation -e .')
        return None


_ext = _load_extension()


def extension_isa() -> Optional[str]:
    """Instruction set of the fused CPU loops (``'avx2'`` or ``'generic'``),
    or ``None`` when ``gcnet_mm._ext`` is not built."""
    return _ext.isa() if _ext is not None else None


class CPUKernels:
    """See :class:`~gcnet_mm.ops.torch_kernels.TorchKernels`."""

    name = 'cpu'

    @staticmethod
    def accepts(x: Tensor) -> bool:
        if (_ext is None or x.device.type != 'cpu'
                or x.dtype not in (torch.float32, torch.float64)):
            return False
        b, c = x.shape[:2]
        n = x[0, 0].numel() if x.numel() else 0
        try:
            m = x.view(b, c, n)
        except RuntimeError:
            return False
        return (n <= 1 or m.stride(2) == 1) and (c == 1 or m.stride(1) >= n)

    @staticmethod
    def forward(x_mat: Tensor, weight: Tensor):
        c = x_mat.shape[1]
        w = weight.reshape(c).to(x_mat.dtype).contiguous()
        return tuple(_ext.attention_pool_forward(x_mat, w))

    @staticmethod
    def backward(src_mat: Tensor, attn: Tensor, dctx_src: Tensor, dctx: Tensor,
                 weight: Tensor, g: Optional[Tensor], need_x: bool,
                 need_w: bool, channels_last: bool):
        b, c, n = src_mat.shape
        dtype = src_mat.dtype
        g_mat = None
        if g is not None and need_x:
            g_mat = g.to(dtype).reshape(b, c, n).contiguous()
        return _ext.attention_pool_backward(
            src_mat, attn.to(dtype).contiguous(),
            dctx_src.to(dtype).contiguous(), dctx.to(dtype).contiguous(),
            weight.to(dtype).contiguous(), g_mat, need_x, need_w)


KERNELS = CPUKernels()
