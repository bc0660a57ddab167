"""Faults on cue for the tests of distributed runs (``test_faults.py``,
``test_slurm.py``, ``test_multihost.py``).

The config of those tests imports this module (``custom_imports``) in every
process of a run; it does nothing unless the run's environment asks:

``FAULT_PAUSE_AT``
    ``train:N`` (before training iteration N + 1, that is after N iterations
    and their checkpoint), ``test:0`` (before the first test iteration) or
    ``save:NAME`` (while the checkpoint file NAME is written, before it is
    renamed into place).  There each process creates the file
    ``$FAULT_PAUSE_MARK.rank<RANK>`` and sleeps ``FAULT_PAUSE_S`` seconds
    (default 120), so that a test can stop, kill or preempt the run at a
    known point.  Only once: where its marker exists (a run that was
    restarted, requeued or resumed) a process carries on.
``FAULT_KILL_SAVING``
    ``NAME``: the process writing the checkpoint file NAME cuts the
    temporary file short (half of it) and kills itself with SIGKILL before
    it is renamed: a run killed while saving.
"""
import os
import os.path as osp
import signal
import time

from mmengine.runner import IterBasedTrainLoop, TestLoop

_PAUSE_AT = os.environ.get('FAULT_PAUSE_AT', '')
_KILL_SAVING = os.environ.get('FAULT_KILL_SAVING', '')


def _rank() -> str:
    return os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0'))


def pause() -> None:
    """Mark this process as paused and sleep, the first time only."""
    marker = f'{os.environ["FAULT_PAUSE_MARK"]}.rank{_rank()}'
    if osp.exists(marker):
        return
    with open(marker, 'w') as f:
        f.write(str(os.getpid()))
    time.sleep(float(os.environ.get('FAULT_PAUSE_S', 120)))


def _saving(fd: int, name: str) -> bool:
    """Whether ``fd`` is the temporary file of checkpoint ``name``."""
    try:
        path = os.readlink(f'/proc/self/fd/{fd}')
    except OSError:
        return False
    base = osp.basename(path)
    return base.startswith('.tmp-') and base.endswith(name)


if _PAUSE_AT.startswith('train:'):
    _after = int(_PAUSE_AT.split(':', 1)[1])
    _run_train_iter = IterBasedTrainLoop.run_iter

    def _train_iter(self, data_batch):
        if self._iter == _after:
            pause()
        return _run_train_iter(self, data_batch)

    IterBasedTrainLoop.run_iter = _train_iter

if _PAUSE_AT.startswith('test:'):
    _before = int(_PAUSE_AT.split(':', 1)[1])
    _run_test_iter = TestLoop.run_iter

    def _test_iter(self, idx, data_batch):
        if idx == _before:
            pause()
        return _run_test_iter(self, idx, data_batch)

    TestLoop.run_iter = _test_iter

if _PAUSE_AT.startswith('save:') or _KILL_SAVING:
    _fsync = os.fsync

    def _fsync_with_faults(fd):
        if _PAUSE_AT.startswith('save:') and _saving(fd, _PAUSE_AT[5:]):
            pause()
        if _KILL_SAVING and _saving(fd, _KILL_SAVING):
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return _fsync(fd)

    os.fsync = _fsync_with_faults
