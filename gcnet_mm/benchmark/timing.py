"""Candidates timed in turn: a round runs each once, in an order rotated
from round to round, and each gets the median of its rounds.

glibc's malloc hands large freed blocks back to the kernel, so the next step
writes fresh pages and pays a page fault per 4 KiB, as many as the heap's
layout (which candidates sharing one process disturb) decides.
:func:`steady_malloc` sets glibc's mmap and trim thresholds so that freed
memory is reused, as the jemalloc or tcmalloc that PyTorch's CPU performance
guide recommends do; :func:`time_interleaved` records the faults per round
either way.
"""
import ctypes
import resource
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch


def steady_malloc() -> str:
    """Make glibc's malloc keep and reuse freed memory: no trimming of the
    heap, and blocks up to 1 GiB from the heap rather than from fresh mmaps.
    Returns what was set, for a report's header."""
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return 'default (not glibc)'
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    ok = (libc.mallopt(m_trim_threshold, 2**30) == 1
          and libc.mallopt(m_mmap_threshold, 2**30) == 1)
    return 'steady (mallopt)' if ok else 'default (mallopt refused)'


def minor_faults() -> int:
    """Minor page faults of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def progress(msg: str) -> None:
    """One status line on a terminal's stderr, overwritten in place; the
    caller clears it (``progress('')``) before printing a table row."""
    if sys.stderr.isatty():
        print(f'\r  {msg:<60}\r', end='', file=sys.stderr, flush=True)


def time_interleaved(fns: Dict[str, Callable[[], None]], repeat: int,
                     label: str, clock: str = 'wall',
                     record: Optional[Dict[str, Dict[str, List]]] = None,
                     inner: int = 1, warmup: int = 1) -> Dict[str, float]:
    """Median seconds of one call of each function over ``repeat`` rounds,
    the functions run in turn within a round, in rotated order (after
    ``warmup`` rounds).  A round times ``inner`` calls of a function in a
    row (short GPU work: the device is synchronised before and after them,
    not after each call).  ``clock='cpu'``: process CPU time, steadier than
    wall time on a machine shared with other jobs.  ``record``, if given,
    receives each function's seconds per call and page faults per round
    (``record[name]['times' | 'faults']``)."""
    now = time.process_time if clock == 'cpu' else time.perf_counter
    sync = (torch.cuda.synchronize
            if torch.cuda.is_available() else (lambda: None))
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    faults: Dict[str, List[int]] = {k: [] for k in fns}
    names = list(fns)
    for i in range(repeat):
        progress(f'{label}: repeat {i + 1}/{repeat}')
        # Each round starts with the next function: no one always runs
        # first (or right after the same neighbour).
        for name in names[i % len(names):] + names[:i % len(names)]:
            fn = fns[name]
            sync()
            f0 = minor_faults()
            t0 = now()
            for _ in range(inner):
                fn()
            sync()
            times[name].append((now() - t0) / inner)
            faults[name].append(minor_faults() - f0)
    progress('')
    if record is not None:
        for k in fns:
            record[k] = {'times': times[k], 'faults': faults[k]}
    return {k: statistics.median(v) for k, v in times.items()}
