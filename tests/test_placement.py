"""insert_blocks / BackboneWithBlocks on the ResNets of mmdet, mmseg and
mmpretrain: equality with mmdet's native plugins, after_add and chosen-block
placement against a structural reference, errors, init, copy, trace, compile.
"""
import copy
import pickle
from functools import partial

import pytest
import torch
from mmengine.registry import DefaultScope
from torch import nn

import gcnet_mm  # noqa: F401  (registers the gcnet_mm scope)
from conftest import randomize_
from gcnet_mm.models import BackboneWithBlocks, insert_blocks
from gcnet_mm.models.blocks import ContextBlock, NonLocalBlock, SNLBlock
from gcnet_mm.registry import MODELS

mmdet_resnet = pytest.importorskip('mmdet.models.backbones.resnet')
mmseg_resnet = pytest.importorskip('mmseg.models.backbones.resnet')
mmpretrain_resnet = pytest.importorskip('mmpretrain.models.backbones.resnet')
mmdet_resnext = pytest.importorskip('mmdet.models.backbones.resnext')
mmseg_resnext = pytest.importorskip('mmseg.models.backbones.resnext')
mmpretrain_resnext = pytest.importorskip('mmpretrain.models.backbones.resnext')

GC = dict(type='gcnet_mm.ContextBlock', ratio=1 / 4)
NL = dict(type='gcnet_mm.NonLocalBlock', norm_cfg=dict(type='BN'))  # paper's
SNL = dict(type='gcnet_mm.SNLBlock')
C3_C5 = (False, True, True, True)

# Tiny hosts: ResNet-50/18 layouts with few channels.
TINY = dict(stem_channels=8, base_channels=8)
ALL_OUTS = dict(out_indices=(0, 1, 2, 3))  # mmpretrain's default is (3, )
HOSTS = {
    'mmdet.ResNet-50':
    partial(mmdet_resnet.ResNet, depth=50, **TINY),
    'mmdet.ResNeXt-50':
    partial(mmdet_resnext.ResNeXt, depth=50, groups=2, base_width=4, **TINY),
    'mmseg.ResNetV1c-50':
    partial(mmseg_resnet.ResNetV1c,
            depth=50,
            strides=(1, 2, 1, 1),
            dilations=(1, 1, 2, 4),
            **TINY),
    'mmseg.ResNeXt-50':
    partial(mmseg_resnext.ResNeXt, depth=50, groups=2, base_width=4, **TINY),
    'mmpretrain.ResNet-50':
    partial(mmpretrain_resnet.ResNet, depth=50, **TINY, **ALL_OUTS),
    'mmpretrain.ResNeXt-50':
    partial(mmpretrain_resnext.ResNeXt,
            depth=50,
            groups=2,
            width_per_group=4,
            **TINY,
            **ALL_OUTS),
    'mmpretrain.ResNet-18':
    partial(mmpretrain_resnet.ResNet, depth=18, **TINY, **ALL_OUTS),
    'mmdet.ResNet-18':
    partial(mmdet_resnet.ResNet, depth=18, **TINY),
}


def image(seed: int = 1, size: int = 32) -> torch.Tensor:
    return torch.randn(2,
                       3,
                       size,
                       size,
                       generator=torch.Generator().manual_seed(seed))


def assert_same_outputs(a, b, **tol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **tol)


def inserted(model: nn.Module, cls=nn.Module):
    """Names of the inserted blocks of type ``cls``."""
    return [
        n for n, m in model.named_modules()
        if n.rsplit('.', 1)[-1] in ('context_block', 'nonlocal_block',
                                    'snl_block',
                                    'se_block') and isinstance(m, cls)
    ]


# -- equality with mmdet's native plugins ----------------------------------

NATIVE_CASES = {
    'gc_after_conv1': [dict(cfg=GC, stages=C3_C5, position='after_conv1')],
    'gc_after_conv2': [dict(cfg=GC, stages=C3_C5, position='after_conv2')],
    'gc_after_conv3': [dict(cfg=GC, stages=C3_C5, position='after_conv3')],
    'nl_after_conv2':
    [dict(cfg=NL, stages=(False, False, True, False), position='after_conv2')],
    'all_positions_postfix': [
        dict(cfg=GC, stages=(True, False, True, True), position='after_conv1'),
        dict(cfg=SNL, stages=C3_C5, position='after_conv2'),
        dict(cfg=dict(GC, postfix=1), stages=C3_C5, position='after_conv3'),
        dict(cfg=dict(GC, ratio=1 / 8, postfix=2),
             stages=C3_C5,
             position='after_conv3'),
    ],
}


