"""Faults of a two-process run on one host (tools/dist_train.sh,
tools/dist_test.sh over torchrun, gloo on the CPU), and what is lost: nothing.
A worker killed mid-run under ``MAX_RESTARTS=1`` (torchrun's
``--max-restarts``); SIGINT and SIGTERM to the launcher; a launcher killed
with SIGKILL (torchrun itself, its process group); a run killed while
saving.  Each run that carries on ends with the weights of an uninterrupted
run, every float tensor equal.  The points where faults strike are set with
``fault_plugin`` (see distributed_runs.py)."""
import os
import os.path as osp
import signal
import time

import pytest

from distributed_runs import (FINAL, assert_same_weights, dist_train, kill_all,
                              paused, read, reference, run_env, start, tail,
                              tool, wait_for, workers_with, workspace)
from gcnet_mm.engine.checkpoint import zip_ok
from gcnet_mm.engine.runner_cfg import find_resumable_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: seconds within which every worker must be gone after a stop or a kill
STOP_WITHIN = 15


@pytest.fixture
def ws(tmp_path_factory):
    return workspace(tmp_path_factory)


@pytest.fixture
def ref(tmp_path_factory):
    return reference(tmp_path_factory)


@pytest.fixture
def work_dir(ws, request):
    """A work dir of the test's own; every process left of its run is
    killed at the end, pass or fail."""
    path = osp.join(ws, f'{request.node.name}-{os.getpid()}')
    yield path
    kill_all(path)


def _gone_within(seconds, marker):
    """Whether every worker of a run ended within ``seconds`` (printed)."""
    begin = time.monotonic()
    while workers_with(marker):
        if time.monotonic() - begin > seconds:
            return False
        time.sleep(0.1)
    print(f'every worker ended {time.monotonic() - begin:.1f} s after')
    return True


def test_worker_killed_mid_run_restarts_and_resumes(ws, ref, work_dir):
    """MAX_RESTARTS=1: rank 1 killed (SIGKILL) after iteration 2 and its
    checkpoint; torchrun restarts the group, which resumes from iter_2.pth
    and ends with the uninterrupted run's weights."""
    mark = work_dir + '.pause'
    log = work_dir + '.log'
    proc = start(['bash', tool('dist_train.sh'), 'seg.py', '2', '--work-dir',
                  work_dir], ws,
                 run_env(MAX_RESTARTS=1, FAULT_PAUSE_AT='train:2',
                         FAULT_PAUSE_MARK=mark), log)
    wait_for(paused(mark), 300, message='the pause after iteration 2')
    victim = workers_with(work_dir)[1]
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(300) == 0, tail(log)
    out = read(log)
    assert 'resumed epoch: 0, iter: 2' in out, out[-3000:]
    assert_same_weights(osp.join(work_dir, FINAL), ref)


@pytest.mark.parametrize('tool_name,sig', [('dist_train.sh', signal.SIGINT),
                                           ('dist_test.sh', signal.SIGTERM)])
def test_a_stopped_launcher_stops_every_worker(ws, ref, work_dir, tool_name,
                                               sig):
    """Ctrl-C (SIGINT to the launcher's process group) or a scheduler's
    SIGTERM (to the launcher) mid-run: every worker has ended within
    seconds, and so has the launcher."""
    mark = work_dir + '.pause'
    log = work_dir + '.log'
    if tool_name == 'dist_train.sh':
        args, pause = ['seg.py', '2', '--work-dir', work_dir], 'train:2'
    else:
        args, pause = ['seg.py', ref, '2', '--work-dir', work_dir], 'test:0'
    proc = start(['bash', tool(tool_name), *args], ws,
                 run_env(FAULT_PAUSE_AT=pause, FAULT_PAUSE_MARK=mark), log)
    wait_for(paused(mark), 300, message=f'the pause at {pause}')
    assert len(workers_with(work_dir)) == 2
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        os.kill(proc.pid, sig)
    assert _gone_within(STOP_WITHIN, work_dir), (
        f'workers {workers_with(work_dir)} still running {STOP_WITHIN} s '
        f'after {sig.name}:\n{tail(log)}')
    assert proc.wait(STOP_WITHIN) != 0


@pytest.mark.parametrize('target,moment', [('torchrun', 'saving'),
                                           ('group', 'training')])
def test_a_killed_launcher_leaves_no_worker_behind(ws, ref, work_dir, target,
                                                   moment):
    """SIGKILL to torchrun while rank 0 writes iter_4.pth, or to the whole
    process group of dist_train.sh between iterations: each worker (in a
    session of its own, out of reach of the group) notices that its
    launcher is gone and stops within seconds; no checkpoint appears after
    the kill, the half-written one never counts as the last, and a resume
    ends with the uninterrupted run's weights."""
    mark = work_dir + '.pause'
    log = work_dir + '.log'
    pause = 'save:' + FINAL if moment == 'saving' else 'train:2'
    proc = start(['bash', tool('dist_train.sh'), 'seg.py', '2', '--work-dir',
                  work_dir], ws,
                 run_env(FAULT_PAUSE_AT=pause, FAULT_PAUSE_MARK=mark), log)
    wait_for(paused(mark, ranks=1 if moment == 'saving' else 2), 300,
             message=f'the pause at {pause}')
    workers = workers_with(work_dir)
    assert len(workers) == 2 and proc.pid not in workers.values()
    if target == 'torchrun':
        os.kill(proc.pid, signal.SIGKILL)  # dist_train.sh execs torchrun
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(STOP_WITHIN)
    assert _gone_within(STOP_WITHIN, work_dir), (
        f'workers {workers_with(work_dir)} still running {STOP_WITHIN} s '
        f'after SIGKILL of the {target}:\n{tail(log)}')
    before = sorted(os.listdir(work_dir))
    time.sleep(2)
    assert sorted(os.listdir(work_dir)) == before  # no one writes on
    assert 'launcher (pid' in read(log) and 'is gone; stopping' in read(log)
    assert not osp.exists(osp.join(work_dir, FINAL))
    last = find_resumable_checkpoint(work_dir)
    assert osp.basename(last) == 'iter_2.pth' and zip_ok(last)
    if moment == 'saving':  # the cut-short save left its temporary file
        assert any(n.startswith('.tmp-') for n in before), before
    _, out = dist_train(ws, work_dir, '--resume')
    assert 'resumed epoch: 0, iter: 2' in out
    assert not any(n.startswith('.tmp-') for n in os.listdir(work_dir))
    assert_same_weights(osp.join(work_dir, FINAL), ref)


def test_killed_while_saving_resumes_from_the_last_whole_checkpoint(
        ws, ref, work_dir):
    """Rank 0 killed (SIGKILL) halfway through writing iter_4.pth: torchrun
    ends the run; the resume removes the cut-short temporary file, starts
    from iter_2.pth and ends with the uninterrupted run's weights."""
    rc, out = dist_train(ws, work_dir, check=False, FAULT_KILL_SAVING=FINAL)
    assert rc != 0, out[-3000:]
    left = os.listdir(work_dir)
    assert FINAL not in left and 'iter_2.pth' in left
    assert any(n.startswith('.tmp-') and n.endswith(FINAL) for n in left)
    assert osp.basename(find_resumable_checkpoint(work_dir)) == 'iter_2.pth'
    _, out = dist_train(ws, work_dir, '--resume')
    assert 'removed 1 temporary file' in out
    assert 'resumed epoch: 0, iter: 2' in out
    assert_same_weights(osp.join(work_dir, FINAL), ref)
