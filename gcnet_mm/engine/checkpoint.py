"""Safe checkpoint loading and atomic checkpoint saving.

Loading keeps torch's weights-only unpickler on and allows exactly the extra
types that OpenMMLab checkpoints hold (:data:`CHECKPOINT_GLOBALS`).  Anything
else, such as a pickle that would call ``os.system``, is refused before any
of it runs.

Saving writes to a temporary file (``.tmp-*``) in the same folder and renames
it over the target, so a run killed while saving never leaves a truncated
checkpoint (or a ``last_checkpoint`` pointer to one) behind; the file gets
the permissions the user's umask gives any new file, and the temporary files
a killed run leaves are removed when the next one starts
(:func:`remove_temporaries`).
"""
import glob
import http.client
import os
import os.path as osp
import pickle
import re
import sys
import urllib.error
import urllib.parse
import uuid
import warnings
import zipfile
from typing import Any, List, Optional, Tuple

import numpy as np
import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import is_model_wrapper
from mmengine.runner.checkpoint import CheckpointLoader
from torch.hub import download_url_to_file, get_dir

try:  # numpy >= 2
    from numpy._core import multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray

__all__ = [
    'CheckpointLoadError', 'CHECKPOINT_GLOBALS', 'register_safe_globals',
    'safe_load', 'install_checkpoint_safety', 'write_atomically',
    'remove_temporaries', 'download_checkpoint', 'state_dict_of',
    'compare_state_dicts', 'LoadedWeightsCheck', 'check_weights_filled'
]

#: Name prefix of the temporary files of :func:`write_atomically`.
TMP_PREFIX = '.tmp-'


class CheckpointLoadError(RuntimeError):
    """A checkpoint could not be loaded: missing, unreadable or unsafe."""


