"""tools/gpu_check: the GPU check's scripts and its measurements' code on
the CPU, a run stopped by a signal, and (slow) a whole dry run: prepare.sh for
this Python, then run.sh --dry-run through every stage.  rehearse.sh (the
check on the GPU machine's stack, offline) is too big to run here: its
arguments, its namespace and its lint are tested."""
import copy
import importlib.util
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from gcnet_mm import benchmark as bench

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(REPO, 'tools', 'gpu_check')


def load_check():
    spec = importlib.util.spec_from_file_location(
        'gpu_check', osp.join(TOOL, 'check.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = load_check()


def test_one_rank_syncbn_is_batch_norm_off_the_gpu():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    sync = nn.SyncBatchNorm(3)
    sync.__class__ = check.OneRankSyncBatchNorm
    with torch.no_grad():
        for m in (bn, sync):
            m.weight.copy_(torch.tensor([0.5, 1.5, -1.]))
    x = torch.randn(4, 3, 5, 6)
    torch.testing.assert_close(sync(x), bn(x))
    torch.testing.assert_close(sync.running_var, bn.running_var)
    sync.eval(), bn.eval()
    torch.testing.assert_close(sync(x), bn(x))


def test_one_rank_syncbn_calls_the_sync_function(monkeypatch):
    """The GPU branch's call, recorded on the CPU (torch's SyncBN Function
    has no CPU kernels)."""
    import torch.distributed as dist
    from torch.nn.modules import _functions
    calls = []

    def record(*args):
        calls.append(args)
        return args[0] * 2

    monkeypatch.setattr(_functions.SyncBatchNorm, 'apply', record)
    monkeypatch.setattr(check.OneRankSyncBatchNorm, 'synchronises',
                        staticmethod(lambda x: True))
    dist.init_process_group('gloo', store=dist.HashStore(), rank=0,
                            world_size=1)
    try:
        sync = nn.SyncBatchNorm(3, momentum=None)
        sync.__class__ = check.OneRankSyncBatchNorm
        x = torch.randn(2, 3, 4, 4)
        for _ in range(2):
            torch.testing.assert_close(sync(x), x * 2)
        x_, w, b, mean, var, eps, momentum, group, world = calls[-1]
        assert x_ is x and w is sync.weight and b is sync.bias
        assert mean is sync.running_mean and var is sync.running_var
        assert eps == sync.eps and group is dist.group.WORLD and world == 1
        assert momentum == 0.5  # cumulative average: 1 / batches seen
        assert sync.num_batches_tracked.item() == 2
        sync.eval()
        sync(x)  # eval mode: batch norm with the running statistics
        assert len(calls) == 2
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_one_rank_syncbn_runs_the_sync_function_on_the_gpu():
    import torch.distributed as dist
    dist.init_process_group('nccl', store=dist.HashStore(), rank=0,
                            world_size=1)
    try:
        bn = nn.BatchNorm2d(3).cuda()
        sync = nn.SyncBatchNorm(3).cuda()
        sync.__class__ = check.OneRankSyncBatchNorm
        x = torch.randn(4, 3, 5, 6, device='cuda', requires_grad=True)
        y = sync(x)
        assert 'SyncBatchNorm' in type(y.grad_fn).__name__
        torch.testing.assert_close(y, bn(x))
        torch.testing.assert_close(sync.running_mean, bn.running_mean)
    finally:
        dist.destroy_process_group()


def block_pair(c=64, seed=0):
    from mmcv.cnn import ContextBlock as MMCVContextBlock

    from gcnet_mm.models.blocks import ContextBlock
    theirs = check.randomize(MMCVContextBlock(c, 1 / 16), seed)
    ours = ContextBlock(c, 1 / 16)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
def test_parity_rows_pass_for_the_block_and_fail_for_another(precision):
    theirs, ours = block_pair()
    gen = torch.Generator().manual_seed(1)
    dtype = check.PRECISIONS[precision] or torch.float32
    x = torch.randn(2, 64, 5, 6, generator=gen).to(dtype)
    gy = (torch.randn(2, 64, 5, 6, generator=gen) + 0.5).to(dtype)
    ref = check.terms(check.copy.deepcopy(theirs).double(), x.double(),
                      gy.double(), 'cpu', 'fp32', True)
    rows = check.parity_rows('t', theirs, ours, x, gy, 'cpu', precision,
                             'contiguous', True, ref)
    assert [r['path'] for r in rows] == ['fused', 'reference']
    assert all(r['ok'] for r in rows), rows
    # Other weights in gcnet_mm's block: every term is off.
    with torch.no_grad():
        ours.channel_add_conv[0].weight.mul_(1.5)
    rows = check.parity_rows('t', theirs, ours, x, gy, 'cpu', precision,
                             'contiguous', True, ref)
    assert not any(r['ok'] for r in rows)
    assert all(r['err']['out'] > r['limit']['out'] for r in rows)


def test_backbone_configs_are_mmdets_resnet_with_the_plugins():
    cfgs = {(n, m): check.backbone_cfg(n, m) for n in check.DET_CONFIGS
            for m in check.MODELS}
    for (norm, model), cfg in cfgs.items():
        assert cfg['type'] == 'mmdet.ResNet' and cfg['depth'] == 50
        assert cfg['init_cfg'] is None and cfg['frozen_stages'] == 1
        assert cfg['norm_cfg']['type'] == norm.split(',')[0]
        assert cfg['norm_eval'] is (norm == 'BN, norm_eval')
        plugins = cfg.get('plugins')
        if model == 'plain':
            assert not plugins
            continue
        assert plugins[0]['stages'] == (False, True, True, True)
        assert plugins[0]['position'] == 'after_conv3'
        assert plugins[0]['cfg'] == dict(
            type={'mmcv GC': 'ContextBlock',
                  'gcnet_mm GC': 'gcnet_mm.ContextBlock'}[model],
            ratio=1 / 16)


def test_backbones_share_weights_and_hold_the_right_blocks():
    from mmdet.utils import register_all_modules
    register_all_modules()
    models = check.build_backbones('SyncBN', 'cpu')
    types = {k: bench.block_types(m) for k, m in models.items()}
    assert types['plain'] == ['mmdet.models.backbones.resnet.ResNet']
    assert 'mmcv.cnn.bricks.context_block.ContextBlock' in types['mmcv GC']
    assert any(t.startswith('gcnet_mm.') and t.endswith('.ContextBlock')
               for t in types['gcnet_mm GC'])
    assert not any(t.startswith('gcnet_mm.') for t in types['mmcv GC'])
    norms = [m for m in models['plain'].modules()
             if isinstance(m, nn.SyncBatchNorm)]
    assert norms and all(type(m) is check.OneRankSyncBatchNorm for m in norms)
    a, b = models['mmcv GC'].state_dict(), models['gcnet_mm GC'].state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    gc = a['layer3.0.context_block.channel_add_conv.3.weight']
    assert torch.count_nonzero(gc) == gc.numel()  # not the zero init


def fake_parts(partial=False):
    """Sections' results as check.py writes them: ratios at the targets'
    limits, a resnet section cut short with a failed case."""
    blocks = {'rows': [], 'errors': [], 'complete': True, 'repeat': 3,
              'inner': 1, 'memory_measure': 'm'}
    for stage, ratio in (('c3', 0.5), ('c4', 0.51)):
        blocks['rows'].append(dict(
            stage=stage, batch=2, shape=[2, 512, 4, 4], precision='fp32',
            layout='contiguous',
            seconds={'fused': ratio, 'fused, torch ops': 0.7,
                     'reference': 1.0, 'mmcv': 1.0, 'timm': 0.9},
            memory={'fused': 10, 'fused, torch ops': 10, 'reference': 20,
                    'mmcv': 20, 'timm': 20}))
    resnet = {'rows': [], 'errors': ['resnet SyncBN fp16 contiguous: boom'],
              'complete': not partial, 'input': [2, 3, 32, 64], 'repeat': 2,
              'memory_measure': 'm', 'models': {'BN': {'plain': []}}}
    for norm, t, m in (('BN', 1.03, 1.0), ('SyncBN', 1.031, 1.2)):
        resnet['rows'].append(dict(
            norm=norm, precision='fp32', layout='contiguous',
            seconds={'plain': 1.0, 'mmcv GC': 1.2, 'gcnet_mm GC': t},
            memory={'plain': 100, 'mmcv GC': 130, 'gcnet_mm GC': 100 * m},
            norm_node='X'))
    env = {'rows': [], 'errors': [], 'complete': True,
           'info': {'device': 'cpu', 'torch': torch.__version__}}
    return {'blocks': blocks, 'resnet': resnet, 'env': env}


def test_targets_at_their_limits():
    parts = fake_parts()
    blocks, resnet = parts['blocks'], parts['resnet']
    slow = copy.deepcopy(blocks['rows'][0])  # Triton slower than torch ops
    slow.update(layout='channels_last', seconds={
        'fused': 0.71, 'fused, torch ops': 0.7, 'reference': 1.0,
        'mmcv': 1.0, 'timm': 0.9})
    blocks['rows'].append(slow)
    lines = {(g['target'][:14], g['case']): g['ok']
             for g in check.targets(blocks, resnet)}
    assert lines == {
        ('GC R-50 step t', 'BN, fp32'): True,  # 1.03 is within 1.03x
        ('GC R-50 step p', 'BN, fp32'): True,
        ('GC R-50 step t', 'SyncBN, fp32'): False,  # 1.031
        ('GC R-50 step p', 'SyncBN, fp32'): False,  # 1.2
        ("block time <= ", 'c3 batch 2, fp32'): True,  # 0.5
        ("block time <= ", 'c4 batch 2, fp32'): False,  # 0.51
        ('fused block <=', 'fp32, contiguous'): True,  # 0.5 and 0.51 / 0.7
        ('fused block <=', 'fp32, channels_last'): False,  # 0.71 / 0.7
    }


def test_report_from_partial_results(tmp_path, capsys):
    work, out = tmp_path / 'work', tmp_path / 'out'
    work.mkdir()
    for name, data in fake_parts(partial=True).items():
        (work / f'{name}.json').write_text(json.dumps(data))
    (work / 'stages.tsv').write_text(
        'install\tinstall\t1.5\tok\t0\t\n'
        'resnet\tresnet\t60.0\ttimed out after 60 s\t124\t  resnet SyncBN\n')
    (work / 'plan.txt').write_text('install:15\nresnet:45\ntrain:30\n')
    (work / 'preflight.txt').write_text('Python 3.12.1 | torch 2.11.0')
    rc = check.main(['report', '--work', str(work), '--out', str(out),
                     '--dry-run'])
    assert rc == 1  # a stage timed out
    assert sorted(os.listdir(out)) == ['gpu_check.png', 'report.md',
                                       'results.json']
    report = (out / 'report.md').read_text()
    assert 'DRY RUN' in report
    assert 'Preflight: Python 3.12.1 | torch 2.11.0' in report
    assert 'resnet stopped before its end' in report
    # What did not run, and why: the stage (with its last line), the case,
    # the stage that never started.
    assert '- stage resnet: timed out after 60 s -   resnet SyncBN' in report
    assert '- resnet: resnet SyncBN fp16 contiguous: boom' in report
    assert '- stage train: not started (the run ended before it)' in report
    assert 'parity did not run' in report
    assert '| resnet | 60.0 | timed out after 60 s |   resnet SyncBN |' in \
        report
    results = json.loads((out / 'results.json').read_text())
    assert results['dry_run'] is True
    assert [g['ok'] for g in results['targets']].count(False) == 3
    printed = capsys.readouterr().out
    assert 'FAIL  GC R-50 step time' in printed


def run_script(*args, env=None):
    return subprocess.run(['bash', *args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})))


