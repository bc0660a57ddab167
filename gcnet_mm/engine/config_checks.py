"""Checks and rewrites of a config before any model is built, and the
config keys behind the errors of building one."""
import difflib
import glob
import inspect
import os.path as osp
import re
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import mmengine.registry as mmengine_registry
from mmengine.config import Config
from torch.utils.data import DataLoader

__all__ = ['check_data_paths', 'sync_bn_to_bn', 'drop_pretrained',
           'package_configs_dir', 'check_cfg_options', 'explain_build_error',
           'config_class', 'class_arguments']

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


def _config_that_writes(path: str, config: Optional[str]) -> Optional[str]:
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


def _placeholder_path(path: str) -> str:
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
            options.append(f'{key}={_placeholder_path(path)}')
        elif any(key.startswith(prefix + '.') for prefix in roots):
            continue  # follows its data_root
        else:
            root = next((r for r in roots.values()
                         if r and path.startswith(r)), None)
            new = (_placeholder_path(root).rstrip('/') + '/' +
                   path[len(root):].lstrip('/') if root else
                   _placeholder_path(path))
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
            producer = _config_that_writes(path, config)
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


# --------------------------------------------------------------------------
# --cfg-options keys and build errors, named by their config keys

#: The registries whose classes the ``type`` of a config entry names, by the
#: entry's top-level key, in the order they are searched.
_REGISTRIES_BY_KEY = {
    'model': ('MODELS', 'TASK_UTILS'),
    'train_cfg': ('LOOPS', ),
    'val_cfg': ('LOOPS', ),
    'test_cfg': ('LOOPS', ),
    'optim_wrapper': ('OPTIM_WRAPPERS', 'OPTIMIZERS'),
    'param_scheduler': ('PARAM_SCHEDULERS', ),
    'default_hooks': ('HOOKS', ),
    'custom_hooks': ('HOOKS', ),
    'visualizer': ('VISUALIZERS', 'VISBACKENDS'),
    'log_processor': ('LOG_PROCESSORS', ),
}
_DATA_REGISTRIES = ('DATASETS', 'TRANSFORMS', 'DATA_SAMPLERS')
_EVALUATOR_REGISTRIES = ('METRICS', 'EVALUATOR')
_ALL_REGISTRIES = tuple(dict.fromkeys(
    sum(_REGISTRIES_BY_KEY.values(), ()) + _DATA_REGISTRIES +
    _EVALUATOR_REGISTRIES))

#: How close a name must be to another (difflib's ratio) to be suggested.
_CLOSE = 0.75


def _registries_for(top: str) -> Tuple[str, ...]:
    if top in _REGISTRIES_BY_KEY:
        return _REGISTRIES_BY_KEY[top]
    if top.endswith('_dataloader'):
        return _DATA_REGISTRIES
    if top.endswith('_evaluator'):
        return _EVALUATOR_REGISTRIES
    return _ALL_REGISTRIES


def _type_name(type_: Any) -> Optional[str]:
    """The class name a config's ``type`` gives (``'gcnet_mm.ContextBlock'``
    -> ``'ContextBlock'``), or None."""
    if inspect.isclass(type_):
        return type_.__name__
    if isinstance(type_, str):
        return type_.rsplit('.', 1)[-1]
    return None


def config_class(node: Any, top: str, scope: Optional[str]) -> Optional[type]:
    """The class a config entry builds (``node['type']``), looked up in the
    registries of its top-level key ``top`` under ``scope``; None when there
    is no type or it is not found."""
    if not isinstance(node, dict):
        return None
    type_ = node.get('type')
    if type_ is None and top == 'train_cfg' and 'by_epoch' in node:
        # mmengine's Runner picks the loop by ``by_epoch`` (and drops it)
        type_ = 'EpochBasedTrainLoop' if node['by_epoch'] else \
            'IterBasedTrainLoop'
    if inspect.isclass(type_):
        return type_
    if not isinstance(type_, str):
        return None
    scope = node.get('_scope_', scope)
    for name in _registries_for(top):
        root = getattr(mmengine_registry, name)
        try:
            with root.switch_scope_and_registry(scope) as registry:
                cls = registry.get(type_)
        except Exception:  # a scope that is not installed, a broken import
            continue
        if inspect.isclass(cls):
            return cls
    return None


