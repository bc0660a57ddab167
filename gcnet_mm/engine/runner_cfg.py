"""What ``tools/train.py`` and ``tools/test.py`` do to a config before
mmengine's Runner takes over; the same for detection, segmentation,
classification and action recognition."""
import glob
import json
import os
import os.path as osp
import warnings
from typing import Any, Optional

from mmengine.config import Config
from mmengine.device import get_device
from mmengine.model import is_model_wrapper
from mmengine.runner import CheckpointLoader, load_state_dict

from .checkpoint import (CheckpointLoadError, compare_state_dicts,
                         install_checkpoint_safety, remove_temporaries,
                         state_dict_of, zip_ok)
from .config_checks import check_cfg_options, check_data_paths
from .distributed import restart_count, setup_distributed

__all__ = [
    'UsageError', 'load_config', 'prepare_train_cfg', 'prepare_test_cfg',
    'find_resumable_checkpoint', 'load_checkpoint_strict', 'dump_metrics',
    'check_metrics', 'EvaluationError'
]

_HOSTS = ('mmdet', 'mmseg', 'mmpretrain', 'mmaction')


class UsageError(ValueError):
    """A command-line option that cannot work as given."""


class EvaluationError(RuntimeError):
    """An evaluation ran but computed nothing that it should have."""


def load_config(config: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config file and merge ``--cfg-options`` into it.

    Raises:
        FileNotFoundError: no such config file.
        UsageError: an option sets a key the config does not have that is
            close to one it has, or an argument the class of its entry does
            not take (see :func:`check_cfg_options`), or cannot be merged.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config!r}')
    cfg = Config.fromfile(config)
    if cfg_options:
        errors, notes = check_cfg_options(cfg, cfg_options)
        if errors:
            raise UsageError('\n'.join(errors))
        for note in notes:
            warnings.warn(note)
        try:
            cfg.merge_from_dict(cfg_options)
        except (TypeError, KeyError, IndexError, ValueError) as e:
            raise UsageError(f'--cfg-options do not merge into {config!r}: '
                             f'{e}') from None
    return cfg


