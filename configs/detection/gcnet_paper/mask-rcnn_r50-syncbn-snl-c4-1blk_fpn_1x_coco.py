# Table 2(a) "SNL": one simplified non-local block where the NL block goes.
_base_ = './mask-rcnn_r50-syncbn-nl-c4-1blk_fpn_1x_coco.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(type='gcnet_mm.SNLBlock'),
            blocks={'layer3': [-2]},
            position='after_add')
    ]))
