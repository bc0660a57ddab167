"""Checks and rewrites of a config before any model is built."""
import glob
import os.path as osp
import re
from typing import Any, Iterable, List, Optional, Tuple

from mmengine.config import Config

__all__ = ['check_data_paths', 'sync_bn_to_bn', 'drop_pretrained',
           'package_configs_dir']

_SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'SyncBatchNorm', 'nn.SyncBatchNorm')


def _dataset_paths(ds: Any, key: str) -> Iterable[Tuple[str, str]]:
    """Yield (config key, absolute path) for every path a dataset reads."""
    if not isinstance(ds, dict):
        return
    for child in ('dataset', 'datasets'):  # Repeat/Concat/ClassBalanced
        sub = ds.get(child)
        subs = sub if isinstance(sub, (list, tuple)) else [sub]
        for i, s in enumerate(subs):
            suffix = f'[{i}]' if isinstance(sub, (list, tuple)) else ''
            yield from _dataset_paths(s, f'{key}.{child}{suffix}')
    root = ds.get('data_root') or ''
    if root and not isinstance(root, str):
        return
    if root:
        yield f'{key}.data_root', root
    ann = ds.get('ann_file')
    if isinstance(ann, str) and ann:
        yield f'{key}.ann_file', osp.join(root, ann)
    prefix = ds.get('data_prefix')
    if isinstance(prefix, dict):
        for name, value in prefix.items():
            if isinstance(value, str) and value:
                yield f'{key}.data_prefix.{name}', osp.join(root, value)
    elif isinstance(prefix, str) and prefix:
        yield f'{key}.data_prefix', osp.join(root, prefix)


def _evaluator_paths(ev: Any, key: str) -> Iterable[Tuple[str, str]]:
    evs = ev if isinstance(ev, (list, tuple)) else [ev]
    for i, e in enumerate(evs):
        if isinstance(e, dict) and isinstance(e.get('ann_file'), str) \
                and e['ann_file']:
            yield f'{key}[{i}].ann_file' if len(evs) > 1 \
                else f'{key}.ann_file', e['ann_file']


def package_configs_dir() -> str:
    """This package's ``configs/``: ``gcnet_mm/.mim/configs`` (shipped in
    the wheel; a link to the checkout's ``configs/`` in a clone)."""
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    shipped = osp.join(package, '.mim', 'configs')
    return shipped if osp.isdir(shipped) else osp.join(
        osp.dirname(package), 'configs')


def _weight_paths(cfg: Any) -> Iterable[Tuple[str, str]]:
    """(config key, path) of the local checkpoints a training run loads:
    ``load_from`` unless it resumes, and ``Pretrained`` initialisations."""
    if cfg.get('load_from') and not cfg.get('resume'):
        yield 'load_from', str(cfg.load_from)

    def walk(node, key):
        if isinstance(node, dict):
            if node.get('type') == 'Pretrained' and isinstance(
                    node.get('checkpoint'), str):
                yield f'{key}.checkpoint', node['checkpoint']
            if isinstance(node.get('pretrained'), str):
                yield f'{key}.pretrained', node['pretrained']
            for k, v in node.items():
                yield from walk(v, f'{key}.{k}')
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                yield from walk(v, f'{key}[{i}]')

    yield from walk(cfg.get('model'), 'model')


def _producer(path: str, config: Optional[str]) -> Optional[str]:
    """The config whose training writes ``work_dirs/<name>/...``: a
    ``<name>.py`` next to ``config`` or among the package's configs."""
    match = re.search(r'work_dirs/([^/]+)/', path.replace('\\', '/'))
    if not match:
        return None
    name = match.group(1) + '.py'
    if config and osp.isfile(osp.join(osp.dirname(config), name)):
        return osp.join(osp.dirname(config), name)
    found = glob.glob(osp.join(package_configs_dir(), '**', name),
                      recursive=True)
    return found[0] if found else None


def _placeholder(path: str) -> str:
    trail = '/' if path.endswith('/') else ''
    return f'/path/to/{osp.basename(path.rstrip("/")) or "data"}{trail}'


