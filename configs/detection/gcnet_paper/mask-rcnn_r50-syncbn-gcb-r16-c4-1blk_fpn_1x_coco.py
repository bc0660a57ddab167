# Table 2(a) "GC": one GC block (r16) where the NL block goes.
_base_ = './mask-rcnn_r50-syncbn-nl-c4-1blk_fpn_1x_coco.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(type='gcnet_mm.ContextBlock', ratio=1. / 16),
            blocks={'layer3': [-2]},
            position='after_add')
    ]))