def class_arguments(cls: type) -> Tuple[List[str], bool]:
    """The keyword arguments ``cls(...)`` takes, and whether it takes any
    other (``**kwargs``)."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in params
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _closest_name(name: str, candidates: Iterable[str]) -> Optional[str]:
    found = difflib.get_close_matches(
        name, [c for c in candidates if isinstance(c, str)], n=1,
        cutoff=_CLOSE)
    return found[0] if found else None


def _join(path: Sequence[str], key: str) -> str:
    return '.'.join([*path, key]) if path else key


def _unknown_option(node: dict, name: str, path: List[str], given: str,
                    scope: Optional[str]) -> Tuple[str, str]:
    """('error' or 'note', message) for ``--cfg-options`` setting ``name``,
    which the config entry ``node`` at ``path`` does not have."""
    where = '.'.join(path)
    keys = [k for k in node if isinstance(k, str) and not k.startswith('_')]
    if len(path) == 1 and path[0].endswith('_dataloader'):
        cls = DataLoader  # mmengine's Runner passes the rest to it
    else:
        cls = config_class(node, path[0], scope) if path else None
    if cls is not None:
        arguments, takes_more = class_arguments(cls)
        if name in arguments:
            return 'ok', ''
        close = _closest_name(name, list(dict.fromkeys(arguments + keys)))
        if not takes_more:
            hint = (f"; did you mean {_join(path, close)}?" if close else
                    f'; it takes {", ".join(arguments)}')
            return 'error', (f'{given}: {where} builds {cls.__name__}, which '
                             f'takes no argument {name!r}{hint}')
    else:
        close = _closest_name(name, keys)
    if close:
        return 'error', (f'{given}: the config has no key '
                         f'{_join(path, name)}; did you mean '
                         f'{_join(path, close)}?')
    return 'note', (f'{given}: the config has no key {_join(path, name)}; '
                    'it is added as given')


def check_cfg_options(cfg: Any,
                      options: dict) -> Tuple[List[str], List[str]]:
    """Compare ``--cfg-options`` with the config they change, before they
    are merged.

    A key that the config has is fine.  A key that it does not have is an
    error when it is close to a key that it has (a typo: ``score_thrr``
    beside ``score_thr``) or when the class its entry builds takes no such
    argument (``train_cfg.max_epoch`` for ``EpochBasedTrainLoop``); otherwise
    (a plain dict, a class that takes ``**kwargs``, an argument the class
    takes but the config leaves at its default) it is noted, or accepted
    silently when the class names it.

    Args:
        cfg: the config as read from its file.
        options: ``--cfg-options`` as parsed, ``{'a.b.c': value}``.

    Returns:
        ``(errors, notes)``: one line each, naming the option as given, the
        config key, and the close key (``did you mean ...?``) or the
        arguments the class takes.
    """
    root = {key: cfg[key] for key in cfg.keys()} if isinstance(
        cfg, Config) else cfg
    scope = root.get('default_scope')
    errors, notes = [], []
    for key, value in options.items():
        given = f'--cfg-options {key}={value!r}'
        node, path = root, []
        for part in key.split('.'):
            if isinstance(node, (list, tuple)) and part.isdigit() \
                    and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, dict):
                kind, message = _unknown_option(node, part, path, given,
                                                scope)
                if kind == 'error':
                    errors.append(message)
                elif kind == 'note':
                    notes.append(message)
                break
            elif isinstance(node, (list, tuple)):
                errors.append(
                    f'{given}: {".".join(path)} is a list of {len(node)} '
                    f'entries in the config, and {part!r} is not one of '
                    f'its indices (0 to {len(node) - 1})')
                break
            else:
                errors.append(
                    f'{given}: {".".join(path)} is {node!r} in the config, '
                    f'not a dict, so it has no key {part!r}; set it in a '
                    'config of your own that inherits this one (_base_)')
                break
            path.append(part)
    return errors, notes


def _find_type(node: Any, name: str, path: List[str]
               ) -> Optional[Tuple[List[str], dict]]:
    """The first entry below ``node`` (itself included) whose ``type`` is
    the class ``name``, breadth first: (its path, the entry)."""
    queue = [(path, node)]
    while queue:
        here, item = queue.pop(0)
        if isinstance(item, dict):
            if _type_name(item.get('type')) == name:
                return here, item
            queue += [([*here, str(k)], v) for k, v in item.items()]
        elif isinstance(item, (list, tuple)):
            queue += [([*here, str(i)], v) for i, v in enumerate(item)]
    return None


#: (path to a dict, one of its keys, the value there)
_Entry = Tuple[List[str], str, Any]


def _entries(node: Any, path: List[str]) -> Iterable[_Entry]:
    """(path, key, value) of every key of every dict below ``node``."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, str(k), v
            yield from _entries(v, [*path, str(k)])
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _entries(v, [*path, str(i)])


