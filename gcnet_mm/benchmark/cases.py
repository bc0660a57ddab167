"""The inputs measured: a ResNet-50's c3/c4/c5 shapes and memory layouts."""
from typing import List, Tuple

import torch

LAYOUTS = ('contiguous', 'channels_last')


def block_shapes(height: int, width: int,
                 batch: int) -> List[Tuple[int, int, int, int]]:
    """(B, C, H, W) of a ResNet-50's c3, c4 and c5 outputs (stride 8, 16,
    32; C = 512, 1024, 2048) for a ``height`` x ``width`` input."""
    return [(batch, 256 * 2**i, -(-height // s), -(-width // s))
            for i, s in ((1, 8), (2, 16), (3, 32))]


def layout_of(layout: str) -> torch.memory_format:
    """The memory format of a layout of :data:`LAYOUTS`."""
    if layout not in LAYOUTS:
        raise ValueError(f'unknown layout {layout!r}, expected one of '
                         f'{LAYOUTS}')
    return (torch.channels_last if layout == 'channels_last' else
            torch.contiguous_format)
