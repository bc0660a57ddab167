"""Blocks, heads and block placement; importing registers them."""
from .blocks import *  # noqa: F401,F403
from .placement import *  # noqa: F401,F403

try:  # the decode heads need mmsegmentation
    from .heads import *  # noqa: F401,F403
except ImportError as e:  # pragma: no cover - only without mmseg
    import warnings
    warnings.warn(f'gcnet_mm: decode heads unavailable ({e}); '
                  'install mmsegmentation to use GCHead')
