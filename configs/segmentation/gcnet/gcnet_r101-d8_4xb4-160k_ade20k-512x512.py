# mmseg's config with gcnet_mm's GCHead: same modules and state dict.
_base_ = 'mmseg::gcnet/gcnet_r101-d8_4xb4-160k_ade20k-512x512.py'
model = dict(decode_head=dict(type='gcnet_mm.GCHead'))
