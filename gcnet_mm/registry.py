"""Registries of gcnet_mm, children of mmengine's root registries.

Every registry here has the scope ``gcnet_mm``, so a config of mmdet,
mmsegmentation or mmpretrain (or any other OpenMMLab project) can name
``type='gcnet_mm.ContextBlock'`` without ``custom_imports``: mmengine imports
``gcnet_mm.registry`` when it meets the scope, and each registry imports its
``locations`` the first time it is searched.

Names that upstream registers too (``ContextBlock`` in mmcv, ``GCHead`` in
mmseg) resolve to this package's classes only when written with the
``gcnet_mm.`` prefix; the package's own configs always write it.
"""
import os.path as osp

import mmengine.config.config as config_module
import mmengine.hub.hub as hub_module
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

__all__ = ['MODELS', 'HOOKS', 'MODEL_WRAPPERS']

# Global, for upstream's tools: mmengine resolves ``_base_ = 'pkg::...'``
# only for the packages this table names, so a user's config on a
# ``gcnet_mm::`` base reads in mmdet's own tools/train.py run as ``python -m
# gcnet_mm TOOL.py`` (README), in mmengine.hub.get_config and in the
# package's tools: tests/test_import_effects.py.
MODULE2PACKAGE.setdefault('gcnet_mm', 'gcnet_mm')


def _wrap_get_installed_path() -> None:
    """Point mmengine's ``gcnet_mm::`` lookups at this package's directory.

    mmengine looks for ``<package>/.mim/configs`` next to the package's
    installed metadata (``get_installed_path``), which for an editable install
    (``pip install -e .``, PEP 660, as the README installs) is a
    site-packages directory that does not exist; a wheel's install needs
    none of this.  The package's own ``__file__`` is right for every kind of
    install; other packages are left to mmengine.
    """
    upstream = config_module.get_installed_path
    if getattr(upstream, 'gcnet_mm', False):
        return
    here = osp.dirname(osp.abspath(__file__))

    def get_installed_path(package: str) -> str:
        if package == 'gcnet_mm':
            return here
        return upstream(package)

    get_installed_path.gcnet_mm = True
    config_module.get_installed_path = get_installed_path
    hub_module.get_installed_path = get_installed_path


# Global, for the same tools as MODULE2PACKAGE above, with an editable
# install: tests/test_import_effects.py.
_wrap_get_installed_path()

#: Blocks, heads and the block-placing backbone builder.
MODELS = Registry(
    'model', parent=MMENGINE_MODELS, scope='gcnet_mm',
    locations=['gcnet_mm.models'])
HOOKS = Registry(
    'hook', parent=MMENGINE_HOOKS, scope='gcnet_mm',
    locations=['gcnet_mm.engine'])
MODEL_WRAPPERS = Registry(
    'model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope='gcnet_mm',
    locations=['gcnet_mm.engine'])
