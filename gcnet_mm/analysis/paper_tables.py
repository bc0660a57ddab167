"""The paper's complexity tables as data, measured and formatted.

:data:`PAPER_TABLES` holds what the paper (Tables 2(a), 3 and 4(a)) and the
GCNet slides (the Cityscapes head comparison) print for each config;
:func:`paper_table` measures the configs of one table with
:func:`gcnet_mm.analysis.flops.get_complexity`, :func:`fit_paper_convention`
relates the paper's detection FLOPs to the measured parts, and the
``format_*`` functions write the reports of
``tools/analysis/get_complexity.py``.
"""
import contextlib
import gc
import os
import os.path as osp
import sys
import warnings
from typing import (Any, Callable, Dict, Iterable, List, NamedTuple, Optional,
                    Sequence, TextIO, Tuple, Union)

from .flops import Complexity, check_shape, get_complexity, is_cached

__all__ = [
    'PAPER_TABLES', 'PaperRow', 'paper_table', 'paper_rows', 'table_jobs',
    'QuietMeasurer', 'fit_paper_convention', 'format_fit', 'format_table',
    'format_results'
]


class PaperRow(NamedTuple):
    """One row of a paper table: what the paper prints for one config."""
    row: str  # the paper's row label
    params: float  # millions, as printed
    flops: Optional[float]  # GFLOPs (multiply-adds), as printed
    zoo: Optional[str] = None  # an upstream model zoo's numbers, if any
    remark: Optional[str] = None  # why the measurement differs, if known


class _Table(NamedTuple):
    title: str
    shape: Tuple[int, int]  # the input size its FLOPs are measured at
    rows: Dict[str, PaperRow]  # config (relative to configs/) -> paper row


_DET = 'detection/gcnet/'
_ABL = 'detection/gcnet_paper/mask-rcnn_r50-syncbn-'
_CLS = 'classification/gcnet/resnet50'
_SEG = '_r101-d8-stem128_4xb2-80k_cityscapes-512x1024.py'
_X101 = 'cascade-mask-rcnn_x101-32x4d-syncbn'
_VID = 'recognition/gcnet/slowonly_'
_K400 = '_8xb16-8x8x1-steplr-150e_kinetics400-rgb.py'
# Parameter rows no model that loads the released checkpoints can print (see
# docs/complexity.md).
_R101_GC = ('paper params: its 82.4 - 68.1 is 14.2-14.4M, GC r4 - r16 is '
            '14.17M for any R-101; one of the two rows is off')
_X101_GC = ('paper params: the Mask R-CNN X-101 rows all round right only '
            'for a model 29k-55k smaller than mmdet\'s')

