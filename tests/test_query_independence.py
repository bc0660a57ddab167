"""Query-independence analysis (paper Table 1, Figure 1): the recomputed
attention, the distances, and the tool end to end on a tiny classifier."""
import json
import math
import os.path as osp

import numpy as np
import pytest
import torch
from mmcv.cnn import NonLocal2d, NonLocal3d
from PIL import Image

import gcnet_mm  # noqa: F401
from gcnet_mm.analysis.query_independence import (QueryIndependenceRecorder,
                                                  _attention_figure,
                                                  analyze_query_independence,
                                                  find_nonlocal_blocks,
                                                  nonlocal_attention,
                                                  nonlocal_branch,
                                                  sample_query_pairs)
from gcnet_mm.models.blocks.nonlocal_block import (NonLocalBlock,
                                                   NonLocalBlock3d,
                                                   sub_sample_of)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
NL_CLS_CONFIG = osp.join(
    ROOT, 'configs/classification/gcnet/'
    'resnet50-nl-c4-1blk_8xb64-ft-coslr-40e_in1k.py')


def _randomise(block: NonLocal2d) -> NonLocal2d:
    """Random (never zero) weights everywhere, eval mode."""
    torch.manual_seed(0)
    for p in block.parameters():
        p.data.normal_(0, 0.5)
    for m in block.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return block.eval()


BLOCKS = [
    lambda: NonLocalBlock(8),
    lambda: NonLocalBlock(8, sub_sample=True),
    lambda: NonLocalBlock(8, use_scale=False, reduction=4),
    lambda: NonLocalBlock(8, mode='gaussian', sub_sample=True),
    lambda: NonLocalBlock(8, sub_sample='input'),
    lambda: NonLocalBlock(8, mode='gaussian', sub_sample='input'),
    lambda: NonLocalBlock(8, mode='dot_product'),
    lambda: NonLocalBlock(8, mode='concatenation', norm_cfg=None),
    lambda: NonLocal2d(8, sub_sample=True, norm_cfg=dict(type='BN')),
    lambda: NonLocal2d(8, mode='gaussian'),
]


@pytest.mark.parametrize('make', BLOCKS)
def test_recomputed_attention_reproduces_the_block(make):
    block = _randomise(make())
    x = torch.randn(2, 8, 6, 5)
    with torch.no_grad():
        attention = nonlocal_attention(block, x)
        key_hw = 3 * 2 if sub_sample_of(block) else 30
        assert attention.shape == (2, 30, key_hw)
        if block.mode in ('embedded_gaussian', 'gaussian'):
            torch.testing.assert_close(attention.sum(-1),
                                       torch.ones(2, 30))
        out = x + nonlocal_branch(block, x, attention)
        torch.testing.assert_close(out, block(x), rtol=1e-5, atol=1e-5)


BLOCKS_3D = [
    lambda: NonLocalBlock3d(8),
    lambda: NonLocalBlock3d(8, sub_sample=True),
    lambda: NonLocalBlock3d(8, sub_sample='input'),
    lambda: NonLocalBlock3d(8, mode='concatenation', norm_cfg=None),
    lambda: NonLocal3d(8, sub_sample=True, norm_cfg=dict(type='BN3d')),
]


@pytest.mark.parametrize('make', BLOCKS_3D)
def test_recomputed_attention_reproduces_the_3d_block(make):
    """Queries and keys over all T x H x W positions of a clip."""
    block = _randomise(make())
    x = torch.randn(2, 8, 3, 6, 5)
    with torch.no_grad():
        attention = nonlocal_attention(block, x)
        keys = 3 * 3 * 2 if sub_sample_of(block) else 90
        assert attention.shape == (2, 90, keys)
        out = x + nonlocal_branch(block, x, attention)
        torch.testing.assert_close(out, block(x), rtol=1e-5, atol=1e-5)