@pytest.mark.parametrize('case', list(NATIVE_CASES))
def test_equals_mmdet_native_plugins(case):
    plugins = NATIVE_CASES[case]
    native = mmdet_resnet.ResNet(depth=50,
                                 stem_channels=8,
                                 base_channels=8,
                                 plugins=copy.deepcopy(plugins))
    ours = insert_blocks(
        mmdet_resnet.ResNet(depth=50, stem_channels=8, base_channels=8),
        copy.deepcopy(plugins))
    assert list(ours.state_dict()) == list(native.state_dict())
    randomize_(native)
    ours.load_state_dict(native.state_dict(), strict=True)
    ours.eval()
    x = image()
    assert_same_outputs(ours(x), native(x))
    # gradients through the blocks match too
    native.zero_grad()
    ours.zero_grad()
    sum(o.sum() for o in native(x)).backward()
    sum(o.sum() for o in ours(x)).backward()
    ng = dict(native.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ng[name].grad)


def test_equals_mmdet_native_plugins_with_dcn():
    plugins = NATIVE_CASES['all_positions_postfix']
    kwargs = dict(depth=50,
                  stem_channels=8,
                  base_channels=8,
                  stage_with_dcn=(False, True, True, True))
    dcn = dict(type='DCNv2', deform_groups=1, fallback_on_stride=False)
    native = randomize_(
        mmdet_resnet.ResNet(plugins=copy.deepcopy(plugins),
                            dcn=copy.deepcopy(dcn),
                            **kwargs))
    ours = insert_blocks(mmdet_resnet.ResNet(dcn=copy.deepcopy(dcn), **kwargs),
                         plugins)
    assert type(ours.layer2[0].conv2).__name__ == 'ModulatedDeformConv2dPack'
    assert list(ours.state_dict()) == list(native.state_dict())
    ours.load_state_dict(native.state_dict(), strict=True)
    ours.eval()
    x = image()
    assert_same_outputs(ours(x), native(x))


def test_equals_mmdet_native_plugins_with_checkpointing():
    """with_cp re-runs the block forward (and its hooks) in backward."""
    plugins = NATIVE_CASES['all_positions_postfix']
    kwargs = dict(depth=50,
                  stem_channels=8,
                  base_channels=8,
                  with_cp=True,
                  norm_eval=True)
    native = randomize_(
        mmdet_resnet.ResNet(plugins=copy.deepcopy(plugins), **kwargs))
    ours = insert_blocks(mmdet_resnet.ResNet(**kwargs), plugins)
    ours.load_state_dict(native.state_dict(), strict=True)
    native.train()
    ours.train()  # norm_eval keeps BN statistics fixed
    x = image().requires_grad_()
    sum(o.sum() for o in native(x)).backward()
    grad = x.grad.clone()
    x.grad = None
    sum(o.sum() for o in ours(x)).backward()
    torch.testing.assert_close(x.grad, grad)
    ng = dict(native.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ng[name].grad)


def test_plain_mmdet_plugin_line_builds_gcnet_mm_blocks():
    """mmdet's own plugins= with type='gcnet_mm.ContextBlock' keeps working
    and builds this package's class, not mmcv's."""
    from mmcv.cnn import ContextBlock as MMCVContextBlock
    from mmdet.registry import MODELS as MMDET_MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = MMDET_MODELS.build(
            dict(type='ResNet',
                 depth=50,
                 stem_channels=8,
                 base_channels=8,
                 plugins=[
                     dict(cfg=dict(type='gcnet_mm.ContextBlock', ratio=1 / 16),
                          stages=C3_C5,
                          position='after_conv3')
                 ]))
    blocks = [
        m for m in backbone.modules()
        if isinstance(m, (ContextBlock, MMCVContextBlock))
    ]
    assert len(blocks) == 4 + 6 + 3
    assert all(type(m) is ContextBlock for m in blocks)
    assert 'layer2.0.context_block.conv_mask.weight' in backbone.state_dict()


# -- after_add and chosen blocks, against a structural reference ------------


