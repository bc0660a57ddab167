"""The install's self-check: passes on this environment, names what is broken
otherwise, and a ready machine re-runs the set-up in seconds."""
import os.path as osp
import subprocess
import sys

import pytest

from gcnet_mm.utils import env_check

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_env_check_passes_here(capsys):
    assert env_check.main([]) == 0
    out = capsys.readouterr().out
    for name in ('mmcv', 'nms and RoIAlign run', 'mmdet', 'mmseg',
                 'mmpretrain', 'mmaction2 1.2.0', 'recognizer with a GC block',
                 'environment OK'):
        assert name in out


def test_env_check_names_what_is_broken(monkeypatch, capsys):
    def broken():
        raise ImportError('libmmcv_ops.so: cannot open shared object file')

    monkeypatch.setattr(env_check, '_check_mmcv_ops', broken)
    assert env_check.main([]) == 1
    err = capsys.readouterr().err
    assert 'FAIL  mmcv ops' in err and 'libmmcv_ops.so' in err
    assert 'tools/setup_env.sh' in err


def test_env_check_says_how_to_fix_mmaction(monkeypatch, capsys):
    import builtins
    real_import = builtins.__import__

    def without_drn(name, *args, **kwargs):
        if name == 'mmaction.models':
            raise ModuleNotFoundError(
                "No module named 'mmaction.models.localizers.drn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', without_drn)
    assert env_check.main([]) == 1
    err = capsys.readouterr().err
    assert 'FAIL  mmaction2' in err and 'localizers.drn' in err
    assert 'python -m gcnet_mm.utils.mmaction_compat' in err


def test_env_check_checks_the_hosts_that_are_installed(monkeypatch,
                                                       capsys):
    """A user's environment with some of the hosts passes and says which
    are missing; the project's own (--all-hosts) needs all four; none at
    all is an error."""
    installed = env_check._installed
    monkeypatch.setattr(env_check, '_installed', lambda p: p not in (
        'mmdet', 'mmaction') and installed(p))
    assert env_check.main([]) == 0
    out = capsys.readouterr().out
    assert 'mmdet: not installed (pip install -e .[det])' in out  # a clone
    assert 'mmaction2: not installed (docs/mmaction2.md)' in out
    assert 'mmseg 1.2' in out and 'mmpretrain 1.2' in out
    assert 'its base: mmseg::' in out
    assert 'environment OK' in out

    def absent(name, *args, **kwargs):
        raise ModuleNotFoundError(f"No module named '{name}'")

    check_host = env_check._check_host
    monkeypatch.setattr(env_check, '_check_host', lambda h: absent(h)
                        if h == 'mmdet' else check_host(h))
    monkeypatch.setattr(env_check, '_check_mmaction', lambda: absent(
        'mmaction'))
    assert env_check.main(['--all-hosts']) == 1
    err = capsys.readouterr().err
    assert "FAIL  mmdet: ModuleNotFoundError: No module named 'mmdet'" in err
    assert 'FAIL  mmaction2' in err

    monkeypatch.setattr(env_check, '_installed', lambda p: False)
    assert env_check.main([]) == 1
    err = capsys.readouterr().err
    assert 'FAIL  hosts: none of mmdet, mmseg, mmpretrain, mmaction2' in err


def test_env_check_reads_a_host_config(monkeypatch, capsys):
    """Without pkg_resources (setuptools >= 81) mmengine 0.10 reads no
    config with an mmdet:: base: the check says so and how to fix it."""
    assert env_check.main([]) == 0
    assert 'its base: mmdet::' in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, 'pkg_resources', None)
    assert env_check.main([]) == 1
    err = capsys.readouterr().err
    assert 'FAIL  host configs' in err and "setuptools<81" in err


def test_setup_on_a_ready_machine_is_quick():
    """The README's commands start with tools/setup_env.sh; when .venv is up
    to date it only verifies (no pip), which the output says."""
    if not osp.isfile(osp.join(REPO, '.venv', '.gcnet_mm-setup')) or \
            not sys.prefix.startswith(osp.join(REPO, '.venv')):
        pytest.skip('runs inside the project .venv only')
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', 'setup_env.sh')],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'environment up to date' in proc.stderr
    assert 'environment OK' in proc.stdout


#: torch APIs the package calls without a fallback, and the release that
#: added each: setup.py's minimum must be at least the newest of them.
#: (get_unsafe_globals_in_checkpoint, 2.5, only improves an error message.)
TORCH_APIS = {
    'torch.amp.is_autocast_available': (2, 4),
    'torch.serialization.add_safe_globals': (2, 4),
    'torch.compiler.is_compiling': (2, 3),
}


def test_setup_states_the_torch_the_code_needs():
    import glob
    import re

    import torch
    with open(osp.join(REPO, 'setup.py')) as f:
        minimum = re.search(r"'torch>=(\d+)\.(\d+)'", f.read())
    assert minimum, 'setup.py states no torch minimum'
    minimum = tuple(map(int, minimum.groups()))
    source = ''
    for path in glob.glob(osp.join(REPO, 'gcnet_mm', '**', '*.py'),
                          recursive=True):
        with open(path) as f:
            source += f.read()
    used = {api: version for api, version in TORCH_APIS.items()
            if api in source}
    assert used, 'none of the listed APIs is used: update TORCH_APIS'
    assert minimum >= max(used.values()), (minimum, used)
    for api in used:  # and they are where the table says
        obj = torch
        for name in api.split('.')[1:]:
            obj = getattr(obj, name)


