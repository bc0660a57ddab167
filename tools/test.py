"""Evaluate a checkpoint (path or URL) with the config's test set and metric.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out OUT]
        [--show] [--show-dir DIR] [--cfg-options k=v ...] [--launcher ...]

The metrics are printed and written to WORK_DIR/metrics_<timestamp>.json; an
evaluation that computes no metrics is an error.  --out writes what the
config's host's own tools/test.py writes: a pickle of the predictions (mmdet:
DumpDetResults, masks in RLE; mmpretrain, mmaction2: DumpResults) or, for
mmseg, a folder of predicted label maps.
"""
import argparse
import warnings

# mmengine 0.10 imports pkg_resources; its deprecation note is noise here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmengine.fileio import dump  # noqa: E402

import gcnet_mm  # noqa: F401,E402  (registers the gcnet_mm scope)
from gcnet_mm.engine.cli import (add_launch_args, build_runner,  # noqa: E402
                                 config_errors, parse_launch_args, run_cli)
from gcnet_mm.engine.runner_cfg import check_metrics  # noqa: E402
from gcnet_mm.engine.runner_cfg import dump_metrics  # noqa: E402
from gcnet_mm.engine.runner_cfg import load_checkpoint_strict  # noqa: E402
from gcnet_mm.engine.runner_cfg import prepare_test_cfg  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file path or URL')
    parser.add_argument('--work-dir', help='folder for logs and metrics')
    parser.add_argument(
        '--out', help='dump the predictions as the host\'s test.py does: a '
        '.pkl file (detection, classification), or a folder of label-map '
        'PNGs (segmentation)')
    parser.add_argument(
        '--out-item', choices=['pred', 'metrics'],
        help='what the --out pickle holds (default: pred), as mmpretrain')
    parser.add_argument('--show', action='store_true',
                        help='show prediction results in a window')
    parser.add_argument('--show-dir',
                        help='save images with predictions drawn here')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each image is shown with --show')
    add_launch_args(parser, 'test_dataloader.batch_size=1')
    return parse_launch_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = prepare_test_cfg(args.config, args.checkpoint,
                           work_dir=args.work_dir, out=args.out,
                           out_item=args.out_item,
                           show=args.show, show_dir=args.show_dir,
                           wait_time=args.wait_time,
                           cfg_options=args.cfg_options,
                           launcher=args.launcher)
    with config_errors(cfg):
        runner = build_runner(cfg, test=True)
        load_checkpoint_strict(runner, args.checkpoint)
        metrics = runner.test()
    if runner.rank == 0:
        if args.out_item == 'metrics':
            dump(metrics, args.out)
        check_metrics(metrics, cfg)
        path = dump_metrics(metrics, cfg.work_dir, runner.timestamp,
                            args.checkpoint, args.config)
        print(f'metrics written to {path}')


if __name__ == '__main__':
    run_cli(main)
