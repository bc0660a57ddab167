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


# --- README.md and docs/benchmark.md quote the stored runs ------------------

RUNS = osp.join(REPO, 'docs', 'benchmark_runs')
# The runs the CPU tables quote (BN in eval mode, the configs' setting).
CPU_RUNS = [osp.join(RUNS, f'cpu-{i}.txt') for i in (1, 2, 3)]


def run_tables(path):
    """(machine, block rows, step rows) of one benchmark output: the block
    rows map shape -> {candidate: ratio to mmcv's}, the step rows map model
    -> (paired time ratio, saved-activation ratio) to the plain step's."""
    with open(path) as f:
        lines = f.read().splitlines()
    machine = lines[0].lstrip('# ').split(',')[0]
    blocks, steps, part = {}, {}, None
    for line in lines[1:]:
        if line.startswith('## '):
            part = 'blocks' if 'GC block' in line else (
                'steps' if 'train step' in line else None)
            continue
        if part == 'blocks' and line.strip().startswith('('):
            shape, values = line.split(')')
            values = [float(v) for v in values.split()]
            paths, (mmcv, timm) = values[:-6], values[-6:-4]
            c = int(shape.split(',')[1])
            blocks[c] = {'fused': paths[0] / mmcv, 'reference':
                         paths[-1] / mmcv, 'timm': timm / mmcv}
            if len(paths) == 3:
                blocks[c]['fused, torch ops'] = paths[1] / mmcv
        elif part == 'steps' and not line.startswith('time x'):
            cells = line.rsplit(None, 6)
            if len(cells) == 7 and 'faults/step' not in line:
                steps[cells[0].strip()] = (float(cells[3]), float(cells[5]))
        elif part == 'steps':
            part = None
    return machine, blocks, steps


def spread(values, digits=2):
    """'a.bcx to d.efx (median g.hix)', or one figure where all agree."""
    values = sorted(values)
    low, mid, high = (f'{v:.{digits}f}x' for v in
                      (values[0], values[len(values) // 2], values[-1]))
    return low if low == high else f'{low} to {high} (median {mid})'


def table_row(text, label):
    """The cells after the first of the markdown table row ``label``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if cells[0] == label:
            return cells[1:]
    raise AssertionError(f'no table row {label!r}')


def quoted_rows():
    """Each table row of the CPU figures: (label, expected cells)."""
    runs = [run_tables(p) for p in CPU_RUNS]
    machines = {m for m, _, _ in runs}
    assert len(machines) == 1, machines
    machine = f'shared 2-core {machines.pop()}'
    block_rows = {
        "gcnet_mm fused / mmcv's `ContextBlock`": 'fused',
        'gcnet_mm fused on PyTorch-ops kernels / mmcv\'s': 'fused, torch ops',
        "gcnet_mm reference / mmcv's": 'reference',
        "timm's `GlobalContext` / mmcv's": 'timm',
    }
    for label, name in block_rows.items():
        yield label, [machine] + [
            spread([r[1][c][name] for r in runs]) for c in (512, 1024, 2048)]
    step_rows = {
        "GC r16 c3-c5, mmcv's `ContextBlock`": 'mmcv GC',
        'GC r16 c3-c5, gcnet_mm fused': 'gcnet_mm GC, fused',
        'GC r16 c3-c5, gcnet_mm fused on PyTorch-ops kernels':
        'gcnet_mm GC, fused, torch ops',
        'GC r16 c3-c5, gcnet_mm reference': 'gcnet_mm GC, reference',
    }
    for label, name in step_rows.items():
        yield label, [machine,
                      spread([r[2][name][0] for r in runs]),
                      spread([r[2][name][1] for r in runs], digits=3)]


@pytest.mark.parametrize('doc', ['README.md', 'docs/benchmark.md'])
def test_speed_tables_quote_the_stored_runs(doc):
    """Every row of the CPU speed tables names its machine and gives the
    spread of the three stored runs (docs/benchmark_runs), not one run."""
    with open(osp.join(REPO, doc)) as f:
        text = f.read()
    rows = list(quoted_rows())
    found = 0
    for label, expected in rows:
        try:
            cells = table_row(text, label)
        except AssertionError:
            if doc == 'docs/benchmark.md':
                raise  # the full tables are all there
            continue  # the README quotes a selection
        assert cells == expected, (doc, label)
        found += 1
    assert found >= 4, f'{doc} quotes {found} rows of the stored runs'


def test_stored_runs_parse():
    """The parser reads what the tool prints: all candidates, all shapes."""
    machine, blocks, steps = run_tables(CPU_RUNS[0])
    assert machine
    assert set(blocks) == {512, 1024, 2048}
    assert {'plain', 'mmcv GC', 'gcnet_mm GC, fused',
            'gcnet_mm GC, reference'} <= set(steps)
    assert steps['plain'] == (1.0, 1.0)


def test_bn_train_run_is_quoted():
    """docs/benchmark.md's figures of the --bn train run are its file's."""
    _, _, steps = run_tables(osp.join(RUNS, 'cpu-bn-train.txt'))
    with open(osp.join(REPO, 'docs', 'benchmark.md')) as f:
        text = ' '.join(f.read().split())
    fused, torch_ops, ref, mmcv = (
        steps[k] for k in ('gcnet_mm GC, fused',
                           'gcnet_mm GC, fused, torch ops',
                           'gcnet_mm GC, reference', 'mmcv GC'))
    assert (f'{fused[0]:.3f}x for the fused path, {torch_ops[0]:.3f}x for '
            f'the fused path on PyTorch-ops kernels, {ref[0]:.3f}x for the '
            f"reference path and {mmcv[0]:.3f}x for mmcv's block; saved "
            f'activations {fused[1]:.3f}x for the fused path, {ref[1]:.3f}x '
            'for the others') in text
