"""One picture of a trained GC detector: what it learned, what it predicts,
where its GC block looks, and how that changed in training.

:func:`detection_figure` runs a detector (an mmdet config and checkpoint) on
one image of the config's test set and draws, side by side:

1. the training loss of each iteration, read from the training log of the
   work dir (when given);
2. the image with the predictions that score at least ``score_thr`` (boxes
   and masks), exactly as the model returns them, over the dashed ground
   truth, with the COCO mAP that ``tools/test.py`` wrote to the work dir
   (when there);
3. the attention map of one GC block on that image (by default the last
   one of c4): the softmax of its ``conv_mask`` over positions, from 0 with
   a colour bar; a mark on the bar shows the weight of a uniform map
   (1 / positions).  When the work dir holds the map of the same block and
   image before training (``gc_attention_init.json``, written by
   :class:`~gcnet_mm.visualization.InitialAttentionHook`), that map is drawn
   first, and both share one colour scale.
"""
import glob
import json
import os.path as osp
from typing import Any, Dict, Optional

import mmcv
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mmdet.apis import init_detector
from mmengine.dataset import pseudo_collate
from mmengine.registry import DATASETS, init_default_scope

from gcnet_mm.engine import check_data_paths, install_checkpoint_safety
from gcnet_mm.engine.runner_cfg import load_config
from .attention import find_context_blocks, record_context_attention
from .figure import (draw_attention, draw_detections, draw_losses,
                     read_train_losses)
from .hooks import INITIAL_ATTENTION_FILE, default_context_block

__all__ = ['detection_figure', 'default_context_block', 'read_metrics',
           'read_initial_attention']


def read_metrics(work_dir: str) -> Optional[Dict[str, float]]:
    """The metrics of the newest ``metrics_*.json`` ``tools/test.py`` wrote
    in ``work_dir``, or None."""
    files = sorted(glob.glob(osp.join(work_dir, 'metrics_*.json')))
    if not files:
        return None
    with open(files[-1]) as f:
        return json.load(f).get('metrics')


def read_initial_attention(work_dir: str, block: str,
                           img_path: str) -> Optional[np.ndarray]:
    """The map :class:`~gcnet_mm.visualization.InitialAttentionHook` wrote
    in ``work_dir`` before training, if it is of ``block`` on ``img_path``;
    else None."""
    path = osp.join(work_dir, INITIAL_ATTENTION_FILE)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        saved = json.load(f)
    if saved.get('block') != block or osp.basename(
            saved.get('img_path', '')) != osp.basename(img_path):
        return None
    return np.asarray(saved['attention'], dtype=float)


def _test_set_and_detector(config: str, checkpoint: str, index: int,
                           cfg_options: Optional[dict], device: str):
    """The config's test set and the detector with its checkpoint (mmdet's
    ``init_detector``: SyncBN as BN, eval mode, the checkpoint's classes),
    checking the cheap things first."""
    cfg = load_config(config, cfg_options)
    check_data_paths(cfg, ('test', ))
    if '://' not in checkpoint and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint file not found: {checkpoint!r}')
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    if not (isinstance(index, int) and 0 <= index < len(dataset)):
        raise ValueError(f'index must be in [0, {len(dataset)}) (the test '
                         f'set of {config!r}), got {index!r}')
    install_checkpoint_safety()
    return dataset, init_detector(cfg, checkpoint, device=device)


