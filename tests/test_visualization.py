"""GC attention maps and the demo figure: the maps are the block's pooling
weights, the pictures show the data they are given."""
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import gcnet_mm  # noqa: F401
from conftest import randomize_
from gcnet_mm.models.blocks import ContextBlock, SNLBlock
from gcnet_mm.visualization import (context_attention, detection_figure,
                                    draw_attention, draw_detections,
                                    draw_losses, find_context_blocks,
                                    read_train_losses,
                                    record_context_attention)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOY_DET = osp.join(REPO, 'configs', '_toy_',
                   'mask-rcnn_r50-gcb-r16-c3-c5_fpn_toy-coco.py')


# ------------------------------------------------------------ attention
@pytest.mark.parametrize('fusion', [('channel_add', ), ('channel_mul', )])
def test_context_attention_is_the_pooling_weight(fusion):
    """Pooling the input with the map gives mmcv's context (its
    spatial_pool) for the same weights."""
    from mmcv.cnn import ContextBlock as MMCVContextBlock
    ref = randomize_(MMCVContextBlock(8, 1 / 4, 'att', fusion))
    ours = ContextBlock(8, 1 / 4, 'att', fusion)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 8, 5, 7)
    att = context_attention(ours, x)
    assert att.shape == (2, 5, 7) and torch.all(att >= 0)
    torch.testing.assert_close(att.sum(dim=(1, 2)), torch.ones(2))
    assert not torch.allclose(att, torch.full_like(att, 1 / 35))
    with torch.no_grad():
        context = (x * att[:, None]).sum(dim=(2, 3))
        torch.testing.assert_close(context, ref.spatial_pool(x).view(2, 8))
    # mmcv's own block gives the same map
    torch.testing.assert_close(context_attention(ref, x), att)


def test_context_attention_errors():
    with pytest.raises(ValueError, match="pooling_type='att'.*'avg'"):
        context_attention(
            ContextBlock(8, 1 / 4, 'avg'), torch.randn(1, 8, 2, 2))
    with pytest.raises(ValueError, match=r'\(B, 8, H, W\).*\(1, 4, 2, 2\)'):
        context_attention(SNLBlock(8), torch.randn(1, 4, 2, 2))


def _gc_resnet():
    from mmdet.registry import MODELS
    return MODELS.build(
        dict(
            type='mmdet.ResNet',
            depth=50,
            base_channels=4,
            plugins=[
                dict(
                    cfg=dict(type='gcnet_mm.ContextBlock', ratio=1 / 4),
                    stages=(False, True, True, True),
                    position='after_conv3')
            ]))


def test_record_context_attention():
    model = randomize_(_gc_resnet())
    blocks = find_context_blocks(model)
    assert len(blocks) == 4 + 6 + 3  # c3, c4, c5
    names = ['layer3.5.context_block', 'layer4.0.context_block']
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
        inputs = {}
        handles = [
            model.get_submodule(n).register_forward_pre_hook(
                lambda m, a, n=n: inputs.__setitem__(n, a[0])) for n in names
        ]
        with record_context_attention(model, names) as maps:
            outs = model(x)
        for h in handles:
            h.remove()
    for out, ref in zip(outs, expected):  # the model's outputs unchanged
        torch.testing.assert_close(out, ref)
    assert list(maps) == names
    assert maps[names[0]][0].shape == (2, 4, 6)  # c4: stride 16
    assert maps[names[1]][0].shape == (2, 2, 3)  # c5: stride 32
    for name in names:
        assert len(maps[name]) == 1
        torch.testing.assert_close(
            maps[name][0],
            context_attention(model.get_submodule(name), inputs[name]))
    assert not any(m._forward_pre_hooks for _, m in blocks)  # hooks gone
    with pytest.raises(ValueError, match=r"'layer9'.*layer2.0.context_block"):
        with record_context_attention(model, ['layer9']):
            pass


# ------------------------------------------------------------- drawing
def _render(draw, size=(4, 4)):
    """Pixels (H, W, 4) of a figure with one axes filling it, and the
    axes (for data -> pixel coordinates)."""
    fig = Figure(figsize=size, dpi=50)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    draw(ax)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy(), ax


