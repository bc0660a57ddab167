"""Measuring many configs with one progress line on the terminal.

:class:`QuietMeasurer` calls :func:`gcnet_mm.analysis.flops.get_complexity`
for config after config; what building and tracing the models print goes to
a log file, so a report printed after it comes out clean.
"""
import contextlib
import gc
import os
import os.path as osp
import sys
import warnings
from typing import Dict, Optional, TextIO, Tuple

from .flops import Complexity, get_complexity, is_cached

__all__ = ['QuietMeasurer']


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
