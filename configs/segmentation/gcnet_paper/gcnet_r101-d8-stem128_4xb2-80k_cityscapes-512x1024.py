# The slides' head comparison, "GC-Head", on the slides' network (64-64-128
# deep stem, 512-channel auxiliary head): see ./fcn_r101-d8-stem128_*.py.
_base_ = '../gcnet/gcnet_r101-d8_4xb2-80k_cityscapes-512x1024.py'
model = dict(
    backbone=dict(stem_channels=128), auxiliary_head=dict(channels=512))