def _pixel(pixels, ax, x, y):
    """The pixel at data coordinates (x, y)."""
    px, py = ax.transData.transform((x, y))
    return pixels[pixels.shape[0] - 1 - int(py), int(px)]


def test_draw_attention_shows_the_map():
    extent = (0, 80, 40, 0)  # a 2 x 4 map over an 80 x 40 image
    hot = np.zeros((2, 4))
    hot[1, 2] = 0.7

    def draw(att):
        return _render(lambda ax: draw_attention(ax, att, extent))

    # identical maps, identical pictures
    assert np.array_equal(draw(hot.copy())[0], draw(hot.copy())[0])
    pixels, ax = draw(hot)
    cells = {
        (r, c): tuple(_pixel(pixels, ax, 10 + 20 * c, 10 + 20 * r))
        for r in range(2)
        for c in range(4)
    }
    import matplotlib
    viridis = matplotlib.colormaps['viridis']
    top, bottom = viridis(1.0, bytes=True), viridis(0.0, bytes=True)
    assert cells.pop((1, 2)) == tuple(top)  # the maximum, at its cell
    assert set(cells.values()) == {tuple(bottom)}  # zeros everywhere else
    # a uniform map is one colour
    pixels, ax = draw(np.full((2, 4), 1 / 8))
    assert len({
        tuple(_pixel(pixels, ax, x, y))
        for x in range(2, 80, 6)
        for y in range(2, 40, 6)
    }) == 1
    # the colour bar's range is the map's: 0 to its maximum
    fig = Figure()
    im = draw_attention(fig.add_subplot(), hot, extent)
    assert im.get_clim() == (0.0, 0.7)


def test_draw_detections_draws_where_the_boxes_are():
    grey = np.full((60, 100, 3), 128, np.uint8)
    box = (20, 10, 70, 50)

    def draw(boxes, labels, scores):
        return _render(
            lambda ax: draw_detections(
                ax,
                grey,
                np.array(boxes),
                labels,
                scores,
                class_names=['cat', 'dog']),
            size=(5, 3))

    pixels, ax = draw([box], [1], [0.9])
    empty, ax0 = draw([], [], [])
    grey_px = tuple(_pixel(empty, ax0, 45, 30)[:3])
    assert grey_px == (128, 128, 128)
    # the box's edges are drawn, its inside and the far corner are not
    for x, y in [(20, 30), (70, 30), (45, 50)]:
        assert tuple(_pixel(pixels, ax, x, y)[:3]) != grey_px, (x, y)
        assert tuple(_pixel(empty, ax0, x, y)[:3]) == grey_px, (x, y)
    assert tuple(_pixel(pixels, ax, 45, 30)[:3]) == grey_px
    assert tuple(_pixel(pixels, ax, 95, 57)[:3]) == grey_px
    texts = [t.get_text() for t in ax.texts]
    assert texts == ['dog 0.90']
    with pytest.raises(ValueError, match='2 boxes, 1 labels'):
        draw([box, box], [1], [0.9])


def test_draw_detections_tints_the_masks():
    grey = np.full((60, 100, 3), 128, np.uint8)
    mask = np.zeros((1, 60, 100), bool)
    mask[0, 20:40, 30:60] = True
    pixels, ax = _render(
        lambda ax: draw_detections(ax, grey, np.array([[25, 15, 65, 45]]),
                                   [1], [0.9], masks=mask),
        size=(5, 3))
    assert tuple(_pixel(pixels, ax, 45, 30)[:3]) != (128, 128, 128)
    assert tuple(_pixel(pixels, ax, 90, 55)[:3]) == (128, 128, 128)
    with pytest.raises(ValueError, match=r'masks must be \(N, H, W\)'):
        draw_detections(Figure().add_subplot(), grey, np.zeros((1, 4)), [0],
                        [1.0], masks=mask[:, :10])


