"""gcnet_mm.utils.mmaction_compat: the stand-in for the package mmaction2
1.2.0's PyPI wheel lacks, on a stand-in mmaction laid out as that wheel is."""
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _fake_mmaction(root, with_drn=False):
    """An ``mmaction`` whose localizers import ``.drn.drn`` as 1.2.0's do;
    ``with_drn`` adds the real package's file (an install from source)."""
    files = {
        '__init__.py': '',
        'registry.py': "from mmengine.registry import Registry\n"
                       "MODELS = Registry('model')\n",
        'models/__init__.py': 'from .localizers import *  # noqa\n',
        'models/localizers/__init__.py':
        'from .bmn import BMN\nfrom .drn.drn import DRN\n',
        'models/localizers/bmn.py': 'class BMN:\n    pass\n',
    }
    if with_drn:
        files['models/localizers/drn/drn.py'] = 'class DRN:\n    real = 1\n'
    for rel, text in files.items():
        path = root / 'mmaction' / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _python(root, code):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), REPO]))
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          capture_output=True, text=True, env=env)


def _compat(root):
    """The module as a script (it needs nothing but the standard library; the
    same as ``python -m gcnet_mm.utils.mmaction_compat`` without importing
    the package)."""
    env = dict(os.environ, PYTHONPATH=str(root))
    script = osp.join(REPO, 'gcnet_mm', 'utils', 'mmaction_compat.py')
    return subprocess.run([sys.executable, script], capture_output=True,
                          text=True, env=env)


def test_stand_in_makes_mmaction_import(tmp_path):
    _fake_mmaction(tmp_path)
    before = _python(tmp_path, 'import mmaction.models')
    assert "No module named 'mmaction.models.localizers.drn'" in before.stderr
    first = _compat(tmp_path)
    assert first.returncode == 0, first.stderr
    assert 'wrote the DRN stand-in' in first.stdout
    again = _compat(tmp_path)
    assert 'present; nothing to do' in again.stdout  # idempotent
    after = _python(tmp_path, """
        import mmaction.models
        from mmaction.registry import MODELS
        try:
            MODELS.build(dict(type='DRN'))
        except ImportError as e:
            print(e)
    """)
    assert after.returncode == 0, after.stderr
    assert 'mmaction2 issue #2714' in after.stdout


def test_nothing_written_where_the_real_package_is(tmp_path):
    _fake_mmaction(tmp_path, with_drn=True)
    out = _compat(tmp_path)
    assert 'present; nothing to do' in out.stdout
    drn = tmp_path / 'mmaction' / 'models' / 'localizers' / 'drn'
    assert sorted(os.listdir(drn)) == ['drn.py']
    assert 'real = 1' in (drn / 'drn.py').read_text()


def test_this_environment_needs_nothing():
    pytest.importorskip('mmaction')
    from gcnet_mm.utils import mmaction_compat
    assert not mmaction_compat.needs_drn_standin()
    assert mmaction_compat.write_drn_standin() is None
