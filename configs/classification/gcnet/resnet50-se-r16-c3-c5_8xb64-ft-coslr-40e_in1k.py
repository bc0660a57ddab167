# SE-Net's own block (average pooling, C -> C/16 -> C with ReLU, sigmoid
# scaling; no LayerNorm) in every residual block of c3-c5: the SE row of
# Table 4(b) taken literally, next to the "avg+scale" GC-block variant.
_base_ = './resnet50-gcb-r16-c3-c5_8xb64-ft-coslr-40e_in1k.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(type='gcnet_mm.SEBlock', ratio=1. / 16),
            stages=(False, True, True, True),
            position='after_conv3')
    ]))
