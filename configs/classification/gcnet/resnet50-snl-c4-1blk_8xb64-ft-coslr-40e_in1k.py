# Table 4(a) "SNL": one simplified non-local block where the NL block goes.
_base_ = './resnet50-gcb-r16-c3-c5_8xb64-ft-coslr-40e_in1k.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(type='gcnet_mm.SNLBlock'),
            blocks={'layer3': [-2]},
            position='after_add')
    ]))
