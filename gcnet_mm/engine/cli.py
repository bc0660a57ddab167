"""Command-line pieces shared by tools/train.py and tools/test.py."""
import argparse
import contextlib
import copy
import os
import os.path as osp
import sys
from typing import Callable, Iterator, Optional, Sequence

from mmengine.config import Config, DictAction
from mmengine.dist import master_only
import torch
from mmengine.registry import MODELS, RUNNERS, DefaultScope
from mmengine.runner import CheckpointLoader, Runner

from .checkpoint import (CheckpointLoadError, LoadedWeightsCheck,
                         check_weights_filled)
from .config_checks import explain_build_error
from .runner_cfg import EvaluationError, UsageError

__all__ = ['USER_ERRORS', 'CfgOptionsAction', 'add_launch_args',
           'parse_launch_args', 'check_model_builds', 'build_runner',
           'config_errors', 'run_cli']

#: Errors the tools report as a message rather than a traceback.
USER_ERRORS = (CheckpointLoadError, EvaluationError, FileNotFoundError,
               UsageError)


class CfgOptionsAction(DictAction):
    """mmengine's ``--cfg-options`` parser, with a usage error for an item
    that is not ``KEY=VALUE``."""

    def __call__(self, parser, namespace, values, option_string=None):
        for item in values or ():
            if '=' not in item:
                parser.error(
                    f'{option_string} {item!r}: each item is KEY=VALUE '
                    f'(e.g. {item}=...), and {item!r} has no "="')
        super().__call__(parser, namespace, values, option_string)


def add_launch_args(parser: argparse.ArgumentParser, example: str) -> None:
    """``--cfg-options``, ``--launcher`` and the launcher's
    ``--local-rank``."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=CfgOptionsAction,
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


class _TestRunConfigDump:
    """For the Runner of a test run: the config goes into the run's own log
    folder (``WORK_DIR/<timestamp>/``), so that the dump a training run left
    in ``WORK_DIR`` stays the training's."""

    @master_only
    def dump_config(self) -> None:
        name = (osp.basename(self.cfg.filename) if self.cfg.filename else
                f'{self.timestamp}.py')
        self.cfg.dump(osp.join(self.log_dir, name))


def check_model_builds(cfg: Config, *, test: bool = False) -> None:
    """Build ``cfg.model`` once, and for a training run that does not
    resume, check that ``load_from`` fills it, before the Runner logs the
    environment and the config: a wrong argument of a block or a checkpoint
    of another model is then the only thing a user reads.

    The global random state is left as it was; the model is dropped.
    """
    if not isinstance(cfg.get('model'), dict):
        return
    with torch.random.fork_rng(devices=[]), \
            DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(copy.deepcopy(cfg.model))
        load_from = cfg.get('load_from')
        if not test and load_from and not cfg.get('resume'):
            check_weights_filled(model, CheckpointLoader.load_checkpoint(
                load_from, map_location='cpu'), load_from)


def build_runner(cfg: Config, *, test: bool = False) -> Runner:
    """mmengine's Runner, or the config's own ``runner_type``, once the
    model builds (:func:`check_model_builds`).

    A training run's Runner gets :class:`LoadedWeightsCheck`, which stops it
    before the first iteration when ``load_from`` fills under half of the
    model.  A test run's (``test=True``) writes its config into its own log
    folder instead of over the training's in the work dir.
    """
    check_model_builds(cfg, test=test)
    args = cfg.copy()
    with RUNNERS.switch_scope_and_registry(args.pop('_scope_',
                                                    None)) as registry:
        name = args.get('runner_type', 'Runner')
        runner_cls = registry.get(name) if isinstance(name, str) else name
        if runner_cls is None:
            raise UsageError(f'runner_type {name!r} is not in the '
                             f'{registry.scope}::runner registry')
        if test:
            runner_cls = type(f'Test{runner_cls.__name__}',
                              (_TestRunConfigDump, runner_cls), {})
        runner = runner_cls.from_cfg(args)
    if not test:
        runner.register_hook(LoadedWeightsCheck())
    return runner


@contextlib.contextmanager
def config_errors(cfg: Config) -> Iterator[None]:
    """Turn an error raised while mmengine builds an object of ``cfg`` (a
    wrong argument of a block, of a loop ...) into a :class:`UsageError`
    whose first line names the config key, the value and what is wrong
    (see :func:`explain_build_error`); other errors pass unchanged."""
    try:
        yield
    except USER_ERRORS:
        raise
    except Exception as e:
        message = explain_build_error(e, cfg)
        if message is None:
            raise
        raise UsageError(message) from None


def run_cli(main: Callable[[], Optional[int]]) -> None:
    """Run a tool's main, turning user errors into a one-line message."""
    try:
        sys.exit(main())
    except USER_ERRORS as e:
        sys.exit(f'error: {e}')