def detection_figure(config: str,
                     checkpoint: str,
                     out_file: str,
                     *,
                     work_dir: Optional[str] = None,
                     index: int = 0,
                     block: Optional[str] = None,
                     max_dets: int = 10,
                     score_thr: float = 0.3,
                     cfg_options: Optional[dict] = None,
                     device: str = 'cpu') -> Dict[str, Any]:
    """Draw predictions and a GC attention map (and the training loss, and
    the map before training) for one test image of an mmdet config; see the
    module docstring.

    Args:
        config: mmdet config of a model with GC blocks.
        checkpoint: its trained weights.
        out_file: where the figure goes (PNG, PDF, ... by extension).
        work_dir: the training/testing work dir; adds the loss panel, the
            mAP and the map before training.
        index: which image of the config's test set.
        block: the GC block to show (module name); default
            :func:`default_context_block`.
        max_dets: most predictions drawn, highest scores first.
        score_thr: the least score of a prediction drawn.
        cfg_options: overrides of the config, as ``--cfg-options``.
        device: where the model runs.

    Returns:
        What was drawn: ``out_file``, ``img_path``, ``block``, ``attention``
        ((h, w) numpy), ``initial_attention`` (the same before training, or
        None), ``extent``, ``boxes`` / ``scores`` / ``labels`` (the drawn
        predictions), ``num_predictions``, ``gt_boxes``, ``gt_labels``,
        ``steps`` and ``losses`` (empty without a work dir), ``metrics`` (or
        None).

    Raises:
        FileNotFoundError: config, checkpoint, data or log not found.
        ValueError: no such image or GC block; ``max_dets`` < 1.
    """
    if not isinstance(max_dets, int) or max_dets < 1:
        raise ValueError(f'max_dets must be a positive int, got {max_dets!r}')
    steps, losses = ([],
                     {}) if work_dir is None else read_train_losses(work_dir)
    metrics = None if work_dir is None else read_metrics(work_dir)
    dataset, model = _test_set_and_detector(config, checkpoint, index,
                                            cfg_options, device)
    blocks = find_context_blocks(model)
    if not blocks:
        raise ValueError(f'{config!r} builds a model with no GC block with '
                         "attention pooling (pooling_type='att')")
    name = block or default_context_block(blocks)

    with record_context_attention(model, [name]) as maps, torch.no_grad():
        result = model.test_step(pseudo_collate([dataset[index]]))[0]
    attention = maps[name][-1][0].numpy()  # (h, w), sums to 1
    meta = result.metainfo
    scale_x, scale_y = meta['scale_factor'][:2]
    pad_h, pad_w = meta['batch_input_shape']
    extent = (0.0, pad_w / scale_x, pad_h / scale_y, 0.0)

    pred = result.pred_instances
    order = torch.argsort(pred.scores, descending=True)[:max_dets]
    order = order[pred.scores[order] >= score_thr]
    boxes = pred.bboxes[order].cpu().numpy()
    scores = pred.scores[order].cpu().numpy()
    labels = pred.labels[order].cpu().numpy()
    masks = pred.masks[order].cpu().numpy() if 'masks' in pred else None
    info = dataset.get_data_info(index)
    gt = [i for i in info.get('instances', []) if not i.get('ignore_flag')]
    gt_boxes = np.array([i['bbox'] for i in gt], dtype=float).reshape(-1, 4)
    gt_labels = [int(i['bbox_label']) for i in gt]
    image = mmcv.imread(info['img_path'], channel_order='rgb')
    classes = (model.dataset_meta or {}).get('classes')
    initial = None if work_dir is None else read_initial_attention(
        work_dir, name, info['img_path'])
    if initial is not None and initial.shape != attention.shape:
        initial = None  # another input size: not comparable

    panels = [1.1] * bool(steps) + [1] * (2 + (initial is not None))
    fig = Figure(figsize=(4.8 * len(panels), 5.2), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), width_ratios=panels)
    if steps:
        draw_losses(axes[0], steps, losses)
        total = losses['loss']
        axes[0].set_title(
            f'training: loss {total[0]:.2f} -> {total[-1]:.2f}'
            f' in {steps[-1]} iterations',
            fontsize=10)
    ax = axes[1 if steps else 0]
    draw_detections(
        ax,
        image,
        boxes,
        labels,
        scores,
        masks=masks,
        gt_boxes=gt_boxes,
        gt_labels=gt_labels,
        class_names=classes)
    title = (f'{osp.basename(info["img_path"])}, ground truth dashed\n'
             f'{len(scores)} of {len(pred.scores)} predictions score '
             f'>= {score_thr:g}')
    if metrics and 'coco/bbox_mAP' in metrics:
        title += (f'\ntest set: bbox mAP_50 '
                  f'{metrics.get("coco/bbox_mAP_50", float("nan")):.2f}, '
                  f'mAP {metrics["coco/bbox_mAP"]:.2f}')
        if 'coco/segm_mAP' in metrics:
            title += f'; mask mAP {metrics["coco/segm_mAP"]:.2f}'
    ax.set_title(title, fontsize=10)
    h, w = attention.shape
    uniform = 1.0 / attention.size
    vmax = float(max(attention.max(),
                     initial.max() if initial is not None else 0))
    maps_drawn = [(attention, 'with these weights')]
    if initial is not None:
        maps_drawn = [(initial, 'at initialisation (iteration 0)'),
                      (attention, f'after {steps[-1]} iterations'
                       if steps else 'after training')]
    for ax, (values, when) in zip(axes[-len(maps_drawn):], maps_drawn):
        im = draw_attention(
            ax,
            values,
            extent,
            boxes=gt_boxes,
            image_size=image.shape[:2],
            vmax=vmax,
            # two maps: one log scale, so that a spread-out map shows its
            # pattern beside a peaked one
            vmin=uniform / 10 if initial is not None else None)
        ax.set_title(f'GC attention of {name}\n{when}: largest weight '
                     f'{values.max():.3f}\n(a uniform map: {uniform:.3f} '
                     f'at each of the {h}x{w} positions)', fontsize=9)
    bar = fig.colorbar(im, ax=list(axes[-len(maps_drawn):]), shrink=0.9)
    bar.set_label('softmax of conv_mask over positions (sums to 1)' + (
        ';\none log scale for both maps' if initial is not None else ''))
    bar.ax.axhline(uniform, color='white', linewidth=1.5)
    bar.ax.text(
        1.05,
        uniform,
        ' uniform',
        fontsize=7,
        transform=bar.ax.get_yaxis_transform(),
        va='center')
    fig.savefig(out_file, dpi=110)
    return dict(
        out_file=out_file,
        img_path=info['img_path'],
        block=name,
        attention=attention,
        initial_attention=initial,
        extent=extent,
        boxes=boxes,
        scores=scores,
        labels=labels,
        num_predictions=len(pred.scores),
        gt_boxes=gt_boxes,
        gt_labels=gt_labels,
        steps=steps,
        losses=losses,
        metrics=metrics)
