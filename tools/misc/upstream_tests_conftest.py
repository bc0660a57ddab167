"""conftest.py of tools/misc/upstream_tests.py: upstream's unit tests get
gcnet_mm's drop-in classes under upstream's names.

Before any test module imports them (``GCNET_MM_UPSTREAM_SHIM=1``):

- ``mmcv.cnn.ContextBlock``, ``mmcv.cnn.bricks.ContextBlock`` ->
  ``gcnet_mm.ContextBlock``; ``mmcv.cnn(.bricks).NonLocal2d`` ->
  ``gcnet_mm.NonLocalBlock``;
- ``mmseg.models.decode_heads.GCHead`` / ``NLHead`` -> ``gcnet_mm.GCHead`` /
  ``NonLocalHead``;
- the plugin types ``ContextBlock`` and ``NonLocal2d`` of mmengine's root
  registry (what mmdet's Bottleneck builds through mmcv's
  ``build_plugin_layer``) -> the same gcnet_mm classes.

Then it checks that the binding holds: an mmdet Bottleneck with both
plugins holds gcnet_mm's blocks. ``GCNET_MM_UPSTREAM_SHIM=0`` binds nothing.
"""
import importlib.util
import os

import mmcv.cnn
import mmcv.cnn.bricks
import pytest
from mmengine.registry import MODELS

SHIM = os.environ.get('GCNET_MM_UPSTREAM_SHIM', '1') == '1'


def _bind() -> None:
    # gcnet_mm is imported here only: with GCNET_MM_UPSTREAM_SHIM=0
    # upstream's tests run with nothing of it loaded.
    from gcnet_mm.models.blocks import ContextBlock, NonLocalBlock
    mmcv.cnn.ContextBlock = mmcv.cnn.bricks.ContextBlock = ContextBlock
    mmcv.cnn.NonLocal2d = mmcv.cnn.bricks.NonLocal2d = NonLocalBlock
    MODELS.register_module('ContextBlock', module=ContextBlock, force=True)
    MODELS.register_module('NonLocal2d', module=NonLocalBlock, force=True)
    if importlib.util.find_spec('mmseg') is not None:
        import mmseg.models.decode_heads as heads  # an optional host

        from gcnet_mm.models.heads import GCHead, NonLocalHead
        heads.GCHead, heads.NLHead = GCHead, NonLocalHead


def _check(plugins: bool = True) -> None:
    from gcnet_mm.models.blocks import ContextBlock, NonLocalBlock  # as above
    assert mmcv.cnn.bricks.ContextBlock is ContextBlock
    if plugins and importlib.util.find_spec('mmdet') is not None:
        from mmdet.models.backbones.resnet import Bottleneck  # optional host
        block = Bottleneck(64, 16, plugins=[
            dict(cfg=dict(type='ContextBlock', ratio=1. / 16),
                 position='after_conv3'),
            dict(cfg=dict(type='NonLocal2d'), position='after_conv2')])
        assert type(block.context_block) is ContextBlock, type(
            block.context_block)
        assert type(block.nonlocal_block) is NonLocalBlock


def pytest_configure(config):
    if SHIM:
        _bind()
        _check()


def pytest_report_header(config):
    return ('upstream tests against: ' +
            ('gcnet_mm classes' if SHIM else 'upstream classes'))


@pytest.fixture(autouse=True)
def _binding_holds():
    """Every test runs with the binding in place."""
    if SHIM:
        _check(plugins=False)
    yield
