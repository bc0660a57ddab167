"""The one place that decides between the GC block's two paths.

* **fused**: the package's autograd Functions (``attention_pool.py``):
  attention pooling and the additive fusion in fewer passes over the feature
  map, and, after a batch norm, no saved copy of the block's input
  (``norm_source.py``).  Their passes over the feature map run in one of
  three kernel sets, picked here by device, dtype and layout:

  ========== =========================================== =====================
  kernels    where                                       file
  ========== =========================================== =====================
  ``cpu``    float32/float64 CPU tensors with unit       ``cpu_kernels.py``
             stride along H*W, when ``gcnet_mm._ext``    (``csrc/``)
             is built
  ``triton`` CUDA tensors (float32/16, bfloat16), when   ``triton_kernels.py``
             Triton is installed, unless
             ``GCNET_MM_TRITON=0``; after a failed launch
             the process goes on with ``torch``
  ``torch``  everything else: PyTorch ops (batched       ``torch_kernels.py``
             matrix-vector products, in-place updates)
  ========== =========================================== =====================

* **reference**: plain PyTorch ops with mmcv's arithmetic, every module
  called as a module (``global_context.reference_global_context``); for
  average pooling and multiplicative fusion, under ``torch.jit`` tracing or
  scripting, ``torch.compile``, ``torch.export`` and ONNX export, and
  everywhere after ``set_fused(False)`` or with ``GCNET_MM_FUSED=0``.

:func:`fused_kernels` is the only function that makes this decision; every
caller asks it.  :func:`use_fused` / :func:`set_fused` are the public switch,
as timm's ``use_fused_attn`` / ``set_fused_attn`` are for attention.
"""
import contextlib
import os
from typing import Iterator, Optional

import torch
from torch import Tensor

__all__ = ['use_fused', 'set_fused', 'fused_kernels']

ENV = 'GCNET_MM_FUSED'
TRITON_ENV = 'GCNET_MM_TRITON'


def _from_env(name: str = ENV, on: str = 'fused path',
              off: str = 'reference PyTorch ops') -> bool:
    value = os.environ.get(name, '1').strip().lower()
    if value not in ('0', '1', 'false', 'true', ''):
        raise ValueError(f'{name}={value!r}: expected 1 ({on}, the '
                         f'default) or 0 ({off})')
    return value not in ('0', 'false')


_fused = _from_env()
# GCNET_MM_TRITON=0: the fused path never runs the Triton kernels.
_triton = _from_env(TRITON_ENV, 'Triton kernels on CUDA',
                    "the fused path's PyTorch ops on CUDA")
_forced: Optional[str] = None  # a kernel set name, for tests and benchmarks


def use_fused() -> bool:
    """Whether GC blocks may run their fused path (the default)."""
    return _fused


def set_fused(enable: bool = True) -> None:
    """Let GC blocks run their fused path (``True``) or only the reference
    PyTorch ops (``False``), process-wide."""
    global _fused
    if not isinstance(enable, bool):
        raise TypeError(f'set_fused expects a bool, got {enable!r}')
    _fused = enable


def _kernel_sets():
    from . import cpu_kernels, torch_kernels, triton_kernels
    return {
        'cpu': cpu_kernels.KERNELS,
        'triton': triton_kernels.KERNELS,
        'torch': torch_kernels.KERNELS,
    }


@contextlib.contextmanager
def force_kernels(name: Optional[str]) -> Iterator[None]:
    """Run the fused path on kernel set ``name`` (``'cpu'``, ``'triton'``,
    ``'torch'``) wherever it accepts the tensors, inside the ``with`` block;
    for tests and benchmarks.  ``None`` restores the automatic choice."""
    global _forced
    if name is not None and name not in _kernel_sets():
        raise ValueError(f'unknown kernel set {name!r}, expected one of '
                         f'{sorted(_kernel_sets())}')
    before, _forced = _forced, name
    try:
        yield
    finally:
        _forced = before


# Kernel sets tried in turn, per device type; the first that accepts the
# input runs.  A set that measures slower than the reference ops on a device
# (tools/gpu_check, tools/benchmark) is taken out of that device's list.
_ORDER = {
    'cpu': ('cpu', 'torch'),
    'cuda': ('triton', 'torch'),
}


def _exporting() -> bool:
    return (torch.jit.is_scripting() or torch.jit.is_tracing()
            or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export())


def fused_kernels(x: Tensor, mask_weight: Optional[Tensor],
                  add_transform, mul_transform):
    """The kernel set that runs a GC block's fused path on ``x``, or ``None``
    for the reference path.

    Args:
        x: the block's input, (B, C, H, W).
        mask_weight: the attention conv's weight, ``None`` for average
            pooling.
        add_transform / mul_transform: the fusion branches given to
            :func:`~gcnet_mm.ops.global_context`.
    """
    if not _fused or _exporting():
        return None
    if (mask_weight is None or add_transform is None
            or mul_transform is not None):
        return None  # average pooling or multiplicative fusion
    if (x.dim() != 4 or not x.is_floating_point() or x.numel() == 0
            or mask_weight.numel() != x.shape[1]):
        return None
    sets = _kernel_sets()
    order = _ORDER.get(x.device.type, ('torch', ))
    if _forced:
        order = (_forced, ) + order
    for name in order:
        if name == 'triton' and not _triton:
            continue
        if sets[name].accepts(x):
            return sets[name]
    return None