def _key_text(path: Sequence[str]) -> str:
    """``model.backbone.plugins[0].cfg`` from its parts."""
    text = ''
    for part in path:
        text += f'[{part}]' if part.isdigit() else (
            f'.{part}' if text else part)
    return text


def _classes_being_built(error: BaseException) -> Optional[List[str]]:
    """The classes that were being built from a config when ``error`` was
    raised, outermost first, or None when it was not raised while mmengine's
    registry built an object.

    Read from the traceback: the classes the registry's build function was
    instantiating, and those whose ``__init__`` was running.
    """
    frames, tb = [], error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    registry_dir = osp.join('mmengine', 'registry', '')
    if not any(registry_dir in f.f_code.co_filename for f in frames):
        return None
    names = []
    for frame in frames:
        if registry_dir in frame.f_code.co_filename:
            cls = frame.f_locals.get('obj_cls')
        elif frame.f_code.co_name == '__init__':
            cls = type(frame.f_locals.get('self'))
        else:
            continue
        name = getattr(cls, '__name__', None)
        if name and name != 'NoneType' and name not in names[-1:]:
            names.append(name)
    return names


def explain_build_error(error: BaseException, cfg: Any) -> Optional[str]:
    """A short message for an error raised while mmengine built an object
    of the config (the model, a loop, a dataset ...), or None for any other
    error.

    The error's own message comes first, after the config key and value it
    is about: an entry that the innermost config entry being built (or an
    entry below it) sets, whose key or value the message names.  An
    unexpected keyword argument gets a "did you mean" from the arguments the
    class takes.  A second line names the classes that were being built,
    with their config keys.
    """
    chain = _classes_being_built(error)
    if chain is None:
        return None
    text = str(error)
    if isinstance(error, KeyError) and len(text) > 1 and text[0] == text[
            -1] and text[0] in '"\'':
        text = text[1:-1]  # str(KeyError) is the repr of its message
    text = text or f'{type(error).__name__} (no message)'
    root = {key: cfg[key] for key in cfg.keys()} if isinstance(
        cfg, Config) else cfg
    where, node, built = [], root, []
    for name in chain:
        found = _find_type(node, name, where)
        if found is not None:
            where, node = found
            built.append(f'{name} ({_key_text(where)})')
    words = re.findall(r'[A-Za-z_]\w*', text)
    candidates = [
        (path, key, value) for path, key, value in _entries(node, where)
        if key in words or (isinstance(value, str) and value in words)]
    # first the entries whose value the message repeats, then in the order
    # the message names them
    candidates.sort(key=lambda c: (
        repr(c[2]) not in text and str(c[2]) not in text,
        words.index(c[1]) if c[1] in words else len(words)))
    head = f'{_key_text(where)}: ' if where else ''
    if candidates:
        path, key, value = candidates[0]
        head = f'{_key_text([*path, key])}={value!r}: '
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", text)
    if unexpected and where:
        cls = config_class(node, where[0], root.get('default_scope'))
        close = _closest_name(unexpected.group(1), class_arguments(cls)[0]
                              if cls is not None else [])
        if close:
            text += f"; did you mean {close!r}?"
    return (f'{head}{text}\n  ({type(error).__name__} while building '
            f'{" > ".join(built or chain)})')
