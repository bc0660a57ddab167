"""Distributed training where mmengine assumes GPUs.

mmengine's pytorch launcher calls ``torch.cuda.set_device`` and wraps the model
in DDP with ``device_ids=[LOCAL_RANK]``; both fail on a CPU-only machine, and
SyncBN needs a GPU.  On such a machine :func:`setup_cpu_distributed` starts the
process group over gloo, turns SyncBN into plain BN (with one warning) and
selects :class:`CPUDistributedDataParallel`.  With GPUs nothing changes: NCCL,
SyncBN and mmengine's own wrapper.
"""
import os
import warnings
from typing import Any

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel

from gcnet_mm.registry import MODEL_WRAPPERS
from .config_checks import sync_bn_to_bn

__all__ = ['CPUDistributedDataParallel', 'setup_cpu_distributed']


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


def setup_cpu_distributed(cfg: Any) -> bool:
    """Prepare ``cfg`` for a ``--launcher pytorch`` run without CUDA.

    Starts the default process group over gloo from torchrun's environment
    (mmengine then skips its own CUDA-only initialisation), turns SyncBN into
    BN and picks the CPU DDP wrapper.  Returns False, changing nothing, when
    CUDA is available or the process was not started by torchrun.
    """
    if torch.cuda.is_available() or 'LOCAL_RANK' not in os.environ:
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
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
