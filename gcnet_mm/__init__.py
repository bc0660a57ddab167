"""GCNet (Global Context Networks) for the OpenMMLab ecosystem.

Importing the package registers its modules under the ``gcnet_mm`` scope; a
config may also name them as ``type='gcnet_mm.ContextBlock'`` with no import.
Everything the import changes outside the package is listed, with the
upstream tool each change serves, in docs/internals.md.
"""
from . import models  # noqa: F401  (registers the blocks, heads, builder)
from . import registry  # noqa: F401  (hooks the scope into mmengine's tree)
from .engine.checkpoint import register_safe_globals
from .version import __version__

# Global, for upstream's tools: mmengine's CheckpointLoader calls torch.load
# with torch's default, weights-only from torch 2.6, which refuses the
# HistoryBuffer and numpy objects of every checkpoint a Runner saves.  This
# lets mmdet's (mmseg's, ...) own tools/test.py load, and tools/train.py
# --resume, such a checkpoint of a config that names a gcnet_mm type (which
# imports the package): tests/test_import_effects.py.
register_safe_globals()

__all__ = ['__version__']