def _set_up_run(cfg: Config, config: str, work_dir: Optional[str],
                launcher: str) -> Config:
    """What a training and a test run share: checkpoints loaded safely and
    saved atomically, the launcher (with its process group's settings) and
    the work dir (default ``./work_dirs/<config name>``)."""
    install_checkpoint_safety()
    cfg.launcher = launcher
    if launcher != 'none':
        setup_distributed(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    return cfg


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The newest readable checkpoint of ``work_dir``.

    Follows mmengine's ``last_checkpoint`` pointer; if the file it names is
    missing or unreadable (say it was cut short by a full disk), falls back to
    the newest intact ``*.pth`` in the folder, with a warning.
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    last = None
    if osp.isfile(pointer):
        with open(pointer) as f:
            last = f.read().strip() or None
        if last and osp.isfile(last) and zip_ok(last):
            return last
    candidates = sorted(glob.glob(osp.join(work_dir, '*.pth')),
                        key=osp.getmtime, reverse=True)
    for ckpt in candidates:
        if zip_ok(ckpt):
            if last:
                warnings.warn(f'last checkpoint {last!r} is missing or '
                              f'unreadable; resuming from {ckpt!r} instead')
            return ckpt
    return None


def _nothing_to_resume(work_dir: str) -> str:
    where = osp.abspath(work_dir)
    why = ('does not exist' if not osp.isdir(where) else
           'holds no checkpoint (no last_checkpoint, no readable *.pth)')
    return (f'--resume: nothing to resume, the work dir {where!r} {why}. '
            'Check --work-dir (default: ./work_dirs/<config name>), give the '
            'checkpoint (--resume CKPT), or use --auto-resume to resume when '
            'there is a checkpoint and start afresh when there is none.')


def prepare_train_cfg(config: str,
                      work_dir: Optional[str] = None,
                      resume: Optional[str] = None,
                      amp: bool = False,
                      auto_scale_lr: bool = False,
                      cfg_options: Optional[dict] = None,
                      launcher: str = 'none') -> Config:
    """Config for ``Runner.from_cfg`` to train.

    Args:
        config: config file path.
        work_dir: overrides ``cfg.work_dir``; default ``./work_dirs/<name>``.
        resume: ``None`` (start afresh), ``'auto'`` (the newest readable
            checkpoint in the work dir; an error if there is none),
            ``'auto-if-any'`` (the same, or start afresh if there is none)
            or a checkpoint path/URL.  In a worker group that torchrun
            restarted (``--max-restarts``), the newest readable checkpoint
            of the work dir, where there is one, comes before ``None`` and a
            path.
        amp: mixed precision with mmengine's AmpOptimWrapper (needs a GPU).
        auto_scale_lr: scale the lr by the actual total batch size.
        cfg_options: ``--cfg-options`` overrides.
        launcher: 'none', 'pytorch', 'slurm' or 'mpi'.
    """
    cfg = _set_up_run(load_config(config, cfg_options), config, work_dir,
                      launcher)
    # Only a training run cleans its work dir: a test run may share it with a
    # training that is saving right now.
    remove_temporaries(cfg.work_dir)
    if amp:
        if get_device() == 'cpu':
            raise UsageError(
                '--amp needs a GPU (or NPU/MLU/MUSA): mmengine\'s '
                'AmpOptimWrapper does not train on the CPU, and this machine '
                'has no such device. Drop --amp to train in float32.')
        wrapper = cfg.optim_wrapper
        if wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            warnings.warn('the config already uses AmpOptimWrapper')
        else:
            wrapper.type = 'AmpOptimWrapper'
            wrapper.setdefault('loss_scale', 'dynamic')
    if auto_scale_lr:
        if not cfg.get('auto_scale_lr', {}).get('base_batch_size'):
            raise UsageError(
                '--auto-scale-lr needs auto_scale_lr.base_batch_size in the '
                f'config, but {config!r} has auto_scale_lr='
                f'{cfg.get("auto_scale_lr")}')
        cfg.auto_scale_lr.enable = True
    if restart_count() and resume not in ('auto', 'auto-if-any') and (
            resume is None or find_resumable_checkpoint(cfg.work_dir)):
        resume = 'auto-if-any'  # torchrun restarted the group: carry on
    if resume in ('auto', 'auto-if-any'):
        cfg.resume = True
        cfg.load_from = find_resumable_checkpoint(cfg.work_dir)
        if cfg.load_from is None and resume == 'auto':
            raise UsageError(_nothing_to_resume(cfg.work_dir))
    elif resume is not None:
        if '://' not in resume and not osp.isfile(resume):
            raise FileNotFoundError(
                f'--resume: checkpoint file not found: {resume!r}')
        cfg.resume = True
        cfg.load_from = resume
    # Identical results after a resume (see ReseedHook).
    hooks = list(cfg.get('custom_hooks', []))
    if not any(str(h.get('type', '')).endswith('ReseedHook') for h in hooks):
        hooks.append(dict(type='gcnet_mm.ReseedHook'))
    cfg.custom_hooks = hooks
    check_data_paths(cfg, ('train', 'val'), weights=True, config=config)
    return cfg


def _enable_visualization(cfg: Config, show: bool, show_dir: Optional[str],
                          wait_time: float) -> None:
    """Turn on the host's visualization hook the way its test.py does."""
    hooks = cfg.get('default_hooks', {})
    if 'visualization' not in hooks:
        raise UsageError(
            '--show/--show-dir need a "visualization" hook in '
            f'default_hooks; this config has {sorted(hooks)}')
    vis = hooks['visualization']
    scope = cfg.get('default_scope')
    if scope in ('mmseg', 'mmpretrain'):
        vis['interval'] = 1  # every test image, not every 50th
    if scope == 'mmpretrain':
        vis['enable'] = True
        if show_dir:
            vis['out_dir'] = show_dir
    else:
        vis['draw'] = True
        if show_dir and scope == 'mmseg':
            cfg.visualizer['save_dir'] = show_dir
        elif show_dir:
            vis['test_out_dir'] = show_dir
    if show:
        vis['show'] = True
        vis['wait_time'] = wait_time


#: The metric each host's tools/test.py appends for ``--out`` (a pickle);
#: mmseg's writes prediction maps instead, see :func:`_add_out`.
_DUMP_METRICS = {'mmdet': 'mmdet.DumpDetResults'}  # others: mmengine's


def _add_out(cfg: Config, out: str, out_item: Optional[str]) -> None:
    """``--out`` as the config's host's own tools/test.py does it.

    * mmdet: ``DumpDetResults``, a pickle of the predictions with masks in
      RLE and no ground truth;
    * mmseg: ``out`` is a folder; the metric writes one PNG of predicted
      labels per image there (``output_dir``, ``keep_results``);
    * mmpretrain, mmaction2 and others: mmengine's ``DumpResults`` pickle;
      with ``out_item='metrics'`` (mmpretrain's ``--out-item``) the metrics
      are dumped instead, by tools/test.py after the run.
    """
    scope = cfg.get('default_scope')
    evaluators = cfg.test_evaluator
    evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) \
        else [evaluators]
    if scope == 'mmseg':
        if out.endswith(('.pkl', '.pickle')) or out_item:
            raise UsageError(
                '--out of a segmentation config is a folder for the '
                'predicted label maps (one PNG per image, as mmseg\'s '
                f'tools/test.py writes them), not a pickle: got --out {out!r}'
                + (f' --out-item {out_item}' if out_item else ''))
        maps = [e for e in evaluators if isinstance(e, dict) and str(
            e.get('type', '')).split('.')[-1] in ('IoUMetric',
                                                  'CityscapesMetric')]
        if not maps:
            raise UsageError(
                '--out of a segmentation config needs an IoUMetric or '
                'CityscapesMetric in test_evaluator to write the maps; this '
                f'config has {[e.get("type") for e in evaluators]}')
        for metric in maps:
            metric.update(output_dir=out, keep_results=True)
        cfg.test_evaluator = evaluators if len(evaluators) > 1 else maps[0]
        return
    if not out.endswith(('.pkl', '.pickle')):
        raise UsageError(f'--out must be a .pkl file, got {out!r}')
    remove_temporaries(osp.dirname(osp.abspath(out)), osp.basename(out))
    if out_item == 'metrics':
        return
    evaluators.append(
        dict(type=_DUMP_METRICS.get(scope, 'DumpResults'),
             out_file_path=out))
    cfg.test_evaluator = evaluators


