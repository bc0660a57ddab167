# Table 5 "GC (5 blocks)": GC blocks (r4) where the non-local paper puts its
# 5 NL blocks, on the output of every other residual block: 2 in c3 (res3),
# 3 in c4 (res4); mmaction2 writes it non_local=((0, 0, 0), (0, 1, 0, 1),
# (0, 1, 0, 1, 0, 1), (0, 0, 0)).
_base_ = './slowonly_r50-in1k-pre-gcb-r4-c3-c5_8xb16-8x8x1-steplr-150e_kinetics400-rgb.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(
                type='gcnet_mm.ContextBlock3d', ratio=1. / 4, mask_bias=False),
            blocks={
                'layer2': [1, 3],
                'layer3': [1, 3, 5]
            },
            position='after_add')
    ]))
