# Table 4(a) "GC (all)": GC blocks (r16) after the last 1x1 conv of every
# residual block of c3-c5, inserted into the stage-1 model and fine-tuned.
_base_ = './resnet50_8xb64-ft-coslr-40e_in1k.py'
model = dict(
    backbone=dict(
        type='gcnet_mm.BackboneWithBlocks',
        backbone_type='mmpretrain.ResNet',
        plugins=[
            dict(
                cfg=dict(type='gcnet_mm.ContextBlock', ratio=1. / 16),
                stages=(False, True, True, True),
                position='after_conv3')
        ]))
