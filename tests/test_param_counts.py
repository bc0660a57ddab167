"""Parameter counts of the paper's ImageNet ResNet-50 models (section 5.2).

mmpretrain's ResNet-50 classifier (backbone, global average pooling, a linear
head for 1000 classes) with blocks placed by gcnet_mm.BackboneWithBlocks; the
counts must round to the paper's.
"""
import pytest

import gcnet_mm  # noqa: F401

mmpretrain_registry = pytest.importorskip('mmpretrain.registry')

ONE_BLOCK = dict(blocks={'layer3': [-2]}, position='after_add')  # c4, 2nd last
CASES = {
    'baseline': ([], 25.56),
    'GC r16 c3-c5': ([
        dict(cfg=dict(type='gcnet_mm.ContextBlock', ratio=1 / 16),
             stages=(False, True, True, True),
             position='after_conv3')
    ], 28.08),
    'GC r16, one block':
    ([dict(cfg=dict(type='gcnet_mm.ContextBlock', ratio=1 / 16),
           **ONE_BLOCK)], 25.69),
    'SNL, one block': ([dict(cfg=dict(type='gcnet_mm.SNLBlock'),
                             **ONE_BLOCK)], 26.61),
    'NL, one block': ([
        dict(cfg=dict(type='gcnet_mm.NonLocalBlock', norm_cfg=dict(type='BN')),
             **ONE_BLOCK)
    ], 27.66),
}


@pytest.mark.parametrize('case', list(CASES))
def test_resnet50_imagenet_param_count(case):
    plugins, millions = CASES[case]
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
