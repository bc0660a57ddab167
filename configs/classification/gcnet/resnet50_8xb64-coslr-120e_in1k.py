# ImageNet stage 1 (paper section 5.2): a plain ResNet-50, 120 epochs on
# 8 GPUs x 64 images, 5 linear warm-up epochs, then cosine decay.
# lr 0.2 = mmpretrain's 0.8 for 2048 images scaled to 512.
_base_ = 'mmpretrain::resnet/resnet50_32xb64-warmup-coslr_in1k.py'
optim_wrapper = dict(optimizer=dict(lr=0.2))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.25,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR', T_max=115, by_epoch=True, begin=5, end=120)
]
train_cfg = dict(max_epochs=120)
auto_scale_lr = dict(base_batch_size=512)
