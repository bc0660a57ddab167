"""The text reports of ``tools/analysis/get_complexity.py``.

:func:`format_table` writes a measured paper table
(:func:`~gcnet_mm.analysis.paper_tables.paper_table`), :func:`format_results`
the results of single configs with the paper's figures where it has some,
and :func:`format_params_summary` the parameter table of the README (the
paper's counts beside the built ones, both from the metafiles).
"""
import os.path as osp
from typing import Any, Dict, Iterable, Optional, Sequence

from .flops import Complexity
from .paper_figures import (PAPER_TABLES, get_table, load_models,
                            printed_decimals, table_rows)
from .paper_tables import paper_rows_of

__all__ = ['format_table', 'format_results', 'format_params_summary',
           'SUMMARY_TABLES']

#: The tables of the README's parameter summary.
SUMMARY_TABLES = ('2a', '4a', 'cityscapes', '5')


def _format_number(value: Optional[float], digits: int,
                   sign: bool = False) -> str:
    if value is None:
        return '-'
    return f'{value:+.{digits}f}' if sign else f'{value:.{digits}f}'


def format_table(name: str, rows: Iterable[Dict[str, Any]]) -> str:
    """A markdown table of :func:`~gcnet_mm.analysis.paper_tables.
    paper_table`'s rows, titled."""
    table = get_table(name)
    rows = list(rows)
    digits = printed_decimals(r['paper_params_m'] for r in rows)
    fdigits = printed_decimals(r['paper_flops_g'] for r in rows)
    shape = rows[0]['shape'] if rows else table.shape
    seen = rows[0]['input_shape'] if rows else None
    size = f'{shape[0]}x{shape[1]}'
    if seen and tuple(seen[-2:]) != tuple(shape):
        size += f' (padded to {seen[-2]}x{seen[-1]})'
    if seen and len(seen) == 6:  # a video clip (N, clips, C, T, H, W)
        size = f'{seen[3]} frames of {size}'
    lines = [
        f'### {table.heading}', '',
        f'Input {size}. {rows[0]["convention"] if rows else ""}.', '',
        '| row | config | params (M) | paper | diff | FLOPs (G) | paper | '
        'diff | diff % | notes |',
        '| :-- | :-- | --: | --: | --: | --: | --: | --: | --: | :-- |'
    ]
    for r in rows:
        notes = '; '.join(n for n in (r['notes'], r.get('remark')) if n)
        rel = r['flops_rel_diff']
        lines.append(
            f'| {r["row"]} | {osp.basename(r["config"])[:-3]} | '
            f'{r["params_m"]:.{digits + 1}f} | '
            f'{r["paper_params_m"]:.{digits}f} | '
            f'{_format_number(r["params_diff_m"], digits + 1, True)} | '
            f'{_format_number(r["flops_g"], fdigits + 1)} | '
            f'{_format_number(r["paper_flops_g"], fdigits)} | '
            f'{_format_number(r["flops_diff_g"], fdigits + 1, True)} | '
            f'{"-" if rel is None else f"{100 * rel:+.1f}"} | {notes} |')
    return '\n'.join(lines)


def _source_with_table(source: str) -> str:
    """A source with the title and input size of its table, if measured."""
    for table in PAPER_TABLES.values():
        if table.source == source:
            return f'{table.heading}, at {table.shape[0]}x{table.shape[1]}'
    return source


def format_results(results: Iterable[Complexity]) -> str:
    """A plain-text report of :func:`~gcnet_mm.analysis.flops.
    get_complexity` results, with the paper's figures for a config the
    paper prints some for."""
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
        for row in paper_rows_of(r.config):
            if row.params is None:
                continue
            flops = '' if row.flops is None else f', {row.flops}G FLOPs'
            lines.append(f'  paper: {row.params}M params{flops} '
                         f'({_source_with_table(row.source)}: {row.row})')
    if lines:
        conventions = sorted({r.convention for r in results})
        lines += conventions
    return '\n'.join(lines)


def format_params_summary(names: Sequence[str] = SUMMARY_TABLES) -> str:
    """A markdown table of the paper's parameter counts beside those of the
    models the configs build (the metafiles' ``Parameters``), one line per
    paper table: the README's."""
    built = {
        model['Config'][len('configs/'):]: model['Metadata']['Parameters']
        for model in load_models()
    }
    lines = ['| paper table | rows | paper (M) | built (M) |',
             '|---|---|---|---|']
    for name in names:
        rows = table_rows(name)
        digits = printed_decimals(row.params for row in rows)
        lines.append(' | '.join([
            f'| {get_table(name).heading}',
            ' / '.join(row.row for row in rows),
            ' / '.join(f'{row.params:.{digits}f}' for row in rows),
            ' / '.join(f'{built[row.config] / 1e6:.2f}' for row in rows)
        ]) + ' |')
    return '\n'.join(lines)
