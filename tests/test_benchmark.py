"""gcnet_mm.benchmark: the measuring parts that tools/benchmark,
tools/gpu_check and the tests share (the timings themselves stay out of the
tests)."""
import platform
import subprocess
import sys

import pytest
import torch
from mmcv.cnn import ContextBlock as MMCVContextBlock
from torch import nn

from gcnet_mm import benchmark as bench
from gcnet_mm.ops import use_fused
from gcnet_mm.ops.dispatch import fused_kernels


def test_block_shapes_c3_c4_c5():
    assert bench.block_shapes(800, 1216, 8) == [
        (8, 512, 100, 152), (8, 1024, 50, 76), (8, 2048, 25, 38)]


def test_layouts():
    x = torch.randn(2, 8, 3, 4)
    assert x.to(memory_format=bench.layout_of('channels_last')).stride()[1] \
        == 1
    assert x.to(memory_format=bench.layout_of('contiguous')).is_contiguous()
    with pytest.raises(ValueError, match="'nhwc'.*contiguous"):
        bench.layout_of('nhwc')


def test_timm_block_is_gc_r16_with_layernorm_and_add():
    block = bench.timm_block(64)
    assert block.mlp_add is not None and block.mlp_scale is None
    assert block.mlp_add.fc1.out_channels == 4  # 64 / 16
    assert 'LayerNorm' in type(block.mlp_add.norm).__name__
    assert torch.count_nonzero(block.mlp_add.fc2.weight) == 0


def test_randomize_fills_the_state_dict():
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8))
    nn.init.zeros_(model[0].weight)
    bench.randomize_(model, seed=1, scale=0.5)
    assert not model.training
    for name, t in model.state_dict().items():
        if t.is_floating_point():
            assert torch.count_nonzero(t) == t.numel(), name
    var = model[1].running_var
    assert 0.5 <= var.min() and var.max() < 1.5
    again = bench.randomize_(nn.Sequential(nn.Conv2d(4, 8, 3),
                                           nn.BatchNorm2d(8)), seed=1,
                             scale=0.5)
    assert torch.equal(again[0].weight, model[0].weight)


def test_randomize_by_fan_in_keeps_a_deep_stack_in_scale():
    layers = [nn.Conv2d(64, 64, 3, padding=1, bias=False) for _ in range(20)]
    model = bench.randomize_(nn.Sequential(*layers).train(), seed=2,
                             eval_mode=False, fan_in=True)
    assert model.training
    stds = [p.std().item() * 576**0.5 for p in model.parameters()]
    assert all(0.9 < s < 1.1 for s in stds)  # N(0, 1/fan_in), fan_in 576
    buffers = nn.BatchNorm2d(4)
    bench.randomize_(buffers, fan_in=True)
    assert torch.equal(buffers.running_var, torch.ones(4))  # parameters only
    assert torch.count_nonzero(buffers.bias) == 4


def test_gcnet_block_has_mmcvs_weights():
    torch.manual_seed(0)
    mmcv = bench.randomize_(MMCVContextBlock(32, 1 / 4))
    ours = bench.gcnet_block(mmcv).eval()
    x = torch.randn(2, 32, 5, 6)
    torch.testing.assert_close(ours(x), mmcv(x))


def test_gc_path_sets_and_restores_the_path():
    x = torch.randn(1, 8, 2, 2)
    w = torch.randn(1, 8, 1, 1)
    assert use_fused()
    with bench.gc_path('reference'):
        assert not use_fused()
    assert use_fused()
    with bench.gc_path('fused, torch ops'):
        assert use_fused()
        assert fused_kernels(x, w, nn.Identity(), None).name == 'torch'
    with pytest.raises(ValueError, match="'fast'.*reference"):
        with bench.gc_path('fast'):
            pass
    assert bench.gcnet_paths('cuda')[0] == 'fused'
    assert bench.gcnet_paths('cuda')[-1] == 'reference'


def test_block_types_name_the_gc_blocks():
    model = nn.Module()
    model.context_block = MMCVContextBlock(8, 1 / 4)
    assert bench.block_types(model) == [
        'mmcv.cnn.bricks.context_block.ContextBlock', 'torch.nn.modules.'
        'module.Module']


def test_config_backbone_builds_without_a_download():
    cfg = bench.config_backbone(
        'mmdet::gcnet/mask-rcnn_r50-gcb-r16-c3-c5_fpn_1x_coco.py')
    assert cfg.type == 'ResNet' and cfg.depth == 50
    assert cfg.init_cfg is None
    assert cfg.plugins[0].cfg.type == 'ContextBlock'


def test_memory_on_the_cpu_is_what_backward_saves():
    lin = nn.Linear(16, 16)
    x = torch.randn(8, 16, requires_grad=True)

    def step():
        lin(x).relu().sum().backward()

    # The input (saved for the weight's gradient) and relu's output.
    assert bench.measure_memory('cpu', step, lin) == 2 * 8 * 16 * 4
    assert bench.state_bytes(lin.weight, x) == (16 * 16 + 8 * 16) * 4
    assert 'saved for backward' in bench.memory_measure('cpu')


def test_interleaved_timing_runs_inner_calls_per_round():
    calls = []
    t = bench.time_interleaved({'a': lambda: calls.append('a'),
                                'b': lambda: calls.append('b')},
                               repeat=3, label='t', inner=4, warmup=2)
    assert set(t) == {'a', 'b'}
    assert calls.count('a') == calls.count('b') == 2 + 3 * 4


def test_interleaved_timing_rotates_the_order():
    calls = []
    bench.time_interleaved({k: (lambda k=k: calls.append(k)) for k in 'abc'},
                           repeat=3, label='t', warmup=0)
    assert calls == list('abc' 'bca' 'cab')


def test_interleaved_timing_records_rounds_and_faults():
    calls = []
    record = {}
    medians = bench.time_interleaved(
        {'a': lambda: calls.append('a'),
         'b': lambda: bytearray(8 << 20)},  # 8 MiB written: faults likely
        repeat=3, label='t', record=record)
    assert set(medians) == set(record) == {'a', 'b'}
    assert len(calls) == 4  # one warm-up round, three timed
    for name in ('a', 'b'):
        assert len(record[name]['times']) == 3
        assert len(record[name]['faults']) == 3
        assert all(f >= 0 for f in record[name]['faults'])
        assert medians[name] == sorted(record[name]['times'])[1]


def test_steady_malloc_reports_what_it_set():
    # In a child process: mallopt changes this process's allocator for good.
    code = ('from gcnet_mm.benchmark import steady_malloc; '
            'print(steady_malloc())')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()
    if platform.libc_ver()[0] == 'glibc':
        assert out[-1] == 'steady (mallopt)'
    else:
        assert out[-1].startswith('default (')
