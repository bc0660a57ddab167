# Table 5 "GC (all)": a GC block (r4) after the last 1x1x1 conv of every
# residual block of c3-c5. conv_mask has no bias (inert under the softmax),
# which gives the paper's 42.45M.
_base_ = './slowonly_imagenet-pretrained-r50_8xb16-8x8x1-steplr-150e_kinetics400-rgb.py'
model = dict(
    backbone=dict(
        type='gcnet_mm.BackboneWithBlocks',
        backbone_type='mmaction.ResNet3dSlowOnly',
        plugins=[
            dict(
                cfg=dict(
                    type='gcnet_mm.ContextBlock3d',
                    ratio=1. / 4,
                    mask_bias=False),
                stages=(False, True, True, True),
                position='after_conv3')
        ]))
