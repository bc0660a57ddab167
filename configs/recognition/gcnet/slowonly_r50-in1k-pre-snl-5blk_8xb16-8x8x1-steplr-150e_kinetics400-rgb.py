# Table 5 "SNL (5 blocks)": simplified non-local blocks where the 5 NL blocks
# go (2 in c3, 3 in c4, on the output of every other residual block).
_base_ = './slowonly_r50-in1k-pre-gcb-r4-c3-c5_8xb16-8x8x1-steplr-150e_kinetics400-rgb.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(type='gcnet_mm.SNLBlock3d'),
            blocks={
                'layer2': [1, 3],
                'layer3': [1, 3, 5]
            },
            position='after_add')
    ]))