def test_two_maps_on_one_log_scale():
    """The demo's maps before and after training share one norm: the
    same weight gets the same colour in both."""
    fig = Figure()
    peaked = np.full((2, 4), 0.001)
    peaked[0, 0] = 0.993
    spread = np.full((2, 4), 1 / 8)
    ims = [draw_attention(fig.add_subplot(1, 2, k + 1), m, (0, 80, 40, 0),
                          vmax=0.993, vmin=1 / 80)
           for k, m in enumerate((peaked, spread))]
    assert [im.get_clim() for im in ims] == [(1 / 80, 0.993)] * 2
    assert type(ims[0].norm).__name__ == 'LogNorm'
    assert ims[0].norm(0.125) == ims[1].norm(0.125)


def test_draw_losses_and_read_train_losses(tmp_path):
    log = tmp_path / '20260101_000000' / 'vis_data'
    log.mkdir(parents=True)
    rows = [
        dict(
            lr=0.01,
            loss=3.0 - i,
            loss_cls=1.0 - i / 4,
            step=i + 1,
            iter=i + 1) for i in range(3)
    ]
    rows.insert(2, {'coco/bbox_mAP': 0.0, 'step': 2})  # a validation row
    (log / 'scalars.json').write_text('\n'.join(json.dumps(r)
                                                for r in rows) + '\n')
    steps, losses = read_train_losses(str(tmp_path))
    assert steps == [1, 2, 3]
    assert losses == {'loss': [3.0, 2.0, 1.0], 'loss_cls': [1.0, 0.75, 0.5]}
    fig = Figure()
    ax = fig.add_subplot()
    draw_losses(ax, steps, losses)
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == steps
    assert list(line.get_ydata()) == losses['loss']
    with pytest.raises(FileNotFoundError, match='no training loss'):
        read_train_losses(str(tmp_path / 'nothing'))


