"""Runtime support for the tools: safe checkpoints, CPU distributed runs,
resumable randomness and config checks."""
from .checkpoint import (CheckpointLoadError, install_checkpoint_safety,
                         register_safe_globals, safe_load)
from .cli import USER_ERRORS
from .config_checks import check_data_paths, drop_pretrained, sync_bn_to_bn
from .distributed import (CPUDistributedDataParallel, setup_cpu_distributed,
                          setup_distributed)
from .hooks import ReseedHook
from .runner_cfg import UsageError

__all__ = [
    'USER_ERRORS', 'UsageError',
    'CheckpointLoadError', 'install_checkpoint_safety',
    'register_safe_globals', 'safe_load', 'check_data_paths',
    'drop_pretrained', 'CPUDistributedDataParallel',
    'setup_cpu_distributed', 'setup_distributed', 'sync_bn_to_bn',
    'ReseedHook'
]
