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


def test_a_test_run_leaves_a_training_s_save_alone(tmp_path, monkeypatch):
    """A test run may share the work dir with a training that is saving:
    it removes no temporary file there, and of --out's folder only those of
    the --out file itself."""
    from gcnet_mm.datasets import make_imagenet
    from gcnet_mm.engine.runner_cfg import prepare_test_cfg
    make_imagenet(str(tmp_path / 'data' / 'toy_imagenet'))
    monkeypatch.chdir(tmp_path)
    work_dir, results = tmp_path / 'work_dir', tmp_path / 'results'
    work_dir.mkdir()
    results.mkdir()
    (work_dir / '.tmp-k2x9_q1epoch_3.pth').write_bytes(b'x')
    (work_dir / 'epoch_2.pth').write_bytes(b'x')
    for name in ('.tmp-0a1b2c3dpreds.pkl', '.tmp-9z8y7x6wother.pkl'):
        (results / name).write_bytes(b'x')
    config = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                      'configs', '_toy_',
                      'resnet50-gcb-r16-c3-c5_toy-imagenet.py')
    with pytest.warns(UserWarning, match='removed 1 temporary file'):
        prepare_test_cfg(config, str(work_dir / 'epoch_2.pth'),
                         work_dir=str(work_dir),
                         out=str(results / 'preds.pkl'))
    assert sorted(p.name for p in work_dir.iterdir()) == [
        '.tmp-k2x9_q1epoch_3.pth', 'epoch_2.pth']
    assert [p.name for p in results.iterdir()] == ['.tmp-9z8y7x6wother.pkl']


def test_pickle_module_is_not_used_for_unknown_types(tmp_path):
    """A class of the user's own is refused too (not only os.system)."""
    path = str(tmp_path / 'custom.pth')
    torch.save({'obj': pickle.PickleError('x')}, path)
    with pytest.raises(CheckpointLoadError, match='PickleError'):
        safe_load(path)


class _GetattrOnArray:
    """A pickle that asks getattr for ``ndarray.tofile`` (which writes
    files)."""

    def __reduce__(self):
        return (getattr, (np.ndarray, 'tofile'))


def test_getattr_only_for_history_buffer(tmp_path):
    path = str(tmp_path / 'getattr.pth')
    torch.save({'f': _GetattrOnArray()}, path)
    with pytest.raises(CheckpointLoadError, match='getattr'):
        safe_load(path)


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(folder, base URL): files in the folder over HTTP on 127.0.0.1, and
    an empty torch hub cache.  A request for ``NAME.cut`` announces the whole
    of NAME and sends half of it (a connection that breaks off)."""
    import http.server
    import threading
    folder = tmp_path / 'served'
    folder.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

        def do_GET(self):
            if not self.path.endswith('.cut'):
                return super().do_GET()
            data = (folder / self.path[1:-len('.cut')]).read_bytes()
            self.send_response(200)
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])
            self.close_connection = True

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    yield folder, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


def _hub_cache(tmp_path):
    folder = tmp_path / 'torch_home' / 'hub' / 'checkpoints'
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_checkpoint_from_url(served):
    """tools/test.py takes a URL: it is downloaded, then loaded weights-only
    (served here from 127.0.0.1)."""
    folder, url = served
    torch.save(_mm_like_checkpoint(), str(folder / 'good.pth'))
    torch.save({'payload': _RunsCode()}, str(folder / 'evil.pth'))
    loaded = _load_checkpoint(f'{url}/good.pth', map_location='cpu')
    assert loaded['meta']['epoch'] == 1
    with pytest.raises(CheckpointLoadError, match='refused'):
        _load_checkpoint(f'{url}/evil.pth', map_location='cpu')
    assert not osp.exists('/tmp/gcnet_mm_pwned')


def _one_line(error):
    message = str(error.value)
    assert '\n' not in message and 'Traceback' not in message
    return message


def test_http_error_is_one_clear_line(served, tmp_path):
    _, url = served
    with pytest.raises(CheckpointLoadError) as e:
        _load_checkpoint(f'{url}/missing.pth', map_location='cpu')
    message = _one_line(e)
    assert 'HTTP 404' in message and f'{url}/missing.pth' in message
    with pytest.raises(CheckpointLoadError, match='cannot download'):
        _load_checkpoint('http://127.0.0.1:9/x.pth', map_location='cpu')
    assert _hub_cache(tmp_path) == []


def test_download_that_breaks_off_is_not_cached(served, tmp_path):
    folder, url = served
    torch.save(_mm_like_checkpoint(), str(folder / 'model.pth'))
    with pytest.raises(CheckpointLoadError) as e:
        _load_checkpoint(f'{url}/model.pth.cut', map_location='cpu')
    assert 'broke off' in _one_line(e) or 'incomplete' in str(e.value)
    assert _hub_cache(tmp_path) == []


def test_truncated_file_on_the_server_is_never_cached(served, tmp_path):
    """The server holds half a checkpoint: the download fails and nothing is
    cached, so once the server is fixed the next load gets the whole file."""
    folder, url = served
    torch.save(_mm_like_checkpoint(), str(folder / 'full.pth'))
    data = (folder / 'full.pth').read_bytes()
    (folder / 'model.pth').write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointLoadError, match='truncated'):
        _load_checkpoint(f'{url}/model.pth', map_location='cpu')
    assert _hub_cache(tmp_path) == []
    (folder / 'model.pth').write_bytes(data)  # the server is fixed
    loaded = _load_checkpoint(f'{url}/model.pth', map_location='cpu')
    assert loaded['meta']['epoch'] == 1
    assert _hub_cache(tmp_path) == ['model.pth']


def test_sha256_in_the_name_is_checked(served, tmp_path):
    import hashlib
    folder, url = served
    torch.save(_mm_like_checkpoint(), str(folder / 'x.pth'))
    data = (folder / 'x.pth').read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:8]
    wrong = format(int(digest, 16) ^ 1, '08x')
    (folder / f'model_20200515-{wrong}.pth').write_bytes(data)
    with pytest.raises(CheckpointLoadError, match=f'sha256.*{wrong}'):
        _load_checkpoint(f'{url}/model_20200515-{wrong}.pth',
                         map_location='cpu')
    assert _hub_cache(tmp_path) == []
    (folder / f'model_20200515-{digest}.pth').write_bytes(data)
    _load_checkpoint(f'{url}/model_20200515-{digest}.pth', map_location='cpu')
    assert _hub_cache(tmp_path) == [f'model_20200515-{digest}.pth']


def test_bad_cached_copy_is_replaced(served, tmp_path):
    """A truncated file that another tool left in torch's hub cache is
    downloaded again instead of being reused forever."""
    folder, url = served
    torch.save(_mm_like_checkpoint(), str(folder / 'model.pth'))
    data = (folder / 'model.pth').read_bytes()
    cache = tmp_path / 'torch_home' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    (cache / 'model.pth').write_bytes(data[:len(data) // 3])
    with pytest.warns(UserWarning, match='downloading it again'):
        loaded = _load_checkpoint(f'{url}/model.pth', map_location='cpu')
    assert loaded['meta']['epoch'] == 1
    assert (cache / 'model.pth').read_bytes() == data