def test_3d_block_statistics_and_middle_frame_figure_data():
    block = _randomise(NonLocalBlock3d(8, sub_sample='input'))
    image = torch.randn(1, 3, 6, 24, 20)  # the backbone input: 6 frames
    rec = QueryIndependenceRecorder([('nl', block)], num_pairs=50,
                                    num_queries=2, num_vis=1)
    with rec, torch.no_grad():
        rec.next_image()
        rec._see_image(None, (image, ))  # as the backbone's pre-hook does
        block(torch.randn(1, 8, 3, 6, 5))
    (row, ) = rec.results()
    assert row['num_pairs'] == 50 and row['feature_size'] == [3, 6, 5]
    assert row['key_size'] == [3, 3, 2]
    assert row['max_reproduction_error'] < 1e-5
    (vis, ) = rec.vis
    assert vis['frame'] == (1, 3)  # the middle of 3 feature frames
    assert vis['maps'].shape == (2, 3, 2)  # that frame's keys
    assert torch.equal(vis['image'], image[0, :, 2])  # input frame 1 * 6 // 3


def test_3d_query_independent_attention_has_zero_distance():
    block = _randomise(NonLocalBlock3d(8, sub_sample='input'))
    block.theta.conv.weight.data.zero_()
    block.theta.conv.bias.data.zero_()
    r = _run(block, torch.randn(1, 8, 3, 6, 6))
    assert r['attention_cos'] < 1e-6 and r['output'] < 1e-6
    assert r['input'] > 0.1


def _panels(vis):
    """The pixels inside each attention-map panel of a drawn figure."""
    fig, axes = _attention_figure(vis)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())
    height = pixels.shape[0]
    panels = []
    for row in axes:
        for ax in row[1:-1]:
            box = ax.get_window_extent()
            x0, x1 = int(box.x0) + 3, int(box.x1) - 3  # inside the frame
            y0, y1 = height - int(box.y1) + 3, height - int(box.y0) - 3
            panels.append(pixels[y0:y1, x0:x1, :3].copy())
    return panels


def _vis(maps, image=None):
    return [dict(image_index=0, block='backbone.layer3.4.nonlocal_block',
                 feature_size=(6, 8), key_size=(3, 4),
                 points=[(1, 1), (4, 6), (2, 5)][:len(maps)],
                 maps=torch.stack(maps), frame=None, image=image)]


def test_identical_maps_produce_identical_pixels():
    """One colour scale per row: maps that are the same (cosine distance
    ~1e-9, as trained NL blocks give) look the same, and a map with half the
    weight here and there looks different (a per-map scale would hide it)."""
    torch.manual_seed(0)
    base = torch.rand(3, 4).softmax(-1)
    near = [base, base * (1 + 1e-9 * torch.randn(3, 4)), base.clone()]
    a, b, c = _panels(_vis(near, image=torch.rand(3, 48, 64)))
    assert a.shape[0] > 50 and a.shape[1] > 50
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 3  # not blank
    flatter = base.clone()
    flatter[0] = base[0] * 0.5 + base[0].mean() * 0.5  # same pattern, weaker
    d, e = _panels(_vis([base, flatter]))
    assert not np.array_equal(d, e)


def _run(block, x, num_pairs=200):
    rec = QueryIndependenceRecorder([('nl', block)], num_pairs=num_pairs,
                                    num_vis=0)
    with rec, torch.no_grad():
        rec.next_image()
        block(x)
    return rec.results()[0]


@pytest.mark.parametrize('sub_sample', [False, True, 'input'])
def test_query_independent_attention_has_zero_distance(sub_sample):
    block = _randomise(NonLocalBlock(8, sub_sample=sub_sample))
    block.theta.conv.weight.data.zero_()
    block.theta.conv.bias.data.zero_()  # logits no longer depend on query
    r = _run(block, torch.randn(1, 8, 6, 6))
    assert r['attention_cos'] < 1e-6 and r['attention_js'] < 1e-6
    assert r['output'] < 1e-6  # same context added at every position
    assert r['input'] > 0.1
    assert r['max_reproduction_error'] < 1e-5


def test_query_dependent_attention_has_clear_distance():
    r = _run(_randomise(NonLocalBlock(8)), torch.randn(1, 8, 6, 6))
    assert r['attention_cos'] > 1e-2 and r['attention_js'] > 1e-2
    assert r['attention_js'] <= math.log(2)
    assert r['num_pairs'] == 200 and r['num_calls'] == 1