#: The paper's complexity numbers as data: table name -> title, input size
#: and rows (config path relative to ``configs/`` -> :class:`PaperRow`).
#: Sources: the paper's Tables 2(a), 3, 4(a) and 5 and the GCNet slides'
#: Cityscapes head comparison (see docs/complexity.md for the input sizes).
PAPER_TABLES: Dict[str, _Table] = {
    '2a': _Table(
        'Table 2(a): block design, Mask R-CNN R50-FPN (COCO)', (800, 1333), {
            _DET + 'mask-rcnn_r50-syncbn_fpn_1x_coco.py':
            PaperRow('baseline', 44.4, 279.4),
            _ABL + 'nl-c4-1blk_fpn_1x_coco.py':
            PaperRow('+1 NL', 46.5, 288.7),
            _ABL + 'snl-c4-1blk_fpn_1x_coco.py':
            PaperRow('+1 SNL', 45.4, 279.4),
            _ABL + 'gcb-r16-c4-1blk_fpn_1x_coco.py':
            PaperRow('+1 GC', 44.5, 279.4),
            _DET + 'mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py':
            PaperRow('+all GC', 46.9, 279.6),
        }),
    '3': _Table(
        'Table 3: stronger backbones, GC in c3-c5 (COCO)', (800, 1333), {
            _DET + 'mask-rcnn_r50-syncbn_fpn_1x_coco.py':
            PaperRow('R50 Mask, baseline', 44.4, 279.4),
            _DET + 'mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py':
            PaperRow('R50 Mask, +GC r16', 46.9, 279.5),
            _DET + 'mask-rcnn_r50-syncbn-gcb-r4-c3-c5_fpn_1x_coco.py':
            PaperRow('R50 Mask, +GC r4', 54.4, 279.6),
            _DET + 'mask-rcnn_r101-syncbn_fpn_1x_coco.py':
            PaperRow('R101 Mask, baseline', 63.4, 354.1),
            _DET + 'mask-rcnn_r101-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py':
            PaperRow('R101 Mask, +GC r16', 68.1, 354.2, remark=_R101_GC),
            _DET + 'mask-rcnn_r101-syncbn-gcb-r4-c3-c5_fpn_1x_coco.py':
            PaperRow('R101 Mask, +GC r4', 82.4, 354.3),
            _DET + 'mask-rcnn_x101-32x4d-syncbn_fpn_1x_coco.py':
            PaperRow('X101 Mask, baseline', 63.0, 357.8),
            _DET + 'mask-rcnn_x101-32x4d-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py':
            PaperRow('X101 Mask, +GC r16', 67.8, 358.1),
            _DET + 'mask-rcnn_x101-32x4d-syncbn-gcb-r4-c3-c5_fpn_1x_coco.py':
            PaperRow('X101 Mask, +GC r4', 81.9, 358.2, remark=_X101_GC),
            _DET + _X101 + '_fpn_1x_coco.py':
            PaperRow('X101 Cascade Mask, baseline', 95.9, 536.9),
            _DET + _X101 + '-r16-gcb-c3-c5_fpn_1x_coco.py':
            PaperRow('X101 Cascade Mask, +GC r16', 100.7, 537.2),
            _DET + _X101 + '-r4-gcb-c3-c5_fpn_1x_coco.py':
            PaperRow('X101 Cascade Mask, +GC r4', 114.9, 537.3),
            _DET + _X101 + '-dconv-c3-c5_fpn_1x_coco.py':
            PaperRow('X101 DCN Cascade Mask, baseline', 98.5, 547.5),
            _DET + _X101 + '-dconv-c3-c5-r16-gcb-c3-c5_fpn_1x_coco.py':
            PaperRow('X101 DCN Cascade Mask, +GC r16', 103.3, 547.7),
            _DET + _X101 + '-dconv-c3-c5-r4-gcb-c3-c5_fpn_1x_coco.py':
            PaperRow('X101 DCN Cascade Mask, +GC r4', 117.5, 547.8),
        }),
    '4a': _Table(
        'Table 4(a): block design, ResNet-50 (ImageNet)', (224, 224), {
            _CLS + '_8xb64-ft-coslr-40e_in1k.py':
            PaperRow('baseline', 25.56, 3.86,
                     zoo='mmpretrain resnet50_8xb32_in1k: 25.56M, 4.12G'),
            _CLS + '-nl-c4-1blk_8xb64-ft-coslr-40e_in1k.py':
            PaperRow('+1 NL', 27.66, 4.11),
            _CLS + '-snl-c4-1blk_8xb64-ft-coslr-40e_in1k.py':
            PaperRow('+1 SNL', 26.61, 3.86),
            _CLS + '-gcb-r16-c4-1blk_8xb64-ft-coslr-40e_in1k.py':
            PaperRow('+1 GC', 25.69, 3.86),
            _CLS + '-gcb-r16-c3-c5_8xb64-ft-coslr-40e_in1k.py':
            PaperRow('+all GC', 28.08, 3.87),
        }),
    'cityscapes': _Table(
        'Slides: decode heads on dilated ResNet-101 (Cityscapes val)',
        (769, 769), {
            'segmentation/gcnet_paper/fcn' + _SEG:
            PaperRow('baseline (FCN head)', 70.96, 646.88),
            'segmentation/gcnet_paper/nonlocal-red4' + _SEG:
            PaperRow('NL-Head', 71.22, 649.36),
            'segmentation/gcnet_paper/snl' + _SEG:
            PaperRow('SNL-Head', 71.22, 646.86),
            'segmentation/gcnet_paper/gcnet' + _SEG:
            PaperRow('GC-Head', 71.09, 646.89),
        }),
    '5': _Table(
        'Table 5: slow-only ResNet-50 8x8 (Kinetics-400), one 8-frame clip',
        (224, 224), {
            _VID + 'imagenet-pretrained-r50' + _K400:
            PaperRow('baseline', 32.45, 39.29),
            _VID + 'r50-in1k-pre-nl-5blk' + _K400:
            PaperRow('+5 NL', 39.81, 59.60),
            _VID + 'r50-in1k-pre-snl-5blk' + _K400:
            PaperRow('+5 SNL', 36.13, 39.32),
            _VID + 'r50-in1k-pre-gcb-r4-5blk' + _K400:
            PaperRow('+5 GC', 34.30, 39.31),
            _VID + 'r50-in1k-pre-gcb-r4-c3-c5' + _K400:
            PaperRow('+all GC', 42.45, 39.35),
        }),
}


