"""What ``import gcnet_mm`` changes outside the package, and the upstream
tool each change serves (docs/internals.md): each test runs the upstream
path without the change, where it fails, and with it.

Every test starts a fresh interpreter, so that nothing a test imports here
changes what it shows."""
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub

from conftest import host_tool, run_fresh

TOY_BASE = "gcnet_mm::_toy_/resnet50-gcb-r16-c3-c5_toy-imagenet.py"


@pytest.fixture
def runner_checkpoint(tmp_path):
    """A checkpoint as mmengine's ``Runner.save_checkpoint`` writes it: the
    message hub's state (``HistoryBuffer`` objects of numpy arrays) and
    numpy values in its metadata."""
    hub = MessageHub.get_instance('test_import_effects')
    for loss in (0.75, 0.5):
        hub.update_scalar('train/loss', loss)
    path = str(tmp_path / 'iter_2.pth')
    torch.save(dict(meta=dict(seed=np.int64(0), iter=2),
                    state_dict=dict(w=torch.randn(2, 3)),
                    message_hub=hub.state_dict()), path)
    return path


def test_upstream_tool_loads_a_runner_checkpoint_only_with_the_allowlist(
        runner_checkpoint, tmp_path):
    """mmdetection's own tools/model_converters/publish_model.py calls
    ``torch.load``, weights-only by default from torch 2.6: it refuses a
    Runner's checkpoint, and reads it once gcnet_mm is imported."""
    tool = host_tool('mmdet', osp.join('model_converters',
                                       'publish_model.py'))
    out_file = str(tmp_path / 'published.pth')
    without = run_fresh(f"""
        import runpy, sys
        sys.argv = ['publish_model.py', {runner_checkpoint!r}, {out_file!r}]
        runpy.run_path({tool!r}, run_name='__main__')
    """, cwd=str(tmp_path), check=False)
    assert 'Weights only load failed' in without, without[-2000:]
    with_it = run_fresh(f"""
        import runpy, sys
        import gcnet_mm  # what python -m gcnet_mm TOOL.py does first
        sys.argv = ['publish_model.py', {runner_checkpoint!r}, {out_file!r}]
        runpy.run_path({tool!r}, run_name='__main__')
        print('published')
    """, cwd=str(tmp_path))
    assert with_it == 'published'


def test_a_config_that_names_gcnet_mm_turns_the_allowlist_on(
        runner_checkpoint):
    """mmdet's tools/test.py and tools/train.py --resume: the Runner builds
    the config's model, which imports gcnet_mm through its registry scope,
    then loads the checkpoint with mmengine's ``CheckpointLoader``."""
    out = run_fresh(f"""
        import sys
        from mmengine.runner.checkpoint import _load_checkpoint
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        register_all_modules()
        try:
            _load_checkpoint({runner_checkpoint!r}, map_location='cpu')
        except Exception as e:
            before = type(e).__name__
        assert 'gcnet_mm' not in sys.modules
        MODELS.build(dict(type='gcnet_mm.ContextBlock', in_channels=8,
                          ratio=1 / 4))
        ckpt = _load_checkpoint({runner_checkpoint!r}, map_location='cpu')
        buf = ckpt['message_hub']['log_scalars']['train/loss']
        print(before, type(buf).__name__, buf.current())
    """)
    assert out == 'UnpicklingError HistoryBuffer 0.5'


@pytest.fixture
def user_config(tmp_path):
    """A user's config on a ``gcnet_mm::`` base, in a folder of its own."""
    path = tmp_path / 'my_config.py'
    path.write_text(f"_base_ = '{TOY_BASE}'\ntrain_cfg = dict(max_epochs=3)\n")
    return str(path)


def test_an_upstream_tool_reads_a_gcnet_mm_base_only_with_the_package_known(
        user_config, tmp_path):
    """mmdetection's own tools/misc/print_config.py: mmengine resolves
    ``pkg::`` bases only for the packages of ``MODULE2PACKAGE``, before the
    config's ``custom_imports`` run; ``python -m gcnet_mm TOOL.py`` adds it
    (README)."""
    tool = host_tool('mmdet', osp.join('misc', 'print_config.py'))
    without = run_fresh(f"""
        import runpy, sys
        sys.argv = ['print_config.py', {user_config!r}]
        runpy.run_path({tool!r}, run_name='__main__')
    """, cwd=str(tmp_path), check=False)
    assert 'does not support to load gcnet_mm config' in without, without
    proc = subprocess.run(
        [sys.executable, '-m', 'gcnet_mm', tool, user_config],
        capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'gcnet_mm.ContextBlock' in proc.stdout
    assert 'max_epochs=3' in proc.stdout


def test_an_editable_install_finds_its_configs_only_through_the_wrap(
        user_config, tmp_path):
    """mmengine looks for ``gcnet_mm::`` configs beside the installed
    metadata, which an editable install (``pip install -e .``, the README's)
    has not: with mmengine's own ``get_installed_path`` the base is not
    found, with the package's wrap it is, in ``Config.fromfile`` (every
    tool) and ``mmengine.hub.get_config``.  A wheel's install needs no wrap
    (tests/test_install.py)."""
    out = run_fresh(f"""
        import os.path as osp
        import gcnet_mm
        import mmengine.config.config as config_module
        import mmengine.hub.hub as hub_module
        import mmengine.utils
        from mmengine.config import Config
        from mmengine.hub import get_config
        wrap = config_module.get_installed_path
        found = mmengine.utils.get_installed_path('gcnet_mm')
        if osp.isdir(osp.join(found, '.mim', 'configs')):
            print('not editable', found)
            raise SystemExit
        config_module.get_installed_path = mmengine.utils.get_installed_path
        try:
            Config.fromfile({user_config!r})
        except FileNotFoundError as e:
            before = 'not found'
        config_module.get_installed_path = wrap
        cfg = Config.fromfile({user_config!r})
        hub = get_config('{TOY_BASE}')
        print(before, cfg.train_cfg.max_epochs, hub.model.type)
    """, cwd=str(tmp_path))
    if out.startswith('not editable'):
        pytest.skip(f'gcnet_mm is not installed editable here ({out})')
    assert out == 'not found 3 ImageClassifier'
