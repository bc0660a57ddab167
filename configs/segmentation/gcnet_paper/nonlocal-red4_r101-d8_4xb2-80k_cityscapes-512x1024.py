# Head comparison, "NL-Head": a non-local block between the head's two convs.
# reduction=4 (128 inner channels, +0.26M) gives the slides' NL-Head size;
# mmseg's own NLHead (reduction=2, +0.53M) is the config this inherits from.
_base_ = 'mmseg::nonlocal_net/nonlocal_r101-d8_4xb2-80k_cityscapes-512x1024.py'
model = dict(decode_head=dict(type='gcnet_mm.NonLocalHead', reduction=4))
