"""The one switch between the GC block's two paths.

* **fused**: the package's autograd Function (``attention_pool.py``), with
  fused loops where the device has them; fewer passes over the feature map,
  and no saved copy of the block's input when a batch norm's can recompute it.
* **reference**: plain PyTorch ops with mmcv's arithmetic
  (``global_context.reference_global_context``).

``set_fused(False)`` (or ``GCNET_MM_FUSED=0`` in the environment) runs the
reference path everywhere, as timm's ``set_fused_attn`` does for attention.
"""
import os

__all__ = ['use_fused', 'set_fused']

_ENV = 'GCNET_MM_FUSED'


def _from_env() -> bool:
    value = os.environ.get(_ENV, '1').strip().lower()
    if value not in ('0', '1', 'false', 'true', ''):
        raise ValueError(f'{_ENV}={value!r}: expected 1 (fused path, the '
                         'default) or 0 (reference PyTorch ops)')
    return value not in ('0', 'false')


_fused = _from_env()


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