def _table(name: str) -> _Table:
    if name not in PAPER_TABLES:
        raise ValueError(f'unknown paper table {name!r}; expected one of '
                         f'{sorted(PAPER_TABLES)}')
    return PAPER_TABLES[name]


def table_jobs(names: Iterable[str],
               shape: Union[int, Sequence[int], None] = None
               ) -> List[Tuple[str, Tuple[int, int]]]:
    """The (config, input size) pairs the tables ``names`` measure, each
    once (Tables 2(a) and 3 share rows)."""
    jobs = []
    for name in names:
        table = _table(name)
        size = check_shape(shape) or table.shape
        jobs += [(config, size) for config in table.rows]
    return list(dict.fromkeys(jobs))


def paper_rows(config: str) -> List[Tuple[str, PaperRow]]:
    """The paper tables a config is in: (table title at its input size,
    the paper's row)."""
    from .flops import resolve_config
    try:
        path = osp.realpath(resolve_config(config))
    except ValueError:  # not a config file: in no table
        return []
    return [(f'{table.title}, at {table.shape[0]}x{table.shape[1]}', row)
            for table in PAPER_TABLES.values()
            for key, row in table.rows.items()
            if osp.realpath(resolve_config(key)) == path]


def paper_table(name: str,
                params_only: bool = False,
                shape: Union[int, Sequence[int], None] = None,
                counter: str = 'fvcore',
                measure: Optional[Callable[[str, Tuple[int, int]],
                                           Complexity]] = None
                ) -> List[Dict[str, Any]]:
    """Measure every config of one paper table: a list of row dicts.

    Each row holds the paper's row label, params and FLOPs, the measured
    ones and their differences (measured - paper; FLOPs ``None`` with
    ``params_only``).  ``shape`` defaults to the table's own input size.
    ``measure(config, shape)`` measures one config (default:
    :func:`get_complexity` with ``params_only`` and ``counter``; see
    :class:`QuietMeasurer`).

    Raises:
        ValueError: for a table name not in :data:`PAPER_TABLES`.
    """
    table = _table(name)
    shape = check_shape(shape) or table.shape
    if measure is None:
        def measure(config, size):
            return get_complexity(config, shape=size,
                                  params_only=params_only, counter=counter)
    rows = []
    for config, paper in table.rows.items():
        result = measure(config, shape)
        params = result.params / 1e6
        flops = None if result.flops is None else result.flops / 1e9
        rows.append(
            dict(
                table=name,
                row=paper.row,
                config=config,
                params_m=params,
                paper_params_m=paper.params,
                params_diff_m=params - paper.params,
                flops_g=flops,
                paper_flops_g=paper.flops,
                flops_diff_g=None if flops is None or paper.flops is None
                else flops - paper.flops,
                flops_rel_diff=None if flops is None or not paper.flops else
                flops / paper.flops - 1,
                shape=shape,
                input_shape=result.input_shape,
                notes=result.notes,
                flops_by_part_g={
                    k: v / 1e9
                    for k, v in result.flops_by_part.items()
                },
                roi_stages=result.roi_stages,
                zoo=paper.zoo,
                remark=paper.remark,
                convention=result.convention))
    return rows


