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
    with pytest.raises(UsageError, match='--amp needs a GPU'):
        prepare_train_cfg(_toy_cls_config(), amp=True)


def _toy_cls_config():
    return osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                    'configs', '_toy_', 'resnet50-gcb-r16-c3-c5_toy-imagenet.py')


def test_auto_scale_lr_option(tmp_path, monkeypatch):
    from gcnet_mm.datasets import make_imagenet
    from gcnet_mm.engine.runner_cfg import prepare_train_cfg
    make_imagenet(str(tmp_path / 'data' / 'toy_imagenet'))
    monkeypatch.chdir(tmp_path)
    cfg = prepare_train_cfg(_toy_cls_config(), auto_scale_lr=True)
    assert cfg.auto_scale_lr.enable is True
    assert cfg.auto_scale_lr.base_batch_size > 0
    with pytest.raises(ValueError, match='base_batch_size'):
        prepare_train_cfg(_toy_cls_config(), auto_scale_lr=True,
                          cfg_options=dict(auto_scale_lr=dict(
                              base_batch_size=None)))


def test_out_option_dumps_predictions(tmp_path, monkeypatch):
    from gcnet_mm.datasets import make_imagenet
    from gcnet_mm.engine.runner_cfg import prepare_test_cfg
    make_imagenet(str(tmp_path / 'data' / 'toy_imagenet'))
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'')
    cfg = prepare_test_cfg(_toy_cls_config(), str(ckpt),
                           out=str(tmp_path / 'preds.pkl'))
    dump = [e for e in cfg.test_evaluator if e['type'] == 'DumpResults']
    assert dump and dump[0]['out_file_path'] == str(tmp_path / 'preds.pkl')
    with pytest.raises(ValueError, match=r'\.pkl'):
        prepare_test_cfg(_toy_cls_config(), str(ckpt), out='preds.json')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        prepare_test_cfg(_toy_cls_config(), str(tmp_path / 'nope.pth'))
