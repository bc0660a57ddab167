# Head comparison, "baseline": mmseg's FCN head with two 3x3 convs (plus the
# conv fusing them with the input), the head every other row puts a block in.
# mmseg's config as it is.
_base_ = 'mmseg::fcn/fcn_r101-d8_4xb2-80k_cityscapes-512x1024.py'