def reference(plain: nn.Module, ours: nn.Module, layer: str, index: int,
              position: str, name: str) -> nn.Module:
    """A copy of ``plain`` with the block wired by replacing a layer with an
    nn.Sequential, no hooks involved."""
    ref = copy.deepcopy(plain)
    blk = copy.deepcopy(getattr(getattr(ours, layer)[index], name))
    host = getattr(ref, layer)[index]
    if position == 'after_add':
        getattr(ref, layer)[index] = nn.Sequential(host, blk)
    elif position == 'after_conv1':
        host.conv2 = nn.Sequential(blk, host.conv2)
    elif position == 'after_conv2' and hasattr(host, 'conv3'):
        host.conv3 = nn.Sequential(blk, host.conv3)
    else:
        attr = host.norm2_name if position == 'after_conv2' \
            else host.norm3_name
        setattr(host, attr, nn.Sequential(getattr(host, attr), blk))
    ref.eval()
    return ref


PLACEMENTS = [
    # (position, blocks, block cfg, abbr)
    ('after_add', {
        'layer3': [-2]
    }, GC, 'context_block'),
    ('after_add', {
        'layer3': [-2]
    }, NL, 'nonlocal_block'),
    ('after_add', {
        'layer2': [0],
        'layer4': [-1]
    }, SNL, 'snl_block'),
    ('after_conv1', {
        'layer3': [1]
    }, GC, 'context_block'),
    ('after_conv2', {
        'layer3': [-2]
    }, GC, 'context_block'),
    ('after_conv3', {
        'layer3': [-2]
    }, GC, 'context_block'),
]


@pytest.mark.parametrize('host', list(HOSTS))
@pytest.mark.parametrize('position,blocks,cfg,abbr', PLACEMENTS)
def test_chosen_blocks_match_reference(host, position, blocks, cfg, abbr):
    plain = randomize_(HOSTS[host]())
    bottleneck = hasattr(plain.layer1[0], 'conv3')
    if position == 'after_conv3' and not bottleneck:
        pytest.skip('BasicBlock has no conv3 (tested in the error cases)')
    ours = insert_blocks(copy.deepcopy(plain),
                         [dict(cfg=cfg, position=position, blocks=blocks)])
    names = inserted(ours)
    want = [
        f'{layer}.{i % len(getattr(plain, layer))}.{abbr}'
        for layer, idx in blocks.items() for i in idx
    ]
    assert names == want
    randomize_(ours, seed=3)  # non-zero block weights (plain part unchanged
    ours.load_state_dict(  # ... reset to plain's below)
        {
            **ours.state_dict(),
            **plain.state_dict()
        },
        strict=True)
    ref = plain
    for layer, idx in blocks.items():
        for i in idx:
            ref = reference(ref, ours, layer, i % len(getattr(plain, layer)),
                            position, abbr)
    x = image()
    out = ours(x)
    assert_same_outputs(out, ref(x))
    # the block changed something
    assert not all(torch.allclose(a, b) for a, b in zip(out, plain(x)))


@pytest.mark.parametrize('host', ['mmdet.ResNet-18', 'mmpretrain.ResNet-18'])
def test_basic_block_whole_stages(host):
    plain = randomize_(HOSTS[host]())
    ours = insert_blocks(copy.deepcopy(plain), [
        dict(cfg=GC, stages=C3_C5, position='after_conv2'),
        dict(cfg=SNL,
             stages=(True, False, False, False),
             position='after_conv1'),
    ])
    assert inserted(ours) == [
        'layer1.0.snl_block', 'layer1.1.snl_block', 'layer2.0.context_block',
        'layer2.1.context_block', 'layer3.0.context_block',
        'layer3.1.context_block', 'layer4.0.context_block',
        'layer4.1.context_block'
    ]
    assert ours.layer4[0].context_block.in_channels == 64
    randomize_(ours, seed=3)
    ours.load_state_dict({**ours.state_dict(), **plain.state_dict()})
    ref = plain
    for layer in ('layer2', 'layer3', 'layer4'):
        for i in range(2):
            ref = reference(ref, ours, layer, i, 'after_conv2',
                            'context_block')
    for i in range(2):
        ref = reference(ref, ours, 'layer1', i, 'after_conv1', 'snl_block')
    x = image()
    assert_same_outputs(ours(x), ref(x))