class QuietMeasurer:
    """:func:`get_complexity` for many configs with one progress line on the
    terminal and nothing else: what building and tracing the models prints
    (warnings, logs, tracer notes; file descriptors 1 and 2) goes to
    ``log_file``.  Results are kept by (config, shape), so the tables that
    share a row measure it once, and in ``cache_dir`` when given.

    Use as a context manager; call it as ``measure(config, shape)``.
    """

    def __init__(self,
                 total: int,
                 log_file: str,
                 params_only: bool = False,
                 counter: str = 'fvcore',
                 cache_dir: Optional[str] = None,
                 stream: Optional[TextIO] = None) -> None:
        self.total = total
        self.log_file = log_file
        self.params_only = params_only
        self.counter = counter
        self.cache_dir = cache_dir
        self.stream = stream or sys.stderr
        self.results: Dict[Tuple[str, Tuple[int, int]], Complexity] = {}
        self._width = 0

    def __enter__(self) -> 'QuietMeasurer':
        open(self.log_file, 'w').close()
        return self

    def __exit__(self, *exc) -> None:
        if self._width and self.stream.isatty():
            print(file=self.stream, flush=True)

    def __call__(self, config: str,
                 shape: Optional[Tuple[int, int]]) -> Complexity:
        key = (config, shape)
        if key not in self.results:
            self.results[key] = self._measure(config, shape)
        return self.results[key]

    def _measure(self, config: str,
                 shape: Optional[Tuple[int, int]]) -> Complexity:
        kwargs = dict(shape=shape, params_only=self.params_only,
                      counter=self.counter, cache_dir=self.cache_dir)
        with _output_to(self.log_file):  # reading a config can warn too
            cached = self.cache_dir is not None and is_cached(
                config, **kwargs)
        size = 'its default size' if shape is None else \
            f'{shape[0]}x{shape[1]}'
        self._show(f'[{len(self.results) + 1:>{len(str(self.total))}}/'
                   f'{self.total}] {osp.basename(config)[:-3]} at {size}' +
                   (' (cached)' if cached else ''))
        try:
            with _output_to(self.log_file):
                return get_complexity(config, **kwargs)
        finally:
            gc.collect()  # the model and its trace, before the next one

    def _show(self, line: str) -> None:
        if self.stream.isatty():  # one line, rewritten
            pad = max(self._width - len(line), 0)
            print(f'\r{line}{" " * pad}', end='', file=self.stream,
                  flush=True)
            self._width = len(line)
        else:
            print(line, file=self.stream, flush=True)

    def captured_lines(self) -> int:
        """How many lines the measurements printed into the log file."""
        with open(self.log_file, errors='replace') as f:
            return sum(1 for line in f if line.strip())


