"""The paper's complexity tables, measured.

:func:`paper_table` measures the configs of one table of
:data:`~gcnet_mm.analysis.paper_figures.PAPER_TABLES` and sets each beside
the figures the paper prints (read from the configs' metafiles, see
:mod:`gcnet_mm.analysis.paper_figures`); :func:`table_jobs` lists what some
tables measure, :func:`unavailable_host` says why a table cannot be measured
here, and :func:`paper_rows_of` finds the paper's rows of a config file.
"""
import importlib
from pathlib import Path
from typing import (Any, Callable, Dict, Iterable, List, Optional, Sequence,
                    Tuple, Union)

from .flops import (CONFIGS_DIR, TASK_OF_SCOPE, Complexity, check_shape,
                    get_complexity, resolve_config)
from .paper_figures import PaperRow, get_table, paper_rows, table_rows

__all__ = ['paper_table', 'table_jobs', 'unavailable_host', 'paper_rows_of']

#: The package each task's configs are built with.
_HOST_OF_TASK = {task: scope for scope, task in TASK_OF_SCOPE.items()}


def table_jobs(names: Iterable[str],
               shape: Union[int, Sequence[int], None] = None
               ) -> List[Tuple[str, Tuple[int, int]]]:
    """The (config, input size) pairs the tables ``names`` measure, each
    once (Tables 2(a) and 3 share rows).

    Raises:
        ValueError: for a table name not in ``PAPER_TABLES``.
    """
    jobs = []
    for name in names:
        size = check_shape(shape) or get_table(name).shape
        jobs += [(row.config, size) for row in table_rows(name)]
    return list(dict.fromkeys(jobs))


def unavailable_host(name: str) -> Optional[str]:
    """Why the configs of table ``name`` cannot be built here: the host
    package they need (mmdet, mmseg, mmpretrain, mmaction) and the error
    importing it gives; None when they can."""
    hosts = sorted({_HOST_OF_TASK[row.task] for row in table_rows(name)})
    for host in hosts:
        try:
            importlib.import_module(host)
        except Exception as e:  # missing, or broken (e.g. a version check)
            return f'{host} does not import ({type(e).__name__}: {e})'
    return None


def paper_rows_of(config: Union[str, Path]) -> List[PaperRow]:
    """The ``Paper Rows`` of a config file: one of this package's configs,
    named as :func:`~gcnet_mm.analysis.flops.resolve_config` takes it, or
    the same file in any checkout (a path ending in
    ``configs/<task>/<folder>/<name>.py``).  Empty for any other file."""
    try:
        path = Path(resolve_config(config)).resolve()
    except ValueError:  # not a config file
        return []
    try:
        key = path.relative_to(CONFIGS_DIR).as_posix()
    except ValueError:  # another checkout's configs/
        parts = path.parts[:-1]
        if 'configs' not in parts:
            return []
        start = len(parts) - parts[::-1].index('configs')
        key = '/'.join(path.parts[start:])
    return paper_rows(key)


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
    :func:`~gcnet_mm.analysis.flops.get_complexity` with ``params_only`` and
    ``counter``; see :class:`~gcnet_mm.analysis.quiet_measurer.
    QuietMeasurer`).

    Raises:
        ValueError: for a table name not in ``PAPER_TABLES``.
    """
    shape = check_shape(shape) or get_table(name).shape
    if measure is None:
        def measure(config, size):
            return get_complexity(config, shape=size,
                                  params_only=params_only, counter=counter)
    rows = []
    for paper in table_rows(name):
        result = measure(paper.config, shape)
        params = result.params / 1e6
        flops = None if result.flops is None else result.flops / 1e9
        rows.append(
            dict(
                table=name,
                row=paper.row,
                config=paper.config,
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
                remark=paper.remark,
                convention=result.convention))
    return rows