def test_channels_filled_in():
    ours = insert_blocks(HOSTS['mmpretrain.ResNet-50'](), [
        dict(cfg=GC, blocks={'layer3': [0]}, position='after_conv1'),
        dict(cfg=GC, blocks={'layer3': [0]}, position='after_conv2',
             postfix=2),
        dict(cfg=dict(GC, postfix='_c3'),
             blocks={'layer3': [0]},
             position='after_conv3'),
        dict(cfg=GC,
             blocks={'layer3': [0]},
             position='after_add',
             postfix='_add')
    ])
    blk = ours.layer3[0]
    assert blk.context_block.in_channels == 32  # after_conv1
    assert blk.context_block2.in_channels == 32
    assert blk.context_block_c3.in_channels == 128
    assert blk.context_block_add.in_channels == 128


# -- errors ----------------------------------------------------------------

ERRORS = [
    (dict(cfg=GC, stages=(True, ) * 3, position='after_conv3'), ValueError,
     r'stages=\(True, True, True\) has 3 entries.*4 stages'),
    (dict(cfg=GC, stages=C3_C5, blocks={'layer3': [0]},
          position='after_conv3'), ValueError, r'exactly one of stages'),
    (dict(cfg=GC, position='after_conv3'), ValueError,
     r'exactly one of stages.*stages=None, blocks=None'),
    (dict(cfg=GC, blocks={'layer5': [0]}, position='after_add'), ValueError,
     r"layer 'layer5'.*allowed: \['layer1', 'layer2', 'layer3', 'layer4'\]"),
    (dict(cfg=GC, blocks={'layer3': [6]}, position='after_add'), ValueError,
     r'block index 6 is outside layer3.*6 residual blocks.*-6 to 5'),
    (dict(cfg=GC, blocks={'layer3': [-7]},
          position='after_add'), ValueError, r'block index -7'),
    (dict(cfg=GC, blocks={'layer3': ['1']}, position='after_add'), TypeError,
     r"blocks\['layer3'\] must be a list of int"),
    (dict(cfg=GC, stages=C3_C5, position='after_relu'), ValueError,
     r"unknown position 'after_relu'.*'after_conv1'.*'after_add'"),
    (dict(cfg=GC, stages=C3_C5, position='after_conv3',
          stage=C3_C5), ValueError, r"unknown keys \['stage'\]"),
    (dict(cfg='ContextBlock', stages=C3_C5, position='after_conv3'), TypeError,
     r'cfg must be a block config dict'),
    (dict(cfg=dict(GC, in_channels=3),
          blocks={'layer1': [0]},
          position='after_add'), ValueError, r'in_channels=3.*32 channels'),
]


@pytest.mark.parametrize('plugin,exc,match', ERRORS)
def test_errors(plugin, exc, match):
    backbone = HOSTS['mmdet.ResNet-50']()
    keys = list(backbone.state_dict())
    with pytest.raises(exc, match=match):
        insert_blocks(backbone, [plugin])
    assert list(backbone.state_dict()) == keys  # left untouched


def test_error_after_conv3_in_basic_block():
    backbone = HOSTS['mmpretrain.ResNet-18']()
    with pytest.raises(ValueError,
                       match=r"'after_conv3' does not exist in "
                       r'layer2\.0, a BasicBlock'):
        insert_blocks(backbone,
                      [dict(cfg=GC, stages=C3_C5, position='after_conv3')])


def test_error_duplicate_name():
    backbone = HOSTS['mmdet.ResNet-50']()
    plugin = dict(cfg=GC, blocks={'layer3': [1]}, position='after_conv3')
    with pytest.raises(ValueError,
                       match=r"layer3\.1 already has .* named "
                       r"'context_block'.*postfix"):
        insert_blocks(backbone, [plugin, dict(plugin, position='after_add')])
    insert_blocks(backbone, [plugin])
    with pytest.raises(ValueError, match=r"'context_block'"):
        insert_blocks(backbone, [plugin])
    # same block named twice through negative and positive indices
    with pytest.raises(ValueError, match=r"layer2\.3 already has"):
        insert_blocks(backbone, [dict(plugin, blocks={'layer2': [3, -1]})])


def test_error_not_a_resnet():
    with pytest.raises(TypeError, match=r'res_layers.*got Conv2d'):
        insert_blocks(nn.Conv2d(3, 3, 1),
                      [dict(cfg=GC, stages=C3_C5, position='after_add')])


