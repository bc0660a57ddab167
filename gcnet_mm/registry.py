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
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

__all__ = ['MODELS', 'HOOKS', 'MODEL_WRAPPERS']

# Let configs inherit from the package's with ``_base_ = 'gcnet_mm::...'``
# (mmengine only resolves packages it knows); effective once gcnet_mm is
# imported, as tools/train.py and tools/test.py do before reading a config.
MODULE2PACKAGE.setdefault('gcnet_mm', 'gcnet_mm')


def _find_package_configs() -> None:
    """Point mmengine's ``gcnet_mm::`` lookups at this package's directory.

    mmengine looks for ``<package>/.mim/configs`` next to the package's
    installed metadata (``get_installed_path``), which for an editable install
    (``pip install -e .``, PEP 660) is a site-packages directory that does not
    exist.  The package's own ``__file__`` is right for every kind of install;
    other packages are left to mmengine.
    """
    import os.path as osp

    import mmengine.config.config as config_module
    import mmengine.hub.hub as hub_module
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


_find_package_configs()

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
