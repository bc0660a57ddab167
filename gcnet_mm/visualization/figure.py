"""Drawing a detector's predictions, a GC attention map and a loss curve.

Plain matplotlib on given ``Axes`` (no pyplot state), so a figure can be
composed, saved or rendered to pixels anywhere, tests included. Everything is
drawn in the original image's pixel coordinates.
"""
import glob
import json
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.colors import LogNorm, Normalize, to_rgb
from matplotlib.patches import Rectangle

__all__ = [
    'draw_detections', 'draw_attention', 'draw_losses', 'read_train_losses'
]

# Per-class colours (tab10), picked by label index.
_COLOURS = ('#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b',
            '#e377c2', '#7f7f7f', '#bcbd22', '#17becf')


def _class_name(label: int, class_names: Optional[Sequence[str]]) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def _rectangle(ax, box, **kwargs) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **kwargs))


def draw_detections(ax,
                    image: np.ndarray,
                    boxes: np.ndarray,
                    labels: Sequence[int],
                    scores: Sequence[float],
                    *,
                    masks: Optional[np.ndarray] = None,
                    gt_boxes: Optional[np.ndarray] = None,
                    gt_labels: Optional[Sequence[int]] = None,
                    class_names: Optional[Sequence[str]] = None) -> None:
    """The image with predicted boxes (solid, ``name score``) and masks
    (tinted in the box's colour), and, when given, ground-truth boxes
    (dashed white, ``name``).

    Args:
        ax: a matplotlib ``Axes``.
        image: (H, W, 3) uint8 RGB.
        boxes: (N, 4) predicted ``x1, y1, x2, y2`` in image pixels.
        labels: N class indices; scores: N scores.
        masks: (N, H, W) predicted masks (bool), or None.
        gt_boxes: (M, 4) ground-truth boxes; gt_labels: their classes.
        class_names: names of the class indices.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be (H, W, 3) RGB, got shape '
                         f'{image.shape}')
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    if not len(boxes) == len(labels) == len(scores):
        raise ValueError(f'got {len(boxes)} boxes, {len(labels)} labels and '
                         f'{len(scores)} scores; they must match')
    if masks is not None:
        masks = np.asarray(masks, dtype=bool)
        if masks.shape != (len(boxes), *image.shape[:2]):
            raise ValueError(f'masks must be (N, H, W) = ({len(boxes)}, '
                             f'{image.shape[0]}, {image.shape[1]}), got '
                             f'{masks.shape}')
        tinted = image.astype(float)
        for mask, label in zip(masks, labels):
            colour = np.array(to_rgb(_COLOURS[int(label) % len(_COLOURS)]))
            tinted[mask] = 0.5 * tinted[mask] + 0.5 * 255 * colour
        image = tinted.astype(np.uint8)
    ax.imshow(image)
    ax.set_axis_off()
    if gt_boxes is not None:
        gt_labels = [None] * len(gt_boxes) if gt_labels is None else gt_labels
        for box, label in zip(np.asarray(gt_boxes).reshape(-1, 4), gt_labels):
            _rectangle(
                ax, box, edgecolor='white', linewidth=1.5, linestyle='--')
            if label is not None:
                ax.text(
                    box[0],
                    box[3],
                    _class_name(int(label), class_names),
                    color='white',
                    fontsize=7,
                    va='top')
    for box, label, score in zip(boxes, labels, scores):
        colour = _COLOURS[int(label) % len(_COLOURS)]
        _rectangle(ax, box, edgecolor=colour, linewidth=2)
        ax.text(
            box[0],
            box[1], f'{_class_name(int(label), class_names)} '
            f'{float(score):.2f}',
            color='white',
            fontsize=7,
            va='bottom',
            bbox=dict(facecolor=colour, edgecolor='none', pad=1, alpha=0.8))
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)


def draw_attention(ax,
                   attention: np.ndarray,
                   extent: Tuple[float, float, float, float],
                   *,
                   boxes: Optional[np.ndarray] = None,
                   image_size: Optional[Tuple[int, int]] = None,
                   cmap: str = 'viridis',
                   vmax: Optional[float] = None,
                   vmin: Optional[float] = None):
    """An attention map on one colour scale from 0 to its maximum (or to
    ``vmax``, to draw several maps on one scale); with ``vmin``, a
    logarithmic scale from ``vmin`` (smaller weights get its colour).

    Args:
        ax: a matplotlib ``Axes``.
        attention: (h, w) weights, one per position of the block's input.
        extent: ``(left, right, bottom, top)`` of the map in image pixels
            (matplotlib's ``imshow`` extent), e.g. ``(0, W_in, H_in, 0)``
            for a map over an input of W_in x H_in pixels.
        boxes: (M, 4) boxes to outline (white), e.g. the ground truth.
        image_size: ``(H, W)`` of the image; when the map covers more (the
            padding a detector adds), the image's border is drawn dashed.
        cmap: matplotlib colour map.
        vmax: the top of the colour scale; default the map's maximum.
        vmin: the bottom of a logarithmic scale; default a linear one from 0.

    Returns:
        The ``AxesImage``, for a colour bar (``fig.colorbar(returned)``).
    """
    attention = np.asarray(attention, dtype=float)
    if attention.ndim != 2:
        raise ValueError(f'attention must be a 2-D (h, w) map, got shape '
                         f'{attention.shape}')
    top = vmax or float(attention.max()) or 1.0
    norm = LogNorm(vmin, top, clip=True) if vmin else Normalize(0.0, top)
    im = ax.imshow(
        attention,
        extent=extent,
        cmap=cmap,
        norm=norm,
        interpolation='nearest')
    for box in np.asarray([] if boxes is None else boxes).reshape(-1, 4):
        _rectangle(ax, box, edgecolor='white', linewidth=1)
    if image_size is not None:
        h, w = image_size
        if w < abs(extent[1] - extent[0]) or h < abs(extent[2] - extent[3]):
            _rectangle(
                ax, (0, 0, w, h),
                edgecolor='white',
                linewidth=0.8,
                linestyle=':')
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def draw_losses(ax, steps: Sequence[int],
                losses: Dict[str, Sequence[float]]) -> None:
    """Loss curves against the iteration: ``'loss'`` (the total) bold,
    the parts thin.

    Args:
        ax: a matplotlib ``Axes``.
        steps: the iteration of each logged value.
        losses: name -> values, one per step.
    """
    for name, values in losses.items():
        if len(values) != len(steps):
            raise ValueError(f'{name} has {len(values)} values for '
                             f'{len(steps)} steps')
        total = name == 'loss'
        ax.plot(
            steps,
            values,
            marker='o' if total else None,
            linewidth=2.5 if total else 1,
            label=name,
            color='black' if total else None,
            markersize=3)
    ax.set_xlabel('iteration')
    ax.set_ylabel('training loss')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def read_train_losses(
        work_dir: str) -> Tuple[List[int], Dict[str, List[float]]]:
    """The losses mmengine logged while training in ``work_dir``.

    Reads ``<work_dir>/<timestamp>/vis_data/scalars.json`` (mmengine's
    ``LocalVisBackend``) of the newest run that logged a ``loss``.

    Returns:
        ``(steps, {name: values})`` for every logged key starting with
        ``loss``, at the steps where the total ``loss`` was logged.

    Raises:
        FileNotFoundError: no training log with a loss under ``work_dir``.
    """
    files = sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    for path in reversed(files):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        rows = [r for r in rows if 'loss' in r and 'step' in r]
        if rows:
            names = [k for k in rows[0] if k.startswith('loss')]
            steps = [int(r['step']) for r in rows]
            return steps, {
                k: [float(r.get(k, np.nan)) for r in rows]
                for k in names
            }
    raise FileNotFoundError(
        f'no training loss logged under {work_dir!r} (looked for '
        f'<timestamp>/vis_data/scalars.json with a "loss"); train with '
        f'tools/train.py --work-dir {work_dir} first')
