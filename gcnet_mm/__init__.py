"""GCNet (Global Context Networks) for the OpenMMLab ecosystem.

Importing the package registers its modules under the ``gcnet_mm`` scope; a
config may also name them as ``type='gcnet_mm.ContextBlock'`` with no import.
"""
from . import models  # noqa: F401,E402
from . import registry  # noqa: F401  (hooks the scope into mmengine's tree)
from .engine.checkpoint import register_safe_globals
from .version import __version__

# Weights-only torch.load (the default from torch 2.6) of OpenMMLab's own
# checkpoints works in any process that imports the package, e.g. mmdet's
# tools with custom_imports=['gcnet_mm'].
register_safe_globals()

__all__ = ['__version__']
