"""The user's loop through the real tools, one process each as a user runs
them: tools/train.py -> tools/test.py -> tools/train.py --resume, for
detection, segmentation and classification configs of the package, on tiny
generated datasets in the real on-disk formats; and two-process training on
the CPU with tools/dist_train.sh."""
import glob
import os
import os.path as osp

import pytest
import torch

from conftest import REPO, host_tool, metrics_of, run_tool  # noqa: F401
from gcnet_mm.datasets.toy_data import (make_cityscapes, make_coco,
                                        make_imagenet)
from gcnet_mm.engine import safe_load

TOY = osp.join(REPO, 'configs', '_toy_')
DET = osp.join(TOY, 'mask-rcnn_r50-gcb-r16-c3-c5_fpn_toy-coco.py')
SEG = osp.join(TOY, 'gcnet_r50-d8_toy-cityscapes.py')
CLS = osp.join(TOY, 'resnet50-gcb-r16-c3-c5_toy-imagenet.py')

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A folder with data/ laid out as the toy configs expect."""
    root = tmp_path_factory.mktemp('e2e')
    make_coco(str(root / 'data' / 'toy_coco'), num_train=4, num_val=2)
    make_cityscapes(str(root / 'data' / 'toy_cityscapes'))
    make_imagenet(str(root / 'data' / 'toy_imagenet'))
    return root


def same(a, b):
    """Deep equality of what the dump metrics pickle (tensors and arrays
    compared element for element)."""
    import numpy as np
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(same(a[k], b[k]) for k in a))
    if isinstance(a, (list, tuple)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(same(x, y) for x, y in zip(a, b)))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


def test_detection_under_mmdet_tools_and_ours(workspace):
    """A user's config inheriting ``gcnet_mm::_toy_/...`` trains with
    mmdetection's own tools/train.py (through ``python -m gcnet_mm``); our
    tools/test.py and mmdet's give the same --out pickle (DumpDetResults:
    masks in RLE, no ground truth), written under the user's umask; a test
    whose predictions are all filtered out is an error."""
    import pickle
    (workspace / 'user_det.py').write_text(
        "_base_ = "
        "'gcnet_mm::_toy_/mask-rcnn_r50-gcb-r16-c3-c5_fpn_toy-coco.py'"
        '\ntrain_cfg = dict(max_iters=2)\n')
    wd = str(workspace / 'det')
    run_tool(workspace, 'train.py', 'user_det.py', '--work-dir', wd,
             host='mmdet')
    ckpt = osp.join(wd, 'iter_2.pth')
    assert osp.isfile(ckpt)
    ours, theirs = str(workspace / 'det_ours.pkl'), str(workspace / 'det.pkl')
    keep_all = ['--cfg-options', 'model.test_cfg.rcnn.score_thr=0']
    _, out = run_tool(workspace, 'test.py', DET, ckpt, '--work-dir', wd,
                      '--out', ours, *keep_all, umask=0o027)
    metrics = metrics_of(wd)
    for key in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50'):
        assert key in metrics and -1 <= metrics[key] <= 1, metrics
    assert 'Average Precision' in out  # the COCO table is printed
    run_tool(workspace, 'test.py', 'user_det.py', ckpt, '--work-dir',
             str(workspace / 'det_host'), '--out', theirs, *keep_all,
             host='mmdet')
    with open(ours, 'rb') as f:
        predictions = pickle.load(f)
    with open(theirs, 'rb') as f:
        assert same(predictions, pickle.load(f))
    assert len(predictions) == 2 and 'gt_instances' not in predictions[0]
    masks = predictions[0]['pred_instances']['masks']
    assert masks and all(set(m) == {'size', 'counts'} for m in masks)  # RLE
    written = [ours] + glob.glob(osp.join(wd, 'metrics_*.json'))
    assert {oct(os.stat(p).st_mode & 0o777) for p in written} == {'0o640'}
    # The GC blocks in the checkpoint are the package's (names as the zoo's).
    keys = safe_load(ckpt)['state_dict']
    assert 'backbone.layer3.5.context_block.channel_add_conv.3.weight' in keys

    empty = str(workspace / 'det_empty')
    rc, out = run_tool(workspace, 'test.py', DET, ckpt, '--work-dir', empty,
                       '--cfg-options', 'model.test_cfg.rcnn.score_thr=1.01',
                       check=False)
    assert rc != 0 and 'computed no metrics' in out, out[-3000:]
    assert 'Traceback' not in out and 'metrics written' not in out
    assert not glob.glob(osp.join(empty, 'metrics_*.json'))


def _float_tensors_differ(ckpt_a, ckpt_b):
    a, b = safe_load(ckpt_a)['state_dict'], safe_load(ckpt_b)['state_dict']
    assert a.keys() == b.keys()
    return [k for k in a
            if a[k].is_floating_point() and not torch.equal(a[k], b[k])]


def test_segmentation_train_resume_test(workspace):
    """An iteration-based config with dropout in both heads: 4 iterations
    straight (validating at 2) == 2 iterations, then --resume for 2 more,
    every float tensor bit for bit; then tools/test.py --show-dir."""
    from mmengine.config import Config
    cfg = Config.fromfile(SEG)
    assert cfg.model.decode_head.dropout_ratio > 0
    assert cfg.model.auxiliary_head.dropout_ratio > 0
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    options = ['--cfg-options', 'train_cfg.val_interval=2']
    wd, split = str(workspace / 'seg'), str(workspace / 'seg_split')
    run_tool(workspace, 'train.py', SEG, '--work-dir', wd, *options)
    ckpt = osp.join(wd, 'iter_4.pth')
    assert osp.isfile(ckpt)
    run_tool(workspace, 'train.py', SEG, '--work-dir', split, *options,
             'train_cfg.max_iters=2')
    assert not osp.exists(osp.join(split, 'iter_4.pth'))
    _, out = run_tool(workspace, 'train.py', SEG, '--work-dir', split,
                      '--resume', *options)
    assert 'resumed epoch: 0, iter: 2' in out
    differ = _float_tensors_differ(ckpt, osp.join(split, 'iter_4.pth'))
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:3]}'

    ours, theirs = workspace / 'seg_maps', workspace / 'seg_maps_host'
    run_tool(workspace, 'test.py', SEG, ckpt, '--work-dir', wd,
             '--show-dir', str(workspace / 'seg_vis'), '--out', str(ours))
    metrics = metrics_of(wd)
    assert 0 <= metrics['mIoU'] <= 100, metrics
    drawn = glob.glob(str(workspace / 'seg_vis' / '**' / '*.png'),
                      recursive=True)
    assert len(drawn) == 2, drawn  # one per val image
    # --out: a folder of label maps, the files mmseg's own test.py writes
    run_tool(workspace, 'test.py', SEG, ckpt, '--work-dir',
             str(workspace / 'seg_host'), '--out', str(theirs), host='mmseg')
    maps = sorted(p.name for p in ours.iterdir())
    assert len(maps) == 2 and maps == sorted(p.name for p in theirs.iterdir())
    assert all((ours / m).read_bytes() == (theirs / m).read_bytes()
               for m in maps)
    keys = safe_load(ckpt)['state_dict']
    assert 'decode_head.gc_block.conv_mask.weight' in keys


def test_classification_resume_is_exact(workspace):
    """2 epochs straight == 1 epoch, then --resume for the 2nd, bit for bit;
    then tools/test.py on the result."""
    straight, split = str(workspace / 'straight'), str(workspace / 'split')
    run_tool(workspace, 'train.py', CLS, '--work-dir', straight)
    run_tool(workspace, 'train.py', CLS, '--work-dir', split,
             '--cfg-options', 'train_cfg.max_epochs=1')
    assert not osp.exists(osp.join(split, 'epoch_2.pth'))
    _, out = run_tool(workspace, 'train.py', CLS, '--work-dir', split,
                      '--resume')
    assert 'resumed epoch: 1' in out
    assert 'Epoch(train)   [1]' not in out and 'Epoch(train) [1]' not in out
    differ = _float_tensors_differ(osp.join(straight, 'epoch_2.pth'),
                                   osp.join(split, 'epoch_2.pth'))
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:3]}'

    out = str(workspace / 'cls.pkl')
    run_tool(workspace, 'test.py', CLS, osp.join(split, 'epoch_2.pth'),
             '--work-dir', split, '--out', out)
    assert 0 <= metrics_of(split)['accuracy/top1'] <= 100
    import mmengine  # mmpretrain's tools/test.py: mmengine's DumpResults
    predictions = mmengine.load(out)
    assert predictions and predictions[0]['pred_score'].shape == (1000, )


def test_test_refuses_checkpoint_of_another_model(workspace):
    wd = str(workspace / 'straight')
    ckpt = osp.join(wd, 'epoch_1.pth')
    if not osp.isfile(ckpt):
        pytest.skip('needs the classification run above')
    rc, out = run_tool(workspace, 'test.py', CLS, ckpt, '--work-dir',
                       str(workspace / 'mismatch'), '--cfg-options',
                       'model.backbone.plugins=[]', check=False)
    assert rc != 0
    assert 'does not match' in out and 'unexpected' in out
    assert 'context_block' in out and 'Traceback' not in out
    assert not glob.glob(str(workspace / 'mismatch' / 'metrics_*.json'))


def test_missing_dataset_path_fails_at_once(workspace, tmp_path):
    rc, out = run_tool(tmp_path, 'train.py', CLS, '--work-dir',
                       str(tmp_path / 'wd'), check=False)
    assert rc != 0
    assert 'data/toy_imagenet' in out and 'do not exist' in out
    assert 'Traceback' not in out


def test_dist_train_on_cpu_two_processes(workspace):
    wd = str(workspace / 'dist')
    _, out = run_tool(workspace, CLS, '2', '--work-dir', wd, '--cfg-options',
                      'train_cfg.max_epochs=1',
                      'model.backbone.norm_cfg.type=SyncBN', nproc=2)
    assert osp.isfile(osp.join(wd, 'epoch_1.pth'))
    assert out.count('SyncBN (which needs GPUs) is replaced by BN') == 1
    assert 'Distributed training: True' in out


@pytest.mark.timeout(1800)
def test_the_demo_learns(tmp_path):
    """tools/run_demo.sh, set-up skipped (this environment): the scaled-down
    GC Mask R-CNN learns the toy set from random weights (bbox mAP_50 >= 0.5
    on the test images, which its last lines say with the time it took),
    keeps one checkpoint, and its picture has the attention map before
    training beside the one after.  (It writes data/toy_coco/ of the
    checkout, as the demo does.)"""
    import json
    import re
    import subprocess
    import sys
    wd = tmp_path / 'demo'
    env = dict(os.environ, GCNET_MM_SETUP='0',
               PATH=osp.dirname(sys.executable) + os.pathsep +
               os.environ['PATH'])
    env.pop('OMP_NUM_THREADS', None)
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', 'run_demo.sh'),
                           str(wd)], env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    last = out[out.index('[demo] '):]
    seconds = re.search(r'trained from random weights and tested in (\d+) s',
                        last)
    map50 = re.search(r'test set: bbox mAP_50 ([0-9.]+) \(bbox mAP', last)
    assert seconds and map50, last
    assert float(map50.group(1)) >= 0.5, last
    assert float(map50.group(1)) == pytest.approx(
        metrics_of(str(wd))['coco/bbox_mAP_50'], abs=1e-3)
    assert [p.name for p in wd.glob('*.pth')] == ['iter_150.pth']
    assert json.loads((wd / 'gc_attention_init.json').read_text())[
        'iter'] == 0
    assert 'at initialisation' in out and osp.isfile(wd / 'gc_attention.png')