def test_scripts_refuse_bad_arguments(tmp_path):
    proc = run_script(osp.join(TOOL, 'prepare.sh'))
    assert proc.returncode == 2 and 'usage: prepare.sh' in proc.stderr
    proc = run_script(osp.join(TOOL, 'prepare.sh'), str(tmp_path),
                      '--python-version', '312')
    assert proc.returncode == 1
    assert '--python-version 312: expected 3.N' in proc.stderr
    inside = osp.join(REPO, 'wheels-not-ignored')
    proc = run_script(osp.join(TOOL, 'prepare.sh'), inside)
    assert proc.returncode == 1
    assert 'is inside the repository but not git-ignored' in proc.stderr
    assert not osp.exists(inside)
    proc = run_script(osp.join(TOOL, 'run.sh'), str(tmp_path / 'nope'),
                      str(tmp_path / 'out'))
    assert proc.returncode == 2
    assert 'is not a folder (make it with tools/gpu_check/prepare.sh)' in \
        proc.stderr
    proc = run_script(osp.join(TOOL, 'run.sh'), str(tmp_path), '--fast')
    assert proc.returncode == 2 and 'unknown option --fast' in proc.stderr


@pytest.mark.skipif(shutil.which('shellcheck') is None,
                    reason='shellcheck is not installed')
