"""Query-independence of non-local attention (GCNet paper Table 1, Figure 1).

    python tools/analysis/query_independence.py CONFIG [CHECKPOINT]
        [--images DIR | --split test|val] [--num-images N] [--num-pairs M]
        [--queries K] [--vis-images V] [--seed S] [--out-dir DIR]
        [--device cpu|cuda] [--cfg-options k=v ...]

Prints the table (per NL block: cosine distance between inputs, attention
maps and outputs of different query positions, over H x W, or T x H x W in a
video model, and the Jensen-Shannon divergence between the attention maps)
and writes
OUT_DIR/query_independence.{csv,json} and OUT_DIR/attention_maps.png.
Without CHECKPOINT the model is randomly initialised (with a warning).
See docs/query_independence.md.
"""
import argparse
import warnings

# mmengine 0.10 imports pkg_resources; its deprecation note is noise here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import gcnet_mm  # noqa: F401,E402  (registers the gcnet_mm scope)
from gcnet_mm.analysis.query_independence import \
    analyze_query_independence  # noqa: E402
from gcnet_mm.engine.cli import CfgOptionsAction, run_cli  # noqa: E402
from gcnet_mm.engine.runner_cfg import UsageError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='How query-independent is the attention of NL blocks?')
    parser.add_argument('config', help='config of a model with NL blocks')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint path or URL (default: random init)')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--images', metavar='DIR',
                        help='folder of images, read with the test pipeline')
    source.add_argument('--split', choices=['test', 'val'], default='test',
                        help="the config's dataloader to take images (or "
                        'videos) from')
    parser.add_argument('--num-images', type=int, default=10,
                        help='images (videos) to analyse (default 10)')
    parser.add_argument('--num-pairs', type=int, default=1000,
                        help='query pairs sampled per image and block '
                        '(default 1000)')
    parser.add_argument('--queries', type=int, default=3,
                        help='query points per image in the figure')
    parser.add_argument('--vis-images', type=int, default=3,
                        help='images (rows) in the figure')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the pair sampling')
    parser.add_argument('--out-dir', default='work_dirs/query_independence',
                        help='where the CSV, JSON and PNG go')
    parser.add_argument('--device', default=None,
                        help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help='override config settings, e.g. '
                        'test_dataloader.dataset.data_root=data/coco/')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        out = analyze_query_independence(
            args.config, args.checkpoint, images=args.images,
            split=args.split, num_images=args.num_images,
            num_pairs=args.num_pairs, num_queries=args.queries,
            num_vis=args.vis_images, seed=args.seed, out_dir=args.out_dir,
            cfg_options=args.cfg_options, device=args.device)
    except ValueError as e:  # a user error: one line, no traceback
        raise UsageError(str(e)) from e
    meta = out['meta']
    print(f'{meta["num_images"]} images ({meta["source"]}), '
          f'{meta["pairs_per_image"]} query pairs per image (and window), '
          f'forward via '
          f'{meta["route"]}' + (', RANDOM WEIGHTS' if meta['random_init']
                                else ''))
    print(out['table'])
    for path in out['files'].values():
        print(f'written: {path}')


if __name__ == '__main__':
    run_cli(main)
