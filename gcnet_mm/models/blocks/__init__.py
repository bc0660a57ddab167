"""Context-modelling blocks: GC (ours), and SNL, NL, SE for comparison.

All share one calling convention: ``Block(in_channels, ...)`` with the rest
keyword, ``forward(x)`` maps (B, C, H, W) to the same shape; the ``*3d``
blocks do the same on video features (B, C, T, H, W).
"""
from .context_block import ContextBlock, SNLBlock
from .context_block_3d import ContextBlock3d, SNLBlock3d
from .nonlocal_block import NonLocalBlock, NonLocalBlock3d
from .se_block import SEBlock

__all__ = [
    'ContextBlock', 'SNLBlock', 'NonLocalBlock', 'SEBlock', 'ContextBlock3d',
    'SNLBlock3d', 'NonLocalBlock3d'
]
