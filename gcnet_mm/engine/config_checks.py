"""Checks and rewrites of a config before any model is built."""
import os.path as osp
from typing import Any, Iterable, List, Tuple

from mmengine.config import Config

__all__ = ['check_data_paths', 'sync_bn_to_bn', 'drop_pretrained']

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


def check_data_paths(cfg: Any, phases: Iterable[str] = ('train', 'val'),
                     *, evaluators: bool = True) -> List[str]:
    """Fail at once, naming the path, if a dataset path does not exist.

    Args:
        cfg: an mmengine Config (or dict) with ``{phase}_dataloader`` entries.
        phases: which of 'train', 'val', 'test' will run.
        evaluators: check the ``ann_file`` of the phases' evaluators too;
            ``False`` for a run that reads the data but evaluates nothing.

    Returns:
        The paths checked.

    Raises:
        FileNotFoundError: listing each missing path with the config key that
            names it and how to point the config at the data.
    """
    missing, checked = [], []
    for phase in phases:
        loader = cfg.get(f'{phase}_dataloader')
        if not loader or (phase != 'train' and not cfg.get(f'{phase}_cfg')):
            continue
        pairs = list(_dataset_paths(loader.get('dataset'),
                                    f'{phase}_dataloader.dataset'))
        if evaluators:
            pairs += list(_evaluator_paths(cfg.get(f'{phase}_evaluator'),
                                           f'{phase}_evaluator'))
        for key, path in pairs:
            checked.append(path)
            if '://' not in path and not osp.exists(osp.expanduser(path)):
                missing.append((key, path))
    if missing:
        lines = '\n'.join(f'  {key}: {path!r}' for key, path in missing)
        raise FileNotFoundError(
            f'{len(missing)} dataset path(s) in the config do not exist '
            f'(working directory {osp.abspath(".")!r}):\n{lines}\n'
            'Put the data there (see the README, or make a small example with '
            'tools/misc/make_toy_data.py) or point the config at it, e.g. '
            f'--cfg-options {missing[0][0]}=/path/to/data')
    return checked


def sync_bn_to_bn(cfg: Any) -> List[str]:
    """Replace every SyncBN norm config in ``cfg`` by plain BN, in place.

    Returns the config keys that were changed (e.g. ``model.backbone.norm_cfg``).
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

    walk(cfg._cfg_dict if isinstance(cfg, Config) else cfg, '')
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
