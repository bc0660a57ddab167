"""Distributed runs: CPU-only machines, restarted worker groups, and
workers that outlive their launcher.

mmengine's pytorch and slurm launchers call ``torch.cuda.set_device`` and wrap
the model in DDP with ``device_ids=[LOCAL_RANK]``; both fail on a CPU-only
machine, and SyncBN needs a GPU.  On such a machine
:func:`setup_cpu_distributed` starts the process group over gloo (from
torchrun's environment, or from srun's as mmengine's slurm launcher reads
it), turns SyncBN into plain BN (with one warning) and selects
:class:`CPUDistributedDataParallel`.  With GPUs: NCCL, SyncBN and mmengine's
own wrapper.

:func:`setup_distributed`, which the tools call, adds what a group that
torchrun restarted needs (:func:`init_process_group`) and
:func:`watch_launcher`, which stops a worker whose launcher (torchrun, srun's
slurmstepd) is gone.
"""
import os
import re
import sys
import threading
import time
import warnings
from typing import Any, Optional

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel

from gcnet_mm.registry import MODEL_WRAPPERS
from .config_checks import sync_bn_to_bn

__all__ = [
    'CPUDistributedDataParallel', 'setup_distributed', 'setup_cpu_distributed',
    'init_process_group', 'watch_launcher', 'restart_count'
]


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper for modules on the CPU (gloo backend).

    The runner passes ``device_ids=[LOCAL_RANK]``, which DDP rejects for a CPU
    module; they are dropped here.
    """

    def __init__(self, module, device_ids=None, **kwargs):
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        super().__init__(
            module=module, device_ids=None if on_cpu else device_ids,
            **kwargs)


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: ``node[07-09,12],gpu1`` ->
    ``node07`` (what ``scontrol show hostnames`` lists first)."""
    depth = 0
    for i, c in enumerate(nodelist):
        depth += (c == '[') - (c == ']')
        if c == ',' and depth == 0:
            nodelist = nodelist[:i]
            break
    return re.sub(r'\[([^\]]*)\]',
                  lambda m: re.split('[-,]', m.group(1))[0], nodelist)


