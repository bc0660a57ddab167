# Table 5 baseline (paper section 5.3): mmaction2's slow-only ResNet-50, 8
# frames with stride 8, inflated from ImageNet weights, 150 epochs on 8 GPUs
# x 16 clips. The rows with blocks inherit from it.
_base_ = 'mmaction::recognition/slowonly/slowonly_imagenet-pretrained-r50_8xb16-8x8x1-steplr-150e_kinetics400-rgb.py'
