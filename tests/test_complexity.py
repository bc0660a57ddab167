"""gcnet_mm.analysis.flops, .paper_tables and the reports, and
tools/analysis/get_complexity.py.

FLOPs: one fused multiply-add = 1 FLOP (mmengine's FlopAnalyzer).  Counts are
checked by hand on tiny modules; whole detectors are only counted at a tiny
input (a full 800x1333 Mask R-CNN takes tens of seconds: the tool's job,
see docs/complexity.md).
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gcnet_mm.analysis import complexity_reports as reports
from gcnet_mm.analysis import flops as harness
from gcnet_mm.analysis import paper_figures as figures
from gcnet_mm.analysis import paper_flops_fit
from gcnet_mm.analysis import paper_tables as pt
from gcnet_mm.analysis import quiet_measurer
from gcnet_mm.models.blocks import (ContextBlock, ContextBlock3d,
                                    NonLocalBlock, NonLocalBlock3d, SNLBlock,
                                    SNLBlock3d)

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / 'tools' / 'analysis' / 'get_complexity.py'
CLS_BASE = 'classification/gcnet/resnet50_8xb64-ft-coslr-40e_in1k.py'


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """The tool's results cache in a folder of the test's own."""
    monkeypatch.setenv('GCNET_MM_CACHE', str(tmp_path / 'cache'))


def _paper(config):
    """The paper's (first) row of a config that prints parameters."""
    return [r for r in figures.paper_rows(config) if r.params is not None][0]


def _load_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location('get_complexity', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- hand counts ------------------------------------------------------------


@pytest.mark.parametrize('k,cin,cout,h,w', [(1, 3, 8, 5, 7), (3, 4, 6, 6, 9)])
def test_conv_flops_by_hand(k, cin, cout, h, w):
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=True)
    flops, by_op = harness.count_flops(conv, torch.rand(1, cin, h, w))
    assert flops == h * w * cin * cout * k * k  # bias free
    assert by_op == {'conv': flops}


def test_broadcast_matmul_counts_every_batch():
    class Pool(nn.Module):  # (1, 1, C) @ (B, C, N): the batch broadcasts

        def forward(self, w, x):
            return torch.matmul(w, x)

    flops, _ = harness.count_flops(
        Pool(), (torch.rand(1, 1, 6), torch.rand(3, 6, 10)))
    assert flops == 3 * 6 * 10


def test_linear_and_batchnorm_by_hand():
    model = nn.Sequential(nn.Linear(10, 7), nn.ReLU()).eval()
    assert harness.count_flops(model, torch.rand(3, 10))[0] == 3 * 10 * 7
    bn = nn.BatchNorm2d(4).eval()  # inference: scale and shift per element
    assert harness.count_flops(
        bn, torch.rand(2, 4, 3, 5))[0] == 2 * 2 * 4 * 3 * 5


def test_mmcv_counter_adds_bias_and_relu():
    model = nn.Sequential(nn.Conv2d(2, 3, 1, bias=True), nn.ReLU()).eval()
    flops, by_op = harness.count_flops(model, torch.rand(1, 2, 4, 4), 'mmcv')
    # multiply-adds, plus one bias add and one ReLU per output element
    assert flops == 16 * 2 * 3 + 16 * 3 + 16 * 3
    assert by_op == {}