def test_scripts_are_shellcheck_clean():
    proc = subprocess.run(
        ['shellcheck'] + [osp.join(TOOL, f)
                          for f in ('prepare.sh', 'run.sh', 'rehearse.sh')],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def run_sh_plan():
    """run.sh's PLAN (stage key: cap at the default budget, in order), its
    budget, the seconds kept for the report and the keys its stages use."""
    with open(osp.join(TOOL, 'run.sh')) as f:
        text = f.read()
    plan = re.search(r'^PLAN=\(([^)]*)\)', text, re.M).group(1).split()
    plan = {k: int(v) for k, v in (e.split(':') for e in plan)}
    budget = int(re.search(r'^PLAN_BUDGET=(\d+)$', text, re.M).group(1))
    report = int(re.search(r'^REPORT_S=(\d+)$', text, re.M).group(1))
    used = re.findall(r'^\s+stage ([\w-]+) ', text, re.M)
    return plan, budget, report, used


def test_stage_caps_fit_the_budget_most_valuable_first():
    plan, budget, report, used = run_sh_plan()
    assert budget == 460
    assert sum(plan.values()) + report <= budget
    order = list(plan)
    # parity, the block, the step, the training loop
    assert (order.index('parity') < order.index('blocks')
            < order.index('resnet') < order.index('train'))
    # the block stages need only mmcv's Python part: before its build
    assert order.index('blocks') < order.index('builds')
    assert used == [k for k in order if k != 'builds'][:5] + [
        'builds', 'builds'] + [k for k in order][6:]
    # docs/gpu_check.md states the same caps
    with open(osp.join(REPO, 'docs', 'gpu_check.md')) as f:
        rows = re.findall(r'^\| ([\w, -]+) \| ([\d, ]+) \|', f.read(), re.M)
    docs = {}
    for names, caps in rows:
        names, caps = names.split(', '), caps.split(', ')
        docs.update(zip(names, map(int, caps * len(names)))
                    if len(caps) == 1 else zip(names, map(int, caps)))
    docs['builds'] = docs.pop('mmcv-build')
    assert {k: docs[k] for k in plan} == plan


@pytest.mark.skipif(shutil.which('g++') is None, reason='no g++')
def test_loops_that_do_not_compile_leave_the_package_without_them(tmp_path):
    """gcnet_mm's C++ loops are optional in the GPU check: with a
    compiler that fails every compile, their stage passes and installs the
    package without them (the other stages need only the package)."""
    calls = tmp_path / 'compiles'
    cxx = tmp_path / 'g++'
    cxx.write_text(
        '#!/bin/sh\n'
        '# Answers version queries as g++ does; fails every compile.\n'
        'case "$1" in -v|--version|-dumpfullversion|-dumpversion)\n'
        '  exec g++ "$@" ;;\n'
        'esac\n'
        f'echo "$@" >> {calls}\n'
        'echo "g++: error: made to fail" >&2\n'
        'exit 1\n')
    cxx.chmod(0o755)
    work = tmp_path / 'work'
    (work / 'site').mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != 'GCNET_MM_WITH_EXT'}
    env.update(GPU_CHECK_WHEELS=str(tmp_path), GPU_CHECK_WORK=str(work),
               GPU_CHECK_DRY='0', GPU_CHECK_JOBS='1',
               GPU_CHECK_PYTHON=sys.executable,
               PYTHONPATH=str(work / 'site'), CC=str(cxx), CXX=str(cxx))
    proc = subprocess.run(
        ['bash', osp.join(TOOL, 'run.sh'), '__stage', 'build_loops'],
        capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert calls.exists()  # the build tried to compile them
    package = work / 'site' / 'gcnet_mm'
    assert (package / '__init__.py').is_file()
    assert not list(package.glob('_ext*'))


def test_docs_speak_to_anyone_with_a_gpu_machine():
    """docs/gpu_check.md: prepare where a registry is reachable, copy, run,
    read OUT_DIR, with or without network access; neither it nor the
    scripts speak of limits that are not the project's."""
    names = ['docs/gpu_check.md'] + [f'tools/gpu_check/{f}' for f in (
        'prepare.sh', 'run.sh', 'rehearse.sh', 'check.py', 'wheels.txt')]
    texts = {}
    for name in names:
        with open(osp.join(REPO, name)) as f:
            texts[name] = f.read()
    foreign = [r'\blent\b', r'\bcarr(y|ies|ied)\b', r'\b\d+ files of\b',
               r'\b(16|64) MiB\b', r'\bdevice (tool|run)\b']
    for name, text in texts.items():
        for pattern in foreign:
            assert not re.search(pattern, text, re.I), (name, pattern)
        assert not re.search(r'\$OUT\b', text), name
    doc = texts['docs/gpu_check.md']
    steps = re.findall(r'^## \d\. (\w+)', doc, re.M)
    assert steps[:4] == ['Prepare', 'Copy', 'Run', 'Read']
    assert '## 4. Read OUT_DIR' in doc
    assert 'no network access' in doc and 'GPU machine of your own' in doc


@pytest.mark.slow
def test_a_stopped_run_still_reports(tmp_path):
    """SIGTERM while a stage runs: the stage is stopped, and report.md,
    results.json, the picture and run.log say what ran, what was stopped
    and what never started (here with no wheels: install fails)."""
    import signal
    import time
    wheels, out = tmp_path / 'wheels', tmp_path / 'out'
    wheels.mkdir()
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_BUDGET_S='300',
               PYTHONUNBUFFERED='1')
    proc = subprocess.Popen(['bash', osp.join(TOOL, 'run.sh'), str(wheels),
                             str(out), '--dry-run'], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if '== base (timeout' in line:
            time.sleep(1)
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    log = ''.join(lines) + rest
    assert proc.returncode == 143, log[-3000:]
    assert sorted(os.listdir(out)) == ['gpu_check.png', 'report.md',
                                       'results.json', 'run.log']
    report = (out / 'report.md').read_text()
    assert 'Preflight: Python ' in report and ' | torch ' in report
    assert 'triton' in report and ' | gcc ' in report
    assert '- stage install: failed (exit 1) - no wheels in' in report
    assert '- stage base: stopped (the run was stopped by a signal)' in report
    for key in ('env', 'parity', 'blocks', 'resnet', 'train', 'test'):
        assert f'- stage {key}: not started (the run ended before it)' in \
            report
    results = json.loads((out / 'results.json').read_text())
    assert len(results['not_run']) == 2 + 10
    assert '== stopped by a signal' in (out / 'run.log').read_text()


def test_a_failing_candidate_leaves_the_others_measured():
    errors = {}
    calls = []

    def fails():
        raise RuntimeError('made to fail')

    def later():
        calls.append('c')
        if calls.count('c') > 1:
            raise ValueError('fails on its second call')

    fns = check.one_by_one({'a': lambda: calls.append('a'), 'b': fails,
                            'c': later}, errors)
    assert list(fns) == ['a', 'c']
    assert errors == {'b': 'RuntimeError: made to fail'}
    t = bench.time_interleaved(fns, repeat=2, label='t', warmup=0)
    assert errors['c'] == 'ValueError: fails on its second call'
    assert set(t) == {'a', 'c'}  # the caller drops 'c' from what it reports


def test_blocks_section_measures_the_candidates_that_run(tmp_path,
                                                         monkeypatch):
    """timm's block does not build and gcnet_mm's path on PyTorch-ops
    kernels raises: the fused and reference paths and mmcv are still
    measured, and the report says what failed."""
    gc_path = bench.gc_path

    def no_timm(c):
        raise ImportError('timm made to fail')

    def broken(name):
        if name == 'fused, torch ops':
            raise RuntimeError('torch ops made to fail')
        return gc_path(name)

    monkeypatch.setattr(bench, 'timm_block', no_timm)
    monkeypatch.setattr(bench, 'gc_path', broken)
    monkeypatch.setitem(check.SIZES, 'dry', dict(
        check.SIZES['dry'], batches=(2, ), image=(16, 32)))
    monkeypatch.setattr(check, 'PRECISIONS', {'fp32': None})
    path = tmp_path / 'blocks.json'
    assert check.main(['blocks', '--json', str(path), '--dry-run']) == 0
    rows = json.loads(path.read_text())['rows']
    assert len(rows) == 3 * 2  # c3-c5, both layouts
    for r in rows:
        assert set(r['seconds']) == {'fused', 'reference', 'mmcv'}
        assert r['errors'] == {
            'timm': 'ImportError: timm made to fail',
            'fused, torch ops': 'RuntimeError: torch ops made to fail'}
    lines = check.targets({'rows': rows}, None)
    assert all(g['ok'] is not None for g in lines
               if g['target'].startswith('block time'))
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'blocks.json').write_text(path.read_text())
    check.main(['report', '--work', str(work), '--out',
                str(tmp_path / 'out'), '--dry-run'])
    report = (tmp_path / 'out' / 'report.md').read_text()
    assert 'blocks c3 b2 fp32 contiguous, timm: ImportError: timm made to ' \
        'fail' in report


