"""Weights-only checkpoint loading with OpenMMLab's types allowed, clear errors
for missing, truncated and malicious files, and atomic saving."""
import os
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint

from gcnet_mm.engine import (CheckpointLoadError, install_checkpoint_safety,
                             safe_load)


@pytest.fixture(autouse=True)
def _installed():
    install_checkpoint_safety()


def _mm_like_checkpoint():
    """What mmengine's Runner.save_checkpoint writes, in miniature."""
    buf = HistoryBuffer()
    for v in (1.5, 2.5):
        buf.update(v)
    return {
        'meta': {'epoch': 1, 'iter': 4, 'seed': np.int64(3),
                 'dataset_meta': {'classes': ('a', 'b')},
                 'mean': np.array([1., 2.], dtype=np.float32)},
        'state_dict': {'w': torch.randn(2, 3)},
        'message_hub': {'log_scalars': {'train/loss': buf},
                        'runtime_info': {'epoch': 1}},
    }


def test_openmmlab_checkpoint_loads_weights_only(tmp_path):
    path = str(tmp_path / 'epoch_1.pth')
    ckpt = _mm_like_checkpoint()
    torch.save(ckpt, path)
    # Plain weights-only torch.load rejects HistoryBuffer without the allowlist
    # in a fresh process; here it goes through mmengine's own loader.
    loaded = _load_checkpoint(path, map_location='cpu')
    assert torch.equal(loaded['state_dict']['w'], ckpt['state_dict']['w'])
    buf = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer) and buf.current() == 2.5
    assert loaded['meta']['seed'] == 3
    np.testing.assert_array_equal(loaded['meta']['mean'], [1., 2.])


class _RunsCode:
    def __reduce__(self):
        return (os.system, ('touch /tmp/gcnet_mm_pwned',))


def test_malicious_checkpoint_is_refused_and_nothing_runs(tmp_path):
    marker = '/tmp/gcnet_mm_pwned'
    if osp.exists(marker):
        os.remove(marker)
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'payload': _RunsCode()}, path)
    with pytest.raises(CheckpointLoadError) as err:
        _load_checkpoint(path, map_location='cpu')
    msg = str(err.value)
    assert 'evil.pth' in msg and 'system' in msg and 'refused' in msg
    assert not osp.exists(marker)


def test_malicious_legacy_pickle_is_refused(tmp_path):
    path = str(tmp_path / 'evil_legacy.pth')
    torch.save({'payload': _RunsCode()}, path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointLoadError, match='refused'):
        safe_load(path)
    assert not osp.exists('/tmp/gcnet_mm_pwned')


def test_missing_checkpoint(tmp_path):
    path = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        _load_checkpoint(path)


@pytest.mark.parametrize('keep', [0, 100, 0.5])
def test_truncated_checkpoint(tmp_path, keep):
    path = str(tmp_path / 'cut.pth')
    torch.save(_mm_like_checkpoint(), path)
    data = open(path, 'rb').read()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    with open(path, 'wb') as f:
        f.write(data[:n])
    with pytest.raises(CheckpointLoadError, match='cut.pth'):
        _load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / 'notes.pth'
    path.write_text('these are not weights')
    with pytest.raises(CheckpointLoadError, match='not a PyTorch checkpoint'):
        safe_load(str(path))


def test_atomic_put_keeps_old_file_when_write_fails(tmp_path, monkeypatch):
    from mmengine.fileio.backends import LocalBackend
    target = tmp_path / 'epoch_1.pth'
    backend = LocalBackend()
    backend.put(b'old', str(target))

    def boom(fd):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'fsync', boom)
    with pytest.raises(OSError, match='disk full'):
        backend.put(b'new-but-never-finished', str(target))
    assert target.read_bytes() == b'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth']


@pytest.fixture
def umask():
    """Set the process umask for a test, then put the old one back."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize('mask', [0o022, 0o027, 0o077], ids=oct)
def test_saved_files_honour_the_umask(tmp_path, umask, mask):
    """Checkpoints (mmengine's save_checkpoint), result pickles (mmengine's
    dump, which DumpResults uses) and text files come out as ``open`` makes
    them: 0o666 less the umask, 0o644 under the usual 022."""
    import mmengine
    from mmengine.runner.checkpoint import save_checkpoint
    umask(mask)
    save_checkpoint(_mm_like_checkpoint(), str(tmp_path / 'epoch_1.pth'))
    mmengine.dump([{'pred': np.zeros(2)}], str(tmp_path / 'results.pkl'))
    mmengine.dump({'a': 1}, str(tmp_path / 'scalars.json'))
    with open(tmp_path / 'plain.txt', 'w') as f:  # the reference
        f.write('x')
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(
        ['epoch_1.pth', 'results.pkl', 'scalars.json', 'plain.txt'],
        0o666 & ~mask), {k: oct(v) for k, v in modes.items()}


def test_temporaries_of_a_killed_save_are_removed_at_the_next_start(
        tmp_path, monkeypatch):
    from gcnet_mm.datasets import make_imagenet
    from gcnet_mm.engine.runner_cfg import prepare_train_cfg
    make_imagenet(str(tmp_path / 'data' / 'toy_imagenet'))
    monkeypatch.chdir(tmp_path)
    work_dir = tmp_path / 'work_dir'
    work_dir.mkdir()
    for name in ('.tmp-k2x9_q1epoch_3.pth', '.tmp-0a1b2c3dlast_checkpoint',
                 'epoch_2.pth', '.tmprc', 'notes.tmp-1'):
        (work_dir / name).write_bytes(b'x')
    config = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                      'configs', '_toy_',
                      'resnet50-gcb-r16-c3-c5_toy-imagenet.py')
    with pytest.warns(UserWarning, match='removed 2 temporary file'):
        prepare_train_cfg(config, work_dir=str(work_dir))
    assert sorted(p.name for p in work_dir.iterdir()) == [
        '.tmprc', 'epoch_2.pth', 'notes.tmp-1']


def test_pickle_module_is_not_used_for_unknown_types(tmp_path):
    """A class of the user's own is refused too (not only os.system)."""
    path = str(tmp_path / 'custom.pth')
    torch.save({'obj': pickle.PickleError('x')}, path)
    with pytest.raises(CheckpointLoadError, match='PickleError'):
        safe_load(path)



class _GetattrOnArray:
    """A pickle that asks getattr for ``ndarray.tofile`` (which writes files)."""

    def __reduce__(self):
        return (getattr, (np.ndarray, 'tofile'))


def test_getattr_only_for_history_buffer(tmp_path):
    path = str(tmp_path / 'getattr.pth')
    torch.save({'f': _GetattrOnArray()}, path)
    with pytest.raises(CheckpointLoadError, match='getattr'):
        safe_load(path)


def test_checkpoint_from_url(tmp_path, monkeypatch):
    """tools/test.py takes a URL: it is downloaded, then loaded weights-only
    (served here from 127.0.0.1)."""
    import functools
    import http.server
    import threading
    served = tmp_path / 'served'
    served.mkdir()
    torch.save(_mm_like_checkpoint(), str(served / 'good.pth'))
    torch.save({'payload': _RunsCode()}, str(served / 'evil.pth'))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}'
        loaded = _load_checkpoint(f'{url}/good.pth', map_location='cpu')
        assert loaded['meta']['epoch'] == 1
        with pytest.raises(CheckpointLoadError, match='refused'):
            _load_checkpoint(f'{url}/evil.pth', map_location='cpu')
        assert not osp.exists('/tmp/gcnet_mm_pwned')
    finally:
        server.shutdown()
