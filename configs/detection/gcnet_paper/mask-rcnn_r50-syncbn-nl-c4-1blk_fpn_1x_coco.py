# Table 2(a) "NL": one non-local block (embedded Gaussian, C/2 inner
# channels, SyncBN on its output conv) just before the last residual block of
# c4, i.e. on the output of layer3.4 (after its residual add). phi and g read
# the 2x2 max-pooled input, as in the original non-local code (and as the
# paper's FLOPs count it); sub_sample=False gives the unpooled block.
_base_ = '../gcnet/mask-rcnn_r50-syncbn_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        type='gcnet_mm.BackboneWithBlocks',
        backbone_type='mmdet.ResNet',
        plugins=[
            dict(
                cfg=dict(
                    type='gcnet_mm.NonLocalBlock',
                    sub_sample='input',
                    norm_cfg=dict(type='SyncBN', requires_grad=True)),
                blocks={'layer3': [-2]},
                position='after_add')
        ]))
