# Table 2(e): bottleneck ratio 1/8.
_base_ = '../gcnet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(
                type='gcnet_mm.ContextBlock',
                ratio=1. / 8),
            stages=(False, True, True, True),
            position='after_conv3')
    ]))
