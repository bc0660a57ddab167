# The slides' head comparison, "GC-Head", on the slides' network: the
# ResNet-101 of the segmentation codebases of 2019 (PSPNet, CCNet), whose deep
# stem is three 3x3 convs of 64, 64 and 128 channels (mmseg's ResNetV1c has
# 32, 32, 64), and a 512-channel auxiliary FCN head (mmseg: 256).  Together
# they are the slides' 2.47M over mmseg's R-101-D8 (70.96M baseline) and, at
# a 769x769 crop, their FLOPs; see docs/complexity.md.  mmseg's ImageNet
# weights (open-mmlab://resnet101_v1c) do not fit this stem: it and layer1's
# first convs start from scratch unless a deep-stem-128 checkpoint is given.
_base_ = '../gcnet/gcnet_r101-d8_4xb2-80k_cityscapes-512x1024.py'
model = dict(
    backbone=dict(stem_channels=128), auxiliary_head=dict(channels=512))
