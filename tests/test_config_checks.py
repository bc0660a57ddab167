"""Dataset paths are checked before anything is built, and SyncBN is turned
into BN for CPU-only distributed runs."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from gcnet_mm.engine import check_data_paths, sync_bn_to_bn


def _cfg(root, ann='annotations/train.json', img='train2017/'):
    return Config(dict(
        train_dataloader=dict(dataset=dict(
            type='CocoDataset', data_root=root, ann_file=ann,
            data_prefix=dict(img=img))),
        val_dataloader=dict(dataset=dict(
            type='RepeatDataset', times=2, dataset=dict(
                type='CocoDataset', data_root=root, ann_file=ann,
                data_prefix=dict(img=img)))),
        val_cfg=dict(type='ValLoop'),
        val_evaluator=dict(type='CocoMetric', ann_file=f'{root}/{ann}')))


def test_existing_paths_pass(tmp_path):
    (tmp_path / 'annotations').mkdir()
    (tmp_path / 'annotations' / 'train.json').write_text('{}')
    (tmp_path / 'train2017').mkdir()
    checked = check_data_paths(_cfg(str(tmp_path)))
    assert len(checked) == 7


def test_missing_paths_fail_with_path_and_key(tmp_path):
    root = str(tmp_path / 'no_such_coco')
    with pytest.raises(FileNotFoundError) as err:
        check_data_paths(_cfg(root))
    msg = str(err.value)
    assert root in msg
    assert 'train_dataloader.dataset.data_root' in msg
    assert 'val_dataloader.dataset.dataset.ann_file' in msg
    assert '--cfg-options' in msg


def test_only_phases_asked_for_are_checked(tmp_path):
    cfg = _cfg(str(tmp_path / 'missing'))
    assert check_data_paths(cfg, phases=('test', )) == []


def test_sync_bn_to_bn_everywhere():
    cfg = Config(dict(
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        model=dict(backbone=dict(norm_cfg=dict(type='SyncBN')),
                   decode_head=[dict(norm_cfg=dict(type='SyncBN')),
                                dict(norm_cfg=dict(type='GN'))]),
        sync_bn='torch'))
    changed = sync_bn_to_bn(cfg)
    assert set(changed) == {'norm_cfg', 'model.backbone.norm_cfg',
                            'model.decode_head[0].norm_cfg', 'sync_bn'}
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    assert cfg.model.decode_head[1].norm_cfg.type == 'GN'
    assert cfg.sync_bn is None


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_amp_without_gpu_is_a_clear_error():
    from gcnet_mm.engine import UsageError
    from gcnet_mm.engine.runner_cfg import prepare_train_cfg
    config = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                      'configs', '_toy_', 'resnet50-gcb-r16-c3-c5_toy-imagenet.py')
    with pytest.raises(UsageError, match='--amp needs a GPU'):
        prepare_train_cfg(config, amp=True)
