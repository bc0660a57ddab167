# Table 2(d) "r16": bottleneck 1x1 conv C -> C/16 -> C, no LayerNorm, no ReLU.
_base_ = '../gcnet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(
                type='gcnet_mm.ContextBlock',
                ratio=1. / 16,
                transform='bottleneck'),
            stages=(False, True, True, True),
            position='after_conv3')
    ]))
