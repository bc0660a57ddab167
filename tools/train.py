"""Train a detector, segmentor or classifier from a config.

    python tools/train.py CONFIG [--work-dir DIR]
        [--resume [CKPT] | --auto-resume] [--amp]
        [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]
"""
import argparse
import warnings

# mmengine 0.10 imports pkg_resources; its deprecation note is noise here.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import gcnet_mm  # noqa: F401,E402  (registers the gcnet_mm scope)
from gcnet_mm.engine.cli import (add_launch_args, build_runner,  # noqa: E402
                                 config_errors, parse_launch_args, run_cli)
from gcnet_mm.engine.runner_cfg import prepare_train_cfg  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='folder for logs and checkpoints')
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        '--resume', nargs='?', type=str, const='auto', metavar='CKPT',
        help='resume from CKPT; without a value, from the newest readable '
        'checkpoint in the work dir (an error if there is none)')
    resume.add_argument(
        '--auto-resume', dest='resume', action='store_const',
        const='auto-if-any',
        help='resume from the newest readable checkpoint in the work dir if '
        'there is one, else start afresh (for jobs that get requeued)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training (GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual batch size')
    add_launch_args(parser, 'train_cfg.max_epochs=2')
    return parse_launch_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = prepare_train_cfg(args.config, work_dir=args.work_dir,
                            resume=args.resume, amp=args.amp,
                            auto_scale_lr=args.auto_scale_lr,
                            cfg_options=args.cfg_options,
                            launcher=args.launcher)
    with config_errors(cfg):
        build_runner(cfg).train()


if __name__ == '__main__':
    run_cli(main)
