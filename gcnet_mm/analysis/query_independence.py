"""Is the global context a non-local block learns query-independent?

Paper: "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
Cao et al., 2019, https://arxiv.org/abs/1904.11492, Sec. 3.2, Table 1 and
Figure 1: in trained NL networks the attention maps of different query
positions are nearly the same (COCO: cosine distance 0.020 between the maps
vs 0.401 between the inputs), so the context can be one global vector.

For every ``mmcv.cnn.NonLocal2d`` or ``NonLocal3d`` in a model
(``gcnet_mm.NonLocalBlock``, mmdet NL plugins, the ``nl_block`` of mmseg's
``NLHead`` or of ``gcnet_mm.NonLocalHead``; ``gcnet_mm.NonLocalBlock3d`` and
mmaction2's ``non_local_block`` in video models, whose query positions are
all T x H x W of a clip) a forward hook captures the block's input ``x``.
The block computes its attention inside ``forward`` and keeps no copy, so
:func:`nonlocal_attention` recomputes it from the block's own
``theta``/``phi`` convs and pairwise function (``sub_sample`` and
``use_scale`` included) and :func:`nonlocal_branch` rebuilds
``z = conv_out(attention @ g(x))``; the hook checks that ``x + z`` equals
what the block returned. Per block it then averages, over sampled pairs of
query positions ``(i, j)`` (see :func:`sample_query_pairs`):

* ``input``: cosine distance between ``x[:, i]`` and ``x[:, j]``;
* ``attention_cos`` / ``attention_js``: cosine distance and Jensen-Shannon
  divergence (natural log, in ``[0, ln 2]``) between attention rows i and j;
* ``output``: cosine distance between ``z[:, i]`` and ``z[:, j]``, the
  block's output before the residual addition (what the paper's "output"
  column measures); ``block_output`` the same for ``x + z``.

Cosine distance is ``1 - cos``. A pair in which either vector is zero has no
cosine distance and is left out; a block whose branch output is identically
zero (an untrained block with its zero-initialised last layer) reports NaN.
"""
import copy
import csv
import json
import logging
import math
import os
import os.path as osp
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from mmcv.cnn import NonLocal2d, NonLocal3d
from mmengine.dataset import Compose, pseudo_collate
from mmengine.logging import MMLogger
from mmengine.registry import DATASETS, init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.utils import ProgressBar
from torch import Tensor, nn

from gcnet_mm.engine import (check_data_paths, drop_pretrained,
                             install_checkpoint_safety)
from gcnet_mm.engine.checkpoint import state_dict_of
from gcnet_mm.engine.runner_cfg import load_config
from gcnet_mm.models.blocks.nonlocal_block import (nonlocal_branch,
                                                   pairwise_operands,
                                                   sub_sample_of)
from . import flops

__all__ = [
    'find_nonlocal_blocks', 'nonlocal_attention', 'nonlocal_branch',
    'sample_query_pairs', 'pair_distances', 'query_points',
    'QueryIndependenceRecorder', 'analyze_query_independence',
    'format_table', 'save_results', 'plot_attention_maps', 'IMAGE_EXTS',
    'attention_weight_stds', 'initialised_blocks'
]

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')

#: Columns of the paper's Table 1, as (key, heading).
TABLE_COLUMNS = (('input', 'input'), ('attention_cos', 'attention map (cos)'),
                 ('attention_js', 'attention map (JS)'), ('output', 'output'))


#: The NL blocks the tool reads (subclasses included).
NONLOCAL_TYPES = (NonLocal2d, NonLocal3d)


