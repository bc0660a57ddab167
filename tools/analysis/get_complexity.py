"""Parameters and FLOPs of configs, or of the paper's tables beside the paper.

FLOPs count one fused multiply-add as one FLOP (mmengine's FlopAnalyzer, the
fvcore convention); see gcnet_mm/analysis/flops.py and docs/complexity.md.

Examples::

    python tools/analysis/get_complexity.py \
        configs/detection/gcnet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py
    python tools/analysis/get_complexity.py CONFIG --shape 800 1216
    python tools/analysis/get_complexity.py --paper-tables            # all
    python tools/analysis/get_complexity.py --paper-tables 4a --params-only

While it measures, the terminal shows one progress line; what building and
tracing the models prints goes to a log file, named at the end.  Results are
kept (see --no-cache), so a second run prints at once.  A table whose host
package (mmdet, mmseg, mmpretrain, mmaction2) does not import is skipped with
one line.  The paper's figures come from the configs' metafiles.
"""
import argparse
import os
import sys
import tempfile
import warnings

# mmengine 0.10 imports pkg_resources; its deprecation note is noise here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from gcnet_mm.analysis import (complexity_reports, flops,  # noqa: E402
                               paper_figures, paper_flops_fit, paper_tables)
from gcnet_mm.analysis.quiet_measurer import QuietMeasurer  # noqa: E402
from gcnet_mm.engine.cli import run_cli  # noqa: E402
from gcnet_mm.engine.runner_cfg import UsageError  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Parameter and FLOP counts (1 multiply-add = 1 FLOP)')
    parser.add_argument('configs', nargs='*', metavar='CONFIG',
                        help='config files (paths, or relative to configs/)')
    parser.add_argument('--shape', type=int, nargs='+', metavar='N',
                        help='input H W (or one side); default per task: '
                        + ', '.join(f'{k} {h}x{w}' for k, (h, w) in
                                    flops.DEFAULT_SHAPES.items())
                        + '; a paper table defaults to its own size')
    parser.add_argument('--paper-tables', nargs='*', metavar='NAME',
                        help='measure the paper tables NAME (default: all of '
                        f'{", ".join(paper_figures.PAPER_TABLES)}) beside '
                        "the paper's numbers")
    parser.add_argument('--params-only', action='store_true',
                        help='count parameters only (fast)')
    parser.add_argument('--counter', default='fvcore',
                        choices=['fvcore', 'mmcv'],
                        help="FLOP counter: mmengine's FlopAnalyzer (default)"
                        " or mmcv's module-hook counter")
    parser.add_argument('--out', help='also write the results as JSON')
    parser.add_argument(
        '--no-cache', action='store_true',
        help='measure afresh; by default results are kept in '
        f'{flops.default_cache_dir()} ($GCNET_MM_CACHE) and reused while '
        'the config, this package and the installed stack are unchanged')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    try:
        return _run(parse_args(argv))
    except ValueError as e:  # a user error: one line, no traceback
        raise UsageError(str(e)) from e


def _run(args) -> int:
    if not args.configs and args.paper_tables is None:
        raise ValueError('give CONFIG files or --paper-tables')
    shape = flops.check_shape(args.shape)
    names = []
    if args.paper_tables is not None:
        names = args.paper_tables or list(paper_figures.PAPER_TABLES)
    paths = [flops.resolve_config(c) for c in args.configs]
    # a table whose host does not import is skipped (fails early on a name)
    skipped = {name: paper_tables.unavailable_host(name) for name in names}
    skipped = {name: why for name, why in skipped.items() if why}
    measured_tables = [name for name in names if name not in skipped]
    jobs = paper_tables.table_jobs(measured_tables, shape)
    jobs += [(path, shape) for path in paths]
    fd, log = tempfile.mkstemp(prefix='get_complexity-', suffix='.log')
    os.close(fd)
    measure = QuietMeasurer(
        len(jobs), log, params_only=args.params_only, counter=args.counter,
        cache_dir=None if args.no_cache else flops.default_cache_dir())
    with measure:
        for config, size in jobs:
            measure(config, size)
    captured = measure.captured_lines()
    results = {}
    for name in names:
        if name in skipped:
            print(f'{paper_figures.get_table(name).heading}: skipped, '
                  f'{skipped[name]}\n')
            continue
        rows = paper_tables.paper_table(name, shape=shape, measure=measure)
        print(complexity_reports.format_table(name, rows) + '\n')
        results[name] = rows
    if skipped:
        results['skipped'] = skipped
    fit = paper_flops_fit.fit_paper_convention(
        row for name in measured_tables for row in results[name])
    if fit is not None:
        print(paper_flops_fit.format_fit(fit) + '\n')
        results['paper_fit'] = fit
    if paths:
        configs = [measure(path, shape) for path in paths]
        print(complexity_reports.format_results(configs))
        results['configs'] = configs
    if args.out:
        flops.dump_json(results, args.out)
    if captured:
        print(f'({captured} lines of warnings and logs from building and '
              f'tracing the models: {log})', file=sys.stderr)
    else:
        os.remove(log)
    return 0


if __name__ == '__main__':
    run_cli(main)
