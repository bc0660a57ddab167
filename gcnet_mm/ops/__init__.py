"""Functional kernels behind the blocks."""
from .dispatch import set_fused, use_fused
from .global_context import global_context, global_context_residual

__all__ = ['global_context', 'global_context_residual', 'use_fused', 'set_fused']