@pytest.mark.parametrize('backbone_type,exc,match', [
    ('ResNet', ValueError, r"backbone_type='ResNet' has no scope.*"
     r"'mmdet\.ResNet'"),
    ('mmdet.ResNot', ValueError, r"'mmdet\.ResNot' is not registered"),
    (None, TypeError, r'backbone_type must be a scoped type name'),
])
def test_builder_errors(backbone_type, exc, match):
    with pytest.raises(exc, match=match):
        BackboneWithBlocks(backbone_type=backbone_type, depth=18, plugins=[])


# -- builder, init, copy, serialisation, trace, compile ---------------------


def build_with_blocks(backbone_type='mmdet.ResNet', **kwargs):
    cfg = dict(type='gcnet_mm.BackboneWithBlocks',
               backbone_type=backbone_type,
               depth=50,
               stem_channels=8,
               base_channels=8,
               plugins=[
                   dict(cfg=GC, stages=C3_C5, position='after_conv3'),
                   dict(cfg=NL, blocks={'layer3': [-2]}, position='after_add'),
                   dict(cfg=SNL, blocks={'layer4': [0]}, position='after_add'),
               ],
               **kwargs)
    return MODELS.build(cfg)


@pytest.mark.parametrize('backbone_type,cls', [
    ('mmdet.ResNet', mmdet_resnet.ResNet),
    ('mmseg.ResNetV1c', mmseg_resnet.ResNetV1c),
    ('mmpretrain.ResNetV1d', mmpretrain_resnet.ResNetV1d),
])
def test_builder_returns_host_and_blocks_start_as_identity(backbone_type, cls):
    backbone = build_with_blocks(backbone_type)
    assert type(backbone) is cls
    keys = list(backbone.state_dict())
    assert 'layer3.4.nonlocal_block.conv_out.bn.weight' in keys
    assert 'layer2.0.context_block.channel_add_conv.3.weight' in keys
    assert 'layer4.0.snl_block.channel_add_conv.0.weight' in keys
    assert type(backbone.layer3[4].nonlocal_block) is NonLocalBlock
    assert type(backbone.layer4[0].snl_block) is SNLBlock
    randomize_(backbone)
    backbone.init_weights()  # host's init_cfg (Kaiming on every conv) first
    names = inserted(backbone)
    assert len(names) == 13 + 2
    for name in names:
        blk = backbone.get_submodule(name).eval()
        x = torch.randn(2, blk.in_channels, 4, 4)
        torch.testing.assert_close(blk(x), x)


def test_builder_inside_mmdet_and_mmseg_models():
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmseg.registry import MODELS as MMSEG_MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = MMDET_MODELS.build(
            dict(type='gcnet_mm.BackboneWithBlocks',
                 backbone_type='mmdet.ResNet',
                 depth=18,
                 stem_channels=8,
                 base_channels=8,
                 plugins=[
                     dict(cfg=dict(type='ContextBlock', ratio=1 / 4),
                          stages=C3_C5,
                          position='after_conv2')
                 ]))
    # an unscoped type inside the plugins resolves to gcnet_mm's block
    assert type(backbone.layer2[0].context_block) is ContextBlock
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MMSEG_MODELS.build(
            dict(type='EncoderDecoder',
                 backbone=dict(type='gcnet_mm.BackboneWithBlocks',
                               backbone_type='mmseg.ResNetV1c',
                               depth=18,
                               stem_channels=8,
                               base_channels=8,
                               strides=(1, 2, 1, 1),
                               dilations=(1, 1, 2, 4),
                               plugins=[
                                   dict(cfg=GC,
                                        blocks={'layer3': [-1]},
                                        position='after_add')
                               ]),
                 decode_head=dict(type='gcnet_mm.GCHead',
                                  in_channels=64,
                                  channels=16,
                                  num_classes=3)))
    assert 'backbone.layer3.1.context_block.conv_mask.weight' in \
        model.state_dict()
    model.init_weights()
    model.eval()
    out = model(image(), mode='tensor')
    assert out.shape == (2, 3, 4, 4)


@pytest.fixture(scope='module')
def wired():
    """(backbone with GC/NL/SNL blocks and random weights, input, output)."""
    backbone = randomize_(
        build_with_blocks('mmpretrain.ResNet', out_indices=(0, 1, 2, 3)))
    x = image()
    with torch.no_grad():
        return backbone, x, backbone(x)


