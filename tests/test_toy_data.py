"""gcnet_mm.datasets.toy_data: every toy dataset is read by the real classes.

Each generator's output is loaded by the host library's own dataset class,
configured as upstream's dataset config does (mmseg's ``_base_/datasets``
files are read and only ``data_root`` is swapped), and scored by the host's
metric with the ground truth given as the prediction: COCO bbox/segm AP 1.0,
mIoU 100.  Tiny images, two or three per split.
"""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.utils import get_installed_path

from gcnet_mm.datasets import toy_data

mmdet = pytest.importorskip('mmdet')
mmseg = pytest.importorskip('mmseg')
mmpretrain = pytest.importorskip('mmpretrain')


def _mmseg_dataset_cfg(name: str) -> Config:
    path = osp.join(get_installed_path('mmseg'), '.mim', 'configs', '_base_',
                    'datasets', name)
    return Config.fromfile(path)


def _with_root(cfg: dict, data_root: str) -> dict:
    """A dataset config (or a ConcatDataset of them) on ``data_root``, with
    a pipeline that only loads the image and the annotation."""
    cfg = cfg.copy()
    if cfg['type'] == 'ConcatDataset':
        cfg['datasets'] = [_with_root(d, data_root) for d in cfg['datasets']]
        return cfg
    cfg.update(
        data_root=data_root,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations')
        ])
    return cfg


def _seg_gt_as_prediction_miou(dataset) -> dict:
    """mmseg's IoUMetric on ``dataset`` with its ground truth as prediction."""
    from mmseg.evaluation import IoUMetric
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    present = set()
    for i in range(len(dataset)):
        gt = torch.from_numpy(dataset[i]['gt_seg_map'].astype(np.int64))
        present |= set(gt.unique().tolist()) - {255}
        sample = dict(
            pred_sem_seg=dict(data=gt[None]), gt_sem_seg=dict(data=gt[None]))
        metric.process({}, [sample])
    return metric.evaluate(len(dataset)), present


# --- COCO -------------------------------------------------------------------


def test_coco_gt_as_prediction_scores_ap_1(tmp_path):
    from mmdet.datasets import CocoDataset
    from mmdet.evaluation import CocoMetric
    from pycocotools import mask as mask_utils
    init_default_scope('mmdet')
    out = toy_data.make_coco(
        str(tmp_path), num_train=2, num_val=3, image_size=(64, 80),
        max_objects=3)
    assert set(out) == {'train_ann', 'val_ann', 'train_img', 'val_img'}
    dataset = CocoDataset(
        data_root=str(tmp_path),
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=[])
    assert len(dataset) == 3
    assert len(dataset.metainfo['classes']) == 80  # the default metainfo
    metric = CocoMetric(ann_file=out['val_ann'], metric=['bbox', 'segm'])
    metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        h, w = info['height'], info['width']
        instances = info['instances']
        assert instances and all(ins['ignore_flag'] == 0 for ins in instances)
        masks = np.stack([
            mask_utils.decode(
                mask_utils.merge(mask_utils.frPyObjects(ins['mask'], h, w)))
            for ins in instances
        ])
        pred = dict(
            bboxes=torch.tensor([ins['bbox'] for ins in instances]),
            labels=torch.tensor([ins['bbox_label'] for ins in instances]),
            scores=torch.ones(len(instances)),
            masks=torch.from_numpy(masks).bool())
        metric.process({}, [
            dict(img_id=info['img_id'], ori_shape=(h, w), pred_instances=pred)
        ])
    results = metric.evaluate(len(dataset))
    assert results['coco/bbox_mAP'] == pytest.approx(1.0)
    assert results['coco/segm_mAP'] == pytest.approx(1.0)


def test_coco_images_load_and_match_the_annotations(tmp_path):
    from mmdet.datasets import CocoDataset
    init_default_scope('mmdet')
    toy_data.make_coco(str(tmp_path), num_train=2, num_val=1,
                       image_size=(48, 64))
    dataset = CocoDataset(
        data_root=str(tmp_path),
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True)
        ])
    item = dataset[0]
    assert item['img'].shape == (48, 64, 3)
    boxes = item['gt_bboxes'].numpy()
    assert len(boxes) >= 1
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64).all() \
        and (boxes[:, 3] <= 48).all()
    labels = {dataset.metainfo['classes'][i] for i in item['gt_bboxes_labels']}
    assert labels <= {'person', 'car', 'stop sign', 'dog'}


