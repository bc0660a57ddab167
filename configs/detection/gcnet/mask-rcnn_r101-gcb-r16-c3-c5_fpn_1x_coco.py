# mmdet's config with gcnet_mm's ContextBlock: same modules and state dict.
_base_ = 'mmdet::gcnet/mask-rcnn_r101-gcb-r16-c3-c5_fpn_1x_coco.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(type='gcnet_mm.ContextBlock', ratio=1. / 16),
            stages=(False, True, True, True),
            position='after_conv3')
    ]))
