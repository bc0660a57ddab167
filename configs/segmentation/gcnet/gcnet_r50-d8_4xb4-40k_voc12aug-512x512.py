# mmseg's config with gcnet_mm's GCHead: same modules and state dict.
_base_ = 'mmseg::gcnet/gcnet_r50-d8_4xb4-40k_voc12aug-512x512.py'
model = dict(decode_head=dict(type='gcnet_mm.GCHead'))