def test_untrained_block_output_is_nan_not_zero():
    block = NonLocalBlock(8).eval()  # zero-initialised last layer: z == 0
    r = _run(block, torch.randn(1, 8, 4, 4))
    assert math.isnan(r['output'])
    assert r['block_output'] == pytest.approx(r['input'])


def test_sample_query_pairs():
    g = torch.Generator().manual_seed(0)
    pairs = sample_query_pairs(50, 1000, g)
    assert pairs.shape == (1000, 2) and (pairs[:, 0] != pairs[:, 1]).all()
    assert pairs.min() >= 0 and pairs.max() < 50
    assert len(sample_query_pairs(5, 100)) == 10  # every unordered pair
    assert len(sample_query_pairs(1, 10)) == 0
    again = sample_query_pairs(50, 1000, torch.Generator().manual_seed(0))
    assert torch.equal(pairs, again)


def _tiny_config(tmp_path, data_root):
    """R-18 with one NL block in layer3 (the NL classification config),
    64 x 64 inputs, NL weights not zero-initialised."""
    cfg = tmp_path / 'tiny_nl.py'
    cfg.write_text(f"""
_base_ = {NL_CLS_CONFIG!r}
load_from = None
model = dict(
    backbone=dict(depth=18, plugins=[dict(
        cfg=dict(type='gcnet_mm.NonLocalBlock', zeros_init=False, std=0.1),
        blocks={{'layer3': [-1]}}, position='after_add')]),
    head=dict(in_channels=512))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=64, edge='short'),
    dict(type='CenterCrop', crop_size=64),
    dict(type='PackInputs'),
]
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root={str(data_root)!r}, pipeline=test_pipeline))
val_dataloader = test_dataloader
""")
    return str(cfg)


@pytest.fixture(scope='module')
def toy_imagenet(tmp_path_factory):
    from gcnet_mm.datasets.toy_data import make_imagenet
    root = tmp_path_factory.mktemp('toy_imagenet')
    make_imagenet(str(root), num_train=1, num_val=1, num_classes=2)
    return root


