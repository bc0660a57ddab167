"""Draw a GC detector's predictions and the attention map of one of its GC
blocks on a test image, next to the training loss curve.

    python tools/analysis/show_gc_attention.py CONFIG CHECKPOINT
        [--work-dir DIR] [--out FILE] [--index N] [--block NAME]
        [--max-dets K] [--device cpu|cuda] [--cfg-options k=v ...]

--work-dir is the training/testing work dir: it adds the loss of every
iteration (from the training log) and the test mAP (from the metrics JSON of
tools/test.py). The attention map is the softmax of the block's conv_mask
over positions, by default for the last GC block of c4. See
gcnet_mm.visualization.detection_figure.
"""
import argparse
import os.path as osp
import sys
import warnings

# mmengine 0.10 imports pkg_resources; its deprecation note is noise here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

from mmengine.config import DictAction  # noqa: E402

import gcnet_mm  # noqa: F401,E402  (registers the gcnet_mm scope)
from gcnet_mm.engine.cli import run_cli  # noqa: E402
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
        default=5,
        help='predictions drawn, best first (default 5)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
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
            cfg_options=args.cfg_options,
            device=args.device)
    except ValueError as e:
        sys.exit(f'error: {e}')
    att = r['attention']
    loss = (f'; loss {r["losses"]["loss"][0]:.2f} -> '
            f'{r["losses"]["loss"][-1]:.2f} in {r["steps"][-1]} iterations'
            if r['steps'] else '')
    print(f'wrote {out}: {osp.basename(r["img_path"])}, top {len(r["scores"])}'
          f' of {r["num_predictions"]} predictions, attention of '
          f'{r["block"]} ({att.shape[0]}x{att.shape[1]}, max '
          f'{att.max():.3f}, uniform {1 / att.size:.3f}){loss}')


if __name__ == '__main__':
    run_cli(main)
