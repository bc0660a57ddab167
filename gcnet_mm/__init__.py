"""GCNet (Global Context Networks) for the OpenMMLab ecosystem.

Importing the package registers its modules under the ``gcnet_mm`` scope; a
config may also name them as ``type='gcnet_mm.ContextBlock'`` with no import.
"""
from .version import __version__
from . import registry  # noqa: F401  (hooks the scope into mmengine's tree)
from . import models  # noqa: F401,E402

__all__ = ['__version__']
