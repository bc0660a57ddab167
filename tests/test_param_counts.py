"""Parameter counts of the paper's ImageNet ResNet-50 models (section 5.2)
and Kinetics slow-only ResNet-50 models (Table 5).

mmpretrain's ResNet-50 classifier (backbone, global average pooling, a linear
head for 1000 classes) and mmaction2's slow-only recognizer (a 400-way
I3DHead) with blocks placed by gcnet_mm.BackboneWithBlocks, built here from
explicit dicts rather than from the configs; the counts must round to the
paper's figures of the config each case stands for (its metafile's Paper
Rows).
"""
import pytest
import torch
from mmengine.registry import DefaultScope

import gcnet_mm  # noqa: F401
from gcnet_mm.analysis.paper_figures import paper_rows

mmpretrain_registry = pytest.importorskip('mmpretrain.registry')


def _paper_millions(config: str) -> float:
    """The paper's parameter count (millions, as printed) of a config."""
    row, = [r for r in paper_rows(config) if r.params is not None]
    return row.params


CLS = 'classification/gcnet/resnet50'
CLS_SUFFIX = '_8xb64-ft-coslr-40e_in1k.py'
ONE_BLOCK = dict(blocks={'layer3': [-2]}, position='after_add')  # c4, 2nd last
# Paper Table 4(a): case -> (plugins, the config of the row)
CASES = {
    'baseline': ([], CLS + CLS_SUFFIX),
    'GC r16 c3-c5': ([
        dict(cfg=dict(type='gcnet_mm.ContextBlock', ratio=1 / 16),
             stages=(False, True, True, True),
             position='after_conv3')
    ], CLS + '-gcb-r16-c3-c5' + CLS_SUFFIX),
    'GC r16, one block':
    ([dict(cfg=dict(type='gcnet_mm.ContextBlock', ratio=1 / 16),
           **ONE_BLOCK)], CLS + '-gcb-r16-c4-1blk' + CLS_SUFFIX),
    'SNL, one block': ([dict(cfg=dict(type='gcnet_mm.SNLBlock'),
                             **ONE_BLOCK)], CLS + '-snl-c4-1blk' + CLS_SUFFIX),
    'NL, one block': ([
        dict(cfg=dict(type='gcnet_mm.NonLocalBlock', norm_cfg=dict(type='BN')),
             **ONE_BLOCK)
    ], CLS + '-nl-c4-1blk' + CLS_SUFFIX),
}


@pytest.mark.parametrize('case', list(CASES))
def test_resnet50_imagenet_param_count(case):
    plugins, config = CASES[case]
    millions = _paper_millions(config)
    # mmpretrain's scope whatever an earlier test left as the default
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = mmpretrain_registry.MODELS.build(
            dict(type='ImageClassifier',
                 backbone=dict(type='gcnet_mm.BackboneWithBlocks',
                               backbone_type='mmpretrain.ResNet',
                               depth=50,
                               plugins=plugins),
                 neck=dict(type='GlobalAveragePooling'),
                 head=dict(type='LinearClsHead',
                           num_classes=1000,
                           in_channels=2048)))
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 2) == millions, count


# Paper Table 5: mmaction2's slow-only ResNet-50 (8x8, 400 classes) with the
# blocks, ratio 1/4 for GC; the 5 blocks on every other residual block of c3
# and c4, GC (all) after conv3 of every residual block of c3-c5.
FIVE = dict(blocks={'layer2': [1, 3], 'layer3': [1, 3, 5]},
            position='after_add')
GC3D = dict(type='gcnet_mm.ContextBlock3d', ratio=1 / 4, mask_bias=False)
VID = 'recognition/gcnet/slowonly_'
VID_SUFFIX = '_8xb16-8x8x1-steplr-150e_kinetics400-rgb.py'
VIDEO_CASES = {
    'baseline': ([], VID + 'imagenet-pretrained-r50' + VID_SUFFIX),
    'NL, 5 blocks': ([dict(cfg=dict(type='gcnet_mm.NonLocalBlock3d',
                                    norm_cfg=dict(type='BN3d')),
                           **FIVE)],
                     VID + 'r50-in1k-pre-nl-5blk' + VID_SUFFIX),
    'SNL, 5 blocks': ([dict(cfg=dict(type='gcnet_mm.SNLBlock3d'), **FIVE)],
                      VID + 'r50-in1k-pre-snl-5blk' + VID_SUFFIX),
    'GC r4, 5 blocks': ([dict(cfg=GC3D, **FIVE)],
                        VID + 'r50-in1k-pre-gcb-r4-5blk' + VID_SUFFIX),
    'GC r4, c3-c5': ([dict(cfg=GC3D, stages=(False, True, True, True),
                           position='after_conv3')],
                     VID + 'r50-in1k-pre-gcb-r4-c3-c5' + VID_SUFFIX),
}


@pytest.mark.parametrize('case', list(VIDEO_CASES))
def test_slowonly_r50_kinetics_param_count(case):
    mmaction_registry = pytest.importorskip('mmaction.registry')
    plugins, config = VIDEO_CASES[case]
    millions = _paper_millions(config)
    with torch.device('meta'), DefaultScope.overwrite_default_scope(
            'mmaction'):
        model = mmaction_registry.MODELS.build(
            dict(type='Recognizer3D',
                 backbone=dict(type='gcnet_mm.BackboneWithBlocks',
                               backbone_type='mmaction.ResNet3dSlowOnly',
                               depth=50, pretrained=None, lateral=False,
                               conv1_kernel=(1, 7, 7), inflate=(0, 0, 1, 1),
                               plugins=plugins),
                 cls_head=dict(type='I3DHead', in_channels=2048,
                               num_classes=400)))
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 2) == millions, count
