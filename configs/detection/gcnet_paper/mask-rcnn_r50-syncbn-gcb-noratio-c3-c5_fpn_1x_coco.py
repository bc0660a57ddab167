# Table 2(d) "w/o ratio": the transform is one 1x1 conv C -> C.
_base_ = '../gcnet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(
                type='gcnet_mm.ContextBlock',
                transform='linear'),
            stages=(False, True, True, True),
            position='after_conv3')
    ]))
