"""One picture of a trained GC detector: what it learned, what it predicts,
where its GC block looks.

:func:`detection_figure` runs a detector (an mmdet config and checkpoint) on
one image of the config's test set and draws, side by side:

1. the training loss of each iteration, read from the training log of the
   work dir (when given);
2. the image with the highest-scoring predictions, exactly as the model
   returns them, over the dashed ground truth, with the COCO mAP that
   ``tools/test.py`` wrote to the work dir (when there);
3. the attention map of one GC block on that image (by default the last
   one of c4): the softmax of its ``conv_mask`` over positions, on one
   colour scale from 0 with a colour bar; a mark on the bar shows the weight
   of a uniform map (1 / positions).
"""
import glob
import json
import os.path as osp
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .attention import find_context_blocks, record_context_attention
from .figure import (draw_attention, draw_detections, draw_losses,
                     read_train_losses)

__all__ = ['detection_figure', 'default_context_block', 'read_metrics']


def default_context_block(blocks: List[Tuple[str, nn.Module]]) -> str:
    """The last GC block of c4 (``backbone.layer3``), else the last one."""
    if not blocks:
        raise ValueError('the model has no GC block with attention pooling')
    c4 = [name for name, _ in blocks if name.startswith('backbone.layer3.')]
    return (c4 or [name for name, _ in blocks])[-1]


def read_metrics(work_dir: str) -> Optional[Dict[str, float]]:
    """The metrics of the newest ``metrics_*.json`` ``tools/test.py`` wrote
    in ``work_dir``, or None."""
    files = sorted(glob.glob(osp.join(work_dir, 'metrics_*.json')))
    if not files:
        return None
    with open(files[-1]) as f:
        return json.load(f).get('metrics')


def _load(config: str, checkpoint: str, index: int,
          cfg_options: Optional[dict], device: str):
    """The config's test set and the detector with its checkpoint (mmdet's
    ``init_detector``: SyncBN as BN, eval mode, the checkpoint's classes),
    checking the cheap things first."""
    from mmdet.apis import init_detector
    from mmengine.registry import DATASETS, init_default_scope

    from gcnet_mm.engine import check_data_paths, install_checkpoint_safety
    from gcnet_mm.engine.runner_cfg import load_config
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
                     max_dets: int = 5,
                     cfg_options: Optional[dict] = None,
                     device: str = 'cpu') -> Dict[str, Any]:
    """Draw predictions and a GC attention map (and the training loss) for
    one test image of an mmdet config; see the module docstring.

    Args:
        config: mmdet config of a model with GC blocks.
        checkpoint: its trained weights.
        out_file: where the figure goes (PNG, PDF, ... by extension).
        work_dir: the training/testing work dir; adds the loss panel and
            the mAP.
        index: which image of the config's test set.
        block: the GC block to show (module name); default
            :func:`default_context_block`.
        max_dets: most predictions drawn, highest scores first.
        cfg_options: overrides of the config, as ``--cfg-options``.
        device: where the model runs.

    Returns:
        What was drawn: ``out_file``, ``img_path``, ``block``, ``attention``
        ((h, w) numpy), ``extent``, ``boxes`` / ``scores`` / ``labels`` (the
        drawn predictions), ``num_predictions``, ``gt_boxes``,
        ``gt_labels``, ``steps`` and ``losses`` (empty without a work dir),
        ``metrics`` (or None).

    Raises:
        FileNotFoundError: config, checkpoint, data or log not found.
        ValueError: no such image or GC block; ``max_dets`` < 1.
    """
    import mmcv
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from mmengine.dataset import pseudo_collate

    if not isinstance(max_dets, int) or max_dets < 1:
        raise ValueError(f'max_dets must be a positive int, got {max_dets!r}')
    steps, losses = ([],
                     {}) if work_dir is None else read_train_losses(work_dir)
    metrics = None if work_dir is None else read_metrics(work_dir)
    dataset, model = _load(config, checkpoint, index, cfg_options, device)
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
    boxes = pred.bboxes[order].cpu().numpy()
    scores = pred.scores[order].cpu().numpy()
    labels = pred.labels[order].cpu().numpy()
    info = dataset.get_data_info(index)
    gt = [i for i in info.get('instances', []) if not i.get('ignore_flag')]
    gt_boxes = np.array([i['bbox'] for i in gt], dtype=float).reshape(-1, 4)
    gt_labels = [int(i['bbox_label']) for i in gt]
    image = mmcv.imread(info['img_path'], channel_order='rgb')
    classes = (model.dataset_meta or {}).get('classes')

    fig = Figure(figsize=(16 if steps else 11, 4.8), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(
        1,
        3 if steps else 2,
        width_ratios=[1.1, 1, 1.15] if steps else [1, 1.15])
    if steps:
        draw_losses(axes[0], steps, losses)
        total = losses['loss']
        axes[0].set_title(
            f'training: loss {total[0]:.2f} -> {total[-1]:.2f}'
            f' in {steps[-1]} iterations',
            fontsize=10)
    draw_detections(
        axes[-2],
        image,
        boxes,
        labels,
        scores,
        gt_boxes=gt_boxes,
        gt_labels=gt_labels,
        class_names=classes)
    title = (f'{osp.basename(info["img_path"])}, ground truth dashed\n'
             f'top {len(scores)} of {len(pred.scores)} predictions')
    if len(scores):
        title += f' (scores {scores.min():.2f} to {scores.max():.2f})'
    if metrics and 'coco/bbox_mAP' in metrics:
        title += f'\ntest set: bbox mAP {metrics["coco/bbox_mAP"]:.3f}'
        if 'coco/segm_mAP' in metrics:
            title += f', mask mAP {metrics["coco/segm_mAP"]:.3f}'
    axes[-2].set_title(title, fontsize=10)
    im = draw_attention(
        axes[-1],
        attention,
        extent,
        boxes=gt_boxes,
        image_size=image.shape[:2])
    h, w = attention.shape
    axes[-1].set_title(
        f'GC attention of {name}\nsoftmax of conv_mask over '
        f'the {h}x{w} positions',
        fontsize=10)
    bar = fig.colorbar(im, ax=axes[-1], shrink=0.9)
    bar.set_label('attention weight (sums to 1)')
    bar.ax.axhline(1.0 / attention.size, color='white', linewidth=1.5)
    bar.ax.text(
        1.05,
        1.0 / attention.size,
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