def _env_from_slurm() -> None:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT of a task
    that srun started, read as mmengine's slurm launcher reads them:
    MASTER_PORT and MASTER_ADDR where they are set, else port 29500 on the
    first host of the job step."""
    env = os.environ
    env['RANK'] = env['SLURM_PROCID']
    env['WORLD_SIZE'] = env['SLURM_NTASKS']
    env['LOCAL_RANK'] = env.get('SLURM_LOCALID', '0')
    env.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in env:
        env['MASTER_ADDR'] = first_host(
            env.get('SLURM_STEP_NODELIST') or env['SLURM_NODELIST'])


def setup_cpu_distributed(cfg: Any) -> bool:
    """Prepare ``cfg`` for a distributed run without CUDA.

    Starts the default process group over gloo (mmengine then skips its own
    CUDA-only initialisation) from torchrun's environment, or, where
    ``cfg['launcher']`` is ``'slurm'``, from srun's (``SLURM_PROCID``,
    ``SLURM_NTASKS``, ``SLURM_LOCALID``, the node list; ``MASTER_PORT``,
    default 29500), turns SyncBN into BN and picks the CPU DDP wrapper.
    Returns False, changing nothing, when CUDA is available or the process
    was not started by torchrun or srun.
    """
    if torch.cuda.is_available():
        return False
    if (cfg.get('launcher') or 'pytorch') == 'slurm':
        if 'SLURM_PROCID' not in os.environ:
            return False
        _env_from_slurm()
    elif 'LOCAL_RANK' not in os.environ:
        return False
    if not dist.is_initialized():
        init_process_group('gloo')
    changed = sync_bn_to_bn(cfg)
    if changed and dist.get_rank() == 0:
        warnings.warn(
            'no CUDA device: running distributed on the CPU over gloo, and '
            'SyncBN (which needs GPUs) is replaced by BN in '
            f'{len(changed)} place(s) ({", ".join(changed[:4])}'
            f'{", ..." if len(changed) > 4 else ""}); each process normalises '
            'over its own batch.', stacklevel=2)
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    if wrapper.get('type', 'MMDistributedDataParallel') in (
            'MMDistributedDataParallel',
            'gcnet_mm.CPUDistributedDataParallel'):
        wrapper['type'] = 'gcnet_mm.CPUDistributedDataParallel'
        cfg['model_wrapper_cfg'] = wrapper
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    return True


def restart_count() -> int:
    """How many times torchrun has restarted this worker group
    (``--max-restarts``); 0 for the first start and outside torchrun."""
    return int(os.environ.get('TORCHELASTIC_RESTART_COUNT') or 0)


def init_process_group(backend: str, **kwargs) -> None:
    """``torch.distributed.init_process_group`` from the launcher's
    environment (``env://``), as mmengine's launchers call it.

    In a worker group that torchrun restarted, the group meets under a key
    prefix of its own start: torchrun keeps its store (which the workers
    share, ``TORCHELASTIC_USE_AGENT_STORE``) from one start to the next, and
    the keys the workers of an earlier start wrote there (their gloo
    addresses, NCCL's unique id) would otherwise be read by the new ones,
    which then fail to connect.
    """
    restarts = restart_count()
    if not restarts or os.environ.get(
            'TORCHELASTIC_USE_AGENT_STORE') != 'True':
        dist.init_process_group(backend=backend, **kwargs)
        return
    world_size = int(os.environ['WORLD_SIZE'])
    store = dist.TCPStore(os.environ['MASTER_ADDR'],
                          int(os.environ['MASTER_PORT']), world_size,
                          is_master=False)
    dist.init_process_group(
        backend=backend,
        store=dist.PrefixStore(f'gcnet_mm/restart_{restarts}', store),
        rank=int(os.environ['RANK']), world_size=world_size, **kwargs)


def setup_distributed(cfg: Any) -> None:
    """What the tools do for a distributed run (``cfg.launcher`` not
    ``'none'``) before mmengine's Runner starts it.

    Without CUDA: :func:`setup_cpu_distributed`.  With GPUs, in a group that
    torchrun restarted: the process group on this worker's GPU
    (``LOCAL_RANK``) with the config's ``env_cfg.dist_cfg`` (NCCL by
    default), through :func:`init_process_group`; mmengine then skips its
    own.  Always, first: :func:`watch_launcher`.
    """
    launcher = cfg.get('launcher') or 'pytorch'
    watch_launcher(launcher)  # first: the group may wait for its peers
    if (not setup_cpu_distributed(cfg) and launcher == 'pytorch'
            and restart_count() and not dist.is_initialized()):
        torch.cuda.set_device(int(os.environ['LOCAL_RANK']))
        dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg') or {})
        init_process_group(dist_cfg.pop('backend', 'nccl'), **dist_cfg)


def _launched_by(launcher: str) -> Optional[str]:
    """The launcher that started this process as its child: ``'torchrun'``
    (an elastic agent: torchrun, ``torch.distributed.launch``), ``'srun'``
    (a job step's slurmstepd), or None."""
    if launcher == 'pytorch' and 'TORCHELASTIC_RUN_ID' in os.environ:
        return 'torchrun'
    if launcher == 'slurm' and 'SLURM_STEP_ID' in os.environ:
        return 'srun'
    return None


def watch_launcher(launcher: str,
                   interval: float = 1.0) -> Optional[threading.Thread]:
    """Stop this worker within ``interval`` seconds once its launcher is gone.

    torchrun starts each worker in a Unix session of its own, so a signal to
    the launcher's process group never reaches the workers; torchrun stops
    them itself on SIGTERM or SIGINT.  A launcher that dies without a word
    (SIGKILL, a crash of the node's agent) cannot, and its workers would
    train on, writing checkpoints.  A daemon thread compares the parent of
    this process with the launcher that started it; when the launcher is gone
    (the worker was handed to init or a subreaper), it says so on stderr and
    ends the process at once.  A checkpoint being written at that moment is
    left as a temporary file that the next run removes (checkpoints are
    written to a temporary file and renamed), so the last checkpoint is
    always a complete one.

    A parent-death signal (``prctl(PR_SET_PDEATHSIG)``) would not do: it
    fires when the *thread* that started the worker ends, not its process.

    Args:
        launcher: the tool's ``--launcher``; the watch runs for workers that
            torchrun (``pytorch``) or srun (``slurm``) started, not for
            processes started by hand.
        interval: seconds between two looks at the parent.

    Returns:
        The watching thread, or None where there is no launcher to watch.
    """
    by = _launched_by(launcher)
    if by is None:
        return None
    parent = os.getppid()
    if parent == 1:  # already handed to init: the launcher is gone
        _stop(by, parent)

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        _stop(by, parent)

    thread = threading.Thread(target=watch, name='gcnet_mm-watch-launcher',
                              daemon=True)
    thread.start()
    return thread


def _stop(by: str, parent: int) -> None:
    rank = os.environ.get('RANK', '?')
    print(f'gcnet_mm: the {by} launcher (pid {parent}) of this worker (rank '
          f'{rank}, pid {os.getpid()}) is gone; stopping.', file=sys.stderr,
          flush=True)
    sys.stdout.flush()
    os._exit(1)
