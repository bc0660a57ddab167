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
    assert msg.startswith('7 path(s)')  # every one at once
    # the override: each missing data_root, and the evaluator's absolute
    # ann_file under the same new root; nothing else is needed
    options = msg.split('--cfg-options ')[1].split()
    assert options == [
        'train_dataloader.dataset.data_root=/path/to/no_such_coco',
        'val_dataloader.dataset.dataset.data_root=/path/to/no_such_coco',
        'val_evaluator.ann_file=/path/to/no_such_coco/annotations/train.json']


def test_missing_annotation_file_gets_a_file_placeholder(tmp_path):
    (tmp_path / 'train2017').mkdir()
    with pytest.raises(FileNotFoundError) as err:
        check_data_paths(_cfg(str(tmp_path)))
    msg = str(err.value)
    assert msg.startswith('3 path(s)')
    assert '=/path/to/data' not in msg
    options = msg.split('--cfg-options ')[1].split()
    assert options == [
        'train_dataloader.dataset.ann_file=/path/to/train.json',
        'val_dataloader.dataset.dataset.ann_file=/path/to/train.json',
        'val_evaluator.ann_file=/path/to/train.json']


def test_stage2_without_stage1_names_load_from_and_its_config(
        tmp_path, monkeypatch):
    """An ImageNet stage-2 config: every missing path at once, load_from
    with the stage-1 config that writes it."""
    from gcnet_mm.engine.runner_cfg import prepare_train_cfg
    monkeypatch.chdir(tmp_path)
    config = osp.join(osp.dirname(_toy(TOY_CLS)), '..', 'classification',
                      'gcnet', 'resnet50-gcb-r16-c3-c5_8xb64-ft-coslr-40e_'
                      'in1k.py')
    with pytest.raises(FileNotFoundError) as err:
        prepare_train_cfg(config)
    msg = str(err.value)
    assert 'train_dataloader.dataset.data_root' in msg
    line = next(x for x in msg.splitlines() if x.strip().startswith(
        'load_from:'))
    assert 'work_dirs/resnet50_8xb64-coslr-120e_in1k/epoch_120.pth' in line
    assert osp.join('classification', 'gcnet',
                    'resnet50_8xb64-coslr-120e_in1k.py') in line
    assert 'load_from=/path/to/epoch_120.pth' in msg


def test_weights_are_not_checked_when_resuming(tmp_path):
    cfg = Config(dict(load_from=str(tmp_path / 'gone.pth'), resume=True,
                      model=dict(backbone=dict(init_cfg=dict(
                          type='Pretrained',
                          checkpoint='torchvision://r50')))))
    assert check_data_paths(cfg, (), weights=True) == ['torchvision://r50']
    cfg.resume = False
    cfg.model.backbone.init_cfg.checkpoint = str(tmp_path / 'mine.pth')
    with pytest.raises(FileNotFoundError) as err:
        check_data_paths(cfg, (), weights=True)
    assert 'model.backbone.init_cfg.checkpoint' in str(err.value)
    assert 'load_from' in str(err.value)


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
        prepare_train_cfg(_toy(TOY_CLS), amp=True)


def test_auto_scale_lr_option(tmp_path, monkeypatch):
    from gcnet_mm.datasets import make_imagenet
    from gcnet_mm.engine.runner_cfg import prepare_train_cfg
    make_imagenet(str(tmp_path / 'data' / 'toy_imagenet'))
    monkeypatch.chdir(tmp_path)
    cfg = prepare_train_cfg(_toy(TOY_CLS), auto_scale_lr=True)
    assert cfg.auto_scale_lr.enable is True
    assert cfg.auto_scale_lr.base_batch_size > 0
    with pytest.raises(ValueError, match='base_batch_size'):
        prepare_train_cfg(_toy(TOY_CLS), auto_scale_lr=True,
                          cfg_options=dict(auto_scale_lr=dict(
                              base_batch_size=None)))


def _toy(name):
    return osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                    'configs', '_toy_', name)


TOY_DET = 'mask-rcnn_r50-gcb-r16-c3-c5_fpn_toy-coco.py'
TOY_SEG = 'gcnet_r50-d8_toy-cityscapes.py'
TOY_CLS = 'resnet50-gcb-r16-c3-c5_toy-imagenet.py'


@pytest.fixture
def toy_data(tmp_path, monkeypatch):
    """The three toy datasets where the toy configs look (cwd = tmp_path),
    and an (empty) checkpoint file."""
    from gcnet_mm.datasets import make_cityscapes, make_coco, make_imagenet
    make_coco(str(tmp_path / 'data' / 'toy_coco'), num_train=1, num_val=1)
    make_cityscapes(str(tmp_path / 'data' / 'toy_cityscapes'), num_train=1,
                    num_val=1)
    make_imagenet(str(tmp_path / 'data' / 'toy_imagenet'))
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'')
    return str(ckpt)


def _evaluators(cfg):
    ev = cfg.test_evaluator
    return list(ev) if isinstance(ev, (list, tuple)) else [ev]


