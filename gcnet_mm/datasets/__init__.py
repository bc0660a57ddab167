"""Datasets helpers: synthetic datasets in real on-disk formats."""
from .synthetic import (COCO_CATEGORIES, IMAGENET_TOY_WNIDS, TOY_COCO_CLASSES,
                        TOY_DATASETS, make_ade20k, make_all, make_cityscapes,
                        make_coco, make_imagenet, make_voc12aug)

__all__ = [
    'COCO_CATEGORIES', 'IMAGENET_TOY_WNIDS', 'TOY_COCO_CLASSES',
    'TOY_DATASETS', 'make_ade20k', 'make_all', 'make_cityscapes', 'make_coco',
    'make_imagenet', 'make_voc12aug'
]
