"""Toy datasets: tiny generated datasets in the real on-disk formats, for
trying configs end to end on a CPU."""
from .toy_data import (COCO_CATEGORIES, IMAGENET_TOY_WNIDS, TOY_COCO_CLASSES,
                       TOY_DATASETS, make_ade20k, make_all, make_cityscapes,
                       make_coco, make_imagenet, make_kinetics, make_voc12aug)

__all__ = [
    'COCO_CATEGORIES', 'IMAGENET_TOY_WNIDS', 'TOY_COCO_CLASSES',
    'TOY_DATASETS', 'make_ade20k', 'make_all', 'make_cityscapes', 'make_coco',
    'make_imagenet', 'make_kinetics', 'make_voc12aug'
]
