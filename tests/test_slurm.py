"""tools/slurm_train.sh and tools/slurm_test.sh under a real Slurm: a
one-node cluster of Debian's slurmctld, slurmd and munge on this machine
(tools/misc/slurm_local.sh: installed where missing, started for this module
and stopped after it, pass or fail), a CPU partition without GRES.

Two Slurm tasks train the toy segmentation config (distributed_runs.py) to
the weights of one host's ``tools/dist_train.sh CONFIG 2``, every float
tensor equal; slurm_test.sh gives tools/test.py's metrics; an ``sbatch
--requeue`` job preempted mid-run (``scontrol requeue``) resumes
(``--auto-resume``) to the same weights, and so does a job killed while
saving.  Needs root; skipped (with the reason) where Slurm cannot run, and
never skipped under ``.ci/run``."""
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import metrics_of
from distributed_runs import (FINAL, assert_same_weights, cannot_run, kill_all,
                              paused, read, reference, run, run_env, tail,
                              tool, wait_for, workspace)
from gcnet_mm.engine.runner_cfg import find_resumable_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SCRIPT = tool(osp.join('misc', 'slurm_local.sh'))
PARTITION = 'debug'
#: two tasks on the node's two CPUs, no GRES: a CPU partition
CPU_TASKS = dict(GPUS=2, GPUS_PER_NODE=2, CPUS_PER_TASK=1, GRES='')


