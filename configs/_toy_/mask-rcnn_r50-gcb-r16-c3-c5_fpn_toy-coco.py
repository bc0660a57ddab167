# The README's main job: the package's GC Mask R-CNN (R-50-FPN, GC r16 in
# c3-c5) on the tiny COCO-format dataset of `tools/misc/make_toy_data.py coco`,
# a few CPU iterations.  Everything but data, image size and schedule is the
# real config's.
_base_ = '../detection/gcnet/mask-rcnn_r50-gcb-r16-c3-c5_fpn_1x_coco.py'

data_root = 'data/toy_coco/'
scale = (256, 192)

# No download: the toy run starts from random weights, so the backbone's BN
# layers learn their statistics (norm_eval=False) instead of keeping the ones
# a pretrained model brings, and the last BN of each residual block starts
# non-zero, as in a pretrained model (mmdet zero-inits it when training from
# scratch; the GC blocks right after it would see all-zero inputs).  Keep
# every detection (score_thr=0) so that a barely trained model still gets a
# COCO score.
model = dict(
    backbone=dict(init_cfg=None, norm_eval=False, zero_init_residual=False),
    test_cfg=dict(rcnn=dict(score_thr=0.0)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor'))
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
# Evaluated once, after training, by tools/test.py: no validation loop.
test_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_evaluator = dict(
    ann_file=data_root + 'annotations/instances_val2017.json')
val_dataloader = val_cfg = val_evaluator = None

train_cfg = dict(max_epochs=2, val_interval=2)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=2, milestones=[1],
         gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=0.01))
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=0)
