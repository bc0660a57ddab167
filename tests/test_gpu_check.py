"""tools/gpu_check: the device check's scripts and its measurements' code on
the CPU, and (slow) a whole dry run: prepare.sh for this Python, then
run.sh --dry-run through every stage."""
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

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(REPO, 'tools', 'gpu_check')


def load_check():
    spec = importlib.util.spec_from_file_location(
        'gpu_check', osp.join(TOOL, 'check.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = load_check()
bench = check.bench


def test_block_shapes_c3_c4_c5():
    assert bench.block_shapes(800, 1216, 8) == [
        (8, 512, 100, 152), (8, 1024, 50, 76), (8, 2048, 25, 38)]
    assert bench.BLOCK_SHAPES == [
        (2, 512, 100, 136), (2, 1024, 50, 68), (2, 2048, 25, 34)]


def test_timm_block_is_gc_r16_with_layernorm_and_add():
    block = bench.timm_block(64)
    assert block.mlp_add is not None and block.mlp_scale is None
    assert block.mlp_add.fc1.out_channels == 4  # 64 / 16
    assert 'LayerNorm' in type(block.mlp_add.norm).__name__
    assert torch.count_nonzero(block.mlp_add.fc2.weight) == 0


def test_interleaved_timing_runs_inner_calls_per_round():
    calls = []
    t = bench.time_interleaved({'a': lambda: calls.append('a'),
                                'b': lambda: calls.append('b')},
                               repeat=3, label='t', inner=4, warmup=2)
    assert set(t) == {'a', 'b'}
    assert calls.count('a') == calls.count('b') == 2 + 3 * 4


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
    theirs = check.randomize_(MMCVContextBlock(c, 1 / 16), seed)
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
    types = {k: check.block_types(m) for k, m in models.items()}
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
        'install\t1.5\tok\t0\nresnet\t60.0\ttimed out after 60 s\t124\n')
    rc = check.main(['report', '--work', str(work), '--out', str(out),
                     '--dry-run'])
    assert rc == 1  # a stage timed out
    assert sorted(os.listdir(out)) == ['gpu_check.png', 'report.md',
                                       'results.json']
    report = (out / 'report.md').read_text()
    assert 'DRY RUN' in report
    assert 'resnet stopped before its end' in report
    assert '- failed: resnet SyncBN fp16 contiguous: boom' in report
    assert 'parity did not run' in report
    assert '| resnet | 60.0 | timed out after 60 s |' in report
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
        ['shellcheck', osp.join(TOOL, 'prepare.sh'), osp.join(TOOL, 'run.sh')],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_dry_run_end_to_end(tmp_path):
    """prepare.sh for this Python (about 13 MiB from the registry), then
    run.sh --dry-run: every stage and section runs and passes, and OUT holds
    what a device run returns."""
    wheels, out = tmp_path / 'wheels', tmp_path / 'out'
    env = {'PYTHON': sys.executable, 'PYTHONUNBUFFERED': '1'}
    pyver = f'{sys.version_info[0]}.{sys.version_info[1]}'
    proc = run_script(osp.join(TOOL, 'prepare.sh'), str(wheels),
                      '--python-version', pyver, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r'\d+ files, [\d.]+ MiB; with the working tree',
                     proc.stderr)
    names = os.listdir(wheels)
    assert 'mmcv-2.1.0.tar.gz' in names
    for host in ('mmengine-0.10.7', 'mmdet-3.3.0', 'mmsegmentation-1.2.2',
                 'mmpretrain-1.2.0', 'setuptools-80'):
        assert any(n.startswith(host) for n in names), (host, names)

    proc = run_script(osp.join(TOOL, 'run.sh'), str(wheels), str(out),
                      '--dry-run', env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    # What comes back from a device: at most 8 files, plain names.
    files = sorted(os.listdir(out))
    assert files == ['gpu_check.png', 'report.md', 'results.json', 'run.log']
    assert all(re.fullmatch(r'[A-Za-z0-9._-]+', f) for f in files)
    assert all(os.path.getsize(out / f) < 16 << 20 for f in files)

    results = json.loads((out / 'results.json').read_text())
    assert results['dry_run'] is True
    stages = {s['stage']: s['status'] for s in results['stages']}
    assert set(stages) == {
        'install', 'gcnet_mm-build', 'mmcv-reuse', 'env-check', 'env',
        'parity', 'blocks', 'resnet', 'toy-data',
        'train (dist_train.sh, SyncBN)', 'test (test.py)'}, stages
    assert set(stages.values()) == {'ok'}, stages
    # The package measured is the one run.sh built and installed.
    assert '/site/gcnet_mm' in results['env']['gcnet_mm']

    parity = results['parity']
    assert parity['complete'] and not parity['errors']
    # 3 checks x 3 precisions x 2 layouts x 2 paths
    assert len(parity['rows']) == 3 * 3 * 2 * 2
    assert all(r['ok'] for r in parity['rows'])

    sizes = check.SIZES['dry']
    blocks = results['blocks']
    assert blocks['complete'] and not blocks['errors']
    assert {(r['stage'], r['batch'], r['precision'], r['layout'])
            for r in blocks['rows']} == {
                (s, b, p, lay) for s in check.STAGES
                for b in sizes['batches'] for p in check.PRECISIONS
                for lay in check.LAYOUTS}
    for r in blocks['rows']:
        assert set(r['seconds']) == set(r['memory']) == set(check.BLOCKS)
        assert all(v > 0 for v in r['seconds'].values())

    resnet = results['resnet']
    assert resnet['complete'] and not resnet['errors']
    assert {(r['norm'], r['precision'], r['layout'])
            for r in resnet['rows']} == {
                (n, p, lay) for n in check.DET_CONFIGS
                for p in sizes['resnet_precisions'] for lay in check.LAYOUTS}
    # mmcv's and gcnet_mm's GC backbones, same weights, float32 outputs.
    assert all(r['gc_output_rel_diff'] < 1e-4 for r in resnet['rows'])

    assert results['targets'] and all(
        isinstance(g['ok'], bool) for g in results['targets'])
    loop = results['loop']
    assert loop['checkpoint'] == 'iter_4.pth'
    assert 'mIoU' in loop['metrics']
    assert 'SyncBN (which needs GPUs) is replaced by BN' in log
