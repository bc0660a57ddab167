"""Functional kernels behind the blocks."""
from .global_context import global_context, global_context_residual

__all__ = ['global_context', 'global_context_residual']
