"""tools/benchmark/benchmark_blocks.py: its arguments and its picture (the
timings themselves stay out of the tests)."""
import importlib.util
import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'benchmark_blocks',
        osp.join(REPO, 'tools', 'benchmark', 'benchmark_blocks.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BLOCKS = {
    'C=512, 100x136': {'fused': 0.043, 'mmcv': 0.161, 'timm': 0.152,
                       'fused, torch ops': 0.048, 'reference': 0.15},
    'C=2048, 25x34': {'fused': 0.006, 'mmcv': 0.018, 'timm': 0.019,
                      'fused, torch ops': 0.007, 'reference': 0.017},
}
RESNET = ({'plain': 1.30, 'mmcv GC': 1.53, 'gcnet_mm GC, fused': 1.33,
           'gcnet_mm GC, reference': 1.5},
          {'plain': 100, 'mmcv GC': 126, 'gcnet_mm GC, fused': 100,
           'gcnet_mm GC, reference': 126})


@pytest.mark.parametrize('parts', [('blocks', 'resnet'), ('blocks', ),
                                   ('resnet', )])
def test_plot_draws_what_ran(tmp_path, parts):
    from PIL import Image
    tool = load_tool()
    path = tmp_path / 'bench.png'
    tool.plot_results(str(path), 'test machine',
                      BLOCKS if 'blocks' in parts else None,
                      RESNET if 'resnet' in parts else None)
    width, height = Image.open(path).size
    # One panel per part that ran, side by side.
    assert width == pytest.approx(780 * len(parts), rel=0.01)
    assert height == pytest.approx(504, rel=0.01)


def test_plot_without_results_says_so(tmp_path):
    with pytest.raises(ValueError, match='nothing to plot'):
        load_tool().plot_results(str(tmp_path / 'x.png'), 't')


def test_block_shapes_are_mask_rcnns_c3_c4_c5():
    assert load_tool().BLOCK_SHAPES == [
        (2, 512, 100, 136), (2, 1024, 50, 68), (2, 2048, 25, 34)]


def test_arguments():
    args = load_tool().parse_args(['--parts', 'blocks', '--plot', 'b.png',
                                   '--threads', '1'])
    assert args.parts == ['blocks'] and args.plot == 'b.png'
    assert args.threads == 1 and args.device == 'cpu'
    assert args.malloc == 'steady'
    assert load_tool().parse_args(['--malloc', 'default']).malloc == 'default'
    with pytest.raises(SystemExit):  # argparse names the allowed choices
        load_tool().parse_args(['--malloc', 'jemalloc'])


def test_op_times_and_paired_differences():
    """The per-operator profile: one dict per round for each function, and
    the difference to the base function names the operators only one of
    them runs."""
    import torch
    tool = load_tool()
    x = torch.randn(64, 64)
    ops = tool.op_times({'base': lambda: x.sum(),
                         'more': lambda: (x + 1).sum().neg()}, rounds=3)
    assert [len(v) for v in ops.values()] == [3, 3]
    assert all('aten::sum' in r for r in ops['base'])
    diff = tool.op_differences(ops, 'more', 'base')
    assert diff['aten::add'] > 0 and diff['aten::neg'] > 0
    assert 'aten::add' not in ops['base'][0]
    assert set(diff) >= {'aten::sum', 'total'}


def test_bn_mode_argument():
    tool = load_tool()
    assert tool.parse_args([]).bn == 'eval'
    assert tool.parse_args(['--bn', 'train']).bn == 'train'
    assert tool.parse_args([]).profile_rounds == 3
