# Table 4(a) "GC (1 block)": one GC block (r16) just before the last residual
# block of c4 (on the output of layer3.4), where the NL block goes.
_base_ = './resnet50-gcb-r16-c3-c5_8xb64-ft-coslr-40e_in1k.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(type='gcnet_mm.ContextBlock', ratio=1. / 16),
            blocks={'layer3': [-2]},
            position='after_add')
    ]))
