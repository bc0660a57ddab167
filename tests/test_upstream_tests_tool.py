"""tools/misc/upstream_tests.py, on stand-in sources at upstream's paths:
the tests it assembles see gcnet_mm's classes under upstream's names (and
upstream's with --upstream), a failing test fails the run, and sources
without the expected files are named."""
import importlib.util
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(REPO, 'tools', 'misc', 'upstream_tests.py')

pytestmark = pytest.mark.slow

spec = importlib.util.spec_from_file_location('upstream_tests', TOOL)
upstream_tests = importlib.util.module_from_spec(spec)
spec.loader.exec_module(upstream_tests)

# What each stand-in test asserts: True under the binding, False without it.
PROBES = {
    'mmcv': ('from mmcv.cnn import NonLocal2d\n'
             'from mmcv.cnn.bricks import ContextBlock\n'
             'OURS = (ContextBlock.__module__.startswith("gcnet_mm") and\n'
             '        NonLocal2d.__module__.startswith("gcnet_mm"))\n'),
    'mmseg': ('from mmseg.models.decode_heads import GCHead, NLHead\n'
              'from .utils import HELPER\n'
              'OURS = (GCHead.__module__.startswith("gcnet_mm") and\n'
              '        NLHead.__module__.startswith("gcnet_mm"))\n'),
    'mmdet': ('from mmdet.models.backbones.resnet import Bottleneck\n'
              'block = Bottleneck(64, 16, plugins=[dict(\n'
              '    cfg=dict(type="ContextBlock", ratio=1. / 16),\n'
              '    position="after_conv3")])\n'
              'OURS = type(block.context_block).__module__.startswith(\n'
              '    "gcnet_mm")\n'),
}


def stand_in_sources(root, expect_ours):
    """A folder per host with a test at each of upstream's test paths."""
    sources = {}
    for host, (_, files) in upstream_tests.UPSTREAM_TESTS.items():
        src = root / host
        for rel in files:
            path = src / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if osp.basename(rel) == 'utils.py':
                path.write_text('HELPER = 1\n')
                continue
            name = osp.splitext(osp.basename(rel))[0]
            path.write_text(PROBES[host] + f'\n\ndef {name}():\n'
                            f'    assert OURS is {expect_ours}\n')
        sources[host] = str(src)
    return sources


def run(sources, *extra):
    args = [f'--{host}={src}' for host, src in sources.items()]
    proc = subprocess.run(
        [sys.executable, TOOL, *args, *extra, '--', '-q', '-rA'],
        capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_tests_see_gcnet_mm_classes(tmp_path):
    rc, out = run(stand_in_sources(tmp_path, True))
    assert rc == 0, out[-3000:]
    assert 'against gcnet_mm classes' in out
    assert '6 passed' in out, out[-3000:]  # two test files per host


def test_the_control_sees_upstream_classes(tmp_path):
    rc, out = run(stand_in_sources(tmp_path, False), '--upstream')
    assert rc == 0, out[-3000:]
    assert 'against upstream classes' in out and '6 passed' in out


def test_a_failing_upstream_test_fails_the_run(tmp_path):
    rc, out = run(stand_in_sources(tmp_path, False))  # expects upstream's
    assert rc == 1 and '6 failed' in out, out[-3000:]


def test_sources_without_the_tests_are_named(tmp_path):
    sources = stand_in_sources(tmp_path, True)
    (tmp_path / 'mmcv' / 'tests' / 'test_cnn' / 'test_non_local.py').unlink()
    rc, out = run(sources)
    assert rc != 0
    assert 'not in the given sources' in out
    assert osp.join('tests', 'test_cnn', 'test_non_local.py') in out
