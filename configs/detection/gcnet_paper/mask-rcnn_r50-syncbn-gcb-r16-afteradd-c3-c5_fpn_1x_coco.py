# Table 2(b) "afterAdd": GC (r16) on the output of every residual block of
# c3-c5, after the residual addition, instead of after the last 1x1 conv
# ("after1x1", mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py).
_base_ = '../gcnet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        type='gcnet_mm.BackboneWithBlocks',
        backbone_type='mmdet.ResNet',
        plugins=[
            dict(
                cfg=dict(type='gcnet_mm.ContextBlock', ratio=1. / 16),
                stages=(False, True, True, True),
                position='after_add')
        ]))