class UnsafeCheckpointError(CheckpointLoadError):
    """A checkpoint holds types that could run code when unpickled."""


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` as mmengine's ``HistoryBuffer.__getstate__`` pickles it
    (``getattr(HistoryBuffer, 'mean')`` for its statistic methods), and
    nothing else: a general ``getattr`` would reach any attribute, such as
    ``ndarray.tofile``, of the objects a pickle can build."""
    allowed = set(HistoryBuffer._statistics_methods) | {
        'min', 'max', 'current', 'mean'}
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint; only '
        f'getattr(HistoryBuffer, one of {sorted(allowed)}) is')


#: What an OpenMMLab checkpoint holds beyond torch's weights-only defaults:
#: mmengine's ``HistoryBuffer`` (the message hub of a Runner's checkpoint),
#: numpy arrays, scalars and dtypes (its metadata), a ``getattr`` that
#: answers only ``HistoryBuffer``'s statistics, and numpy's array and scalar
#: builders under their numpy 1.x names (torch matches pickled names, and a
#: checkpoint saved under numpy 1 names ``numpy.core.multiarray``).
CHECKPOINT_GLOBALS = list(dict.fromkeys(
    [HistoryBuffer, multiarray._reconstruct, multiarray.scalar, np.ndarray,
     np.dtype] + [type(np.dtype(t)) for t in np.sctypeDict.values()])) + [
    (_history_buffer_getattr, 'builtins.getattr'),
    (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
    (multiarray.scalar, 'numpy.core.multiarray.scalar'),
]


def register_safe_globals() -> None:
    """Allow :data:`CHECKPOINT_GLOBALS` in every weights-only ``torch.load``
    of this process, mmengine's own loaders included (``import gcnet_mm``
    does it, see docs/internals.md)."""
    torch.serialization.add_safe_globals(CHECKPOINT_GLOBALS)


def safe_load(filename: str, map_location: Optional[Any] = None) -> Any:
    """``torch.load`` with weights-only unpickling and clear errors.

    Args:
        filename: path of a checkpoint file.
        map_location: as for :func:`torch.load`.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointLoadError: the file is empty, truncated, not a PyTorch
            checkpoint, or would need types outside the allowlist (a pickle
            that could run code); nothing from such a file is executed.
    """
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file not found: {filename!r}')
    size = osp.getsize(filename)
    if size == 0:
        raise CheckpointLoadError(
            f'checkpoint {filename!r} is empty (0 bytes)')
    try:
        return torch.load(filename, map_location=map_location,
                          weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(
                filename)
        except Exception:  # legacy format, or torch < 2.5: cannot list them
            unsafe = []
        allowed = {f'{g.__module__}.{g.__qualname__}'
                   for g in CHECKPOINT_GLOBALS if hasattr(g, '__qualname__')}
        unsafe = [u for u in unsafe if u not in allowed]
        what = (f'it needs {", ".join(unsafe)}' if unsafe else
                f'the weights-only unpickler rejected it ({e})')
        raise UnsafeCheckpointError(
            f'refused to load checkpoint {filename!r}: {what}. Only tensors, '
            'containers and the types OpenMMLab checkpoints use (mmengine '
            'HistoryBuffer, numpy arrays/scalars) are allowed, because other '
            'types can run code when unpickled; nothing from the file was '
            'run. Re-save the weights you trust with torch.save of a plain '
            'state dict.') from None
    except Exception as e:  # truncated zip, garbage bytes, ...
        raise CheckpointLoadError(
            f'cannot read checkpoint {filename!r} ({size} bytes): it is '
            f'truncated or not a PyTorch checkpoint ({type(e).__name__}: '
            f'{e})') from None


def _load_from_local(filename: str, map_location: Optional[Any] = None):
    return safe_load(filename, map_location)


def zip_ok(path: str) -> bool:
    """Whether ``path`` is a zip archive (torch's format since 1.6) whose
    directory reads: a file cut short is not."""
    try:
        with zipfile.ZipFile(path) as z:
            return bool(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


#: ``name-<first hex digits of the file's sha256>.pth``: OpenMMLab's and
#: torch hub's checkpoint names.
_HASH_IN_NAME = re.compile(r'-([0-9a-f]{8,64})\.[A-Za-z0-9]+$')


def _download_defect(path: str) -> Optional[str]:
    """What is wrong with a downloaded checkpoint, or None: no bytes, or a
    zip (torch's format) whose directory, at its end, is missing."""
    if osp.getsize(path) == 0:
        return 'empty (0 bytes)'
    with open(path, 'rb') as f:
        is_zip = f.read(2) == b'PK'
    if is_zip and not zip_ok(path):
        return ('truncated: its zip directory does not read (the download '
                'broke off, or the file on the server is incomplete)')
    return None


def _download(url: str, dst: str, sha256_prefix: Optional[str]) -> None:
    """:func:`torch.hub.download_url_to_file`, its errors in one line."""
    try:
        download_url_to_file(url, dst, sha256_prefix,
                             progress=sys.stderr.isatty())
    except urllib.error.HTTPError as e:
        raise CheckpointLoadError(
            f'cannot download checkpoint {url}: HTTP {e.code} {e.reason}'
        ) from None
    except urllib.error.URLError as e:
        raise CheckpointLoadError(
            f'cannot download checkpoint {url}: {e.reason}') from None
    except (http.client.HTTPException, OSError) as e:
        raise CheckpointLoadError(
            f'download of checkpoint {url} broke off ({type(e).__name__}: '
            f'{e}); nothing was kept, try again') from None
    except RuntimeError as e:  # torch's check of the sha256 prefix
        if sha256_prefix is None:
            raise
        raise CheckpointLoadError(
            f'download of checkpoint {url} is corrupt: its sha256 does not '
            f'start with {sha256_prefix}, as its name says it must ({e}); '
            'nothing was kept, try again') from None


def download_checkpoint(url: str, model_dir: Optional[str] = None) -> str:
    """The local copy of the checkpoint at ``url``, downloaded once into
    torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``) by
    :func:`torch.hub.download_url_to_file` (with a progress bar on a
    terminal), and verified: the sha256 prefix of an OpenMMLab or torch hub
    name (``...-187da160.pth``), a zip that is whole.  A download that fails
    the check is deleted and never cached; a cached copy that fails it (left
    by another tool) is replaced.

    Raises:
        CheckpointLoadError: one line saying what went wrong (an HTTP error,
            no connection, a download cut short or corrupt).
    """
    name = osp.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise CheckpointLoadError(f'no file name in the URL {url!r}')
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, name)
    if osp.isfile(cached):
        defect = _download_defect(cached)
        if defect is None:
            return cached
        warnings.warn(f'cached checkpoint {cached!r} is {defect}; '
                      'downloading it again')
        os.remove(cached)
    match = _HASH_IN_NAME.search(name)
    tmp = osp.join(model_dir, f'{TMP_PREFIX}{uuid.uuid4().hex}-{name}')
    try:
        _download(url, tmp, match.group(1) if match else None)
        defect = _download_defect(tmp)
        if defect is not None:
            raise CheckpointLoadError(
                f'download of checkpoint {url} is {defect}; nothing was '
                'kept, try again')
        os.replace(tmp, cached)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return cached


def _load_from_http(filename: str, map_location: Optional[Any] = None,
                    model_dir: Optional[str] = None):
    """Download (rank 0 first) and verify, then load weights-only.  A cached
    copy that does not load is deleted, so the next run downloads afresh."""
    rank, world_size = get_dist_info()
    if rank == 0:
        cached = download_checkpoint(filename, model_dir)
    if world_size > 1:
        barrier()
    if rank != 0:
        # Checks the copy rank 0 fetched into a shared cache; a node with a
        # cache of its own downloads here.
        cached = download_checkpoint(filename, model_dir)
    try:
        return safe_load(cached, map_location)
    except UnsafeCheckpointError:
        raise
    except CheckpointLoadError as e:
        if rank == 0 and osp.isfile(cached):
            os.remove(cached)
        raise CheckpointLoadError(
            f'{e} (downloaded from {filename}; the copy was deleted, so '
            'the next run downloads it again)') from None


def write_atomically(filepath: str, data: bytes) -> None:
    """Write ``data`` to ``filepath`` through a temporary file in the same
    folder that is renamed over it once complete: ``filepath`` never holds a
    partial write.  The file gets the permissions ``open`` gives a new file
    (``0o666`` less the umask)."""
    filepath = str(filepath)
    folder = osp.dirname(osp.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder,
                   f'{TMP_PREFIX}{uuid.uuid4().hex}-{osp.basename(filepath)}')
    try:
        with open(tmp, 'xb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def _atomic_put(self, obj: bytes, filepath) -> None:
    """mmengine's ``LocalBackend.put``, through :func:`write_atomically`."""
    write_atomically(filepath, obj)


def _atomic_put_text(self, obj: str, filepath, encoding: str = 'utf-8'):
    write_atomically(filepath, obj.encode(encoding))


def remove_temporaries(folder: str, of: str = '') -> List[str]:
    """Remove the temporary files a save killed midway left in ``folder``
    (``.tmp-*``, never a complete file), or only those of the file named
    ``of``, with a warning that names them; returns the paths removed.

    Only the first process of a run (``RANK`` or ``SLURM_PROCID`` unset or
    0) removes anything: the others may be saving right now.
    """
    if os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0')) != '0':
        return []
    removed = []
    pattern = TMP_PREFIX + '*' + glob.escape(of)
    for path in glob.glob(osp.join(glob.escape(folder), pattern)):
        if not osp.isfile(path):
            continue
        try:
            os.remove(path)
        except FileNotFoundError:  # another process of the run was first
            continue
        removed.append(path)
    if removed:
        warnings.warn(f'removed {len(removed)} temporary file(s) that a save '
                      f'cut short left in {folder!r}: '
                      f'{", ".join(osp.basename(p) for p in removed)}')
    return removed


def install_checkpoint_safety() -> None:
    """Route mmengine's local and http(s) checkpoint loading through
    :func:`safe_load`, and make its local file writes atomic.  Idempotent."""
    LocalBackend.put = _atomic_put
    LocalBackend.put_text = _atomic_put_text
    CheckpointLoader.register_scheme('', _load_from_local, force=True)
    CheckpointLoader.register_scheme(('http://', 'https://'), _load_from_http,
                                     force=True)


# --------------------------------------------------------------------------
# Does a checkpoint fit the model?


def state_dict_of(checkpoint: Any, name: str) -> dict:
    """The state dict of a loaded checkpoint (its ``state_dict`` entry, or
    the checkpoint itself), without the ``module.`` prefix a wrapper saves.

    Raises:
        CheckpointLoadError: it holds no dict.
    """
    state = checkpoint.get('state_dict', checkpoint) if isinstance(
        checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CheckpointLoadError(
            f'checkpoint {name!r} holds {type(checkpoint).__name__}, not a '
            'state dict or a dict with a "state_dict" entry')
    return {k[len('module.'):] if k.startswith('module.') else k: v
            for k, v in state.items()}


def _key_summary(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f', ... and {len(keys) - limit} more'
                    if len(keys) > limit else '')


def compare_state_dicts(expected: dict, state: dict) -> Tuple[int, List[str]]:
    """How many of the model's keys a state dict fills, and what differs.

    Args:
        expected: the model's ``state_dict()``.
        state: the checkpoint's (see :func:`state_dict_of`).

    Returns:
        ``(fitting, lines)``: the number of the model's keys that the
        checkpoint has with the model's shape, and one line each for the
        keys missing from it, those it has that the model has not, and those
        of another shape (empty when it fits exactly).
    """
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model '
              f'{tuple(expected[k].shape)}' for k in set(state) & set(expected)
              if hasattr(state[k], 'shape')
              and state[k].shape != expected[k].shape]
    lines = []
    if missing:
        lines.append(f'{len(missing)} missing (in the model, not in the '
                     f'checkpoint): {_key_summary(missing)}')
    if unexpected:
        lines.append(f'{len(unexpected)} unexpected (in the checkpoint, not '
                     f'in the model): {_key_summary(unexpected)}')
    if shapes:
        lines.append(f'{len(shapes)} of another shape: '
                     f'{_key_summary(shapes, 6)}')
    return len(expected) - len(missing) - len(shapes), lines


class LoadedWeightsCheck(Hook):
    """Stop a training run before its first iteration when the checkpoint
    it loads (``load_from``, or the one it resumes) fills fewer than
    ``min_fraction`` of the model's weights: mmengine loads it non-strictly,
    warns and trains the rest from their initialisation, which for a
    checkpoint of another model is nearly everything.

    A checkpoint of the same backbone with another head (fine-tuning) fills
    most keys and passes; the keys it leaves out are logged by mmengine.

    Args:
        min_fraction: the least part of the model's state dict entries
            the checkpoint must fill (same name, same shape).
    """

    priority = 'VERY_HIGH'

    def __init__(self, min_fraction: float = 0.5) -> None:
        self.min_fraction = min_fraction

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        check_weights_filled(model, checkpoint,
                             runner.cfg.get('load_from') or 'the checkpoint',
                             self.min_fraction)


def check_weights_filled(model: torch.nn.Module, checkpoint: Any, name: str,
                         min_fraction: float = 0.5) -> None:
    """Raise unless ``checkpoint`` (as loaded, under ``load_from=name``)
    fills at least ``min_fraction`` of ``model``'s state dict entries.

    Raises:
        CheckpointLoadError: with the counts and a few names of what differs.
    """
    expected = model.state_dict()
    fitting, lines = compare_state_dicts(expected,
                                         state_dict_of(checkpoint, name))
    if fitting >= min_fraction * len(expected):
        return
    raise CheckpointLoadError(
        f'load_from={name!r} fills {fitting} of the {len(expected)} '
        'weights of the model built from the config, so training would '
        'start from random weights; nothing was trained.\n  ' +
        '\n  '.join(lines) + '\nCheck that load_from is a checkpoint '
        'of this model (--cfg-options load_from=PATH).')
