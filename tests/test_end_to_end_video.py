"""The action-recognition loop through the real tools: tools/train.py and
tools/test.py on the toy slow-only GC config, with tiny Kinetics-format videos
read by mmaction2's VideoDataset (decord) and scored by its AccMetric."""
import os.path as osp

import pytest

from conftest import REPO, metrics_of, run_tool
from gcnet_mm.datasets.toy_data import make_kinetics
from gcnet_mm.engine import safe_load

pytest.importorskip('mmaction')
pytest.importorskip('decord')
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

VIDEO = osp.join(REPO, 'configs', '_toy_',
                 'slowonly_r50-gcb-r4-c3-c5_toy-kinetics400.py')


def test_video_train_test(tmp_path):
    make_kinetics(str(tmp_path / 'data' / 'toy_kinetics'), num_train=1,
                  num_val=1)
    wd = str(tmp_path / 'video')
    run_tool(tmp_path, 'train.py', VIDEO, '--work-dir', wd, '--cfg-options',
             'train_cfg.max_epochs=1', 'train_cfg.val_interval=5')
    ckpt = osp.join(wd, 'epoch_1.pth')
    assert osp.isfile(ckpt)
    _, out = run_tool(tmp_path, 'test.py', VIDEO, ckpt, '--work-dir', wd)
    assert 'none of' not in out  # mmaction is a host the tools know
    metrics = metrics_of(wd)
    assert set(metrics) == {'acc/top1', 'acc/top5', 'acc/mean1'}, metrics
    assert all(0 <= v <= 1 for v in metrics.values()), metrics
    state = safe_load(ckpt)['state_dict']  # GC blocks of 3-D shape, c3-c5
    weight = state['backbone.layer4.2.context_block.channel_add_conv.3.weight']
    assert weight.shape == (2048, 512, 1, 1, 1)
    assert 'backbone.layer2.0.context_block.conv_mask.bias' not in state
