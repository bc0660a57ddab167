"""Command-line pieces shared by tools/train.py and tools/test.py."""
import argparse
import os
import sys
from typing import Callable, Optional, Sequence

from mmengine.config import DictAction

from .checkpoint import CheckpointLoadError
from .runner_cfg import EvaluationError, UsageError

__all__ = ['USER_ERRORS', 'add_launch_args', 'parse_launch_args',
           'build_runner', 'run_cli']

#: Errors the tools report as a message rather than a traceback.
USER_ERRORS = (CheckpointLoadError, EvaluationError, FileNotFoundError,
               UsageError)


def add_launch_args(parser: argparse.ArgumentParser, example: str) -> None:
    """``--cfg-options``, ``--launcher`` and the launcher's
    ``--local-rank``."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help=f'override config settings, e.g. {example}')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher (pytorch: torchrun)')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)


def parse_launch_args(parser: argparse.ArgumentParser,
                      argv: Optional[Sequence[str]] = None):
    """Parse, and keep LOCAL_RANK for distributed runs only."""
    args = parser.parse_args(argv)
    if args.launcher == 'none':
        os.environ.pop('LOCAL_RANK', None)
    else:
        os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def build_runner(cfg):
    """mmengine's Runner, or the config's own ``runner_type``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def run_cli(main: Callable[[], Optional[int]]) -> None:
    """Run a tool's main, turning user errors into a one-line message."""
    try:
        sys.exit(main())
    except USER_ERRORS as e:
        sys.exit(f'error: {e}')