def test_resnet_section_measures_the_targets_layout_first(
        tmp_path, monkeypatch):
    """The step's targets read the contiguous rows: those of every norm
    come before any channels_last row, so a section stopped by its time cap
    loses the latter first."""
    order = []

    def row(models, img, device, norm, precision, layout, sizes, errors):
        order.append((norm, precision, layout))
        return dict(norm=norm, precision=precision, layout=layout,
                    seconds={}, memory={}, errors=errors, norm_node=None)

    monkeypatch.setattr(check, 'build_backbones',
                        lambda norm, device, errors: {'plain': nn.Identity()})
    monkeypatch.setattr(check, 'resnet_row', row)
    path = tmp_path / 'resnet.json'
    assert check.main(['resnet', '--json', str(path), '--dry-run']) == 0
    precisions = check.SIZES['dry']['resnet_precisions']
    assert order == [(n, p, lay) for lay in bench.LAYOUTS
                     for n in check.DET_CONFIGS for p in precisions]


def test_rehearsal_refuses_bad_arguments(tmp_path):
    script = osp.join(TOOL, 'rehearse.sh')
    proc = run_script(script)
    assert proc.returncode == 2 and 'usage: rehearse.sh DIR' in proc.stderr
    inside = osp.join(REPO, 'rehearsal-not-here')
    proc = run_script(script, inside)
    assert proc.returncode == 1
    assert 'is inside the repository; give a folder outside it' in \
        proc.stderr
    assert not osp.exists(inside)  # refused before anything is created
    proc = run_script(script, str(tmp_path), 'venv', 'tests')
    assert proc.returncode == 2
    assert 'unknown step tests' in proc.stderr and 'triton_tests' in \
        proc.stderr
    assert not os.listdir(tmp_path)
    if sys.version_info[:2] != (3, 12):
        proc = run_script(script, str(tmp_path),
                          env={'PYTHON312': sys.executable})
        assert proc.returncode == 1 and 'is not CPython 3.12' in proc.stderr