def prepare_test_cfg(config: str,
                     checkpoint: str,
                     work_dir: Optional[str] = None,
                     out: Optional[str] = None,
                     out_item: Optional[str] = None,
                     show: bool = False,
                     show_dir: Optional[str] = None,
                     wait_time: float = 2,
                     cfg_options: Optional[dict] = None,
                     launcher: str = 'none') -> Config:
    """Config for ``Runner.from_cfg`` to evaluate ``checkpoint`` (path or URL).

    The checkpoint itself is loaded afterwards by
    :func:`load_checkpoint_strict`, so that a mismatch fails loudly.
    """
    if '://' not in checkpoint and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint file not found: {checkpoint!r}')
    cfg = _set_up_run(load_config(config, cfg_options), config, work_dir,
                      launcher)
    cfg.load_from = None
    cfg.resume = False
    if cfg.get('default_scope') not in _HOSTS:
        warnings.warn(f'default_scope {cfg.get("default_scope")!r} is none of '
                      f'{_HOSTS}; evaluating with mmengine defaults')
    if show or show_dir:
        _enable_visualization(cfg, show, show_dir, wait_time)
    if out:
        _add_out(cfg, out, out_item)
    elif out_item:
        raise UsageError('--out-item needs --out, the file to write it to')
    _without_training(cfg)
    check_data_paths(cfg, ('test', ))
    return cfg


#: What a config needs for training only; a test run sets them to None.
TRAINING_KEYS = ('train_dataloader', 'train_cfg', 'optim_wrapper',
                 'param_scheduler')


def _without_training(cfg: Config) -> None:
    """Leave the training out of a test run, so that it never reads the
    training data: with no training loop, hooks that ask for ``runner.iter``
    (mmseg's ``SegVisualizationHook`` with ``--show-dir``) get 0 instead of
    making mmengine build that loop, and its dataset."""
    for key in TRAINING_KEYS:
        if key in cfg:
            cfg[key] = None


def load_checkpoint_strict(runner, checkpoint: str) -> dict:
    """Load ``checkpoint`` (path or URL) into the runner's model, or fail with
    the missing, unexpected and mis-shaped keys listed when it does not match
    the model of the config; nothing is evaluated with a half-loaded model."""
    ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    # Hooks such as EMAHook swap weights in here, as in Runner.load_checkpoint.
    runner.call_hook('after_load_checkpoint', checkpoint=ckpt)
    model = runner.model.module if is_model_wrapper(
        runner.model) else runner.model
    state = state_dict_of(ckpt, checkpoint)
    _, problems = compare_state_dicts(model.state_dict(), state)
    if problems:
        raise CheckpointLoadError(
            f'checkpoint {checkpoint!r} does not match the model built from '
            'the config, so nothing was evaluated.\n  ' +
            '\n  '.join(problems) + '\nCheck that the config is the one the '
            'checkpoint was trained with.')
    load_state_dict(model, state, strict=True)
    return ckpt


def _dumps_only(evaluator: Any) -> bool:
    """Whether an evaluator config writes files but computes no metric."""
    return isinstance(evaluator, dict) and (
        bool(evaluator.get('format_only'))
        or str(evaluator.get('type', '')).split('.')[-1].startswith('Dump'))


def check_metrics(metrics: dict, cfg: Config) -> None:
    """Fail when an evaluation that should compute metrics computed none (a
    metric that got no predictions logs an error and returns nothing).

    Raises:
        EvaluationError: naming the metrics that came back empty.
    """
    evaluators = cfg.test_evaluator
    evaluators = evaluators if isinstance(evaluators, (list, tuple)) else [
        evaluators]
    expected = [e.get('type') if isinstance(e, dict) else type(e).__name__
                for e in evaluators if not _dumps_only(e)]
    if metrics or not expected:
        return
    raise EvaluationError(
        f'the evaluation computed no metrics: {", ".join(map(str, expected))} '
        'returned nothing (see the log above; a detector whose boxes all '
        'score below test_cfg\'s score_thr, or a model that predicts '
        'nothing, gets there). No metrics file was written.')


def dump_metrics(metrics: dict, work_dir: str, timestamp: str,
                 checkpoint: str, config: str) -> str:
    """Write the evaluation metrics as JSON in the work dir; returns the
    path."""
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, f'metrics_{timestamp}.json')

    def plain(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return str(v)

    with open(path, 'w') as f:
        json.dump(dict(config=config, checkpoint=checkpoint,
                       metrics={k: plain(v) for k, v in metrics.items()}),
                  f, indent=2)
    return path
