"""Write tiny synthetic datasets in the real COCO / Cityscapes / ADE20K /
VOC12+aug / ImageNet / Kinetics-400 layouts (see
``gcnet_mm.datasets.toy_data``).

    python tools/misc/make_toy_data.py coco data/toy_coco
    python tools/misc/make_toy_data.py coco data/toy_coco --num-train 128 \
        --num-val 16 --image-size 128 128          # tools/run_demo.sh's
    python tools/misc/make_toy_data.py kinetics data/toy_kinetics
    python tools/misc/make_toy_data.py all data/toy --num-train 8 --num-val 4

``all`` writes ``OUT_DIR/{coco,cityscapes,ade/ADEChallengeData2016,
VOCdevkit/VOC2012,imagenet,kinetics400}``, the layout of upstream's ``data/``
folder.
"""
import argparse

from gcnet_mm.datasets.toy_data import TOY_DATASETS, make_all


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write a tiny synthetic dataset in a real on-disk format')
    parser.add_argument(
        'dataset', choices=sorted(TOY_DATASETS) + ['all'],
        help='which format to write')
    parser.add_argument('out_dir', help='output directory')
    parser.add_argument(
        '--num-train', type=int, default=None,
        help='training images (per class for imagenet, videos per class '
        "for kinetics); default: the generator's")
    parser.add_argument(
        '--num-val', type=int, default=None,
        help='validation images (per class for imagenet, videos per class '
        "for kinetics); default: the generator's")
    parser.add_argument(
        '--image-size', type=int, nargs=2, metavar=('H', 'W'), default=None,
        help="height and width of every image (frame); default: the "
        "generator's")
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    kwargs = dict(seed=args.seed, progress=True)
    if args.num_train is not None:
        kwargs['num_train'] = args.num_train
    if args.num_val is not None:
        kwargs['num_val'] = args.num_val
    if args.image_size is not None:
        kwargs['image_size'] = tuple(args.image_size)
    if args.dataset == 'all':
        result = make_all(args.out_dir, **kwargs)
    else:
        result = {args.dataset: TOY_DATASETS[args.dataset][0](args.out_dir,
                                                              **kwargs)}
    print()
    for name, paths in result.items():
        print(f'{name}: ' + ', '.join(f'{k}={v}' for k, v in paths.items()))


if __name__ == '__main__':
    main()
