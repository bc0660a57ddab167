"""One rule for every tool: it imports the gcnet_mm of the environment it
runs in (the installed package; ``pip install -e .`` in a clone), and never
puts the checkout it lies in first on ``sys.path``."""
import ast
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest

from conftest import REPO


def _imports_gcnet_mm(path):
    """Whether the module imports gcnet_mm when it starts (a tool that
    imports it only inside a function does so after parsing its options)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ''] if isinstance(node, ast.ImportFrom)
                 else [])
        if any(n.split('.')[0] == 'gcnet_mm' for n in names):
            return True
    return False


#: The tools that import gcnet_mm as they start (a test checks that the list
#: holds the known ones).
TOOLS = sorted(
    osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'tools', '**',
                                                     '*.py'), recursive=True)
    if _imports_gcnet_mm(p))


def test_the_tools_are_found():
    assert {'tools/train.py', 'tools/test.py',
            'tools/analysis/get_complexity.py',
            'tools/analysis/query_independence.py',
            'tools/analysis/show_gc_attention.py',
            'tools/misc/make_toy_data.py'} <= set(TOOLS)


@pytest.mark.parametrize('tool', TOOLS)
def test_a_tool_imports_the_environments_gcnet_mm(tool, tmp_path):
    """With another gcnet_mm first on PYTHONPATH (as an installed one is on
    the environment's path), the tool imports that one, not the one of the
    checkout it lies in."""
    fake = tmp_path / 'site' / 'gcnet_mm'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text(
        "import sys\nsys.exit('the environment\\'s gcnet_mm')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / 'site'))
    proc = subprocess.run([sys.executable, osp.join(REPO, tool), '--help'],
                          cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=300)
    assert "the environment's gcnet_mm" in proc.stderr, (
        f'{tool} did not import the environment\'s gcnet_mm:\n'
        f'{proc.stdout[-2000:]}{proc.stderr[-2000:]}')