@pytest.mark.skipif(shutil.which('unshare') is None
                    or subprocess.run(['unshare', '-rn', 'true']).returncode,
                    reason='no user and network namespaces here')
def test_rehearsal_runs_the_steps_it_is_given(tmp_path):
    """`rehearse.sh DIR venv` runs that step alone (here on an empty DIR:
    no stack to install, so it fails), and DIR/rehearsal.md gives its
    outcome and the other steps as not run."""
    proc = run_script(osp.join(TOOL, 'rehearse.sh'), str(tmp_path), 'venv')
    if 'no CPython 3.12' in proc.stderr:
        pytest.skip('no CPython 3.12 here')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]
    assert 'ERROR: the venv did not build' in log
    assert '== download' not in log and '== run.sh' not in log
    summary = (tmp_path / 'rehearsal.md').read_text()
    assert re.search(r'^\| venv: Python 3\.12 \+ the stack, offline \| \d+ '
                     r'\| 1 \| \d{4}-\d\d-\d\d ', summary, re.M), summary
    for key in ('download', 'prepare', 'dry_run', 'triton_tests'):
        assert f'| {key} | - | - | not run |' in summary
    assert sorted(os.listdir(tmp_path / 'steps')) == ['venv.log', 'venv.row']


def test_rehearsals_outcome_is_in_the_docs():
    """docs/gpu_check.md gives each step of rehearse.sh with its outcome
    and wall time (a table row per step, seconds and exit status)."""
    with open(osp.join(TOOL, 'rehearse.sh')) as f:
        steps = re.findall(r'^  step "([^"]+)"', f.read(), re.M)
    with open(osp.join(REPO, 'docs', 'gpu_check.md')) as f:
        doc = f.read()
    assert len(steps) == 5
    for name in steps:
        assert re.search(rf'^\| {re.escape(name)} \| \d+ \| \d+ \|', doc,
                         re.M), name


