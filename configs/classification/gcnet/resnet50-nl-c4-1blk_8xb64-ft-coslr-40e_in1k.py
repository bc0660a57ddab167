# Table 4(a) "NL": one non-local block (embedded Gaussian, C/2 inner channels,
# BN on its output conv) just before the last residual block of c4 (on the
# output of layer3.4), phi and g on the 2x2 max-pooled input as in the
# original non-local code.
_base_ = './resnet50-gcb-r16-c3-c5_8xb64-ft-coslr-40e_in1k.py'
model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(
                type='gcnet_mm.NonLocalBlock',
                sub_sample='input',
                norm_cfg=dict(type='BN')),
            blocks={'layer3': [-2]},
            position='after_add')
    ]))
