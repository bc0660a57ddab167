# ImageNet stage 2, baseline: the stage-1 ResNet-50 fine-tuned 40 more epochs
# (lr 0.02, cosine, no warm-up) without new blocks. Train stage 1 first:
#   bash tools/dist_train.sh \
#       configs/classification/gcnet/resnet50_8xb64-coslr-120e_in1k.py 8
_base_ = './resnet50_8xb64-coslr-120e_in1k.py'
load_from = 'work_dirs/resnet50_8xb64-coslr-120e_in1k/epoch_120.pth'
optim_wrapper = dict(optimizer=dict(lr=0.02))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=40, by_epoch=True, begin=0, end=40)
]
train_cfg = dict(max_epochs=40)