def test_setup_states_the_python_that_setup_env_and_the_readme_accept():
    """setup.py's python_requires starts where tools/setup_env.sh and the
    README start."""
    import re
    with open(osp.join(REPO, 'setup.py')) as f:
        required = re.search(r"python_requires='>=3\.(\d+)'", f.read())
    with open(osp.join(REPO, 'tools', 'setup_env.sh')) as f:
        accepted = re.search(
            r'\(3, (\d+)\) <= sys\.version_info\[:2\] <= \(3, (\d+)\)',
            f.read())
    with open(osp.join(REPO, 'README.md')) as f:
        readme = re.search(r'Python 3\.(\d+) to 3\.(\d+)', f.read())
    assert required and accepted and readme
    assert required.group(1) == accepted.group(1) == readme.group(1)
    assert accepted.group(2) == readme.group(2)


# -- a user's own environment -------------------------------------------------
def _import_failing(monkeypatch, package, error):
    """``import package`` (and its submodules) raises ``error`` from now
    on, as it would in an environment where it is missing or broken."""
    import builtins
    real_import = builtins.__import__

    def failing(name, *args, **kwargs):
        if name.split('.')[0] == package:
            raise error
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', failing)


def _elsewhere(monkeypatch):
    """As if the package were installed into an environment of the user's
    own, not into the checkout's .venv/ (nor from a checkout)."""
    monkeypatch.setattr(env_check, '_in_project_venv', lambda: False,
                        raising=False)
    monkeypatch.setattr(env_check, '_CHECKOUT', None, raising=False)


def test_mmdet_without_torchvision_is_fine_and_says_what_needs_it(
        monkeypatch, capsys):
    """mmdet alone imports no torchvision; only configs that start from
    torchvision:// weights need it: a note with the pip command of the
    torchvision made for this torch, not a failure."""
    import torch
    _elsewhere(monkeypatch)
    monkeypatch.setattr(env_check, '_installed', lambda p: p == 'mmdet')
    _import_failing(monkeypatch, 'torchvision', ModuleNotFoundError(
        "No module named 'torchvision'", name='torchvision'))
    assert env_check.main([]) == 0
    captured = capsys.readouterr()
    assert 'FAIL' not in captured.err and 'environment OK' in captured.out
    minor = int(torch.__version__.split('.')[1])
    assert (f'--    torchvision: not installed (mmdet configs whose backbone '
            'starts from torchvision:// weights (the package\'s detection '
            f'configs) need it to train: pip install "torchvision==0.'
            f'{minor + 15}.*"') in captured.out
    # outside a checkout, a missing host is a requirement to install
    assert 'mmseg: not installed (pip install "mmsegmentation>=1.0.0,' \
        '<1.3.0")' in captured.out


def test_a_host_that_imports_torchvision_needs_it(monkeypatch, capsys):
    _elsewhere(monkeypatch)
    monkeypatch.setattr(env_check, '_installed',
                        lambda p: p in ('mmdet', 'mmpretrain'))
    _import_failing(monkeypatch, 'torchvision', ModuleNotFoundError(
        "No module named 'torchvision'", name='torchvision'))
    monkeypatch.setattr(env_check, '_check_host', lambda name: name)
    assert env_check.main([]) == 1
    err = capsys.readouterr().err
    assert 'FAIL  torchvision: torchvision is not installed and mmpretrain ' \
        'imports it' in err
    assert 'pip install "torchvision==0.' in err
    # the advice fits where it runs: not the checkout's set-up script
    assert 'tools/setup_env.sh' not in err
    assert 'broken: torchvision; each FAIL line says how to fix it' in err


def test_cpu_torch_beside_pypi_torchvision_gets_its_own_fix(
        monkeypatch, capsys):
    """torchvision from PyPI is built for PyPI's CUDA torch; beside a CPU
    torch its ops do not load (at import): the sentence says why and gives
    the torchvision of torch's own CPU index."""
    import torch
    _elsewhere(monkeypatch)
    monkeypatch.setattr(torch, '__version__', '2.5.1+cpu')
    monkeypatch.setattr(env_check, '_installed', lambda p: p == 'mmdet')
    _import_failing(monkeypatch, 'torchvision', RuntimeError(
        'operator torchvision::nms does not exist'))
    assert env_check.main([]) == 1
    err = capsys.readouterr().err
    line, = [x for x in err.splitlines() if 'FAIL  torchvision' in x]
    assert 'does not fit torch 2.5.1+cpu' in line
    assert 'operator torchvision::nms does not exist' in line
    assert 'a CPU-only torch next to torchvision from PyPI' in line
    assert line.endswith('pip install "torchvision==0.20.*" --index-url '
                         'https://download.pytorch.org/whl/cpu')


def test_setup_env_advice_only_in_the_checkouts_venv(monkeypatch, capsys):
    def broken():
        raise ImportError('libmmcv_ops.so: cannot open shared object file')

    monkeypatch.setattr(env_check, '_check_mmcv_ops', broken)
    monkeypatch.setattr(env_check, '_in_project_venv', lambda: True)
    assert env_check.main(['--quick']) == 1
    assert 'rerun tools/setup_env.sh' in capsys.readouterr().err
    _elsewhere(monkeypatch)
    assert env_check.main(['--quick']) == 1
    err = capsys.readouterr().err
    assert 'setup_env' not in err
    assert 'FAIL  mmcv ops: ImportError: libmmcv_ops.so' in err
    assert 'with its compiled ops, built for this torch' in err


@pytest.mark.parametrize('torch_version, command', [
    ('2.13.0', 'pip install "torchvision==0.28.*"'),
    ('2.4.1+cu121', 'pip install "torchvision==0.19.*" --index-url '
     'https://download.pytorch.org/whl/cu121'),
    ('2.5.0+cpu', 'pip install "torchvision==0.20.*" --index-url '
     'https://download.pytorch.org/whl/cpu'),
])
def test_torchvision_for_each_torch(torch_version, command):
    assert env_check.torchvision_for(torch_version) == command
