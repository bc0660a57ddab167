"""Exact resume with gcnet_mm.ReseedHook, in process with mmengine's Runner:
a tiny model with dropout trained on data whose augmentation draws from
python's, numpy's and torch's generators, and a validation step that draws
from them too.  N steps straight must equal k steps, then a new Runner that
resumes for the rest, bit for bit: epoch- and iteration-based loops, with and
without data-loader workers, one process and two (torchrun).  The real
configs through tools/train.py: test_end_to_end.py."""
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

import gcnet_mm  # noqa: F401  (registers gcnet_mm.ReseedHook)
from conftest import free_port
from gcnet_mm.engine import safe_load
from gcnet_mm.engine.hooks import position_seed
from gcnet_mm.engine.runner_cfg import find_resumable_checkpoint


class _AugmentedData(Dataset):
    """Eight samples, each augmented with draws from all three generators."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        x = (torch.full((4, ), float(i)) + torch.rand(4)) / 8
        x = x * (1 + float(np.random.rand())) + random.random()
        return dict(inputs=x, data_samples=torch.tensor(i / 8))


class _DropoutModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5),
                                 nn.Linear(16, 1))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.net(inputs).squeeze(1)
        if mode == 'loss':
            return dict(loss=((out - data_samples)**2).mean())
        # validation draws from the generators as well
        torch.rand(3), np.random.rand(), random.random()
        return [dict(pred=o) for o in out]


class _Mean(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results += [float(s['pred']) for s in data_samples]

    def compute_metrics(self, results):
        return dict(mean=float(np.mean(results)))


_RUNS = [0]


def _train(work_dir, by_epoch, end, resume=False, workers=0,
           persistent=False, reseed=True, launcher='none'):
    """Train to epoch or iteration ``end`` (resuming from the newest
    checkpoint in ``work_dir`` with ``resume``); returns the weights.
    ``launcher='pytorch'`` (under torchrun) trains with one process per rank
    over gloo, each with its own random streams (``diff_rank_seed``)."""
    torch.manual_seed(0)  # the same initial weights in every run
    _RUNS[0] += 1
    dist_cfg = {}
    if launcher != 'none':
        from gcnet_mm.engine.distributed import setup_cpu_distributed
        setup_cpu_distributed(dist_cfg)  # gloo, the CPU DDP wrapper
    loader = dict(
        dataset=_AugmentedData(), batch_size=2, num_workers=workers,
        persistent_workers=persistent,
        sampler=dict(type='DefaultSampler' if by_epoch else 'InfiniteSampler',
                     shuffle=True),
        collate_fn=dict(type='default_collate'))
    train_cfg = (dict(by_epoch=True, max_epochs=end, val_interval=1)
                 if by_epoch else dict(by_epoch=False, max_iters=end,
                                       val_interval=2))
    runner = Runner(
        model=_DropoutModel(),
        work_dir=str(work_dir),
        experiment_name=f'resume{_RUNS[0]}',
        train_dataloader=loader,
        val_dataloader=dict(loader, num_workers=0, persistent_workers=False,
                            sampler=dict(type='DefaultSampler',
                                         shuffle=False)),
        val_evaluator=[_Mean()],
        train_cfg=train_cfg,
        val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', by_epoch=by_epoch,
                            interval=1 if by_epoch else 3),
            logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[dict(type='gcnet_mm.ReseedHook')] if reseed else [],
        randomness=dict(seed=7, diff_rank_seed=launcher != 'none'),
        resume=resume,
        launcher=launcher,
        env_cfg=dist_cfg.get('env_cfg', dict(dist_cfg=dict(backend='nccl'))),
        cfg=dict(model_wrapper_cfg=dist_cfg.get('model_wrapper_cfg')))
    runner.train()
    _stop_workers(runner.train_loop)
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def _stop_workers(loop):
    """End the train loader's workers now: left to the garbage collector,
    their shutdown waits out a 5-second timeout per worker."""
    iterator = getattr(loop, 'dataloader_iterator', None)  # iteration loop
    while iterator is not None and not hasattr(iterator, '_shutdown_workers'):
        iterator = getattr(iterator, '_iterator', None)
    if iterator is None:  # epoch loop: persistent workers' iterator
        iterator = getattr(loop.dataloader, '_iterator', None)
    if iterator is not None and hasattr(iterator, '_shutdown_workers'):
        iterator._shutdown_workers()


def _straight_and_resumed(tmp_path, by_epoch, length, stop, **kw):
    straight = _train(tmp_path / 'straight', by_epoch, length, **kw)
    _train(tmp_path / 'split', by_epoch, stop, **kw)
    resumed = _train(tmp_path / 'split', by_epoch, length, resume=True, **kw)
    return straight, resumed


def _differ(a, b):
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize('by_epoch,length,stop', [(False, 6, 3),
                                                  (True, 3, 1)])
@pytest.mark.parametrize('workers', [0, 2])
def test_resume_is_bit_identical(tmp_path, by_epoch, length, stop, workers):
    straight, resumed = _straight_and_resumed(
        tmp_path, by_epoch, length, stop, workers=workers)
    assert not _differ(straight, resumed)


def test_iteration_loop_workers_kept_resume_exactly(tmp_path):
    # one set of workers for the whole run: the refetched batches replay them
    straight, resumed = _straight_and_resumed(
        tmp_path, False, 6, 3, workers=2, persistent=True)
    assert not _differ(straight, resumed)


@pytest.mark.parametrize('by_epoch,length,stop', [(False, 6, 3),
                                                  (True, 3, 1)])
def test_without_the_hook_resume_differs(tmp_path, by_epoch, length, stop):
    """What the hook is for: the same runs without it do not match (the
    test above can fail)."""
    straight, resumed = _straight_and_resumed(
        tmp_path, by_epoch, length, stop, reseed=False)
    assert _differ(straight, resumed)


#: (name, by_epoch, length, stop) of the two-process runs
_DIST_CASES = [('iter', False, 6, 3), ('epoch', True, 3, 1)]


@pytest.mark.slow
def test_two_processes_resume_is_bit_identical(tmp_path):
    """Two processes (torchrun, gloo), a random stream per rank, both loop
    kinds: one launch trains straight through and to the stop, a second one
    resumes."""
    def launch(phase):
        cmd = [sys.executable, '-m', 'torch.distributed.run',
               '--nproc_per_node', '2', '--master_port', str(free_port()),
               __file__, str(tmp_path), phase]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    launch('first')
    launch('resume')
    for name, by_epoch, length, _ in _DIST_CASES:
        ckpt = f'epoch_{length}.pth' if by_epoch else f'iter_{length}.pth'
        straight = safe_load(str(tmp_path / f'{name}-straight' / ckpt))
        resumed = safe_load(str(tmp_path / f'{name}-split' / ckpt))
        assert resumed['meta']['iter'] == straight['meta']['iter']
        assert not _differ(straight['state_dict'], resumed['state_dict']), \
            name


def test_persistent_workers_of_an_epoch_loop_are_named(tmp_path):
    _train(tmp_path, True, 1, workers=2, persistent=True)
    _train(tmp_path, True, 2, resume=True, workers=2, persistent=True)
    logs = ''.join(p.read_text() for p in tmp_path.glob('*/*.log'))
    assert 'persistent_workers=True' in logs and 'ReseedHook' in logs


def test_the_checkpoint_holds_the_seed_the_resume_uses(tmp_path):
    _train(tmp_path, False, 3)
    ckpt = safe_load(str(tmp_path / 'iter_3.pth'))
    assert ckpt['meta']['seed'] == 7


def test_position_seeds_are_independent_streams():
    seeds = {position_seed(s, kind, n) for s in range(4) for n in range(50)
             for kind in ('epoch', 'iter')}
    assert len(seeds) == 4 * 50 * 2
    # not seed + position: rank r at step n + 1 != rank r + 1 at step n
    assert position_seed(0, 'iter', 1) != position_seed(1, 'iter', 0)
    assert all(0 <= s < 2**32 for s in seeds)


def test_resume_skips_a_cut_short_checkpoint(tmp_path):
    good = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}}, str(good))
    bad = tmp_path / 'epoch_2.pth'
    data = good.read_bytes()
    bad.write_bytes(data[:len(data) // 2])
    os.utime(str(good), (1, 1))
    (tmp_path / 'last_checkpoint').write_text(str(bad))
    with pytest.warns(UserWarning, match='unreadable'):
        assert find_resumable_checkpoint(str(tmp_path)) == str(good)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY_CLS = os.path.join(REPO, 'configs', '_toy_',
                       'resnet50-gcb-r16-c3-c5_toy-imagenet.py')


def _train_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'train_tool', os.path.join(REPO, 'tools', 'train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('exists', [True, False])
def test_resume_with_nothing_to_resume_is_an_error(tmp_path, exists):
    from gcnet_mm.engine import UsageError
    work_dir = tmp_path / ('work_dir' if exists else 'wrok_dir')
    if exists:
        work_dir.mkdir()
    with pytest.raises(UsageError) as e:
        _train_tool().main([TOY_CLS, '--work-dir', str(work_dir),
                            '--resume'])
    message = str(e.value)
    assert 'nothing to resume' in message and str(work_dir) in message
    assert ('does not exist' in message) != exists
    assert '--auto-resume' in message


def test_auto_resume_starts_afresh_or_resumes(tmp_path, monkeypatch):
    from gcnet_mm.datasets import make_imagenet
    from gcnet_mm.engine.runner_cfg import prepare_train_cfg
    make_imagenet(str(tmp_path / 'data' / 'toy_imagenet'))
    monkeypatch.chdir(tmp_path)
    work_dir = tmp_path / 'work_dir'
    cfg = prepare_train_cfg(TOY_CLS, work_dir=str(work_dir),
                            resume='auto-if-any')
    assert cfg.resume and cfg.load_from is None  # mmengine starts afresh
    work_dir.mkdir()
    torch.save({'state_dict': {}}, str(work_dir / 'epoch_1.pth'))
    cfg = prepare_train_cfg(TOY_CLS, work_dir=str(work_dir),
                            resume='auto-if-any')
    assert cfg.load_from == str(work_dir / 'epoch_1.pth')
    args = _train_tool().parse_args([TOY_CLS, '--auto-resume'])
    assert args.resume == 'auto-if-any'
    with pytest.raises(SystemExit):  # one or the other
        _train_tool().parse_args([TOY_CLS, '--auto-resume', '--resume'])


def test_resume_from_a_missing_checkpoint_names_it(tmp_path):
    from gcnet_mm.engine.runner_cfg import prepare_train_cfg
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        prepare_train_cfg(TOY_CLS, work_dir=str(tmp_path),
                          resume=str(tmp_path / 'nope.pth'))


if __name__ == '__main__':  # the ranks of test_two_processes_...
    import pathlib
    root, phase = pathlib.Path(sys.argv[1]), sys.argv[2]
    for name, by_epoch, length, stop in _DIST_CASES:
        if phase == 'first':
            _train(root / f'{name}-straight', by_epoch, length,
                   launcher='pytorch')
            _train(root / f'{name}-split', by_epoch, stop, launcher='pytorch')
        else:
            _train(root / f'{name}-split', by_epoch, length, resume=True,
                   launcher='pytorch')
