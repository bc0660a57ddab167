"""The package as a user gets it from ``pip install .`` (not editable): a
wheel built from a copy of the checkout, installed into a virtual
environment that sees this one's packages (not its gcnet_mm), used
from another directory: the shipped configs, ``gcnet_mm::`` bases and the
tools.  The wheel is built without the fused CPU loops
(``GCNET_MM_WITH_EXT=0``), which test_fused_loops.py covers."""
import email
import glob
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _run(cmd, cwd, env=None, check=True):
    env = {k: v for k, v in (env or os.environ).items() if k != 'PYTHONPATH'}
    proc = subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True,
                          text=True)
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        pytest.fail(f'{" ".join(map(str, cmd))} exited {proc.returncode}:\n'
                    f'{out[-4000:]}')
    return proc.returncode, out


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(python of a venv with the wheel installed, the wheel's path)."""
    root = tmp_path_factory.mktemp('install')
    source = root / 'source'
    shutil.copytree(
        REPO, source, symlinks=True,
        ignore=shutil.ignore_patterns('.git', '.venv', 'build', 'dist',
                                      '*.egg-info', 'work_dirs', 'data',
                                      '__pycache__', '*.so', '.pytest_cache'))
    env = dict(os.environ, GCNET_MM_WITH_EXT='0')
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-build-isolation',
          '--no-deps', '-q', '-w', str(root / 'dist'), str(source)], root, env)
    wheel, = glob.glob(str(root / 'dist' / 'gcnet_mm-*.whl'))
    # a venv that sees this environment's packages (what --system-site-
    # packages gives when this one is the system), but not its editable
    # install of gcnet_mm: a path line in a .pth file runs no .pth there
    _run([sys.executable, '-m', 'venv', str(root / 'venv')], root)
    python = str(root / 'venv' / 'bin' / 'python')
    _, site = _run([python, '-c', 'import sysconfig; '
                    'print(sysconfig.get_paths()["purelib"])'], root)
    with open(osp.join(site.strip(), '_outer_env.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    _run([python, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index',
          wheel], root)
    return python, wheel


@pytest.fixture
def elsewhere(tmp_path):
    """A working directory outside the checkout."""
    return tmp_path


def test_the_venv_imports_the_wheel(installed, elsewhere):
    python, _ = installed
    _, out = _run([python, '-c', 'import gcnet_mm; print(gcnet_mm.__file__)'],
                  elsewhere)
    path = out.strip().splitlines()[-1]
    assert path.startswith(osp.dirname(osp.dirname(python)))
    assert not path.startswith(REPO)


def test_wheel_ships_the_configs_and_declares_its_requirements(installed):
    _, wheel = installed
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta, = [n for n in names if n.endswith('.dist-info/METADATA')]
        metadata = email.message_from_bytes(z.read(meta))
        requires = metadata.get_all('Requires-Dist')
    prefix = 'gcnet_mm/.mim/configs/'
    shipped = {n[len(prefix):] for n in names if n.startswith(prefix)}
    in_repo = {osp.relpath(p, osp.join(REPO, 'configs'))
               for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                                  recursive=True)}
    assert in_repo <= shipped
    assert 'gcnet_mm/__main__.py' in names
    assert 'setuptools<81' in requires
    torch = next(r for r in requires if r.startswith('torch'))
    assert torch == 'torch>=2.4', requires
    assert metadata['Requires-Python'] == '>=3.10'


def test_mmengine_finds_the_wheel_s_configs_itself(installed, elsewhere):
    """Installed from a wheel, the package needs no wrap of mmengine's
    get_installed_path for its gcnet_mm:: configs (the wrap serves editable
    installs: tests/test_import_effects.py)."""
    python, _ = installed
    _, out = _run([python, '-c', 'import os.path as osp, mmengine.utils as u;'
                   ' print(osp.isdir(osp.join(u.get_installed_path('
                   '"gcnet_mm"), ".mim", "configs")))'], elsewhere)
    assert out.strip().splitlines()[-1] == 'True'


def test_paper_tables_from_another_directory(installed, elsewhere):
    python, _ = installed
    tool = osp.join(REPO, 'tools', 'analysis', 'get_complexity.py')
    _, out = _run([python, tool, '--paper-tables', '4a', '--params-only'],
                  elsewhere)
    assert 'Table 4(a)' in out and '| +all GC |' in out


def test_a_user_config_on_a_gcnet_mm_base(installed, elsewhere):
    """A user's config inheriting ``gcnet_mm::...`` in their own folder:
    the tools read it (a parameter count, and tools/train.py up to the
    missing data, named with the keys to set)."""
    python, _ = installed
    (elsewhere / 'my_config.py').write_text(
        "_base_ = 'gcnet_mm::classification/gcnet/"
        "resnet50-gcb-r16-c3-c5_8xb64-ft-coslr-40e_in1k.py'\n"
        "load_from = None\n")
    tool = osp.join(REPO, 'tools', 'analysis', 'get_complexity.py')
    _, out = _run([python, tool, 'my_config.py', '--params-only'], elsewhere)
    assert 'params: 28.08M' in out
    rc, out = _run([python, osp.join(REPO, 'tools', 'train.py'),
                    'my_config.py'], elsewhere, check=False)
    assert rc != 0 and 'Traceback' not in out, out[-3000:]
    assert 'train_dataloader.dataset.data_root' in out


def test_env_check_in_the_installed_package(installed, elsewhere):
    python, _ = installed
    env = dict(os.environ, GCNET_MM_WITH_EXT='0')  # built without _ext
    _, out = _run([python, '-m', 'gcnet_mm.utils.env_check'], elsewhere, env)
    assert 'its base: mmdet::' in out and 'environment OK' in out
