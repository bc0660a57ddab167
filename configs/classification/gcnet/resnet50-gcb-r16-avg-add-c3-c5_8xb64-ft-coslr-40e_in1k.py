# Table 4(b) "avg+add": average pooling, addition fusion.
_base_ = './resnet50-gcb-r16-c3-c5_8xb64-ft-coslr-40e_in1k.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(
                type='gcnet_mm.ContextBlock',
                ratio=1. / 16,
                pooling_type='avg'),
            stages=(False, True, True, True),
            position='after_conv3')
    ]))
