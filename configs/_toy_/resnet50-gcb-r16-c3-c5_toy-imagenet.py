# GC ResNet-50 (r16, c3-c5) on the tiny ImageNet-format dataset of
# `tools/misc/make_toy_data.py imagenet`, a few CPU iterations.  The toy data
# keeps real ImageNet-1k labels, so the 1000-way head stays as it is.
_base_ = '../classification/gcnet/resnet50-gcb-r16-c3-c5_8xb64-ft-coslr-40e_in1k.py'

data_root = 'data/toy_imagenet/'
load_from = None  # no stage-1 checkpoint in the toy run

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=32),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=36, edge='short'),
    dict(type='CenterCrop', crop_size=32),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(max_epochs=2, val_interval=1)
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=2, by_epoch=True, begin=0, end=2)
]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=0, deterministic=True)