def test_deepcopy_and_pickle_keep_their_own_blocks(wired):
    backbone, x, out = wired
    for clone in (copy.deepcopy(backbone),
                  pickle.loads(pickle.dumps(backbone))):
        with torch.no_grad():
            assert_same_outputs(clone(x), out)
            # the clone's hooks run the clone's blocks, not the original's
            clone.layer3[4].nonlocal_block.conv_out.bn.weight.mul_(3)
            assert not torch.allclose(clone(x)[2], out[2])
            assert_same_outputs(backbone(x), out)


def test_load_state_dict(wired):
    backbone, x, out = wired
    fresh = build_with_blocks('mmpretrain.ResNet', out_indices=(0, 1, 2, 3))
    fresh.eval()
    fresh.load_state_dict(backbone.state_dict(), strict=True)
    with torch.no_grad():
        assert_same_outputs(fresh(x), out)


def test_jit_trace(wired):
    backbone, x, out = wired
    traced = torch.jit.trace(copy.deepcopy(backbone), x, check_trace=False)
    with torch.no_grad():
        assert_same_outputs(traced(x), out)


def test_torch_compile(wired):
    backbone, x, out = wired
    compiled = torch.compile(copy.deepcopy(backbone), backend='aot_eager')
    with torch.no_grad():
        assert_same_outputs(compiled(x), out, rtol=1e-4, atol=1e-4)


def test_hooks_survive_norm_layer_swaps(wired):
    """SyncBN conversion and back (mmdet's init_detector on CPU) and
    conv-bn fusion replace the norm3 layers the after_conv3 hooks sit on."""
    from mmcv.cnn import fuse_conv_bn
    from mmengine.model import revert_sync_batchnorm
    backbone, x, out = wired
    swapped = revert_sync_batchnorm(
        nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(backbone)))
    swapped.eval()
    assert swapped.layer2[0].norm3 is not backbone.layer2[0].norm3
    with torch.no_grad():
        assert_same_outputs(swapped(x), out)
        fused = fuse_conv_bn(copy.deepcopy(backbone))
        assert isinstance(fused.layer2[0].norm3, nn.Identity)
        assert_same_outputs(fused(x), out, rtol=1e-4, atol=1e-4)
        # hooks are attached once, not once per call
        fused(x)
        assert len(fused.layer2[0].norm3._forward_hooks) == 1


def test_frozen_stages_and_train_mode():
    backbone = mmdet_resnet.ResNet(depth=50,
                                   stem_channels=8,
                                   base_channels=8,
                                   frozen_stages=2)
    backbone.eval()
    insert_blocks(backbone, [
        dict(cfg=GC, stages=(False, True, True, False), position='after_conv3')
    ])
    assert not backbone.layer2[0].context_block.training
    assert not any(p.requires_grad
                   for p in backbone.layer2[0].context_block.parameters())
    assert all(p.requires_grad
               for p in backbone.layer3[0].context_block.parameters())


def _saved_bytes(model, x):
    """Bytes of the distinct activation storages (not parameters) autograd
    saves for one forward."""
    storages = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    sum(o.sum() for o in out).backward()
    return sum(storages.values())


@pytest.mark.parametrize('host', ['mmdet.ResNet-50', 'mmseg.ResNetV1c-50',
                                  'mmpretrain.ResNet-50'])
@pytest.mark.parametrize('native', [True, False])
def test_gc_blocks_after_conv3_save_no_copy_of_their_input(host, native):
    """Train mode, GC in c3-c5 after conv3: from the first step on, the
    backbone keeps within 2% of the plain backbone's saved activations (the
    blocks keep norm3's input, not its output); mmdet's and mmseg's own
    plugins and insert_blocks alike."""
    if native and host.startswith('mmpretrain'):
        pytest.skip('mmpretrain has no plugins')
    plugin = dict(cfg=GC, stages=C3_C5, position='after_conv3')
    plain = HOSTS[host]()
    if native:
        ours = HOSTS[host](plugins=[plugin])
    else:
        ours = insert_blocks(HOSTS[host](), [plugin])
    plain.train()
    ours.train()
    x = image(size=64)
    base = _saved_bytes(plain, x)
    first = _saved_bytes(ours, x)
    second = _saved_bytes(ours, x)
    assert max(first, second) < 1.02 * base, (first / base, second / base)
