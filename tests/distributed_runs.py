"""What the tests of multi-process, multi-host and Slurm runs share
(``test_faults.py``, ``test_multihost.py``, ``test_slurm.py``).

Every run trains the toy segmentation config
(``configs/_toy_/gcnet_r50-d8_toy-cityscapes.py``: 4 iterations, a checkpoint
every 2, dropout in both heads, random crops and flips) with the ResNet's
widths cut to a quarter (ResNet-18 layout, 16 to 128 channels), so that a
run takes seconds beyond its start-up, and with ``fault_plugin`` imported
(inert unless a test asks for a fault).  The reference is one host's
``tools/dist_train.sh CONFIG 2``; equality means every float tensor of the
final state dicts equal, the count of those that differ is 0.
"""
import os
import os.path as osp
import signal
import subprocess
import time
from typing import Callable, Dict, List, Optional, Union

import pytest
import torch

from conftest import REPO, free_port
from gcnet_mm.engine import safe_load

TESTS = osp.join(REPO, 'tests')
TOY_SEG = osp.join(REPO, 'configs', '_toy_', 'gcnet_r50-d8_toy-cityscapes.py')
FINAL = 'iter_4.pth'

_CONFIG = f"""\
# The toy segmentation config at a quarter of its widths, with the test
# faults' plugin (inert unless asked).
_base_ = {TOY_SEG!r}
model = dict(
    backbone=dict(depth=18, stem_channels=16, base_channels=16),
    decode_head=dict(in_channels=128),
    auxiliary_head=dict(in_channels=64))
custom_imports = dict(imports=['fault_plugin'], allow_failed_imports=False)
"""

_CACHE: Dict[str, str] = {}


def require_system_tests() -> bool:
    """Whether a test that cannot run here must fail rather than skip
    (``.ci/run`` sets ``GCNET_MM_SYSTEM_TESTS=require``)."""
    return os.environ.get('GCNET_MM_SYSTEM_TESTS') == 'require'


def cannot_run(reason: str):
    """Skip, or fail where the system tests are required."""
    if require_system_tests():
        pytest.fail(f'{reason} (GCNET_MM_SYSTEM_TESTS=require)')
    pytest.skip(reason)


def workspace(tmp_path_factory) -> str:
    """A folder with the toy Cityscapes data and the config (``seg.py``),
    made once per session."""
    if 'workspace' not in _CACHE:
        from gcnet_mm.datasets.toy_data import make_cityscapes
        root = str(tmp_path_factory.mktemp('dist'))
        make_cityscapes(osp.join(root, 'data', 'toy_cityscapes'))
        with open(osp.join(root, 'seg.py'), 'w') as f:
            f.write(_CONFIG)
        _CACHE['workspace'] = root
    return _CACHE['workspace']


def run_env(**extra) -> Dict[str, str]:
    """The environment of a run: this checkout and the fault plugin on the
    path, one thread per process, a free rendezvous port."""
    env = dict(os.environ)
    for key in list(env):  # what a surrounding launcher or job would add
        if key.startswith(('FAULT_', 'SLURM_', 'TORCHELASTIC_')) or key in (
                'RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR',
                'MASTER_PORT', 'NNODES', 'NODE_RANK', 'MAX_RESTARTS'):
            del env[key]
    env.update(PYTHONPATH=f'{TESTS}:{REPO}', OMP_NUM_THREADS='1',
               PORT=free_port())
    env.update({k: str(v) for k, v in extra.items()})
    return env


def tool(name: str) -> str:
    return osp.join(REPO, 'tools', name)


def run(cmd: List[str], cwd: str, env: Dict[str, str], check: bool = True,
        timeout: float = 600):
    """Run ``cmd`` to its end; returns (exit status, output)."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        pytest.fail(f'{" ".join(cmd)} exited {proc.returncode}:\n'
                    f'{out[-6000:]}')
    return proc.returncode, out


def start(cmd: List[str], cwd: str, env: Dict[str, str],
          log: str) -> subprocess.Popen:
    """Start ``cmd`` in a session (and process group) of its own, as a
    shell starts a job; its output goes to ``log``."""
    with open(log, 'w') as f:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=f,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)


def dist_train(ws: str, work_dir: str, *args: str, nproc: int = 2,
               check: bool = True, **env):
    """``bash tools/dist_train.sh seg.py NPROC --work-dir WORK_DIR ARGS``."""
    return run(['bash', tool('dist_train.sh'), 'seg.py', str(nproc),
                '--work-dir', work_dir, *args], ws, run_env(**env), check)


def reference(tmp_path_factory) -> str:
    """The final checkpoint of one host's uninterrupted two-process run
    (``tools/dist_train.sh seg.py 2``), trained once per session."""
    if 'reference' not in _CACHE:
        ws = workspace(tmp_path_factory)
        work_dir = osp.join(ws, 'reference')
        dist_train(ws, work_dir)
        _CACHE['reference'] = osp.join(work_dir, FINAL)
    return _CACHE['reference']


def differing_tensors(ckpt_a: str, ckpt_b: str) -> List[str]:
    """The float tensors of two checkpoints' state dicts that are not equal
    bit for bit (the key sets must match)."""
    a, b = safe_load(ckpt_a)['state_dict'], safe_load(ckpt_b)['state_dict']
    assert a.keys() == b.keys()
    floats = [k for k in a if a[k].is_floating_point()]
    assert floats
    return [k for k in floats if not torch.equal(a[k], b[k])]


def assert_same_weights(ckpt: str, ref: str) -> None:
    differ = differing_tensors(ckpt, ref)
    print(f'{len(differ)} tensors differ between {ckpt} and {ref}')
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:3]}'


def pids_with(marker: str) -> List[int]:
    """The processes whose command line holds ``marker`` (a test's own work
    dir), this one aside."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f'/proc/{entry}/cmdline', 'rb') as f:
                cmdline = f.read().decode(errors='replace')
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry))
    return found


def workers_with(marker: str) -> Dict[int, int]:
    """{rank: pid} of the tool processes (train.py, test.py) of a run."""
    found = {}
    for pid in pids_with(marker):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                args = f.read().split(b'\0')
            with open(f'/proc/{pid}/environ', 'rb') as f:
                env = dict(v.split(b'=', 1) for v in f.read().split(b'\0')
                           if b'=' in v)
        except OSError:
            continue
        rank = env.get(b'RANK', env.get(b'SLURM_PROCID'))
        if rank is not None and any(
                a.endswith((b'tools/train.py', b'tools/test.py'))
                for a in args):
            found[int(rank)] = pid
    return found


def kill_all(marker: str) -> None:
    """SIGKILL every process of a run (what a failed test leaves)."""
    for pid in pids_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(what: Callable[[], object], timeout: float, step: float = 0.1,
             message: Union[str, Callable[[], str]] = '') -> object:
    """Poll ``what()`` until it is true; fails after ``timeout`` seconds,
    saying ``message`` (or what ``message()`` returns then)."""
    end = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > end:
            said = message() if callable(message) else message
            pytest.fail(f'timed out after {timeout} s waiting for '
                        f'{said or what}')
        time.sleep(step)


def paused(mark: str, ranks: int = 2) -> Callable[[], bool]:
    """Whether ``ranks`` processes have reached a fault_plugin pause."""
    return lambda: all(osp.exists(f'{mark}.rank{r}') for r in range(ranks))


def read(path: str) -> str:
    with open(path, errors='replace') as f:
        return f.read()


def tail(path: Optional[str], n: int = 6000) -> str:
    return read(path)[-n:] if path and osp.exists(path) else ''