def _overrides(missing: List[Tuple[str, str]]) -> str:
    """``--cfg-options`` that point the config elsewhere: a missing
    ``data_root`` replaces the paths below it (which need nothing of their
    own, except absolute copies such as an evaluator's ann_file, which get
    the same new root); every other path gets its own placeholder."""
    roots = {key[:-len('.data_root')]: path for key, path in missing
             if key.endswith('.data_root')}
    options = []
    for key, path in missing:
        if key.endswith('.data_root'):
            options.append(f'{key}={_placeholder(path)}')
        elif any(key.startswith(prefix + '.') for prefix in roots):
            continue  # follows its data_root
        else:
            root = next((r for r in roots.values()
                         if r and path.startswith(r)), None)
            new = (_placeholder(root).rstrip('/') + '/' +
                   path[len(root):].lstrip('/') if root else
                   _placeholder(path))
            options.append(f'{key}={new}')
    return ' '.join(options)


def check_data_paths(cfg: Any, phases: Iterable[str] = ('train', 'val'),
                     weights: bool = False,
                     config: Optional[str] = None,
                     *, evaluators: bool = True) -> List[str]:
    """Fail at once, naming every missing path, if a path a run reads does
    not exist.

    Args:
        cfg: an mmengine Config (or dict) with ``{phase}_dataloader`` entries.
        phases: which of 'train', 'val', 'test' will run.
        weights: also check the local checkpoints training loads
            (``load_from`` unless resuming, ``Pretrained`` init_cfgs).
        config: the config file, to name the config whose training writes
            a missing ``work_dirs/<name>/...`` checkpoint.
        evaluators: check the ``ann_file`` of the phases' evaluators too;
            ``False`` for a run that reads the data but evaluates nothing.

    Returns:
        The paths checked.

    Raises:
        FileNotFoundError: listing each missing path with the config key that
            names it, and the ``--cfg-options`` that point the config at the
            right place.
    """
    missing, checked = [], []
    pairs = []
    for phase in phases:
        loader = cfg.get(f'{phase}_dataloader')
        if not loader or (phase != 'train'
                          and cfg.get(f'{phase}_cfg') is None):
            continue
        pairs += list(_dataset_paths(loader.get('dataset'),
                                     f'{phase}_dataloader.dataset'))
        if evaluators:
            pairs += list(_evaluator_paths(cfg.get(f'{phase}_evaluator'),
                                           f'{phase}_evaluator'))
    if weights:
        pairs += list(_weight_paths(cfg))
    for key, path in pairs:
        checked.append(path)
        if '://' not in path and not osp.exists(osp.expanduser(path)):
            missing.append((key, path))
    if missing:
        lines = []
        for key, path in missing:
            line = f'  {key}: {path!r}'
            producer = _producer(path, config)
            if producer:
                line += (f' (written by training {producer}; train that '
                         'config first, or point the key at your copy)')
            lines.append(line)
        raise FileNotFoundError(
            f'{len(missing)} path(s) this run reads do not exist (working '
            f'directory {osp.abspath(".")!r}):\n' + '\n'.join(lines) +
            '\nPut the data there (see the README, or make a small example '
            'with tools/misc/make_toy_data.py) or point the config at it:\n'
            f'  --cfg-options {_overrides(missing)}')
    return checked


def sync_bn_to_bn(cfg: Any) -> List[str]:
    """Replace every SyncBN norm config in ``cfg`` by plain BN, in place.

    Returns the config keys that were changed (e.g.
    ``model.backbone.norm_cfg``).
    """
    changed = []

    def walk(node, path):
        if isinstance(node, dict):
            if node.get('type') in _SYNC_BN_TYPES:
                node['type'] = 'BN'
                changed.append(path)
            for k, v in node.items():
                walk(v, f'{path}.{k}' if path else str(k))
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(v, f'{path}[{i}]')

    walk(cfg if not isinstance(cfg, Config) else  # its values are its dicts
         {key: cfg[key] for key in cfg.keys()}, '')
    if cfg.get('sync_bn'):
        cfg['sync_bn'] = None
        changed.append('sync_bn')
    return changed


def drop_pretrained(node: Any) -> List[str]:
    """Remove ``Pretrained`` init_cfgs and ``pretrained=`` paths from a model
    config in place (a random init downloads nothing); returns what went."""
    dropped = []
    if isinstance(node, dict):
        init = node.get('init_cfg')
        inits = init if isinstance(init, list) else [init]
        keep = [i for i in inits
                if not (isinstance(i, dict) and i.get('type') == 'Pretrained')]
        if len(keep) < len(inits):
            dropped += [str(i.get('checkpoint')) for i in inits
                        if i not in keep]
            node['init_cfg'] = keep if isinstance(init, list) else None
        if isinstance(node.get('pretrained'), str):
            dropped.append(node['pretrained'])
            node['pretrained'] = None
        for value in node.values():
            dropped += drop_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            dropped += drop_pretrained(value)
    return dropped