def test_coco_is_deterministic(tmp_path):
    a = toy_data.make_coco(str(tmp_path / 'a'), 1, 1, (40, 40), seed=3)
    b = toy_data.make_coco(str(tmp_path / 'b'), 1, 1, (40, 40), seed=3)
    c = toy_data.make_coco(str(tmp_path / 'c'), 1, 1, (40, 40), seed=4)
    read = lambda out: json.load(open(out['val_ann']))['annotations']  # noqa
    assert read(a) == read(b)
    assert read(a) != read(c)


# --- segmentation ------------------------------------------------------------


def test_cityscapes_train_ids_and_miou(tmp_path):
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    out = toy_data.make_cityscapes(
        str(tmp_path), num_train=2, num_val=2, image_size=(32, 64))
    cfg = _mmseg_dataset_cfg('cityscapes.py')
    dataset = DATASETS.build(
        _with_root(cfg.val_dataloader.dataset, out['root']))
    assert len(dataset) == 2
    assert dataset.seg_map_suffix == '_gtFine_labelTrainIds.png'
    item = dataset[0]
    assert item['img'].shape == (32, 64, 3)
    gt = item['gt_seg_map']
    assert set(np.unique(gt)) <= set(range(19)) | {255}
    assert (gt == 255).any()  # the ignored band
    train = DATASETS.build(
        _with_root(cfg.train_dataloader.dataset, out['root']))
    assert len(train) == 2
    results, present = _seg_gt_as_prediction_miou(dataset)
    assert results['mIoU'] == pytest.approx(100.0)
    assert present >= {0, 2, 10}  # road, building, sky


def test_ade20k_reduce_zero_label_and_miou(tmp_path):
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    out = toy_data.make_ade20k(
        str(tmp_path), num_train=2, num_val=2, image_size=(48, 48))
    cfg = _mmseg_dataset_cfg('ade20k.py')
    dataset_cfg = cfg.val_dataloader.dataset
    assert dataset_cfg.data_prefix.img_path == out['img_dir'].replace(
        'training', 'validation')
    dataset = DATASETS.build(_with_root(dataset_cfg, out['root']))
    assert dataset.reduce_zero_label and len(dataset) == 2
    gt = dataset[0]['gt_seg_map']
    # raw 0 ("other") -> 255, k -> k - 1
    assert (gt == 255).any()
    assert set(np.unique(gt)) <= set(range(150)) | {255}
    results, present = _seg_gt_as_prediction_miou(dataset)
    assert results['mIoU'] == pytest.approx(100.0)
    assert present & {0, 3, 5}  # wall, floor, ceiling


def test_voc12aug_concat_layout_and_miou(tmp_path):
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    out = toy_data.make_voc12aug(
        str(tmp_path), num_train=2, num_val=2, image_size=(40, 40),
        num_aug_only=1)
    cfg = _mmseg_dataset_cfg('pascal_voc12_aug.py')
    train_cfg = cfg.train_dataloader.dataset
    assert train_cfg.type == 'ConcatDataset'
    # mmseg's file names are the generator's
    assert [d.ann_file for d in train_cfg.datasets] == [out['train'],
                                                        out['aug']]
    train = DATASETS.build(_with_root(train_cfg, out['root']))
    assert len(train) == 2 + 3  # train.txt + aug.txt (train + SBD-only)
    for i in range(len(train)):
        gt = train[i]['gt_seg_map']
        assert set(np.unique(gt)) <= set(range(21)) | {255}
    # VOC's SegmentationClass has 255 object boundaries, SBD's does not
    assert (train[0]['gt_seg_map'] == 255).any()
    assert not (train[2]['gt_seg_map'] == 255).any()
    val = DATASETS.build(_with_root(cfg.val_dataloader.dataset, out['root']))
    assert len(val) == 2
    results, present = _seg_gt_as_prediction_miou(val)
    assert results['mIoU'] == pytest.approx(100.0)
    assert 0 in present and present - {0}


# --- ImageNet ----------------------------------------------------------------


