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
    'C=512, 100x136': {'gcnet_mm': 0.043, 'mmcv': 0.161, 'timm': 0.152,
                       'ops': 0.048},
    'C=2048, 25x34': {'gcnet_mm': 0.006, 'mmcv': 0.018, 'timm': 0.019,
                      'ops': 0.007},
}
RESNET = ({'plain': 1.30, 'mmcv GC': 1.53, 'gcnet_mm GC': 1.33},
          {'plain': 100, 'mmcv GC': 126, 'gcnet_mm GC': 100})


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


def test_arguments():
    args = load_tool().parse_args(['--parts', 'blocks', '--plot', 'b.png',
                                   '--threads', '1'])
    assert args.parts == ['blocks'] and args.plot == 'b.png'
    assert args.threads == 1 and args.device == 'cpu'
