"""The gcnet_mm scope in OpenMMLab's registry tree: a host's config names
``gcnet_mm.X`` with no import, or imports the package with custom_imports;
unprefixed names that upstream also registers stay upstream's."""
import textwrap

import pytest

from conftest import run_fresh


def test_mmdet_plugin_line_resolves_without_import():
    out = run_fresh("""
        import sys
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        register_all_modules()
        assert 'gcnet_mm' not in sys.modules
        m = MODELS.build(dict(type='ResNet', depth=50, plugins=[dict(
            cfg=dict(type='gcnet_mm.ContextBlock', ratio=1. / 16),
            stages=(False, True, True, True), position='after_conv3')]))
        print(type(m.layer3[5].context_block).__module__)
    """)
    assert out.startswith('gcnet_mm.'), out


def test_mmseg_head_and_mmpretrain_backbone_resolve_without_import():
    out = run_fresh("""
        from mmseg.registry import MODELS as SEG
        from mmseg.utils import register_all_modules
        register_all_modules()
        head = SEG.build(dict(type='gcnet_mm.GCHead', in_channels=16,
                              channels=8, num_classes=3))
        from mmpretrain.registry import MODELS as CLS
        net = CLS.build(dict(
            type='gcnet_mm.BackboneWithBlocks',
            backbone_type='mmpretrain.ResNet', depth=18,
            plugins=[dict(cfg=dict(type='gcnet_mm.SNLBlock'),
                          position='after_add', blocks={'layer3': [-1]})]))
        print(type(head).__module__, type(net).__module__,
              type(net.layer3[1].snl_block).__module__)
    """)
    head_mod, net_mod, block_mod = out.split()
    assert head_mod.startswith('gcnet_mm.')
    assert net_mod.startswith('mmpretrain.')  # the host's own class
    assert block_mod.startswith('gcnet_mm.')


def test_custom_imports_and_unprefixed_names(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(textwrap.dedent("""
        custom_imports = dict(imports=['gcnet_mm'], allow_failed_imports=False)
        default_scope = 'mmdet'
        block = dict(type='gcnet_mm.ContextBlock', in_channels=32, ratio=1/4)
        upstream = dict(type='ContextBlock', in_channels=32, ratio=1/4)
    """))
    out = run_fresh(f"""
        import sys
        from mmengine.config import Config
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        register_all_modules()
        cfg = Config.fromfile({str(cfg)!r})
        assert 'gcnet_mm' in sys.modules  # imported by custom_imports
        ours = MODELS.build(cfg.block)
        theirs = MODELS.build(cfg.upstream)
        print(type(ours).__module__, type(theirs).__module__)
    """)
    ours, theirs = out.split()
    assert ours.startswith('gcnet_mm.')
    # Without the prefix mmdet's scope finds mmcv's block: the reason the
    # package's configs always write 'gcnet_mm.'.
    assert theirs.startswith('mmcv.')


@pytest.mark.parametrize('name', ['ContextBlock', 'SNLBlock', 'NonLocalBlock',
                                  'SEBlock', 'GCHead', 'NonLocalHead',
                                  'SNLHead', 'BackboneWithBlocks'])
def test_everything_is_registered_in_scope(name):
    from gcnet_mm.registry import MODELS
    assert MODELS.get(name) is not None
    assert MODELS.scope == 'gcnet_mm'


def test_readme_mmdet_snippet_builds_in_a_plain_mmdet_config(tmp_path):
    """As a user would: paste the README's snippet under an mmdet base."""
    import os.path as osp
    import re
    readme = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                      'README.md')
    blocks = re.findall(r'```python\n(.*?)```', open(readme).read(), re.S)
    snippet = next(b for b in blocks if "plugins=[" in b
                   and "gcnet_mm.ContextBlock" in b
                   and 'BackboneWith' not in b)
    cfg = tmp_path / 'mask-rcnn_r50-gc_fpn_1x_coco.py'
    cfg.write_text("_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'\n"
                   + snippet)
    out = run_fresh(f"""
        from mmengine.config import Config
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        register_all_modules()
        cfg = Config.fromfile({str(cfg)!r})
        cfg.model.backbone.init_cfg = None
        model = MODELS.build(cfg.model)
        names = [n for n, m in model.named_modules()
                 if type(m).__name__ == 'ContextBlock']
        mods = {{type(m).__module__ for m in model.modules()
                if type(m).__name__ == 'ContextBlock'}}
        print(len(names), names[0], *mods)
    """)
    count, first, *mods = out.split()
    assert int(count) == 4 + 6 + 3  # every block of c3-c5 in R-50
    assert first == 'backbone.layer2.0.context_block'
    assert len(mods) == 1 and mods[0].startswith('gcnet_mm.')


def test_mmaction_backbone_and_3d_blocks_resolve_without_import():
    pytest.importorskip('mmaction')
    out = run_fresh("""
        import sys
        from mmaction.registry import MODELS
        from mmaction.utils import register_all_modules
        register_all_modules()
        assert 'gcnet_mm' not in sys.modules
        net = MODELS.build(dict(
            type='gcnet_mm.BackboneWithBlocks',
            backbone_type='mmaction.ResNet3dSlowOnly', depth=18,
            base_channels=8, pretrained=None, lateral=False,
            plugins=[dict(cfg=dict(type='gcnet_mm.ContextBlock3d'),
                          position='after_add',
                          stages=(False, False, False, True))]))
        print(type(net).__module__, type(net.layer4[1].context_block).__name__)
    """)
    net_mod, block = out.split()
    assert net_mod.startswith('mmaction.')  # the host's own class
    assert block == 'ContextBlock3d'