# ------------------------------------------------------- the demo figure
@pytest.fixture(scope='module')
def toy_detector(tmp_path_factory):
    """The demo's config with random weights, on one tiny test image."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from gcnet_mm.datasets.toy_data import make_coco
    root = tmp_path_factory.mktemp('figure')
    make_coco(
        str(root / 'toy_coco'), num_train=1, num_val=1, image_size=(64, 80))
    options = {
        'test_dataloader.dataset.data_root':
        str(root / 'toy_coco') + '/',
        'test_evaluator.ann_file':
        str(root / 'toy_coco' / 'annotations' / 'instances_val2017.json'),
        'model.test_cfg.rpn.max_per_img':
        50,
        'model.test_cfg.rcnn.max_per_img':
        7,
    }
    cfg = Config.fromfile(TOY_DET)
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    ckpt = str(root / 'random.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), ckpt)
    return root, ckpt, options


def test_detection_figure(toy_detector):
    root, ckpt, options = toy_detector
    work_dir = root / 'wd'
    (work_dir / '20260101_000000' / 'vis_data').mkdir(parents=True)
    (work_dir / '20260101_000000' / 'vis_data' / 'scalars.json').write_text(
        json.dumps(dict(loss=2.0, loss_cls=1.5, step=1)) + '\n' +
        json.dumps(dict(loss=1.0, loss_cls=0.5, step=2)) + '\n')
    (work_dir / 'metrics_20260101_000001.json').write_text(
        json.dumps(
            dict(metrics={
                'coco/bbox_mAP': 0.25,
                'coco/segm_mAP': 0.125
            })))
    out = str(root / 'fig.png')
    r = detection_figure(
        TOY_DET,
        ckpt,
        out,
        work_dir=str(work_dir),
        max_dets=3,
        score_thr=0.0,
        cfg_options=options)
    assert osp.getsize(out) > 10_000
    assert r['block'] == 'backbone.layer3.5.context_block'  # c4's last
    # the toy pipeline scales the 80 x 64 (w x h) image to 128 x 102,
    # padded to 128 x 128: an 8 x 8 map at stride 16 over 80 x 80.3 pixels
    # of the image
    assert r['attention'].shape == (8, 8)
    np.testing.assert_allclose(r['attention'].sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(r['extent'], (0, 80, 128 * 64 / 102, 0),
                               rtol=1e-5)
    assert r['num_predictions'] == 7 and len(r['scores']) == 3
    assert list(r['scores']) == sorted(r['scores'], reverse=True)
    assert r['initial_attention'] is None  # no map before training here
    assert len(r['gt_boxes']) == len(r['gt_labels']) >= 1
    assert r['steps'] == [1, 2] and r['losses']['loss'] == [2.0, 1.0]
    assert r['metrics']['coco/bbox_mAP'] == 0.25
    # only the predictions that score at least score_thr are drawn
    r = detection_figure(TOY_DET, ckpt, out, max_dets=3,
                         score_thr=float(r['scores'][1]),
                         cfg_options=options)
    assert len(r['scores']) == 2

    with pytest.raises(ValueError, match=r'index must be in \[0, 1\)'):
        detection_figure(TOY_DET, ckpt, out, index=1, cfg_options=options)
    with pytest.raises(ValueError, match="no GC block.*'layer9'"):
        detection_figure(
            TOY_DET, ckpt, out, block='layer9', cfg_options=options)
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        detection_figure(
            TOY_DET, str(root / 'nope.pth'), out, cfg_options=options)
    assert not os.path.exists(str(root / 'nope.pth'))


@pytest.mark.slow
def test_tool_writes_the_figure(toy_detector):
    import subprocess
    import sys
    root, ckpt, options = toy_detector
    tool = osp.join(REPO, 'tools', 'analysis', 'show_gc_attention.py')
    opts = ['--cfg-options'] + [f'{k}={v}' for k, v in options.items()]
    out = str(root / 'tool.png')
    proc = subprocess.run(
        [sys.executable, tool, TOY_DET, ckpt, '--out', out, '--max-dets', '2',
         '--score-thr', '0'] + opts,
        capture_output=True,
        text=True,
        cwd=str(root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert osp.getsize(out) > 10_000
    assert (f'wrote {out}: 000000100001.jpg, 2 of 7 predictions drawn, '
            'attention of backbone.layer3.5.context_block (8x8') \
        in proc.stdout
    proc = subprocess.run(
        [sys.executable, tool, TOY_DET,
         str(root / 'nope.pth')] + opts,
        capture_output=True,
        text=True,
        cwd=str(root))
    assert proc.returncode != 0
    assert 'error: checkpoint file not found' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_initial_attention_hook_and_the_two_maps(toy_detector, tmp_path):
    """InitialAttentionHook writes, before the first iteration, the map the
    detection figure later draws beside the trained one: here the model did
    not train, so the two maps are the same."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from gcnet_mm.engine.cli import build_runner
    from gcnet_mm.visualization import InitialAttentionHook
    root, ckpt, options = toy_detector
    cfg = Config.fromfile(TOY_DET)
    cfg.merge_from_dict(options)
    cfg.work_dir = str(tmp_path)
    cfg.train_dataloader.dataset.data_root = options[
        'test_dataloader.dataset.data_root']
    init_default_scope('mmdet')
    runner = build_runner(cfg)
    runner.model.load_state_dict(torch.load(ckpt)['state_dict'])
    hook = next(h for h in runner.hooks
                if isinstance(h, InitialAttentionHook))
    hook.before_train(runner)
    saved = json.loads((tmp_path / 'gc_attention_init.json').read_text())
    assert saved['block'] == 'backbone.layer3.5.context_block'
    assert saved['iter'] == 0 and saved['img_path'].endswith('100001.jpg')
    assert runner.model.training  # back in training mode
    log = tmp_path / '20260101_000000' / 'vis_data'
    log.mkdir(parents=True)
    (log / 'scalars.json').write_text(json.dumps(dict(loss=1.0, step=1)))

    r = detection_figure(TOY_DET, ckpt, str(tmp_path / 'fig.png'),
                         work_dir=str(tmp_path), cfg_options=options)
    np.testing.assert_allclose(r['initial_attention'], r['attention'],
                               rtol=1e-4, atol=1e-7)
    # a map of another block is not drawn as this one's start
    saved['block'] = 'backbone.layer2.3.context_block'
    (tmp_path / 'gc_attention_init.json').write_text(json.dumps(saved))
    r = detection_figure(TOY_DET, ckpt, str(tmp_path / 'fig.png'),
                         work_dir=str(tmp_path), cfg_options=options)
    assert r['initial_attention'] is None