def find_nonlocal_blocks(model: nn.Module) -> List[Tuple[str, NonLocal2d]]:
    """Every ``mmcv.cnn.NonLocal2d`` and ``NonLocal3d`` (subclasses included)
    in ``model``, as ``(qualified name, module)`` in registration order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, NONLOCAL_TYPES)]


def nonlocal_attention(block: NonLocal2d, x: Tensor) -> Tensor:
    """The attention (pairwise weight) ``block`` uses on input ``x``.

    Args:
        block: an ``mmcv.cnn.NonLocal2d`` or ``NonLocal3d`` in any mode.
        x: its input, (B, C, H, W) or (B, C, T, H, W).

    Returns:
        (B, H*W, H'*W'): row ``i`` weighs the key positions for query ``i``;
        ``H' x W'`` is ``H x W`` max-pooled by 2 with ``sub_sample`` (``True``
        or ``'input'``); a 3-D block has T*H*W queries and T*H'*W' keys. Rows
        sum to one for the (embedded) Gaussian modes.
    """
    theta_x, phi_x = pairwise_operands(block, x)
    return getattr(block, block.mode)(theta_x, phi_x)


def sample_query_pairs(num_positions: int, num_pairs: int,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """Pairs of distinct query positions, (P, 2) int64.

    If ``num_pairs`` is at least the number of unordered pairs
    ``N (N - 1) / 2``, every unordered pair once; otherwise ``num_pairs``
    ordered pairs drawn uniformly and independently (with replacement) from
    the ``N (N - 1)`` pairs with ``i != j``. Empty for ``N < 2``.
    """
    n = int(num_positions)
    if n < 2:
        return torch.zeros((0, 2), dtype=torch.long)
    if num_pairs >= n * (n - 1) // 2:
        return torch.triu_indices(n, n, offset=1).t().contiguous()
    i = torch.randint(n, (num_pairs, ), generator=generator)
    j = torch.randint(n - 1, (num_pairs, ), generator=generator)
    j = j + (j >= i).long()  # skip i: uniform over j != i
    return torch.stack([i, j], dim=1)


def _cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """1 - cos of the rows of ``a`` and ``b`` (P, D); NaN where either row is
    zero."""
    a, b = a.double(), b.double()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    cos = (a * b).sum(dim=1) / (na * nb).clamp_min(1e-300)
    dist = (1 - cos).clamp_min(0)
    dist[(na <= 1e-12 * (1 + nb)) | (nb <= 1e-12 * (1 + na))] = math.nan
    return dist


def _to_distribution(p: Tensor) -> Tensor:
    """Rows as probability distributions: clamp at 0 and renormalise (a no-op
    for softmax rows; needed for 'dot_product'/'concatenation'). An all-zero
    row becomes uniform."""
    p = p.double().clamp_min(0)
    total = p.sum(dim=1, keepdim=True)
    uniform = torch.full_like(p, 1.0 / p.size(1))
    return torch.where(total > 0, p / total.clamp_min(1e-300), uniform)


def _js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence (nats) between the rows of ``p`` and ``q``."""
    p, q = _to_distribution(p), _to_distribution(q)
    m = 0.5 * (p + q)

    def kl(a: Tensor) -> Tensor:
        return torch.where(a > 0, a * (a.clamp_min(1e-300).log() -
                                       m.clamp_min(1e-300).log()),
                           torch.zeros_like(a)).sum(dim=1)

    return (0.5 * kl(p) + 0.5 * kl(q)).clamp_min(0)


def pair_distances(x: Tensor, attention: Tensor, z: Tensor, pairs: Tensor
                   ) -> Dict[str, Tensor]:
    """Distances of one image between the query positions in ``pairs``.

    Args:
        x: the block's input, (C, H, W) or (C, T, H, W).
        attention: its attention, (N, N') for N query and N' key positions.
        z: its output before the residual addition, the shape of ``x``.
        pairs: (P, 2) query indices into the N positions (H*W or T*H*W).

    Returns:
        ``input``, ``attention_cos``, ``attention_js``, ``output`` and
        ``block_output`` (of ``x + z``), each (P, ) float64 (NaN where
        undefined).
    """
    i, j = pairs[:, 0], pairs[:, 1]
    xs = x.flatten(1).t()  # (HW, C)
    zs = z.flatten(1).t()
    return dict(
        input=_cosine_distance(xs[i], xs[j]),
        attention_cos=_cosine_distance(attention[i], attention[j]),
        attention_js=_js_divergence(attention[i], attention[j]),
        output=_cosine_distance(zs[i], zs[j]),
        block_output=_cosine_distance(xs[i] + zs[i], xs[j] + zs[j]))


def query_points(num: int, height: int, width: int) -> List[Tuple[int, int]]:
    """``num`` well-spread (row, col) positions of an ``height x width``
    grid: the R2 low-discrepancy sequence, deterministic."""
    a1, a2 = 0.7548776662466927, 0.5698402909980532  # 1/phi_2, 1/phi_2^2
    points = []
    for k in range(num):
        u, v = (0.5 + a1 * k) % 1.0, (0.5 + a2 * k) % 1.0
        points.append((min(int(v * height), height - 1),
                       min(int(u * width), width - 1)))
    return points


