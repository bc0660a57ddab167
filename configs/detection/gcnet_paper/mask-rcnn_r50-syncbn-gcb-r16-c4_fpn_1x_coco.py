# Table 2(c): GC (r16, after1x1) in every residual block of c4 only.
_base_ = '../gcnet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(type='gcnet_mm.ContextBlock', ratio=1. / 16),
            stages=(False, False, True, False),
            position='after_conv3')
    ]))