@pytest.mark.parametrize('split', ['train', 'val'])
def test_imagenet_reads_with_real_labels(tmp_path, split):
    from mmpretrain.datasets import ImageNet
    init_default_scope('mmpretrain')
    toy_data.make_imagenet(
        str(tmp_path), num_train=2, num_val=1, image_size=(32, 32),
        num_classes=3)
    dataset = ImageNet(
        data_root=str(tmp_path),
        split=split,
        pipeline=[dict(type='LoadImageFromFile')])
    assert len(dataset.metainfo['classes']) == 1000
    assert len(dataset) == 3 * (2 if split == 'train' else 1)
    labels = [dataset.get_data_info(i)['gt_label']
              for i in range(len(dataset))]
    assert sorted(set(int(v) for v in labels)) == [0, 1, 2]
    assert all(0 <= int(v) < 1000 for v in labels)
    assert dataset[0]['img'].shape == (32, 32, 3)
    if split == 'train':  # the folder is the class's wnid
        info = dataset.get_data_info(0)
        wnid = toy_data.IMAGENET_TOY_WNIDS[int(info['gt_label'])]
        assert osp.basename(osp.dirname(info['img_path'])) == wnid


# --- Kinetics ----------------------------------------------------------------


def test_kinetics_videos_read_and_score(tmp_path):
    """mmaction2's VideoDataset reads the list, decord decodes every frame,
    the shape moves the class's way, and AccMetric scores the ground truth
    as prediction 1.0."""
    pytest.importorskip('mmaction')
    pytest.importorskip('decord')
    from mmaction.evaluation import AccMetric
    from mmengine.registry import DATASETS, DefaultScope
    out = toy_data.make_kinetics(str(tmp_path), num_train=2, num_val=1,
                                 num_classes=3, num_frames=12)
    for split, per_class in (('train', 2), ('val', 1)):
        with DefaultScope.overwrite_default_scope('mmaction'):
            dataset = DATASETS.build(dict(
                type='VideoDataset',
                ann_file=osp.join(out['root'], out[f'{split}_ann']),
                data_prefix=dict(video=osp.join(out['root'],
                                                out[f'{split}_videos'])),
                pipeline=[
                    dict(type='DecordInit'),
                    dict(type='SampleFrames', clip_len=12, frame_interval=1,
                         num_clips=1, test_mode=True),
                    dict(type='DecordDecode'),
                ]))
        assert len(dataset) == 3 * per_class
        labels = [dataset.get_data_info(i)['label']
                  for i in range(len(dataset))]
        assert sorted(labels) == sorted([0, 1, 2] * per_class)
    sample = dataset[1]  # label 1 moves down
    frames = sample['imgs']
    assert sample['total_frames'] == 12 and len(frames) == 12
    assert frames[0].shape == (48, 64, 3)

    def row_of_shape(frame):  # mean row of the pixels of the class colour
        colour = np.array(toy_data._IMAGENET_COLOURS[1])
        rows, _ = np.nonzero(np.abs(frame.astype(int) - colour).sum(-1) < 80)
        assert len(rows) > 20
        return rows.mean()

    assert row_of_shape(frames[-1]) > row_of_shape(frames[0]) + 10
    metric = AccMetric()
    metric.process({}, [
        dict(pred_score=torch.nn.functional.one_hot(
            torch.tensor(label), 400).float(), gt_label=torch.tensor([label]))
        for label in labels
    ])
    results = metric.compute_metrics(metric.results)
    assert results['top1'] == 1.0 and results['mean1'] == 1.0


# --- arguments ---------------------------------------------------------------


@pytest.mark.parametrize('kwargs,error,match', [
    (dict(num_train=0), ValueError, 'num_train must be a positive int'),
    (dict(num_val=1.5), ValueError, 'num_val must be a positive int'),
    (dict(image_size=(16, 64)), ValueError, 'at least 32x32'),
    (dict(image_size=64), TypeError,
     'image_size must be a \\(height, width\\)'),
    (dict(image_size=(32.0, 32)), TypeError, 'pair of ints'),
])
@pytest.mark.parametrize('name', sorted(toy_data.TOY_DATASETS))
def test_bad_arguments(tmp_path, name, kwargs, error, match):
    make = toy_data.TOY_DATASETS[name][0]
    with pytest.raises(error, match=match):
        make(str(tmp_path), **kwargs)


def test_generator_specific_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='num_classes must be an int in 1..5'):
        toy_data.make_imagenet(str(tmp_path), num_classes=6)
    with pytest.raises(ValueError, match='num_aug_only must be a non-neg'):
        toy_data.make_voc12aug(str(tmp_path), num_aug_only=-1)
    with pytest.raises(ValueError, match='max_objects must be a positive'):
        toy_data.make_coco(str(tmp_path), max_objects=0)
    with pytest.raises(ValueError, match='num_frames must be an int >= 8'):
        toy_data.make_kinetics(str(tmp_path), num_frames=4)
