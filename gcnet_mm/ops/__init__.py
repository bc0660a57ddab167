"""Functional kernels behind the blocks, and the switch between their fused
and reference paths (see ``dispatch.py``)."""
from .dispatch import set_fused, use_fused
from .global_context import global_context, reference_global_context

__all__ = ['global_context', 'reference_global_context', 'use_fused',
           'set_fused']
