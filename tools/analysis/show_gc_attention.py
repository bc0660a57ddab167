"""Draw a GC detector's predictions and the attention map of one of its GC
blocks on a test image, next to the training loss curve.

    python tools/analysis/show_gc_attention.py CONFIG CHECKPOINT
        [--work-dir DIR] [--out FILE] [--index N] [--block NAME]
        [--max-dets K] [--score-thr S] [--device cpu|cuda]
        [--cfg-options k=v ...]

--work-dir is the training/testing work dir: it adds the loss of every
iteration (from the training log), the test mAP (from the metrics JSON of
tools/test.py) and, when the training wrote it (gcnet_mm.InitialAttentionHook),
the attention map before training beside the one after, on one scale. The
attention map is the softmax of the block's conv_mask over positions, by
default for the last GC block of c4. See
gcnet_mm.visualization.detection_figure.
"""
import argparse
import os.path as osp
import sys
import warnings

# mmengine 0.10 imports pkg_resources; its deprecation note is noise here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import gcnet_mm  # noqa: F401,E402  (registers the gcnet_mm scope)
from gcnet_mm.engine.cli import CfgOptionsAction, run_cli  # noqa: E402
from gcnet_mm.visualization import detection_figure  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A GC detector's predictions and GC attention map")
    parser.add_argument(
        'config', help='mmdet config of a model with GC '
        'blocks')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument(
        '--work-dir', help='training/testing work dir (loss '
        'curve and mAP)')
    parser.add_argument(
        '--out',
        help='output image (default '
        'WORK_DIR/gc_attention.png, else gc_attention.png)')
    parser.add_argument(
        '--index', type=int, default=0, help='test image to show (default 0)')
    parser.add_argument(
        '--block',
        help='module name of the GC block '
        '(default: the last one of c4)')
    parser.add_argument(
        '--max-dets',
        type=int,
        default=10,
        help='most predictions drawn, best first (default 10)')
    parser.add_argument(
        '--score-thr',
        type=float,
        default=0.3,
        help='least score of a prediction drawn (default 0.3)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=CfgOptionsAction,
        help='override config settings')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    out = args.out or osp.join(args.work_dir or '.', 'gc_attention.png')
    try:
        r = detection_figure(
            args.config,
            args.checkpoint,
            out,
            work_dir=args.work_dir,
            index=args.index,
            block=args.block,
            max_dets=args.max_dets,
            score_thr=args.score_thr,
            cfg_options=args.cfg_options,
            device=args.device)
    except ValueError as e:
        sys.exit(f'error: {e}')
    att, init = r['attention'], r['initial_attention']
    loss = (f'; loss {r["losses"]["loss"][0]:.2f} -> '
            f'{r["losses"]["loss"][-1]:.2f} in {r["steps"][-1]} iterations'
            if r['steps'] else '')
    before = '' if init is None else f'{init.max():.3f} at initialisation, '
    print(f'wrote {out}: {osp.basename(r["img_path"])}, {len(r["scores"])} '
          f'of {r["num_predictions"]} predictions drawn, attention of '
          f'{r["block"]} ({att.shape[0]}x{att.shape[1]}, largest weight '
          f'{before}{att.max():.3f}, uniform {1 / att.size:.3f}){loss}')


if __name__ == '__main__':
    run_cli(main)
