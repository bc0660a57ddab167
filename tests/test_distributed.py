"""The pieces of distributed runs, in seconds: srun's environment read as
mmengine reads it, what the launch scripts pass to srun and torchrun
(GRES, MAX_RESTARTS), a restarted group resuming, and a worker stopping when
its launcher is gone.  The runs themselves: test_faults.py (one host),
test_multihost.py (two hosts), test_slurm.py (a real Slurm)."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from gcnet_mm.engine import distributed
from gcnet_mm.engine.distributed import (first_host, restart_count,
                                         watch_launcher)


@pytest.fixture
def environ(monkeypatch):
    """A private copy of os.environ for the test to change."""
    env = dict(os.environ)
    monkeypatch.setattr(os, 'environ', env)
    return env


def test_srun_environment_is_read_as_mmengine_reads_it(environ):
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                'MASTER_PORT'):
        environ.pop(key, None)
    environ.update(SLURM_PROCID='3', SLURM_NTASKS='4', SLURM_LOCALID='1',
                   SLURM_NODELIST='node7', SLURM_STEP_NODELIST='node7')
    distributed._env_from_slurm()
    assert {k: environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK',
                                    'MASTER_ADDR', 'MASTER_PORT')} == dict(
        RANK='3', WORLD_SIZE='4', LOCAL_RANK='1', MASTER_ADDR='node7',
        MASTER_PORT='29500')
    environ.update(MASTER_ADDR='10.0.0.9', MASTER_PORT='23456')
    distributed._env_from_slurm()
    assert (environ['MASTER_ADDR'], environ['MASTER_PORT']) == (
        '10.0.0.9', '23456')


@pytest.mark.parametrize('nodelist,first', [
    ('localhost', 'localhost'), ('node7,node8', 'node7'),
    ('node[07-09,12]', 'node07'), ('node[12,07-09],gpu1', 'node12'),
    ('rack[2-3]-n[001-004],x', 'rack2-n001')])
def test_first_host_of_a_node_list(nodelist, first):
    assert first_host(nodelist) == first


def _fake(tmp_path, name):
    """An executable NAME that writes its arguments, one a line, and the
    variables it was given to NAME.out."""
    path = tmp_path / name
    path.write_text('#!/bin/sh\nout="$(dirname "$0")/$(basename "$0").out"\n'
                    'printf "%s\\n" "$@" > "$out"\n'
                    'echo "OMP_NUM_THREADS=$OMP_NUM_THREADS" >> "$out"\n'
                    'echo "MASTER_PORT=$MASTER_PORT" >> "$out"\n')
    path.chmod(0o755)
    return path


@pytest.mark.parametrize('gres,asked', [(None, '--gres=gpu:4'),
                                        ('', None),
                                        ('gpu:a100:4', '--gres=gpu:a100:4')])
def test_slurm_scripts_ask_for_the_gres_given(tmp_path, gres, asked):
    _fake(tmp_path, 'srun')
    env = dict(os.environ, PATH=f'{tmp_path}:{os.environ["PATH"]}', GPUS='8',
               GPUS_PER_NODE='4', CPUS_PER_TASK='3', PORT='23456')
    env.pop('OMP_NUM_THREADS', None)
    env.pop('GRES', None)
    if gres is not None:
        env['GRES'] = gres
    subprocess.run(['bash', osp.join(REPO, 'tools', 'slurm_train.sh'), 'p',
                    'job', 'cfg.py', 'wd'], env=env, check=True)
    args = (tmp_path / 'srun.out').read_text().splitlines()
    assert [a for a in args if a.startswith('--gres')] == (
        [asked] if asked else [])
    assert {'--ntasks=8', '--ntasks-per-node=4', '--cpus-per-task=3',
            '--kill-on-bad-exit=1'} <= set(args)
    assert args[-6:-2] == ['cfg.py', '--work-dir=wd', '--launcher', 'slurm']
    assert 'OMP_NUM_THREADS=3' in args and 'MASTER_PORT=23456' in args


@pytest.mark.parametrize('restarts', [None, '2'])
def test_dist_train_passes_max_restarts(tmp_path, restarts):
    python = _fake(tmp_path, 'python')
    env = dict(os.environ, PYTHON=str(python))
    env.pop('MAX_RESTARTS', None)
    if restarts:
        env['MAX_RESTARTS'] = restarts
    subprocess.run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'),
                    'cfg.py', '2'], env=env, check=True)
    args = (tmp_path / 'python.out').read_text().splitlines()
    assert f'--max-restarts={restarts or 0}' in args


TOY_CLS = osp.join(REPO, 'configs', '_toy_',
                   'resnet50-gcb-r16-c3-c5_toy-imagenet.py')


@pytest.mark.parametrize('asked', [None, 'given.pth'])
def test_a_restarted_group_resumes_from_its_newest_checkpoint(
        tmp_path, monkeypatch, environ, asked):
    """torchrun sets TORCHELASTIC_RESTART_COUNT in a restarted group: the
    training resumes from the newest checkpoint of its work dir, not from
    scratch nor from the --resume it was started with."""
    import torch

    from gcnet_mm.datasets import make_imagenet
    from gcnet_mm.engine.runner_cfg import prepare_train_cfg
    make_imagenet(str(tmp_path / 'data' / 'toy_imagenet'))
    monkeypatch.chdir(tmp_path)
    work_dir = tmp_path / 'work_dir'
    work_dir.mkdir()
    given = tmp_path / 'given.pth'
    torch.save({'state_dict': {}}, str(given))
    resume = str(given) if asked else None

    def prepare():
        return prepare_train_cfg(TOY_CLS, work_dir=str(work_dir),
                                 resume=resume)

    environ.pop('TORCHELASTIC_RESTART_COUNT', None)
    assert restart_count() == 0
    assert prepare().load_from == (str(given) if asked else None)
    environ['TORCHELASTIC_RESTART_COUNT'] = '1'
    assert restart_count() == 1
    cfg = prepare()  # nothing saved yet: as asked
    assert cfg.load_from == (str(given) if asked else None)
    torch.save({'state_dict': {}}, str(work_dir / 'epoch_1.pth'))
    cfg = prepare()
    assert cfg.resume and cfg.load_from == str(work_dir / 'epoch_1.pth')


def test_a_process_started_by_hand_is_not_watched(environ):
    for key in ('TORCHELASTIC_RUN_ID', 'SLURM_STEP_ID'):
        environ.pop(key, None)
    assert watch_launcher('pytorch') is None
    assert watch_launcher('slurm') is None
    environ['TORCHELASTIC_RUN_ID'] = 'x'
    assert watch_launcher('slurm') is None  # srun's tasks are watched


_CHILD = """
import time
from gcnet_mm.engine.distributed import watch_launcher
assert watch_launcher('pytorch', interval=0.1) is not None
print('watching', flush=True)
time.sleep(120)
"""

_LAUNCHER = """
import subprocess, sys
child = subprocess.Popen([sys.executable, '-c', sys.argv[1]],
                         start_new_session=True)
print(child.pid, flush=True)
child.wait()
"""


def _running(pid):
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def test_a_worker_stops_when_its_launcher_is_killed():
    """A launcher (here a stand-in for torchrun: a parent that starts the
    worker in a session of its own) killed with SIGKILL: the worker stops
    within a second and says why."""
    env = dict(os.environ, TORCHELASTIC_RUN_ID='test', RANK='0',
               PYTHONPATH=REPO)
    launcher = subprocess.Popen([sys.executable, '-c', _LAUNCHER, _CHILD],
                                env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(launcher.stdout.readline())
        assert launcher.stdout.readline().strip() == 'watching'
        launcher.kill()
        launcher.wait()
        end = time.monotonic() + 5
        while _running(child) and time.monotonic() < end:
            time.sleep(0.05)
        assert not _running(child), 'the worker outlived its launcher'
        assert 'is gone; stopping' in launcher.stderr.read()
    finally:
        launcher.kill()
        if child and _running(child):
            os.kill(child, signal.SIGKILL)
