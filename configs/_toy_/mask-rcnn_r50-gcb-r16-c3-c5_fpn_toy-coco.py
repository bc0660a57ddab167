# The package's GC Mask R-CNN (R-50-FPN, GC r16 after conv3 of every
# residual block of c3-c5) scaled down to the toy COCO set of
# `tools/misc/make_toy_data.py coco` (128 x 128 images, four classes of
# coloured shapes), so that it learns them from random weights in a few
# minutes on 2 CPU cores (tools/run_demo.sh):
#   - width: every layer at a quarter of its channels (ResNet-50's bottlenecks
#     with base_channels=16: stages of 64 to 512 channels, GC blocks of
#     128/16 to 512/16; FPN and heads 64 wide, 256-wide box FCs, a 2-conv
#     mask head), depth and block placement as in the real config;
#   - images at their own 128 x 128 size, fewer proposals and sampled RoIs;
#   - 150 iterations of 4 images with AdamW (lr 1e-3, 20 iterations of warm-up,
#     cosine decay), gradients clipped; no frozen stage and BN statistics
#     learnt, as nothing is pretrained.
# Everything else (anchors, assigners, losses, the GC block) is the real
# config's.
_base_ = '../detection/gcnet/mask-rcnn_r50-gcb-r16-c3-c5_fpn_1x_coco.py'

data_root = 'data/toy_coco/'
scale = (128, 128)
width = 64

# No download: the toy run starts from random weights, so no stage is frozen,
# the backbone's BN layers learn their statistics (norm_eval=False) and the
# last BN of each residual block starts non-zero (mmdet zero-inits it when
# training from scratch; the GC blocks right after it would see all-zero
# inputs).
model = dict(
    backbone=dict(
        base_channels=16,
        frozen_stages=-1,
        norm_eval=False,
        zero_init_residual=False,
        init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width,
                       num_convs=2)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=100)))

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
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
# Evaluated once, after training, by tools/test.py: no validation loop.
test_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_evaluator = dict(
    ann_file=data_root + 'annotations/instances_val2017.json')
val_dataloader = val_cfg = val_evaluator = None

iterations = 150
train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=iterations,
    val_interval=iterations + 1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=20),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=iterations,
         T_max=iterations, eta_min_ratio=0.05)
]
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=10))
auto_scale_lr = dict(base_batch_size=4)
log_processor = dict(by_epoch=False)
# One checkpoint, at the end.
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=iterations, max_keep_ckpts=1))
# The attention map the run starts from, for the demo's picture
# (WORK_DIR/gc_attention_init.json).
custom_imports = dict(imports=['gcnet_mm.visualization'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='gcnet_mm.InitialAttentionHook')]
randomness = dict(seed=0)