def test_out_is_each_hosts_own(toy_data, tmp_path):
    """--out as mmdet's, mmseg's and mmpretrain's tools/test.py: mmdet's
    DumpDetResults pickle, mmseg's folder of label maps, mmengine's
    DumpResults pickle."""
    from gcnet_mm.engine.runner_cfg import prepare_test_cfg
    out = str(tmp_path / 'preds.pkl')
    det = _evaluators(prepare_test_cfg(_toy(TOY_DET), toy_data, out=out))
    assert det[-1] == dict(type='mmdet.DumpDetResults', out_file_path=out)
    assert det[0]['type'] == 'CocoMetric'
    cls = _evaluators(prepare_test_cfg(_toy(TOY_CLS), toy_data, out=out))
    assert cls[-1] == dict(type='DumpResults', out_file_path=out)
    maps = str(tmp_path / 'maps')
    seg = _evaluators(prepare_test_cfg(_toy(TOY_SEG), toy_data, out=maps))
    assert len(seg) == 1 and seg[0]['type'] == 'IoUMetric'
    assert seg[0]['output_dir'] == maps and seg[0]['keep_results'] is True


def test_out_mistakes_are_named(toy_data, tmp_path):
    from gcnet_mm.engine.runner_cfg import prepare_test_cfg
    with pytest.raises(ValueError, match=r'\.pkl'):
        prepare_test_cfg(_toy(TOY_CLS), toy_data, out='preds.json')
    with pytest.raises(ValueError, match='folder for the predicted label'):
        prepare_test_cfg(_toy(TOY_SEG), toy_data, out='preds.pkl')
    with pytest.raises(ValueError, match='--out-item needs --out'):
        prepare_test_cfg(_toy(TOY_CLS), toy_data, out_item='metrics')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        prepare_test_cfg(_toy(TOY_CLS), str(tmp_path / 'nope.pth'))


def test_out_item_metrics_dumps_no_predictions(toy_data, tmp_path):
    from gcnet_mm.engine.runner_cfg import prepare_test_cfg
    cfg = prepare_test_cfg(_toy(TOY_CLS), toy_data,
                           out=str(tmp_path / 'm.pkl'), out_item='metrics')
    assert [e['type'] for e in _evaluators(cfg)] == ['Accuracy']


def test_empty_evaluation_is_an_error():
    from gcnet_mm.engine.runner_cfg import EvaluationError, check_metrics
    coco = Config(dict(test_evaluator=dict(type='CocoMetric', ann_file='a')))
    with pytest.raises(EvaluationError, match='computed no metrics.*Coco'):
        check_metrics({}, coco)
    check_metrics({'coco/bbox_mAP': 0.0}, coco)
    # only dumps or format_only metrics: nothing to compute, nothing missing
    dumps = Config(dict(test_evaluator=[
        dict(type='CocoMetric', format_only=True),
        dict(type='mmdet.DumpDetResults', out_file_path='x.pkl')]))
    check_metrics({}, dumps)


def test_testing_never_reads_the_training_data(toy_data, tmp_path):
    """tools/test.py --show-dir on a segmentation config: mmseg's
    visualisation hook asks for runner.iter, which builds the training
    loop; the training split is gone here."""
    import glob
    import shutil

    from gcnet_mm.engine.cli import build_runner
    from gcnet_mm.engine.runner_cfg import (load_checkpoint_strict,
                                            prepare_test_cfg)
    for split in ('leftImg8bit', 'gtFine'):
        shutil.rmtree(tmp_path / 'data' / 'toy_cityscapes' / split / 'train')
    cfg = prepare_test_cfg(_toy(TOY_SEG), toy_data,
                           work_dir=str(tmp_path / 'wd'),
                           show_dir=str(tmp_path / 'vis'))
    runner = build_runner(cfg, test=True)
    torch.save({'state_dict': runner.model.state_dict()}, toy_data)
    load_checkpoint_strict(runner, toy_data)
    metrics = runner.test()
    assert 'mIoU' in metrics and runner.iter == 0
    assert glob.glob(str(tmp_path / 'vis' / '**' / '*.png'), recursive=True)


def test_a_test_run_leaves_the_training_config_dump_alone(toy_data,
                                                          tmp_path):
    """tools/test.py with the training's work dir: the training's config
    dump there stays byte for byte (retraining from it trains on the
    training data); the test run's own config goes into its log folder,
    and has no training in it."""
    import importlib.util

    from mmengine.config import Config

    from gcnet_mm.engine.cli import build_runner
    from gcnet_mm.engine.runner_cfg import prepare_train_cfg
    work_dir = tmp_path / 'wd'
    train_cfg = prepare_train_cfg(_toy(TOY_CLS), work_dir=str(work_dir))
    runner = build_runner(train_cfg)  # dumps the training's config
    dump = work_dir / TOY_CLS
    trained = dump.read_bytes()
    assert Config.fromfile(str(dump)).train_dataloader.dataset.split \
        == 'train'
    torch.save({'state_dict': runner.model.state_dict()}, toy_data)

    spec = importlib.util.spec_from_file_location(
        'test_tool', osp.join(osp.dirname(osp.dirname(osp.abspath(
            __file__))), 'tools', 'test.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main([_toy(TOY_CLS), toy_data, '--work-dir', str(work_dir)])
    assert dump.read_bytes() == trained
    own, = work_dir.glob(f'*/{TOY_CLS}')  # WORK_DIR/<timestamp>/
    tested = Config.fromfile(str(own))
    assert tested.train_dataloader is None and tested.train_cfg is None
    assert tested.test_dataloader.dataset.split == 'val'
