"""Context-modelling blocks: GC (ours), and SNL, NL, SE for comparison.

All share one calling convention: ``Block(in_channels, ...)`` with the rest
keyword, ``forward(x)`` maps (B, C, H, W) to the same shape.
"""
from .context_block import ContextBlock, SNLBlock
from .nonlocal_block import NonLocalBlock
from .se_block import SEBlock

__all__ = ['ContextBlock', 'SNLBlock', 'NonLocalBlock', 'SEBlock']