def test_tool_end_to_end(tmp_path, toy_imagenet, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'qi_tool', osp.join(ROOT, 'tools/analysis/query_independence.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out_dir = tmp_path / 'out'
    with pytest.warns(UserWarning, match='RANDOMLY INITIALISED'):
        tool.main([_tiny_config(tmp_path, toy_imagenet), '--num-images',
                   '2', '--num-pairs', '50', '--queries', '2',
                   '--out-dir', str(out_dir), '--device', 'cpu'])
    printed = capsys.readouterr().out
    assert 'attention map (JS)' in printed
    assert 'backbone.layer3.1.nonlocal_block' in printed
    data = json.loads((out_dir / 'query_independence.json').read_text())
    assert data['meta']['num_images'] == 2 and data['meta']['random_init']
    (row, ) = data['blocks']
    assert row['num_pairs'] == 100 and row['num_calls'] == 2
    for key in ('input', 'attention_cos', 'attention_js', 'output'):
        assert row[key] is not None and 0 <= row[key] <= 2
    assert row['max_reproduction_error'] < 1e-4
    header = (out_dir / 'query_independence.csv').read_text().splitlines()[0]
    assert header.startswith('block,input,attention_cos,attention_js,output')
    with Image.open(out_dir / 'attention_maps.png') as png:
        assert png.width >= 400 and png.height >= 150  # 2 rows x 3 panels
        assert png.width > png.height


def test_image_folder(tmp_path, toy_imagenet):
    folder = tmp_path / 'imgs'
    folder.mkdir()
    for k, src in enumerate(sorted((toy_imagenet / 'val').iterdir())[:2]):
        Image.open(src).convert('RGB').save(folder / f'{k}.png')
    (folder / 'notes.txt').write_text('not an image')
    with pytest.warns(UserWarning, match='RANDOMLY'):
        out = analyze_query_independence(
            _tiny_config(tmp_path, toy_imagenet), images=str(folder),
            num_images=5, num_pairs=20, num_vis=1, device='cpu',
            progress=False)
    assert out['meta']['num_images'] == 2
    assert out['meta']['route'] == 'extract_feat'
    assert len(out['vis']) == 1 and out['vis'][0]['image'].shape[0] == 3


def test_evaluator_paths_are_not_needed(tmp_path, toy_imagenet):
    """The tool reads the data but evaluates nothing: a missing evaluator
    ann_file (a detection config's COCO json) does not stop it."""
    cfg = tmp_path / 'with_evaluator.py'
    cfg.write_text(
        f'_base_ = {_tiny_config(tmp_path, toy_imagenet)!r}\n'
        "test_cfg = dict(type='TestLoop')\n"
        "test_evaluator = dict(type='CocoMetric', "
        "ann_file='/nonexistent/instances_val2017.json')\n")
    with pytest.warns(UserWarning, match='RANDOMLY'):
        out = analyze_query_independence(
            str(cfg), num_images=1, num_pairs=10, num_vis=0, device='cpu',
            progress=False)
    assert out['meta']['num_images'] == 1
    missing = tmp_path / 'no_data.py'
    missing.write_text(f'_base_ = {str(cfg)!r}\n'
                       "test_dataloader = dict(dataset=dict("
                       "data_root='/nonexistent/imagenet'))\n")
    with pytest.raises(FileNotFoundError, match='/nonexistent/imagenet'):
        analyze_query_independence(str(missing), progress=False)


def test_errors(tmp_path, toy_imagenet):
    cfg = _tiny_config(tmp_path, toy_imagenet)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match='holds no images'):
        analyze_query_independence(cfg, images=str(empty))
    with pytest.raises(FileNotFoundError, match='image folder not found'):
        analyze_query_independence(cfg, images=str(tmp_path / 'missing'))
    with pytest.raises(FileNotFoundError, match='config file not found'):
        analyze_query_independence(str(tmp_path / 'nope.py'))
    with pytest.raises(FileNotFoundError, match='checkpoint file not found'):
        analyze_query_independence(cfg, str(tmp_path / 'nope.pth'),
                                   progress=False)
    with pytest.raises(ValueError, match="split must be 'test' or 'val'"):
        analyze_query_independence(cfg, split='train')
    with pytest.raises(ValueError, match='num_pairs must be a positive int'):
        analyze_query_independence(cfg, num_pairs=0)
    no_nl = tmp_path / 'no_nl.py'
    no_nl.write_text(f"_base_ = {cfg!r}\n"
                     "model = dict(backbone=dict(plugins=[]))\n")
    with pytest.raises(ValueError, match='no non-local block'), \
            pytest.warns(UserWarning):
        analyze_query_independence(str(no_nl), progress=False)


def test_find_nonlocal_blocks_in_heads():
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmseg')
    head = MODELS.build(dict(
        type='mmseg.NLHead', in_channels=16, channels=8, in_index=0,
        num_classes=3, norm_cfg=dict(type='BN')))
    (name, block), = find_nonlocal_blocks(head)
    assert name == 'nl_block' and isinstance(block, NonLocal2d)


def test_checkpoint_is_loaded(tmp_path, toy_imagenet):
    from gcnet_mm.analysis.query_independence import _model_with_weights
    from gcnet_mm.engine.runner_cfg import load_config
    cfg = _tiny_config(tmp_path, toy_imagenet)
    with pytest.warns(UserWarning, match='RANDOMLY'):
        model, initialised = _model_with_weights(load_config(cfg), None,
                                                 'cpu', seed=3)
    assert list(initialised) == ['backbone.layer3.1.nonlocal_block']
    with pytest.warns(UserWarning, match='RANDOMLY'):
        random_run = analyze_query_independence(
            cfg, num_images=1, num_pairs=30, num_vis=0, seed=3,
            progress=False)
    state = model.state_dict()
    torch.save(dict(state_dict=state), tmp_path / 'ok.pth')
    with pytest.warns(UserWarning, match='as initialised'):
        loaded = analyze_query_independence(
            cfg, str(tmp_path / 'ok.pth'), num_images=1, num_pairs=30,
            num_vis=0, seed=3, progress=False)
    assert not loaded['meta']['random_init']
    for key in ('input', 'attention_cos', 'attention_js', 'output'):
        assert loaded['results'][0][key] == pytest.approx(
            random_run['results'][0][key])
    torch.save(dict(state_dict={k: v for k, v in state.items()
                                if 'nonlocal_block' not in k}),
               tmp_path / 'no_nl.pth')
    with pytest.raises(ValueError, match='no weights for .* NL-block'):
        analyze_query_independence(cfg, str(tmp_path / 'no_nl.pth'),
                                   progress=False)


@pytest.mark.slow
def test_docs_example_matches_the_tool(tmp_path, monkeypatch, capsys):
    """docs/query_independence.md's example on the toy data: its command,
    run as written, prints its table and writes its CSV."""
    import re
    import shlex
    doc = open(osp.join(ROOT, 'docs', 'query_independence.md')).read()
    example = doc[doc.index('## Examples on the toy data'):]
    command = re.search(r'```bash\n(python tools/analysis/query_independence'
                        r'\.py.*?)```', example, re.S).group(1)
    argv = shlex.split(command.replace('\\\n', ' '))[2:]
    texts = re.findall(r'```text\n(.*?)```', example, re.S)
    table = [line for line in texts[0].splitlines() if line.startswith('|')]
    csv_lines = texts[1].strip().splitlines()

    from gcnet_mm.datasets.toy_data import make_imagenet
    make_imagenet(str(tmp_path / 'data' / 'toy_imagenet'))
    monkeypatch.chdir(tmp_path)
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'qi_tool', osp.join(ROOT, 'tools/analysis/query_independence.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    argv[0] = osp.join(ROOT, argv[0])
    with pytest.warns(UserWarning, match='RANDOMLY'):
        tool.main(argv + ['--device', 'cpu'])
    printed = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith('|')]
    assert printed == table
    out_dir = argv[argv.index('--out-dir') + 1]
    written = (tmp_path / out_dir / 'query_independence.csv').read_text()
    assert written.splitlines()[0] == csv_lines[0]  # the columns
    for ours, doc_row in zip(written.splitlines()[1:], csv_lines[1:]):
        for a, b in zip(ours.split(','), doc_row.split(',')):
            try:  # numbers to 4 significant digits, the rest exactly
                assert float(a) == pytest.approx(float(b), rel=1e-4), (a, b)
            except ValueError:
                assert a == b


def test_weights_still_as_initialised_are_said_so(tmp_path, toy_imagenet):
    """A checkpoint whose NL block still has the weights of its
    initialisation (a few iterations barely move std-0.01 weights): the
    table marks the block and says that its maps come from the
    initialisation, and so does the figure, as without a checkpoint; a
    checkpoint whose theta and phi moved away from it is not marked."""
    from gcnet_mm.analysis.query_independence import _model_with_weights
    from gcnet_mm.engine.runner_cfg import load_config
    cfg = _tiny_config(tmp_path, toy_imagenet)
    with pytest.warns(UserWarning, match='RANDOMLY'):
        model, _ = _model_with_weights(load_config(cfg), None, 'cpu', seed=1)
    state = model.state_dict()
    torch.save(dict(state_dict=state), tmp_path / 'early.pth')
    block = 'backbone.layer3.1.nonlocal_block'
    with pytest.warns(UserWarning, match=f'{block}: theta std 0.1'):
        early = analyze_query_independence(
            cfg, str(tmp_path / 'early.pth'), num_images=1, num_pairs=30,
            num_vis=1, out_dir=str(tmp_path / 'early'), progress=False)
    table = early['table'].splitlines()
    assert table[2].startswith(f'| {block} * |')
    assert table[3].startswith('* at initialisation: the attention maps come '
                               'from the initial weights, not from learning '
                               f'({block}: theta std 0.1')
    assert 'as built 0.1' in table[3]
    assert early['results'][0]['initialised']
    assert early['vis'][0]['initialised']
    fig, axes = _attention_figure(early['vis'])
    assert 'AT INITIALISATION' in axes[0][0].get_title()

    trained = {k: v * 3 if '.theta.' in k or '.phi.' in k else v
               for k, v in state.items()}
    torch.save(dict(state_dict=trained), tmp_path / 'trained.pth')
    out = analyze_query_independence(
        cfg, str(tmp_path / 'trained.pth'), num_images=1, num_pairs=30,
        num_vis=1, progress=False)
    assert '*' not in out['table'] and not out['results'][0]['initialised']
    assert 'AT INITIALISATION' not in _attention_figure(
        out['vis'])[1][0][0].get_title()