@pytest.fixture(scope='module')
def slurm():
    """The path of a running one-node cluster's slurm.conf."""
    if os.geteuid() != 0:
        cannot_run('a one-node Slurm needs root (its daemons run as root)')
    if not all(shutil.which(c) for c in ('slurmctld', 'slurmd', 'srun',
                                         'sbatch', 'munged')):
        proc = subprocess.run(['bash', SCRIPT, 'install'],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            cannot_run('Slurm is not installed and "bash '
                       'tools/misc/slurm_local.sh install" failed:\n'
                       + (proc.stdout + proc.stderr)[-2000:])
    folder = tempfile.mkdtemp(prefix='gcnet-slurm-')
    try:
        proc = subprocess.run(['bash', SCRIPT, 'start', folder],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield osp.join(folder, 'slurm.conf')
    finally:
        subprocess.run(['bash', SCRIPT, 'stop', folder], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


@pytest.fixture
def ref(tmp_path_factory):
    return reference(tmp_path_factory)


def slurm_env(conf, **extra):
    return run_env(SLURM_CONF=conf, **extra)


def slurm_train(ws, conf, work_dir, *args, check=True, tasks=CPU_TASKS,
                **env):
    return run(['bash', tool('slurm_train.sh'), PARTITION, 'gcnet-train',
                'seg.py', work_dir, *args], ws,
               slurm_env(conf, **tasks, **env), check)


@pytest.fixture(scope='module')
def slurm_trained(slurm, tmp_path_factory):
    """(work dir, output) of two Slurm tasks training the toy config."""
    ws = workspace(tmp_path_factory)
    work_dir = osp.join(ws, 'slurm-train')
    try:
        _, out = slurm_train(ws, slurm, work_dir)
    finally:
        kill_all(work_dir)
    return work_dir, out


def test_slurm_train_equals_dist_train(slurm_trained, ref):
    """GPUS=2 GPUS_PER_NODE=2 CPUS_PER_TASK=1 GRES= slurm_train.sh: two
    tasks over gloo, the weights of dist_train.sh CONFIG 2."""
    work_dir, out = slurm_trained
    assert 'Distributed launcher: slurm' in out
    assert 'Distributed training: True' in out
    assert_same_weights(osp.join(work_dir, FINAL), ref)


def test_slurm_test_gives_the_metrics_of_test_py(slurm, slurm_trained, ws):
    """slurm_test.sh (two tasks) evaluates the checkpoint with the metrics
    that tools/test.py (one process) computes."""
    ckpt = osp.join(slurm_trained[0], FINAL)
    ours, single = osp.join(ws, 'slurm-test'), osp.join(ws, 'single-test')
    run(['bash', tool('slurm_test.sh'), PARTITION, 'gcnet-test', 'seg.py',
         ckpt, '--work-dir', ours], ws, slurm_env(slurm, **CPU_TASKS))
    run([sys.executable, tool('test.py'), 'seg.py', ckpt, '--work-dir',
         single], ws, run_env())
    metrics = metrics_of(ours)
    assert {'aAcc', 'mIoU', 'mAcc'} <= set(metrics), metrics
    assert metrics == metrics_of(single)


def test_gres_defaults_to_the_gpus_of_a_node(slurm, ws, tmp_path):
    """Without GRES the tasks ask for gpu:GPUS_PER_NODE, as OpenMMLab's
    slurm_train.sh does; a partition without GPUs refuses that."""
    tasks = dict(CPU_TASKS)
    del tasks['GRES']
    rc, out = slurm_train(ws, slurm, str(tmp_path / 'wd'), check=False,
                          tasks=tasks)
    assert rc != 0
    assert 'Invalid generic resource (gres) specification' in out, out


def _job_state(conf, job):
    proc = subprocess.run(['scontrol', 'show', 'job', '-o', job],
                          capture_output=True, text=True,
                          env=dict(os.environ, SLURM_CONF=conf))
    for field in proc.stdout.split():
        if field.startswith('JobState='):
            return field.split('=', 1)[1]
    return ''


def _cluster(conf, job):
    """What Slurm says of the job and the node, for a failure's message."""
    env = dict(os.environ, SLURM_CONF=conf)
    return '\n'.join(
        subprocess.run(cmd, capture_output=True, text=True, env=env).stdout
        for cmd in (['scontrol', 'show', 'job', job], ['sinfo', '-N', '-l']))


def _scontrol(conf, *args):
    subprocess.run(['scontrol', *args], check=True,
                   env=dict(os.environ, SLURM_CONF=conf))


def test_requeued_batch_job_resumes_to_the_same_weights(slurm, ws, ref):
    """sbatch --requeue of slurm_train.sh ... --auto-resume (the README's
    example), preempted by ``scontrol requeue`` after iteration 2: the job
    starts again, resumes from iter_2.pth and ends with the weights of the
    uninterrupted run."""
    work_dir = osp.join(ws, 'slurm-requeue')
    log, mark = work_dir + '.log', work_dir + '.pause'
    script = ('GPUS=2 GPUS_PER_NODE=2 CPUS_PER_TASK=1 GRES= bash '
              f'{tool("slurm_train.sh")} {PARTITION} gcnet-requeue seg.py '
              f'{work_dir} --auto-resume')
    env = slurm_env(slurm, FAULT_PAUSE_AT='train:2', FAULT_PAUSE_MARK=mark)
    proc = subprocess.run(
        ['sbatch', '--parsable', '--requeue', '-p', PARTITION,
         '--job-name=gcnet-requeue', '--ntasks=2', '--ntasks-per-node=2',
         '--cpus-per-task=1', f'--output={log}', '--open-mode=append',
         f'--wrap={script}'],
        cwd=ws, env=env, capture_output=True, text=True, check=True)
    job = proc.stdout.strip().split(';')[0]
    ended = ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL')
    try:
        wait_for(lambda: paused(mark)() or _job_state(slurm, job) in ended,
                 300, step=0.5, message=lambda: 'the pause after iteration '
                 f'2:\n{_cluster(slurm, job)}\n{tail(log)}')
        assert paused(mark)(), f'{_cluster(slurm, job)}\n{tail(log)}'
        assert osp.exists(osp.join(work_dir, 'iter_2.pth'))
        _scontrol(slurm, 'requeue', job)
        # Slurm holds a requeued job back for two minutes; start it now.
        wait_for(lambda: _job_state(slurm, job) == 'PENDING', 60,
                 message='the requeued job to be pending')
        _scontrol(slurm, 'update', f'JobId={job}', 'StartTime=now')
        wait_for(lambda: _job_state(slurm, job) in ended, 300, step=0.5,
                 message=lambda: 'the requeued job to end:\n'
                 f'{_cluster(slurm, job)}\n{tail(log)}')
        assert _job_state(slurm, job) == 'COMPLETED', tail(log)
    finally:
        subprocess.run(['scancel', job], env=dict(os.environ,
                                                  SLURM_CONF=slurm))
        kill_all(work_dir)
    out = read(log)
    assert 'DUE TO JOB REQUEUE' in out, out[-3000:]
    assert 'resumed epoch: 0, iter: 2' in out, out[-3000:]
    assert_same_weights(osp.join(work_dir, FINAL), ref)


def test_slurm_job_killed_while_saving_resumes(slurm, ws, ref):
    """Rank 0 of slurm_train.sh killed (SIGKILL) halfway through writing
    iter_4.pth: srun ends the job (--kill-on-bad-exit); the same command
    with --auto-resume removes the cut-short file, resumes from iter_2.pth
    and ends with the uninterrupted run's weights."""
    work_dir = osp.join(ws, 'slurm-killed-saving')
    try:
        rc, out = slurm_train(ws, slurm, work_dir, check=False,
                              FAULT_KILL_SAVING=FINAL)
        assert rc != 0, out[-3000:]
        left = os.listdir(work_dir)
        assert FINAL not in left
        assert any(n.startswith('.tmp-') and n.endswith(FINAL) for n in left)
        last = find_resumable_checkpoint(work_dir)
        assert osp.basename(last) == 'iter_2.pth'
        _, out = slurm_train(ws, slurm, work_dir, '--auto-resume')
    finally:
        kill_all(work_dir)
    assert 'removed 1 temporary file' in out
    assert 'resumed epoch: 0, iter: 2' in out
    assert_same_weights(osp.join(work_dir, FINAL), ref)