@contextlib.contextmanager
def _output_to(path: str):
    """File descriptors 1 and 2 (python's prints, logging handlers, C++ and
    tracer messages) and python's warnings appended to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, 'ab') as log, open(
                path, 'a', buffering=1) as text, contextlib.redirect_stdout(
                    text), contextlib.redirect_stderr(
                        text), warnings.catch_warnings():
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)

            def show(message, category, filename, lineno, file=None,
                     line=None):
                sys.stderr.write(warnings.formatwarning(
                    message, category, filename, lineno, line))

            warnings.showwarning = show
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def fit_paper_convention(rows: Iterable[Dict[str, Any]]
                         ) -> Optional[Dict[str, Any]]:
    """How the paper's detection FLOPs relate to the measured ones.

    Fits, by least squares over the measured rows of :func:`paper_table`
    for two-stage detectors without NL blocks::

        paper = scale * (FLOPs outside the RoI heads)
                + (RoI head FLOPs) + per_stage * (RoI head stages)

    ``scale`` stands for a difference in input size (everything outside the
    RoI heads grows with the pixels; 0.937 is an image of about 800x1260
    instead of 800x1344), ``per_stage`` for a different count of the RoI
    heads, whose cost does not depend on the image.  Needs rows with one and
    with several RoI stages (Table 3's cascades); returns None otherwise.
    NL rows are held out: their estimate is a prediction, which checks how
    the NL block is counted (the paper's figure fits an NL block that pools
    its input before phi and g, ``sub_sample='input'``).

    Returns:
        dict | None: ``scale``, ``per_stage_g``, ``rows_used`` and per row
        (all detection rows, NL ones included) ``estimate_g`` and
        ``residual_g`` (paper - estimate), keyed by config.
    """
    usable = []
    for r in rows:
        parts = r.get('flops_by_part_g') or {}
        if (r.get('flops_g') is None or r.get('paper_flops_g') is None
                or not r.get('roi_stages') or 'roi_head' not in parts):
            continue
        heads = parts['roi_head']
        usable.append((r, r['flops_g'] - heads, heads, r['roi_stages']))

    def fitted(row: Dict[str, Any]) -> bool:  # NL rows are held out
        return '-nl-' not in osp.basename(row['config'])

    # a config in two tables counts once per paper figure
    fit_on = list({(u[0]['config'], u[0]['paper_flops_g']): u
                   for u in usable if fitted(u[0])}.values())
    if len({u[3] for u in fit_on}) < 2:
        return None
    import numpy as np

    # least squares of paper - heads = scale * rest + per_stage * stages
    (scale, per_stage), *_ = np.linalg.lstsq(
        np.array([[rest, n] for _, rest, _, n in fit_on], dtype=float),
        np.array([r['paper_flops_g'] - heads for r, _, heads, _ in fit_on]),
        rcond=None)
    scale, per_stage = float(scale), float(per_stage)
    estimates = {}
    for r, rest, heads, n in usable:
        estimate = scale * rest + heads + per_stage * n
        estimates[r['config']] = dict(
            row=r['row'],
            estimate_g=estimate,
            residual_g=r['paper_flops_g'] - estimate,
            fitted=fitted(r))
    return dict(
        scale=scale,
        per_stage_g=per_stage,
        rows_used=len(fit_on),
        rows=estimates)


def format_fit(fit: Dict[str, Any]) -> str:
    """A markdown report of :func:`fit_paper_convention`."""
    lines = [
        '### Paper detection FLOPs against the measured parts', '',
        f'paper ~= {fit["scale"]:.3f} x (FLOPs outside the RoI heads) + RoI '
        f'heads + {fit["per_stage_g"]:.2f}G x RoI stages (least squares over '
        f'{fit["rows_used"]} rows without NL blocks)', '',
        '| row | config | estimate (G) | paper - estimate (G) |',
        '| :-- | :-- | --: | --: |'
    ]
    for config, r in fit['rows'].items():
        lines.append(f'| {r["row"]} | {osp.basename(config)[:-3]} | '
                     f'{r["estimate_g"]:.2f} | {r["residual_g"]:+.2f} |')
    fitted = [r for r in fit['rows'].values() if r['fitted']]
    worst = max(fitted, key=lambda r: abs(r['residual_g']))
    lines += [
        '', f'largest |paper - estimate| of the fitted rows: '
        f'{abs(worst["residual_g"]):.2f}G ({worst["row"]})'
    ]
    held_out = [r for r in fit['rows'].values() if not r['fitted']]
    if held_out:
        lines.append(
            'held out (predicted, not fitted): ' + ', '.join(
                f'{r["row"]} {r["residual_g"]:+.2f}G' for r in held_out))
    return '\n'.join(lines)


def _num(value: Optional[float], digits: int, sign: bool = False) -> str:
    if value is None:
        return '-'
    return f'{value:+.{digits}f}' if sign else f'{value:.{digits}f}'


def format_table(name: str, rows: Iterable[Dict[str, Any]]) -> str:
    """A markdown table of :func:`paper_table`'s rows, titled."""
    table = _table(name)
    rows = list(rows)
    digits = 2 if any(r['paper_params_m'] != round(r['paper_params_m'], 1)
                      for r in rows) else 1
    fdigits = 2 if any(
        r['paper_flops_g'] is not None
        and r['paper_flops_g'] != round(r['paper_flops_g'], 1)
        for r in rows) else 1
    shape = rows[0]['shape'] if rows else table.shape
    seen = rows[0]['input_shape'] if rows else None
    size = f'{shape[0]}x{shape[1]}'
    if seen and tuple(seen[-2:]) != tuple(shape):
        size += f' (padded to {seen[-2]}x{seen[-1]})'
    if seen and len(seen) == 6:  # a video clip (N, clips, C, T, H, W)
        size = f'{seen[3]} frames of {size}'
    lines = [
        f'### {table.title}', '',
        f'Input {size}. {rows[0]["convention"] if rows else ""}.', '',
        '| row | config | params (M) | paper | diff | FLOPs (G) | paper | '
        'diff | diff % | notes |',
        '| :-- | :-- | --: | --: | --: | --: | --: | --: | --: | :-- |'
    ]
    for r in rows:
        notes = '; '.join(
            n for n in (r['notes'], r['zoo'] and f'zoo: {r["zoo"]}',
                        r.get('remark')) if n)
        rel = r['flops_rel_diff']
        lines.append(
            f'| {r["row"]} | {osp.basename(r["config"])[:-3]} | '
            f'{r["params_m"]:.{digits + 1}f} | '
            f'{r["paper_params_m"]:.{digits}f} | '
            f'{_num(r["params_diff_m"], digits + 1, True)} | '
            f'{_num(r["flops_g"], fdigits + 1)} | '
            f'{_num(r["paper_flops_g"], fdigits)} | '
            f'{_num(r["flops_diff_g"], fdigits + 1, True)} | '
            f'{"-" if rel is None else f"{100 * rel:+.1f}"} | {notes} |')
    return '\n'.join(lines)


def format_results(results: Iterable[Complexity]) -> str:
    """A plain-text report of :func:`get_complexity` results, with the
    paper's figures for a config that is in a paper table."""
    results = list(results)
    lines = []
    for r in results:
        lines.append(f'{r.config} ({r.task})')
        lines.append(f'  params: {r.params / 1e6:.2f}M ({r.params})')
        if r.flops is not None:
            seen = 'x'.join(map(str, r.input_shape[-2:]))
            asked = 'x'.join(map(str, r.shape))
            size = asked if seen == asked else f'{asked}, padded to {seen}'
            lines.append(f'  FLOPs:  {r.flops / 1e9:.2f}G at {size}')
            if r.flops_by_part:
                lines.append('  by part: ' + ', '.join(
                    f'{name} {count / 1e9:.2f}G' if count >= 1e7 else
                    f'{name} {count / 1e6:.2f}M'
                    for name, count in r.flops_by_part.items()))
            if r.notes:
                lines.append(f'  ({r.notes})')
        for title, row in paper_rows(r.config):
            flops = '' if row.flops is None else f', {row.flops}G FLOPs'
            lines.append(f'  paper: {row.params}M params{flops} '
                         f'({title}: {row.row})')
    if lines:
        conventions = sorted({r.convention for r in results})
        lines += conventions
    return '\n'.join(lines)
