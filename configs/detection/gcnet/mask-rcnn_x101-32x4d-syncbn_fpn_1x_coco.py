# The baseline without GC blocks: mmdet's config as it is, under this
# folder so the package's GC configs and ablations sit next to it.
_base_ = 'mmdet::gcnet/mask-rcnn_x101-32x4d-syncbn_fpn_1x_coco.py'
