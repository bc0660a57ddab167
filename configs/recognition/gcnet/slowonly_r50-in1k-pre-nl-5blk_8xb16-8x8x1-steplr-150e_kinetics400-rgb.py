# Table 5 "NL (5 blocks)": the non-local paper's 5 blocks (embedded Gaussian,
# C/2 inner channels, BN on the output conv, phi and g on the input
# max-pooled by 1x2x2 as in its code) on the output of every other residual
# block: 2 in c3, 3 in c4.
_base_ = './slowonly_r50-in1k-pre-gcb-r4-c3-c5_8xb16-8x8x1-steplr-150e_kinetics400-rgb.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(
                type='gcnet_mm.NonLocalBlock3d',
                sub_sample='input',
                norm_cfg=dict(type='BN3d')),
            blocks={
                'layer2': [1, 3],
                'layer3': [1, 3, 5]
            },
            position='after_add')
    ]))
