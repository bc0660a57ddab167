# Table 2(f) "att+scale": attention pooling, sigmoid scaling fusion.
_base_ = '../gcnet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(
                type='gcnet_mm.ContextBlock',
                ratio=1. / 16,
                fusion_types=('channel_mul', )),
            stages=(False, True, True, True),
            position='after_conv3')
    ]))
