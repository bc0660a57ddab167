# Table 2(a) "NL": one non-local block (embedded Gaussian, C/2 inner
# channels, SyncBN on its output conv) just before the last residual block of
# c4, i.e. on the output of layer3.4 (after its residual add).
_base_ = '../gcnet/mask-rcnn_r50-syncbn_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        type='gcnet_mm.BackboneWithBlocks',
        backbone_type='mmdet.ResNet',
        plugins=[
            dict(
                cfg=dict(
                    type='gcnet_mm.NonLocalBlock',
                    norm_cfg=dict(type='SyncBN', requires_grad=True)),
                blocks={'layer3': [-2]},
                position='after_add')
        ]))