class QueryIndependenceRecorder:
    """Forward hooks on NL blocks that accumulate Table 1's distances.

    Use as a context manager around forward passes; call
    :meth:`next_image` before each image (or video). Each forward call of a
    block (one per image, or one per window under sliding-window inference,
    one per clip) adds its sampled pairs; for the first ``num_vis`` images it
    also keeps the attention rows of ``num_queries`` query points and the
    image the model's ``backbone`` saw (see :func:`plot_attention_maps`).
    In a video block the queries are sampled over all T x H x W positions of
    the clip; the figure's query points lie in its middle frame, whose keys
    (and input frame) it shows.

    Args:
        blocks: ``(name, block)`` pairs, e.g. from
            :func:`find_nonlocal_blocks`.
        num_pairs: query pairs sampled per forward call (see
            :func:`sample_query_pairs`).
        seed: seed of the pair sampling.
        num_queries: query points per image in the figure.
        num_vis: images kept for the figure.
        image_source: module whose input (B, 3, h, w), or (B, 3, t, h, w) for
            video, is the image the blocks see (the model's backbone);
            ``None`` to keep no images.
        tolerance: relative tolerance of the check that ``x + z``
            reproduces the block's output.
    """

    def __init__(self,
                 blocks: Sequence[Tuple[str, NonLocal2d]],
                 *,
                 num_pairs: int = 1000,
                 seed: int = 0,
                 num_queries: int = 3,
                 num_vis: int = 3,
                 image_source: Optional[nn.Module] = None,
                 tolerance: float = 1e-3) -> None:
        self.blocks = list(blocks)
        self.num_pairs = int(num_pairs)
        self.num_queries = int(num_queries)
        self.num_vis = int(num_vis)
        self.image_source = image_source
        self.tolerance = float(tolerance)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.image_index = -1
        self.sums = {name: {} for name, _ in self.blocks}
        self.counts = {name: {} for name, _ in self.blocks}
        self.calls = {name: 0 for name, _ in self.blocks}
        self.shapes: Dict[str, Dict[str, Any]] = {}
        self.max_error = {name: 0.0 for name, _ in self.blocks}
        self.vis: List[Dict[str, Any]] = []  # one per (image, block)
        self._current_image: Optional[Tensor] = None
        self._handles: list = []

    def __enter__(self) -> 'QueryIndependenceRecorder':
        for name, block in self.blocks:
            self._handles.append(
                block.register_forward_hook(self._make_hook(name)))
        if self.image_source is not None:
            self._handles.append(
                self.image_source.register_forward_pre_hook(self._see_image))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def next_image(self) -> None:
        """Mark the start of the next image."""
        self.image_index += 1
        self._current_image = None

    def _see_image(self, module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], Tensor) and args[0].dim() in (4, 5):
            self._current_image = args[0].detach()

    def _make_hook(self, name: str):

        def hook(block: NonLocal2d, args: tuple, output: Tensor) -> None:
            with torch.no_grad():
                self._record(name, block, args[0].detach(), output.detach())

        return hook

    def _record(self, name: str, block: NonLocal2d, x: Tensor,
                output: Tensor) -> None:
        attention = nonlocal_attention(block, x)  # (B, HW, H'W')
        z = nonlocal_branch(block, x, attention)  # (B, C, H, W)
        error = (x + z - output).abs().max().item()
        scale = max(1.0, output.abs().max().item())
        self.max_error[name] = max(self.max_error[name], error / scale)
        if error > self.tolerance * scale:
            warnings.warn(
                f'{name}: the recomputed attention reproduces the block\'s '
                f'output only to {error:.3g} (max abs); the block\'s forward '
                f'differs from mmcv NonLocal2d\'s, so its statistics may not '
                f'describe the attention it used')
        first = self.calls[name] == 0
        self.calls[name] += 1
        positions = math.prod(x.shape[2:])  # H*W, or T*H*W in a clip
        lead = tuple(x.shape[2:-2])  # (T, ) in a clip, () in an image
        key_size = lead + ((x.shape[-2] // 2, x.shape[-1] // 2)
                           if sub_sample_of(block) else tuple(x.shape[-2:]))
        if math.prod(key_size) != attention.shape[-1]:  # not a grid we know
            key_size = (1, attention.shape[-1])
        if first:
            self.shapes[name] = dict(mode=block.mode,
                                     sub_sample=sub_sample_of(block),
                                     feature_size=list(x.shape[2:]),
                                     key_size=list(key_size))
        for b in range(x.size(0)):
            pairs = sample_query_pairs(positions, self.num_pairs,
                                       self.generator)
            if len(pairs) == 0:
                continue
            dists = pair_distances(x[b].cpu(), attention[b].cpu(),
                                   z[b].cpu(), pairs)
            for key, d in dists.items():
                valid = ~torch.isnan(d)
                self.sums[name][key] = self.sums[name].get(
                    key, 0.0) + d[valid].sum().item()
                self.counts[name][key] = self.counts[name].get(
                    key, 0) + int(valid.sum())
        if self.image_index < self.num_vis and not any(
                v['image_index'] == self.image_index and v['block'] == name
                for v in self.vis):
            h, w = x.shape[-2:]
            frames = x.shape[2] if x.dim() == 5 else None
            t = 0 if frames is None else frames // 2  # the middle frame
            points = query_points(self.num_queries, h, w)
            rows = torch.stack(
                [attention[0, (t * h + r) * w + c] for r, c in points])
            maps = rows.float().cpu().view(len(points), *key_size)
            if maps.dim() == 4:  # (K, T, H', W'): the keys of frame t
                maps = maps[:, t]
            image = self._current_image
            if image is not None:
                image = image[0].float().cpu()  # (3, h, w) or (3, t, h, w)
                if image.dim() == 4:  # the input frame of feature frame t
                    image = image[:, t * image.shape[1] // frames]
            self.vis.append(
                dict(image_index=self.image_index, block=name,
                     feature_size=(h, w), key_size=tuple(maps.shape[1:]),
                     points=points, maps=maps,
                     frame=None if frames is None else (t, frames),
                     image=image))

    def results(self) -> List[Dict[str, Any]]:
        """One dict per block: the averages and how they were obtained."""
        rows = []
        for name, _ in self.blocks:
            row = dict(block=name)
            for key in ('input', 'attention_cos', 'attention_js', 'output',
                        'block_output'):
                n = self.counts[name].get(key, 0)
                row[key] = self.sums[name][key] / n if n else math.nan
            row['num_pairs'] = self.counts[name].get('attention_cos', 0)
            row['num_calls'] = self.calls[name]
            row['max_reproduction_error'] = self.max_error[name]
            row.update(self.shapes.get(name, {}))
            rows.append(row)
        return rows


#: How close (relative) the spread of a block's theta and phi weights must
#: be to the spread they were initialised with to count as not trained.
INIT_TOLERANCE = 0.1


def attention_weight_stds(model: nn.Module) -> Dict[str, Dict[str, float]]:
    """The standard deviation of the weights of the ``theta`` and ``phi``
    convs of every NL block of ``model``: what its attention map is computed
    from (``gaussian`` mode has neither, its map depends on the input only).
    """
    stds = {}
    for name, block in find_nonlocal_blocks(model):
        stds[name] = {}
        for part in ('theta', 'phi'):
            branch = getattr(block, part, None)
            if isinstance(branch, nn.Sequential):  # sub_sample's (conv, pool)
                branch = branch[0]
            if branch is not None:
                weight = branch.conv.weight.detach().float()
                stds[name][part] = float(weight.std())
    return stds


def initialised_blocks(built: Dict[str, Dict[str, float]],
                       loaded: Dict[str, Dict[str, float]],
                       tolerance: float = INIT_TOLERANCE) -> Dict[str, str]:
    """The NL blocks whose checkpoint weights still look as initialised:
    ``theta`` and ``phi`` with the spread (std) of the model as built,
    within ``tolerance`` (a few iterations barely move them; training does).

    Returns:
        block name -> a note with the numbers, for those blocks only.
    """
    found = {}
    for name, stds in loaded.items():
        ref = built.get(name, {})
        parts = [p for p in stds if ref.get(p)]
        if parts and all(abs(stds[p] / ref[p] - 1) <= tolerance
                         for p in parts):
            found[name] = ', '.join(
                f'{p} std {stds[p]:.4f} (as built {ref[p]:.4f})'
                for p in parts)
    return found


def _three_decimals(v: float) -> str:
    return 'nan' if v is None or math.isnan(v) else f'{v:.3f}'


#: The note under the table and on the figure for a block whose attention
#: comes from its initialisation.
INIT_NOTE = ('* at initialisation: the attention maps come from the '
             'initial weights, not from learning')


def format_table(results: Sequence[Dict[str, Any]]) -> str:
    """The results as a Markdown table like the paper's Table 1.

    A block whose weights are those of its initialisation (no checkpoint,
    or a checkpoint that left them as initialised: ``row['initialised']``)
    is marked ``*`` and explained under the table."""
    head = ['block'] + [h for _, h in TABLE_COLUMNS]
    lines = ['| ' + ' | '.join(head) + ' |',
             '|' + '|'.join(['---'] + ['---:'] * len(TABLE_COLUMNS)) + '|']
    for r in results:
        name = r['block'] + (' *' if r.get('initialised') else '')
        lines.append('| ' + ' | '.join(
            [name] + [_three_decimals(r[k]) for k, _ in TABLE_COLUMNS]) + ' |')
    marked = [r for r in results if r.get('initialised')]
    if marked:
        lines.append(INIT_NOTE + ' (' + '; '.join(
            f'{r["block"]}: {r["initialised"]}' for r in marked) + ')')
    return '\n'.join(lines)


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def save_results(results: Sequence[Dict[str, Any]], meta: Dict[str, Any],
                 out_dir: str) -> Tuple[str, str]:
    """Write ``out_dir/query_independence.{csv,json}``; NaN is an empty CSV
    cell and JSON ``null``. Returns the two paths."""
    os.makedirs(out_dir, exist_ok=True)
    csv_path = osp.join(out_dir, 'query_independence.csv')
    json_path = osp.join(out_dir, 'query_independence.json')
    fields = ['block', 'input', 'attention_cos', 'attention_js', 'output',
              'block_output', 'num_pairs', 'num_calls', 'mode',
              'feature_size', 'key_size', 'max_reproduction_error']
    with open(csv_path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for r in results:
            cells = []
            for k in fields:
                v = r.get(k)
                if isinstance(v, float):
                    v = '' if math.isnan(v) else f'{v:.6g}'
                elif isinstance(v, (list, tuple)):
                    v = 'x'.join(str(s) for s in v)
                cells.append(v)
            writer.writerow(cells)
    with open(json_path, 'w') as f:
        json.dump(_json_safe(dict(meta=meta, blocks=list(results))), f,
                  indent=2)
    return csv_path, json_path


def _display_image(image: Tensor, preprocessor: Optional[nn.Module],
                   loaded_bgr: bool = True) -> np.ndarray:
    """(3, h, w) network input -> (h, w, 3) float RGB in [0, 1].

    ``loaded_bgr``: the pipeline loaded BGR (mmcv's image loading), not RGB
    (decord's video frames); the preprocessor's channel conversion, if any,
    swapped that.
    """
    img = image.clone()
    if preprocessor is not None and getattr(preprocessor, '_enable_normalize',
                                            False):
        mean = getattr(preprocessor, 'mean', None)
        std = getattr(preprocessor, 'std', None)
        if mean is not None and std is not None and mean.numel() == 3:
            img = img * std.view(3, 1, 1).cpu() + mean.view(3, 1, 1).cpu()
    converted = bool(getattr(preprocessor, '_channel_conversion',
                             getattr(preprocessor, 'to_rgb', False)))
    if converted != loaded_bgr:  # the network saw BGR
        img = img.flip(0)
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else img * 0
    return img.permute(1, 2, 0).numpy()


#: Colour map of the attention maps; every map of a figure row shares one
#: scale, from 0 to the largest weight of the row, shown by its colour bar.
ATTENTION_CMAP = 'viridis'


def _attention_figure(vis: Sequence[Dict[str, Any]],
                      preprocessor: Optional[nn.Module] = None):
    """The figure :func:`plot_attention_maps` writes: (figure, axes of shape
    (rows, 1 + queries + 1)), on an Agg canvas at 100 dpi.

    Every panel sits on whole pixels and a map fills its panel, so two equal
    maps are drawn as the same pixels.
    """
    if not vis:
        raise ValueError('no attention maps were captured to draw')
    queries = max(len(v['points']) for v in vis)
    # layout in pixels: panels `side` wide, as tall as the image's aspect
    side, gap, top, bottom, margin, bar, label = 200, 14, 36, 8, 8, 14, 96
    if any(v.get('initialised') for v in vis):
        top += 12  # a third line of title
    images = []
    for v in vis:
        if v['image'] is not None:
            image = _display_image(v['image'], preprocessor,
                                   loaded_bgr=v.get('frame') is None)
        else:
            image = np.full((*v['feature_size'], 3), 0.5)
        images.append((image, max(40, round(side * image.shape[0] /
                                            image.shape[1]))))
    width = margin + (queries + 1) * (side + gap) + bar + label
    height = sum(top + h + bottom for _, h in images)
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(fig)  # no pyplot: nothing global, no display needed
    colours = [
        '#e41a1c', '#ff7f00', '#f781bf', '#a65628', '#ffff33', '#984ea3',
        '#4daf4a', '#377eb8', '#999999', '#000000'
    ]
    axes, y = [], height
    for v, (image, ph) in zip(vis, images):
        y -= top + ph
        row = [
            fig.add_axes([(margin + k * (side + gap)) / width, y / height,
                          side / width, ph / height])
            for k in range(queries + 1)
        ]
        row.append(fig.add_axes([(margin + (queries + 1) * (side + gap)) /
                                 width, y / height, bar / width,
                                 ph / height]))
        y -= bottom
        axes.append(row)
        h, w = v['feature_size']
        ih, iw = image.shape[:2]
        title = f'image {v["image_index"]}'
        if v.get('frame') is not None:
            title += f', frame {v["frame"][0] + 1} of {v["frame"][1]}'
        row[0].imshow(0.35 * image + 0.65, aspect='auto')  # faint
        if v.get('initialised'):
            row[0].set_title(f'{title}\n{v["block"]}\nAT INITIALISATION: '
                             'not learnt', fontsize=7, color='#b00000')
        else:
            row[0].set_title(f'{title}\n{v["block"]}', fontsize=7)
        maps = v['maps'].float()  # from 0 (or below: dot-product modes)
        lo, hi = min(0.0, float(maps.min())), float(maps.max())
        norm = Normalize(lo, hi if hi > lo else lo + 1.0)
        for k, (r, c) in enumerate(v['points']):
            colour = colours[k % len(colours)]
            row[0].plot((c + 0.5) * iw / w - 0.5, (r + 0.5) * ih / h - 0.5,
                        'o', ms=7, mec='black', mew=1.0, color=colour)
            ax = row[k + 1]
            ax.imshow(maps[k].numpy(), cmap=ATTENTION_CMAP, norm=norm,
                      interpolation='nearest', aspect='auto')
            ax.set_title(f'query {k + 1} at ({r}, {c})', fontsize=7,
                         color=colour)
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(2)
        for ax in row[len(v['points']) + 1:-1]:
            ax.set_visible(False)
        for ax in row[:-1]:
            ax.set_xticks([])
            ax.set_yticks([])
        colorbar = fig.colorbar(
            ScalarMappable(norm=norm, cmap=ATTENTION_CMAP), cax=row[-1])
        colorbar.ax.tick_params(labelsize=6)
        colorbar.set_label('attention weight', fontsize=7)
    return fig, np.array(axes, dtype=object)


def plot_attention_maps(vis: Sequence[Dict[str, Any]], path: str,
                        preprocessor: Optional[nn.Module] = None) -> str:
    """Draw Figure 1 as a PNG and return its path.

    A row per (image, block): the image, faint, with the query points
    marked; then each query's attention map on its own, over the key
    positions (one cell per key, stretched to the image's frame); then a
    colour bar. All maps of a row share one colour scale, from 0 to the
    row's largest weight, so maps that are the same look the same, a nearly
    uniform map looks flat, and a map that weighs a region more shows it.
    In a video block the row shows the middle frame (its keys and its input
    frame).
    """
    fig, _ = _attention_figure(vis, preprocessor)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path


# --------------------------------------------------------------------------
# Running a config


def _list_images(folder: str) -> List[str]:
    if not osp.isdir(folder):
        raise FileNotFoundError(f'image folder not found: {folder!r}')
    files = sorted(
        osp.join(folder, f) for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_EXTS)
        and osp.isfile(osp.join(folder, f)))
    if not files:
        raise ValueError(f'image folder {folder!r} holds no images (looked '
                         f'for {", ".join(IMAGE_EXTS)})')
    return files


def _test_pipeline_cfg(cfg, split: str) -> list:
    loader = cfg.get(f'{split}_dataloader')
    pipeline = None
    if loader and loader.get('dataset'):
        dataset = loader['dataset']
        while 'pipeline' not in dataset and 'dataset' in dataset:
            dataset = dataset['dataset']  # wrappers
        pipeline = dataset.get('pipeline')
    if pipeline is None:
        pipeline = cfg.get('test_pipeline')
    if not pipeline:
        raise ValueError(f'the config has no {split}_dataloader.dataset.'
                         'pipeline nor test_pipeline to read images with')
    # No annotations for a folder of images (as mmdet/mmseg inference do).
    return [t for t in pipeline if not str(t.get('type', '')).endswith(
        ('LoadAnnotations', 'LoadPanopticAnnotations'))]


def _random_init(model: nn.Module) -> None:
    if hasattr(model, 'init_weights'):
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # not the per-parameter init log
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)


def _model_with_weights(cfg, checkpoint: Optional[str], device: str,
                        seed: int = 0) -> Tuple[nn.Module, Dict[str, str]]:
    """The model of ``cfg`` as the complexity tool builds it (BN for SyncBN,
    no pretrained weights), then ``checkpoint`` loaded or a seeded random
    initialisation.

    Returns:
        ``(model, initialised)``: the model in eval mode, and for each NL
        block whose attention weights are those of an initialisation (all of
        them without a checkpoint) a note saying so.
    """
    if checkpoint is None:
        dropped = drop_pretrained(copy.deepcopy(cfg.model))
        if dropped:
            warnings.warn(f'random init: not loading the pretrained weights '
                          f'the config names ({", ".join(dropped)})')
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # a reproducible random init
        model, _ = flops.build_model(cfg)
        if checkpoint is None:
            _random_init(model)
    built = attention_weight_stds(model)
    if checkpoint is None:
        warnings.warn(
            '\n' + '!' * 72
            + '\nNO CHECKPOINT: analysing RANDOMLY INITIALISED '
            'weights. The numbers say nothing about what a trained NL block '
            'learns; pass the checkpoint of a trained model.\n' + '!' * 72)
        return model.to(device).eval(), {
            name: 'random weights, no checkpoint' for name in built}
    if '://' not in checkpoint and not osp.isfile(checkpoint):
        raise FileNotFoundError(
            f'checkpoint file not found: {checkpoint!r}')
    install_checkpoint_safety()
    expected = set(model.state_dict())
    ckpt = load_checkpoint(model, checkpoint, map_location='cpu',
                           strict=False, revise_keys=[(r'^module\.', '')])
    loaded = set(state_dict_of(ckpt, checkpoint))
    missing = sorted(expected - loaded)
    nl_names = [name + '.' for name, _ in find_nonlocal_blocks(model)]
    nl_missing = [k for k in missing if k.startswith(tuple(nl_names))]
    if nl_missing:
        raise ValueError(
            f'checkpoint {checkpoint!r} has no weights for '
            f'{len(nl_missing)} NL-block parameters of the model, e.g. '
            f'{nl_missing[:4]}; it was not trained with this config\'s '
            'NL blocks')
    if missing:
        warnings.warn(f'checkpoint {checkpoint!r} misses {len(missing)} '
                      f'model keys (e.g. {missing[:4]}); they keep their '
                      'initialisation')
    initialised = initialised_blocks(built, attention_weight_stds(model))
    if initialised:
        warnings.warn(
            f'checkpoint {checkpoint!r}: the attention weights of '
            f'{len(initialised)} NL block(s) are as initialised ('
            + '; '.join(f'{k}: {v}' for k, v in initialised.items())
            + '), so their maps show the initialisation, not learning')
    return model.to(device).eval(), initialised


def analyze_query_independence(config: str,
                               checkpoint: Optional[str] = None,
                               *,
                               images: Optional[str] = None,
                               split: str = 'test',
                               num_images: int = 10,
                               num_pairs: int = 1000,
                               num_queries: int = 3,
                               num_vis: int = 3,
                               seed: int = 0,
                               out_dir: Optional[str] = None,
                               cfg_options: Optional[dict] = None,
                               device: Optional[str] = None,
                               progress: bool = True) -> Dict[str, Any]:
    """Table 1 and Figure 1 of the GCNet paper for a model with NL blocks.

    The model is built from ``config`` as the complexity tool builds it
    (:func:`gcnet_mm.analysis.flops.build_model`: SyncBN turned into
    BN, no pretrained weights; a config of mmdet, mmseg, mmpretrain or
    mmaction2), loaded from ``checkpoint`` (or left randomly initialised,
    with a loud warning) and run in test mode on ``num_images`` images: the
    first ones of the config's ``{split}_dataloader`` dataset, or of the
    sorted image files of the folder ``images`` read with that dataloader's
    pipeline (annotation loading dropped); for a video config, videos and
    their clips. Nothing is evaluated, so only the dataset's paths must
    exist. Each image goes alone through the model's ``data_preprocessor``
    and then, when every NL block lies in the ``backbone`` or ``neck``,
    through ``model.extract_feat`` only; otherwise (e.g. mmseg's
    ``NLHead``) through ``model.test_step`` as a whole.

    Args:
        config: config file path.
        checkpoint: checkpoint path or URL; ``None`` for random weights.
        images: a folder of images instead of the dataset split.
        split: ``'test'`` or ``'val'``, whose dataloader to use.
        num_images: images to analyse (fewer if the split/folder has fewer).
        num_pairs: query pairs sampled per image and block.
        num_queries: query points per image in the figure.
        num_vis: images in the figure.
        seed: seed of the pair sampling.
        out_dir: if given, write ``query_independence.{csv,json}`` and
            ``attention_maps.png`` there.
        cfg_options: ``--cfg-options`` overrides.
        device: ``'cpu'``, ``'cuda'``...; default CUDA when available.
        progress: show a progress bar.

    Returns:
        ``dict(results=[one dict per block], meta=..., table=str,
        files=dict(csv=..., json=..., png=...))``.

    Raises:
        FileNotFoundError: config, checkpoint, image folder or dataset path
            missing.
        ValueError: no NL block in the model, an empty image folder, a bad
            ``split`` or count.
    """
    if split not in ('test', 'val'):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    for key, value in (('num_images', num_images), ('num_pairs', num_pairs),
                       ('num_queries', num_queries)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'{key} must be a positive int, got {value!r}')
    if not isinstance(num_vis, int) or num_vis < 0:
        raise ValueError(f'num_vis must be an int >= 0, got {num_vis!r}')
    cfg = load_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')

    if images is not None:
        files = _list_images(images)[:num_images]
        pipeline = Compose(_test_pipeline_cfg(cfg, split))

        def load(k: int) -> dict:
            return pipeline(dict(img_path=files[k], img_id=k))

        count, source = len(files), f'folder {images}'
    else:
        if not cfg.get(f'{split}_dataloader'):
            raise ValueError(f'the config has no {split}_dataloader; pass '
                             'images=DIR or another split')
        check_data_paths(cfg, (split, ), evaluators=False)  # no evaluation
        dataset = DATASETS.build(cfg[f'{split}_dataloader']['dataset'])
        count = min(num_images, len(dataset))
        if count == 0:
            raise ValueError(f'the {split} dataset of {config!r} is empty')
        load, source = dataset.__getitem__, f'{split} split'

    model, initialised = _model_with_weights(cfg, checkpoint, device, seed)
    blocks = find_nonlocal_blocks(model)
    if not blocks:
        raise ValueError(
            f'config {config!r} builds a model with no non-local block (no '
            'mmcv.cnn.NonLocal2d or NonLocal3d, e.g. gcnet_mm.NonLocalBlock '
            'or NonLocalBlock3d, an mmdet NL plugin or an NLHead nl_block); '
            'nothing to analyse')
    feat_only = hasattr(model, 'extract_feat') and all(
        name.startswith(('backbone.', 'neck.')) for name, _ in blocks)
    recorder = QueryIndependenceRecorder(
        blocks, num_pairs=num_pairs, seed=seed, num_queries=num_queries,
        num_vis=num_vis, image_source=getattr(model, 'backbone', None))
    bar = ProgressBar(count) if progress else None
    with recorder, torch.no_grad():
        for k in range(count):
            recorder.next_image()
            data = pseudo_collate([load(k)])
            if feat_only:
                data = model.data_preprocessor(data, False)
                model.extract_feat(data['inputs'])
            else:
                model.test_step(data)
            if bar is not None:
                bar.update()
    if bar is not None:
        print()
    results = recorder.results()
    for r in results:
        r['initialised'] = initialised.get(r['block'])
    for v in recorder.vis:
        v['initialised'] = initialised.get(v['block'])
    for r in results:
        if r['num_calls'] == 0:
            warnings.warn(f'{r["block"]} never ran on the way through '
                          f'{"extract_feat" if feat_only else "test_step"}')
    meta = dict(config=config, checkpoint=checkpoint,
                random_init=checkpoint is None, source=source,
                num_images=count, pairs_per_image=num_pairs, seed=seed,
                route='extract_feat' if feat_only else 'test_step',
                js_log_base='e')
    out = dict(results=results, meta=meta, table=format_table(results),
               files={})
    if out_dir is not None:
        csv_path, json_path = save_results(results, meta, out_dir)
        out['files'] = dict(csv=csv_path, json=json_path)
        if recorder.vis:
            out['files']['png'] = plot_attention_maps(
                recorder.vis, osp.join(out_dir, 'attention_maps.png'),
                getattr(model, 'data_preprocessor', None))
    out['vis'] = recorder.vis
    return out
