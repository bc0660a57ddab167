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
    body = [n for node in tree.body
            for n in (node.body if isinstance(node, ast.Try) else [node])]
    for node in body:
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
            'tools/misc/make_toy_data.py',
            'tools/benchmark/benchmark_blocks.py',
            'tools/benchmark/triton_code.py',
            'tools/gpu_check/check.py'} <= set(TOOLS)


def _sys_path_edits(path):
    """Lines of the module that change ``sys.path`` (a call of one of its
    methods, or an assignment to it or to an item of it)."""
    with open(path) as f:
        tree = ast.parse(f.read())

    def is_sys_path(node):
        return (isinstance(node, ast.Attribute) and node.attr == 'path'
                and isinstance(node.value, ast.Name)
                and node.value.id == 'sys')

    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and is_sys_path(node.func.value)):
            lines.append(node.lineno)
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, ast.AugAssign) else [])
        for t in targets:
            if is_sys_path(t) or (isinstance(t, ast.Subscript)
                                  and is_sys_path(t.value)):
                lines.append(node.lineno)
    return sorted(lines)


def test_no_tool_edits_sys_path(tmp_path):
    """The tools share code through the gcnet_mm package (e.g.
    gcnet_mm.benchmark), never by putting a folder on ``sys.path``."""
    edits = {osp.relpath(p, REPO): _sys_path_edits(p) for p in glob.glob(
        osp.join(REPO, 'tools', '**', '*.py'), recursive=True)}
    assert {k: v for k, v in edits.items() if v} == {}
    sample = tmp_path / 'sample.py'
    sample.write_text('import sys\nsys.path.insert(0, "x")\n'
                      'sys.path[:0] = ["y"]\nsys.path += ["z"]\n')
    assert _sys_path_edits(str(sample)) == [2, 3, 4]


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
