# mmseg's config with gcnet_mm's GCHead: same modules and state dict.
_base_ = 'mmseg::gcnet/gcnet_r101-d8_4xb2-80k_cityscapes-769x769.py'
model = dict(decode_head=dict(type='gcnet_mm.GCHead'))