@pytest.mark.skipif(shutil.which('unshare') is None
                    or subprocess.run(['unshare', '-rn', 'true']).returncode,
                    reason='no user and network namespaces here')
def test_rehearsal_offline_steps_see_only_their_loopback(tmp_path):
    """What rehearse.sh runs offline runs in a network namespace with its
    loopback up (dist_train's rendezvous) and no other interface."""
    proc = subprocess.run(
        ['unshare', '-rn', 'bash', osp.join(TOOL, 'rehearse.sh'),
         '__offline', str(tmp_path), 'ip', '-o', 'link', 'show'],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    links = proc.stdout.strip().splitlines()
    assert len(links) == 1 and ': lo: ' in links[0] and ',UP' in links[0]


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_dry_run_end_to_end(tmp_path):
    """prepare.sh for this Python (about 65 MiB from the registry), then
    run.sh --dry-run: every stage and section runs and passes, and OUT holds
    what a GPU run returns."""
    wheels, out = tmp_path / 'wheels', tmp_path / 'out'
    env = {'PYTHON': sys.executable, 'PYTHONUNBUFFERED': '1'}
    pyver = f'{sys.version_info[0]}.{sys.version_info[1]}'
    proc = run_script(osp.join(TOOL, 'prepare.sh'), str(wheels),
                      '--python-version', pyver, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r'\d+ files, [\d.]+ MiB', proc.stderr)
    names = os.listdir(wheels)
    assert 'mmcv-2.1.0.tar.gz' in names
    for host in ('mmengine-0.10.7', 'mmdet-3.3.0', 'mmsegmentation-1.2.2',
                 'mmpretrain-1.2.0', 'setuptools-80'):
        assert any(n.startswith(host) for n in names), (host, names)

    proc = run_script(osp.join(TOOL, 'run.sh'), str(wheels), str(out),
                      '--dry-run', env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    files = sorted(os.listdir(out))
    assert files == ['gpu_check.png', 'report.md', 'results.json', 'run.log']

    results = json.loads((out / 'results.json').read_text())
    assert results['dry_run'] is True
    stages = {s['stage']: s['status'] for s in results['stages']}
    assert set(stages) == {
        'install', 'base', 'env', 'parity', 'blocks', 'gcnet_mm-loops',
        'mmcv-reuse', 'env-check', 'head', 'resnet', 'toy-data',
        'train (dist_train.sh, SyncBN)', 'test (test.py)'}, stages
    assert set(stages.values()) == {'ok'}, stages
    assert results['not_run'] == []
    assert results['preflight'].startswith('Python ')
    # The package measured is the one run.sh built and installed.
    assert '/site/gcnet_mm' in results['env']['gcnet_mm']

    parity, head = results['parity'], results['head']
    assert parity['complete'] and not parity['errors']
    assert head['complete'] and not head['errors']
    # (2 blocks, 1 head) x 3 precisions x 2 layouts x 2 paths
    assert len(parity['rows']) == 2 * 3 * 2 * 2
    assert len(head['rows']) == 1 * 3 * 2 * 2
    assert all(r['ok'] for r in parity['rows'] + head['rows'])

    sizes = check.SIZES['dry']
    blocks = results['blocks']
    assert blocks['complete'] and not blocks['errors']
    assert {(r['stage'], r['batch'], r['precision'], r['layout'])
            for r in blocks['rows']} == {
                (s, b, p, lay) for s in check.STAGES
                for b in sizes['batches'] for p in check.PRECISIONS
                for lay in bench.LAYOUTS}
    for r in blocks['rows']:
        assert set(r['seconds']) == set(r['memory']) == set(check.BLOCKS)
        assert all(v > 0 for v in r['seconds'].values())

    resnet = results['resnet']
    assert resnet['complete'] and not resnet['errors']
    assert {(r['norm'], r['precision'], r['layout'])
            for r in resnet['rows']} == {
                (n, p, lay) for n in check.DET_CONFIGS
                for p in sizes['resnet_precisions'] for lay in bench.LAYOUTS}
    # mmcv's and gcnet_mm's GC backbones, same weights, float32 outputs.
    assert all(r['gc_output_rel_diff'] < 1e-4 for r in resnet['rows'])

    assert results['targets'] and all(
        isinstance(g['ok'], bool) for g in results['targets'])
    loop = results['loop']
    assert loop['checkpoint'] == 'iter_4.pth'
    assert 'mIoU' in loop['metrics']
    assert 'SyncBN (which needs GPUs) is replaced by BN' in log


def test_report_runs_where_gcnet_mm_does_not_import(tmp_path):
    """A gcnet_mm that does not import (a failed install) stops the
    sections with what went wrong; the report is still written."""
    fake = tmp_path / 'site' / 'gcnet_mm'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text("raise ImportError('broken install')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / 'site'))
    script = osp.join(TOOL, 'check.py')
    proc = subprocess.run(
        [sys.executable, script, 'parity', '--json',
         str(tmp_path / 'parity.json'), '--dry-run'], env=env,
        capture_output=True, text=True)
    assert proc.returncode == 1
    assert 'gcnet_mm does not import: ImportError: broken install' in \
        proc.stderr
    (tmp_path / 'work').mkdir()
    proc = subprocess.run(
        [sys.executable, script, 'report', '--work', str(tmp_path / 'work'),
         '--out', str(tmp_path / 'out'), '--dry-run'], env=env,
        capture_output=True, text=True)
    assert (tmp_path / 'out' / 'report.md').is_file(), proc.stderr
    assert 'parity did not run' in (tmp_path / 'out' / 'report.md').read_text()
