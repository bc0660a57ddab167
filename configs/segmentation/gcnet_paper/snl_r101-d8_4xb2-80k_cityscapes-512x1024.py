# Head comparison, "SNL-Head": a simplified non-local block (attention
# pooling, one 1x1 conv C -> C, add) between the FCN head's two convs.
_base_ = './fcn_r101-d8_4xb2-80k_cityscapes-512x1024.py'
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    decode_head=dict(
        _delete_=True,  # FCNHead's num_convs does not apply
        type='gcnet_mm.SNLHead',
        in_channels=2048,
        in_index=3,
        channels=512,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