@pytest.mark.parametrize('modulated', [False, True])
@pytest.mark.parametrize('counter', ['fvcore', 'mmcv'])
def test_deformable_conv_counts_as_a_conv(modulated, counter):
    # mmcv's deformable convs are autograd Functions (fvcore) and not
    # nn.Conv2d subclasses (mmcv's counter): both skip them unless taught.
    # A DCN costs what a conv of its geometry costs, plus its offset conv.
    from mmcv.ops import DeformConv2dPack, ModulatedDeformConv2dPack
    cls = ModulatedDeformConv2dPack if modulated else DeformConv2dPack
    dcn = cls(8, 12, 3, stride=2, padding=1, groups=2, deform_groups=2).eval()
    plain = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=2, bias=modulated)
    x = torch.rand(1, 8, 9, 11)
    flops = harness.count_flops(dcn, x, counter)[0]
    out_elements = 12 * 5 * 6
    expected_conv = out_elements * (8 // 2) * 9  # multiply-adds
    if counter == 'mmcv' and modulated:
        expected_conv += out_elements  # its bias
    assert harness.count_flops(plain, x, counter)[0] == expected_conv
    assert flops == expected_conv + harness.count_flops(
        dcn.conv_offset, x, counter)[0]


@pytest.mark.parametrize('c,ratio,h,w',
                         [(16, 1 / 4, 5, 5), (32, 1 / 16, 3, 7)])
def test_context_block_flops_by_hand(c, ratio, h, w):
    block = ContextBlock(c, ratio).eval()
    p, n = int(c * ratio), h * w
    flops, by_op = harness.count_flops(block, torch.randn(2, c, h, w))
    per_image = (
        n * c  # conv_mask, C -> 1 at every position
        + c * n  # weighted sum of the features: (C, HW) @ (HW, 1)
        + c * p + p * c  # the two 1x1 convs of the bottleneck, on 1x1
        + 5 * p)  # LayerNorm([P, 1, 1]): mmengine counts 5 per element
    assert flops == 2 * per_image, by_op
    # and the same as mmcv's ContextBlock, the upstream reference
    from mmcv.cnn import ContextBlock as UpstreamContextBlock
    assert harness.count_flops(
        UpstreamContextBlock(c, ratio).eval(),
        torch.randn(2, c, h, w))[0] == flops


def test_nonlocal_and_snl_flops_by_hand():
    c, n = 16, 25
    inner = c // 2
    x = torch.randn(1, c, 5, 5)
    nl, _ = harness.count_flops(
        NonLocalBlock(c, norm_cfg=dict(type='BN')).eval(), x)
    assert nl == (3 * n * c * inner  # theta, phi, g
                  + 2 * n * n * inner  # theta^T phi and the sum over g
                  + n * inner * c  # output conv
                  + 2 * n * c)  # its BN (inference)
    snl, _ = harness.count_flops(SNLBlock(c).eval(), x)
    assert snl == n * c + c * n + c * c  # mask conv, pooling, C -> C conv


# --- configs ----------------------------------------------------------------


@pytest.mark.parametrize(
    'config', [CLS_BASE, 'mmpretrain::resnet/resnet50_8xb32_in1k.py'])
def test_resnet50_classifier_params(config):
    result = harness.get_complexity(config, params_only=True)
    assert result.task == 'classification'
    assert round(result.params / 1e6, 2) == _paper(CLS_BASE).params
    assert result.flops is None


def test_resnet50_flops_at_a_small_input():
    result = harness.get_complexity(CLS_BASE, shape=32)
    assert result.input_shape == (1, 3, 32, 32)
    # stride 32: the network is the 224 one on 7x fewer pixels per side, so
    # its convs cost about (32 / 224)^2 of 4.09G (borders round up)
    assert 0.06e9 < result.flops < 0.12e9
    by_op = result.flops_by_operator
    assert by_op['linear'] == 2048 * 1000  # the fc head
    assert by_op['conv'] + by_op['linear'] > 0.98 * result.flops
    assert 'multiply-add = 1 FLOP' in result.convention


def test_paper_nl_config_pools_its_input():
    """Table 4(a)'s NL config is the input-pooled NL block the paper's FLOPs
    count: at 64x64, c4 is 4x4 (16 positions) and phi/g see 2x2 (4)."""
    nl = 'classification/gcnet/resnet50-nl-c4-1blk_8xb64-ft-coslr-40e_in1k.py'
    base = harness.get_complexity(CLS_BASE, shape=64)
    with_nl = harness.get_complexity(nl, shape=64)
    c, inner, n, k = 1024, 512, 16, 4
    expected = (2 * n * c * inner  # theta and the output conv, full res
                + 2 * k * c * inner  # phi and g on the pooled input
                + 2 * n * k * inner  # theta^T phi and the sum over g
                + 2 * n * c)  # BN of the output conv (inference)
    assert with_nl.flops - base.flops == expected


def test_detector_flops_at_a_tiny_input():
    name = 'detection/gcnet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py'
    result = harness.get_complexity(name, shape=(60, 90))
    # padded to a multiple of 32 by the detector's data preprocessor
    assert result.input_shape == (1, 3, 64, 96)
    assert round(result.params / 1e6, 1) == _paper(name).params
    assert 'RoIs to the bbox head' in result.notes
    assert result.flops > 0
    # the parts of the model add up to the whole; one RoI stage
    parts = result.flops_by_part
    assert set(parts) == {'backbone', 'neck', 'rpn_head', 'roi_head'}
    assert sum(parts.values()) == result.flops
    assert result.roi_stages == 1


def test_cascade_mask_heads_capped_as_at_inference():
    # mmdet's tensor mode runs a cascade's 3 mask heads on every proposal;
    # the count caps them at test_cfg.rcnn.max_per_img (100) RoIs
    name = 'detection/gcnet/cascade-mask-rcnn_x101-32x4d-syncbn_fpn_1x_coco.py'
    result = harness.get_complexity(name, shape=(200, 320))
    assert result.notes == ('1000 RoIs to the bbox head, '
                            '100 RoIs to the mask head')
    assert result.roi_stages == 3


def test_format_results_prints_flops_by_part():
    result = harness.Complexity('x.py', 'classification', 10, 4_000_000_000,
                                (224, 224), (1, 3, 224, 224), {}, '',
                                'conv.',
                                dict(backbone=3_990_000_000, head=2_000_000))
    text = reports.format_results([result])
    assert '  by part: backbone 3.99G, head 2.00M' in text


def test_segmentor_flops_without_aux_head():
    name = 'segmentation/gcnet/gcnet_r50-d8_4xb4-20k_voc12aug-512x512.py'
    result = harness.get_complexity(name, shape=32)
    assert result.input_shape == (1, 3, 32, 32)
    assert 'auxiliary head' in result.notes
    assert result.flops > 0


def _fit_row(config, rest, heads, stages, paper):
    return dict(
        row=config,
        config=f'detection/x/{config}.py',
        flops_g=rest + heads,
        paper_flops_g=paper,
        flops_by_part_g=dict(backbone=rest, roi_head=heads),
        roi_stages=stages)


def test_fit_paper_convention_recovers_scale_and_per_stage():
    scale, per_stage = 0.9, 20.0

    def paper(rest, heads, stages):
        return scale * rest + heads + per_stage * stages

    cases = [('a', 200.0, 67.0, 1), ('b', 280.0, 67.0, 1),
             ('c', 285.0, 201.0, 3), ('d', 297.0, 201.0, 3)]
    rows = [_fit_row(n, r, h, s, paper(r, h, s)) for n, r, h, s in cases]
    # an NL row is held out: not fitted on, but predicted like the others
    rows.append(_fit_row('mask-rcnn_r50-nl-c4', 227.0, 67.0, 1, 280.0))
    fit = paper_flops_fit.fit_paper_convention(rows)
    assert fit['rows_used'] == 4
    assert fit['scale'] == pytest.approx(scale)
    assert fit['per_stage_g'] == pytest.approx(per_stage)
    residuals = {k.split('/')[-1]: v['residual_g']
                 for k, v in fit['rows'].items()}
    assert max(abs(residuals[n + '.py']) for n in 'abcd') < 1e-9
    nl = residuals['mask-rcnn_r50-nl-c4.py']
    assert nl == pytest.approx(280.0 - (scale * 227 + 67 + per_stage))
    text = paper_flops_fit.format_fit(fit)
    assert '0.900 x' in text and '20.00G x RoI stages' in text
    assert 'largest |paper - estimate| of the fitted rows' in text
    assert 'held out (predicted, not fitted): mask-rcnn_r50-nl-c4' in text
    assert fit['rows']['detection/x/mask-rcnn_r50-nl-c4.py']['fitted'] is False


def test_fit_paper_convention_needs_two_stage_counts():
    rows = [_fit_row('a', 200.0, 67.0, 1, 280.0),
            _fit_row('b', 280.0, 67.0, 1, 350.0)]
    assert paper_flops_fit.fit_paper_convention(rows) is None  # no cascade
    rows[0]['flops_g'] = None  # params-only rows are skipped
    assert paper_flops_fit.fit_paper_convention(rows) is None


def test_paper_tables_are_rows_of_existing_configs():
    assert set(figures.PAPER_TABLES) == {'2a', '3', '4a', 'cityscapes', '5'}
    assert len(figures.table_rows('3')) == 15
    for name in figures.PAPER_TABLES:
        for row in figures.table_rows(name):
            assert (harness.CONFIGS_DIR / row.config).is_file(), row
            assert row.params > 0 and row.flops > 0
    # Tables 2(a) and 3 share the R-50 baseline and GC r16: measured once
    jobs = pt.table_jobs(['2a', '3'])
    assert len(jobs) == 5 + 15 - 2
    assert {size for _, size in jobs} == {(800, 1333)}


def test_paper_table_4a_params_match():
    rows = pt.paper_table('4a', params_only=True)
    assert [r['row'] for r in rows] == [
        'baseline', '+1 NL', '+1 SNL', '+1 GC', '+all GC'
    ]
    for row in rows:
        assert round(row['params_m'], 2) == row['paper_params_m'], row
        assert row['flops_g'] is None and row['paper_flops_g'] > 0


# --- video (Table 5) ---------------------------------------------------------

VIDEO = 'recognition/gcnet/slowonly_'
K400 = '_8xb16-8x8x1-steplr-150e_kinetics400-rgb.py'
VIDEO_BASE = VIDEO + 'imagenet-pretrained-r50' + K400


def test_video_block_flops_by_hand():
    """The 3-D blocks cost what the 2-D ones cost on T*H*W positions."""
    c, inner, t, h, w = 16, 8, 3, 4, 6
    n, k = t * h * w, t * (h // 2) * (w // 2)
    x = torch.randn(1, c, t, h, w)
    gc, _ = harness.count_flops(ContextBlock3d(c, ratio=1 / 4).eval(), x)
    assert gc == n * c + c * n + 2 * c * (c // 4) + 5 * (c // 4)
    snl, _ = harness.count_flops(SNLBlock3d(c, mask_bias=False).eval(), x)
    assert snl == n * c + c * n + c * c
    nl, _ = harness.count_flops(NonLocalBlock3d(
        c, sub_sample='input', norm_cfg=dict(type='BN3d')).eval(), x)
    assert nl == (2 * n * c * inner  # theta and the output conv
                  + 2 * k * c * inner  # phi and g on the 1x2x2-pooled input
                  + 2 * n * k * inner  # theta^T phi and the sum over g
                  + 2 * n * c)  # BN3d of the output conv (inference)


def test_paper_table_5_params_match():
    rows = pt.paper_table('5', params_only=True)
    assert [r['row'] for r in rows] == [
        'baseline', '+5 NL', '+5 SNL', '+5 GC', '+all GC'
    ]
    for row in rows:
        assert round(row['params_m'], 2) == row['paper_params_m'], row
    # the paper's FLOPs: the NL blocks cost, the others nearly nothing
    flops = {r['row']: r['paper_flops_g'] for r in rows}
    assert max(flops, key=flops.get) == '+5 NL'


def test_video_flops_of_one_clip_at_a_small_input():
    """One clip of the config's 8 frames through backbone and head; the 5
    NL blocks (2 in c3, 3 in c4) add what their arithmetic says."""
    base = harness.get_complexity(VIDEO_BASE, shape=64)
    assert base.task == 'recognition'
    assert base.input_shape == (1, 1, 3, 8, 64, 64)
    assert base.notes == 'one clip of 8 frames'
    assert set(base.flops_by_part) == {'backbone', 'cls_head'}
    assert base.flops_by_operator['linear'] == 2048 * 400  # the fc head
    nl = harness.get_complexity(VIDEO + 'r50-in1k-pre-nl-5blk' + K400,
                                shape=64)
    added = 0
    for blocks, c, side in ((2, 512, 8), (3, 1024, 4)):  # c3, c4 at 64x64
        n, k, inner = 8 * side * side, 8 * (side // 2)**2, c // 2
        added += blocks * (2 * n * c * inner + 2 * k * c * inner +
                           2 * n * k * inner + 2 * n * c)
    assert nl.flops - base.flops == added
    text = reports.format_table('5', [dict(
        row='baseline', config=VIDEO_BASE, params_m=2.004,
        paper_params_m=2.0, params_diff_m=0.004, flops_g=1.0,
        paper_flops_g=1.0, flops_diff_g=0.0, flops_rel_diff=0.0,
        shape=(64, 64), input_shape=base.input_shape, notes=base.notes,
        remark=None, convention=base.convention)])
    assert 'Input 8 frames of 64x64.' in text


# --- arguments and the CLI --------------------------------------------------


@pytest.mark.parametrize('shape,expected', [(224, (224, 224)),
                                            ([800, 1333], (800, 1333)),
                                            ((7, ), (7, 7)), (None, None)])
def test_check_shape(shape, expected):
    assert harness.check_shape(shape) == expected


@pytest.mark.parametrize('shape', [0, (3, 4, 5), (224, -1), (2.5, 3), 'ab',
                                   True, ()])
def test_bad_shape(shape):
    with pytest.raises(ValueError, match='shape must be one or two positive'):
        harness.check_shape(shape)


def test_missing_config():
    with pytest.raises(ValueError, match=r"config file 'nope\.py' not found"):
        harness.get_complexity('nope.py')
    with pytest.raises(ValueError, match='not found'):
        harness.resolve_config('mmdet::gcnet/nope.py')


def test_bad_table_and_counter():
    with pytest.raises(ValueError, match="unknown paper table '9z'.*'2a'"):
        pt.paper_table('9z')
    with pytest.raises(ValueError, match="counter must be 'fvcore' or 'mmcv'"):
        harness.get_complexity(CLS_BASE, counter='ptflops')


def test_cli_paper_tables_params_only(capsys, tmp_path):
    tool = _load_tool()
    out = tmp_path / 'results.json'
    assert tool.main(['--paper-tables', '4a', '--params-only', '--out',
                      str(out)]) == 0
    text = capsys.readouterr().out
    assert 'Table 4(a)' in text
    assert '| row | config | params (M) | paper | diff |' in text
    # the paper's columns: params and FLOPs of every row, as the metafiles
    # give them
    paper = figures.table_rows('4a')
    for row in paper:
        line, = [line for line in text.splitlines()
                 if line.startswith(f'| {row.row} |')]
        assert f'| {row.params:.2f} |' in line and f'| {row.flops:.2f} |' \
            in line, line
    assert 'multiply-add = 1 FLOP' in text
    rows = json.loads(out.read_text())['4a']
    assert [r['paper_params_m'] for r in rows] == [r.params for r in paper]


def test_cli_config_params_only(capsys):
    tool = _load_tool()
    assert tool.main([CLS_BASE, '--params-only']) == 0
    assert f'params: {_paper(CLS_BASE).params}M' in capsys.readouterr().out


def _paper_line(config):
    row = _paper(config)
    return (f'paper: {row.params}M params, {row.flops}G FLOPs (Table 4(a): '
            'block design, ResNet-50 (ImageNet), at 224x224: baseline)')


def test_cli_config_of_a_paper_table_shows_the_paper(capsys):
    tool = _load_tool()
    assert tool.main([CLS_BASE, '--params-only']) == 0
    out = capsys.readouterr().out
    assert _paper_line(CLS_BASE) in out
    other = 'classification/gcnet/resnet50_8xb64-coslr-120e_in1k.py'
    assert tool.main([other, '--params-only']) == 0
    assert 'paper:' not in capsys.readouterr().out  # in no paper table


def test_cli_config_of_another_checkout_shows_the_paper(
        capsys, tmp_path, monkeypatch):
    """A config named by its path in a checkout (absolute, or relative to
    the checkout) gets the paper's figures as its package-relative name
    does; the same file outside a configs/ tree gets none."""
    clone = tmp_path / 'clone'
    shutil.copytree(harness.CONFIGS_DIR / 'classification',
                    clone / 'configs' / 'classification')
    tool = _load_tool()
    relative = Path('configs') / CLS_BASE
    assert tool.main([str(clone / relative), '--params-only']) == 0
    assert _paper_line(CLS_BASE) in capsys.readouterr().out
    monkeypatch.chdir(clone)
    assert tool.main([str(relative), '--params-only']) == 0
    assert _paper_line(CLS_BASE) in capsys.readouterr().out
    elsewhere = tmp_path / 'mine' / Path(CLS_BASE).name
    elsewhere.parent.mkdir()
    shutil.copy(clone / relative, elsewhere)
    shutil.copy(clone / relative.parent / 'resnet50_8xb64-coslr-120e_in1k.py',
                elsewhere.parent)
    assert tool.main([str(elsewhere), '--params-only']) == 0
    out = capsys.readouterr().out
    assert 'params: ' in out and 'paper:' not in out


# mmaction2 made unimportable in a fresh interpreter, which then runs the
# tool: argv[1] is the tool, the rest its arguments
_WITHOUT_MMACTION = """\
import runpy
import sys


class BlockMmaction:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'mmaction':
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)


sys.meta_path.insert(0, BlockMmaction())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_cli_skips_the_table_of_a_host_that_does_not_import(tmp_path):
    """Without mmaction2, --paper-tables prints one line for Table 5 and the
    other tables as usual."""
    script = tmp_path / 'without_mmaction.py'
    script.write_text(_WITHOUT_MMACTION)
    out = tmp_path / 'results.json'
    env = dict(os.environ, GCNET_MM_CACHE=str(tmp_path / 'cache'),
               PYTHONPATH=os.pathsep.join(
                   [str(ROOT), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run(
        [sys.executable, str(script), str(TOOL), '--paper-tables', '5', '4a',
         '--params-only', '--out', str(out)],
        capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    skipped = [line for line in lines if 'skipped' in line]
    assert skipped == [
        f'{figures.get_table("5").heading}: skipped, mmaction does not '
        "import (ModuleNotFoundError: No module named 'mmaction')"]
    assert lines[0] == skipped[0]  # in the order asked for
    assert f'### {figures.get_table("4a").heading}' in lines
    assert sum(line.startswith('| +') for line in lines) == 4  # 4(a)'s rows
    results = json.loads(out.read_text())
    assert set(results) == {'4a', 'skipped'} and '5' in results['skipped']


def _noisy_measure(monkeypatch):
    """get_complexity as the tool calls it, printing what model building and
    tracing print: python prints and warnings, and a C-level write to fd 2;
    returns the list of configs it measured."""
    import warnings
    measured = []
    real = quiet_measurer.get_complexity

    def noisy(config, **kwargs):
        measured.append(config)
        print('NOISE on stdout')
        warnings.warn('NOISE as a warning')
        os.write(2, b'NOISE from C\n')
        return real(config, **kwargs)

    monkeypatch.setattr(quiet_measurer, 'get_complexity', noisy)
    return measured


def test_cli_terminal_shows_progress_then_tables(capfd, monkeypatch):
    """While measuring, a progress line is all the terminal gets; what the
    models print goes to a log file; the tables follow, clean."""
    measured = _noisy_measure(monkeypatch)
    tool = _load_tool()
    assert tool.main(['--paper-tables', '4a', '--params-only']) == 0
    out, err = capfd.readouterr()
    assert len(measured) == 5 and 'NOISE' not in out + err
    assert out.startswith('### Table 4(a)')
    progress = [line for line in err.splitlines() if line.startswith('[')]
    assert len(progress) == 5 and progress[0].startswith('[1/5] resnet50')
    note = err.strip().splitlines()[-1]
    assert note.startswith('(') and 'lines of warnings and logs' in note
    log = note.split(': ')[-1].rstrip(')')
    with open(log) as f:
        text = f.read()
    for noise in ('NOISE on stdout', 'UserWarning: NOISE as a warning',
                  'NOISE from C'):
        assert text.count(noise) == 5, noise


def test_cli_rerun_reads_the_cache(capfd, monkeypatch, tmp_path):
    tool = _load_tool()
    assert tool.main(['--paper-tables', '4a', '--params-only']) == 0
    first = capfd.readouterr()

    def no_model(*args, **kwargs):
        raise AssertionError('measured again')

    with monkeypatch.context() as patch:
        patch.setattr(harness, '_measure', no_model)
        assert tool.main(['--paper-tables', '4a', '--params-only']) == 0
        again = capfd.readouterr()
        assert again.out == first.out and again.err.count('(cached)') == 5
        with pytest.raises(AssertionError, match='measured again'):
            tool.main(['--paper-tables', '4a', '--params-only', '--no-cache'])
    # a config whose text changes (here its number of classes) is measured
    # afresh
    cache = harness.default_cache_dir()
    mine = tmp_path / 'mine.py'
    base = f"_base_ = '{harness.CONFIGS_DIR / CLS_BASE}'\n"
    mine.write_text(base)
    before = harness.get_complexity(str(mine), params_only=True,
                                    cache_dir=cache)
    assert harness.is_cached(str(mine), params_only=True, cache_dir=cache)
    mine.write_text(base + 'model = dict(head=dict(num_classes=10))\n')
    assert not harness.is_cached(str(mine), params_only=True,
                                 cache_dir=cache)
    after = harness.get_complexity(str(mine), params_only=True,
                                   cache_dir=cache)
    assert before.params - after.params == 990 * 2049


@pytest.mark.parametrize('argv,message', [
    (['missing.py'], "config file 'missing.py' not found"),
    ([CLS_BASE, '--shape', '1', '2', '3'], 'shape must be one or two'),
    ([CLS_BASE, '--shape', '0'], 'shape must be one or two'),
    (['--paper-tables', 'x'], "unknown paper table 'x'"),
    ([], 'give CONFIG files or --paper-tables'),
])
def test_cli_errors(argv, message):
    tool = _load_tool()
    with pytest.raises(ValueError, match=message):
        tool.main(argv)


def test_cli_script_exits_with_a_message():
    proc = subprocess.run([sys.executable, str(TOOL), 'missing.py'],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    assert "error: config file 'missing.py' not found" in proc.stderr
    assert 'Traceback' not in proc.stderr
