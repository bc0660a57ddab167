"""mmsegmentation decode heads with a context block between two convs."""
from .block_fcn_head import BlockFCNHead, GCHead, NonLocalHead, SNLHead

__all__ = ['BlockFCNHead', 'GCHead', 'NonLocalHead', 'SNLHead']
