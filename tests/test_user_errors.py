"""Every user mistake gets one screen: tools/train.py and tools/test.py, run
as a user runs them, stop before any training with a short message that
names the config key or option, the value given and what is expected, and
no traceback."""
import os.path as osp

import pytest
import torch

from conftest import REPO, run_tool
from gcnet_mm.datasets import make_coco, make_imagenet

TOY = osp.join(REPO, 'configs', '_toy_')
DET = osp.join(TOY, 'mask-rcnn_r50-gcb-r16-c3-c5_fpn_toy-coco.py')
CLS = osp.join(TOY, 'resnet50-gcb-r16-c3-c5_toy-imagenet.py')

#: Most lines the report of a mistake may take.
SCREEN = 15


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """data/ as the toy configs expect it, one image per split."""
    root = tmp_path_factory.mktemp('mistakes')
    make_coco(str(root / 'data' / 'toy_coco'), num_train=1, num_val=1,
              image_size=(64, 64))
    make_imagenet(str(root / 'data' / 'toy_imagenet'), num_train=1,
                  num_val=1, num_classes=2)
    return root


def report(out):
    """The error report at the end of a tool's output: from its last line
    that starts with ``error:`` (or argparse's ``prog: error:``) on."""
    lines = out.rstrip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith(
        'error:') or ': error: ' in line)
    if ': error: ' in lines[start]:  # argparse's usage lines come first
        start = max(i for i in range(start + 1) if lines[i].startswith(
            'usage:'))
    return lines[start:]


def check_one_screen(rc, out, *expected, whole=False):
    """A failure whose output (or report, if the mistake shows after
    mmengine's log of the run) is at most a screen, with no traceback and
    with every ``expected`` text."""
    assert rc != 0, out[-3000:]
    assert 'Traceback' not in out, out[-5000:]
    shown = out.rstrip().splitlines() if whole else report(out)
    assert len(shown) <= SCREEN, '\n'.join(shown)
    text = '\n'.join(shown)
    for item in expected:
        assert item in text, text
    return text


@pytest.mark.parametrize('option, expected', [
    ("model.backbone.plugins.0.cfg.fusion_types=('channels_add',)",
     ["model.backbone.plugins[0].cfg.fusion_types=('channels_add',)",
      "expected one of ['channel_add', 'channel_mul']",
      "did you mean 'channel_add'?"]),
    ('model.backbone.plugins.0.cfg.ratio=0',
     ['model.backbone.plugins[0].cfg.ratio=0',
      'ratio must be positive, got 0']),
])
def test_a_wrong_block_argument_names_its_config_key(workspace, option,
                                                     expected):
    """The block's message comes first, after the key that carries it; a
    line says what was being built."""
    rc, out = run_tool(workspace, 'train.py', DET, '--work-dir',
                       str(workspace / 'wd'), '--cfg-options', option,
                       check=False)
    text = check_one_screen(rc, out, *expected)
    assert text.startswith('error: model.backbone.plugins[0].cfg.')
    assert 'ContextBlock (model.backbone.plugins[0].cfg)' in text
    assert 'Iter(train)' not in out


@pytest.mark.parametrize('tool, config, option, expected', [
    ('train.py', CLS, 'train_cfg.max_epoch=1',
     ['--cfg-options train_cfg.max_epoch=1', 'EpochBasedTrainLoop',
      "takes no argument 'max_epoch'", 'did you mean train_cfg.max_epochs?']),
    ('train.py', CLS, 'model.backbone.depthh=50',
     ['--cfg-options model.backbone.depthh=50',
      'did you mean model.backbone.depth?']),
    ('train.py', DET, 'model.backbone.depthh=50',
     ['--cfg-options model.backbone.depthh=50', 'model.backbone builds '
      "ResNet, which takes no argument 'depthh'",
      'did you mean model.backbone.depth?']),
    ('test.py', DET, 'model.test_cfg.rcnn.score_thrr=0.1',
     ['--cfg-options model.test_cfg.rcnn.score_thrr=0.1',
      'the config has no key model.test_cfg.rcnn.score_thrr',
      'did you mean model.test_cfg.rcnn.score_thr?']),
])
def test_cfg_options_keys_that_the_config_lacks(workspace, tool, config,
                                                option, expected):
    """Before anything is built: a key close to one the config has, or an
    argument the entry's class does not take."""
    ckpt = workspace / 'empty.pth'
    ckpt.write_bytes(b'')
    args = [str(ckpt)] if tool == 'test.py' else []
    rc, out = run_tool(workspace, tool, config, *args, '--work-dir',
                       str(workspace / 'wd'), '--cfg-options', option,
                       check=False)
    check_one_screen(rc, out, *expected, whole=True)


def test_cfg_options_without_equals_is_a_usage_error(workspace):
    rc, out = run_tool(workspace, 'train.py', CLS, '--cfg-options',
                       'train_cfg.max_epochs', check=False)
    check_one_screen(rc, out, "--cfg-options 'train_cfg.max_epochs'",
                     'KEY=VALUE', whole=True)
    assert rc == 2  # argparse's usage error


def test_cfg_options_into_a_list_or_a_value(workspace):
    from gcnet_mm.engine import UsageError
    from gcnet_mm.engine.runner_cfg import load_config
    with pytest.raises(UsageError, match=r'model.backbone.plugins is a list '
                       r"of 1 entries in the config, and '3' is not one of "
                       r'its indices \(0 to 0\)'):
        load_config(DET, {'model.backbone.plugins.3.cfg.ratio': 0.5})
    with pytest.raises(UsageError, match='model.backbone.init_cfg is None in '
                       "the config, not a dict, so it has no key 'type'"):
        load_config(DET, {'model.backbone.init_cfg.type': 'Pretrained'})


def test_cfg_options_key_that_is_new_is_noted_not_refused(workspace):
    """A key the config does not have and that is close to none is added
    as given, with a note (the class takes it, or takes any)."""
    from gcnet_mm.engine import UsageError
    from gcnet_mm.engine.runner_cfg import load_config
    with pytest.warns(UserWarning, match='the config has no key '
                      'model.test_cfg.rcnn.my_key; it is added as given'):
        cfg = load_config(DET, {'model.test_cfg.rcnn.my_key': 1,
                                'model.backbone.with_cp': True,
                                'test_dataloader.pin_memory': True})
    assert cfg.model.test_cfg.rcnn.my_key == 1
    # ResNet and torch's DataLoader take these: no note
    assert cfg.model.backbone.with_cp is True
    assert cfg.test_dataloader.pin_memory is True
    with pytest.raises(UsageError, match='did you mean '
                       'test_dataloader.pin_memory'):
        load_config(DET, {'test_dataloader.pin_memoryy': True})


def test_load_from_another_model_stops_training(workspace, tmp_path):
    """mmengine loads load_from non-strictly and trains from random weights
    when it does not fit; here training stops first, with the counts and a
    few names, as tools/test.py does for a checkpoint of another model."""
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {f'encoder.layer{i}.weight': torch.ones(3)
                               for i in range(5)}}, other)
    wd = tmp_path / 'wd'
    rc, out = run_tool(workspace, 'train.py', CLS, '--work-dir', str(wd),
                       '--cfg-options', f'load_from={other}', check=False)
    text = check_one_screen(
        rc, out, f"load_from='{other}' fills 0 of the",
        'missing (in the model, not in the checkpoint): backbone.',
        '5 unexpected (in the checkpoint, not in the model): '
        'encoder.layer0.weight', 'nothing was trained')
    assert 'Iter(train)' not in out and 'Epoch(train)' not in out, text
    assert not list(wd.glob('*.pth'))
