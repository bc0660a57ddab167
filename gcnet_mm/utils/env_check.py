"""Check that the installed stack works: compiled mmcv ops, torchvision ops and
the three OpenMMLab hosts.  ``python -m gcnet_mm.utils.env_check [--quick]``."""
import argparse
import importlib
import sys


def _check_torch():
    import torch
    import torchvision
    from torchvision.ops import nms
    keep = nms(torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]]),
               torch.tensor([0.9, 0.8]), 0.5)
    assert keep.tolist() == [0], keep
    return f'torch {torch.__version__}, torchvision {torchvision.__version__}'


def _check_mmcv_ops():
    import mmcv
    import torch
    from mmcv.ops import RoIAlign, nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
    _, keep = nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
    assert keep.tolist() == [0], keep
    feat = torch.arange(16.).view(1, 1, 4, 4)
    rois = torch.tensor([[0., 0., 0., 3., 3.]])
    out = RoIAlign((2, 2), 1.0, 2, aligned=False)(feat, rois)
    assert out.shape == (1, 1, 2, 2) and torch.isfinite(out).all()
    cuda = ''
    if torch.cuda.is_available():
        _, keep = nms(boxes.cuda(), torch.tensor([0.9, 0.8]).cuda(), 0.5)
        cuda = ', CUDA ops run'
    return f'mmcv {mmcv.__version__}: nms and RoIAlign run{cuda}'


def _check_fused_loops():
    """gcnet_mm._ext, the GC block's fused CPU loops, built by setup.py.

    Without them the package runs its PyTorch-ops path (same results,
    slower); the check fails unless they were skipped on purpose
    (GCNET_MM_WITH_EXT=0 at install, or GCNET_MM_EXT=0).
    """
    import os
    from gcnet_mm.ops.attention_pool import _ext, extension_isa
    isa = extension_isa()
    if isa is not None:
        return f'gcnet_mm._ext: fused CPU loops ({isa})'
    if '0' in (os.environ.get('GCNET_MM_WITH_EXT'),
               os.environ.get('GCNET_MM_EXT')):
        return 'gcnet_mm._ext: off (GCNET_MM_WITH_EXT=0 or GCNET_MM_EXT=0)'
    assert _ext is not None, (
        'gcnet_mm._ext is not built: reinstall with a C++ compiler '
        '(pip install --no-build-isolation -e .), or set GCNET_MM_WITH_EXT=0')
    return 'gcnet_mm._ext: built'


def _check_host_config():
    """A package config whose base is ``mmdet::...`` reads: mmengine 0.10
    resolves such bases with pkg_resources, which setuptools 81 removed."""
    import os.path as osp

    from mmengine.config import Config

    from gcnet_mm.engine.config_checks import package_configs_dir
    name = 'detection/gcnet/mask-rcnn_r50-syncbn_fpn_1x_coco.py'
    try:
        Config.fromfile(osp.join(package_configs_dir(), name))
    except ImportError as e:
        if 'pkg_resources' not in str(e):
            raise
        raise RuntimeError(
            f'cannot read {name} (its base is mmdet::...): mmengine needs '
            'pkg_resources, which setuptools >= 81 no longer has; run '
            '"pip install \'setuptools<81\'"') from None
    return f'configs: {name} (an mmdet:: base) reads'


def _check_host(name):
    mod = importlib.import_module(name)
    return f'{name} {mod.__version__}'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--quick', action='store_true',
                        help='skip nothing but print one line')
    args = parser.parse_args(argv)
    checks = [('torch', _check_torch), ('mmcv ops', _check_mmcv_ops)]
    checks += [(h, lambda h=h: _check_host(h))
               for h in ('mmengine', 'mmdet', 'mmseg', 'mmpretrain')]
    checks.append(('gcnet_mm', lambda: _check_host('gcnet_mm')))
    checks.append(('host configs', _check_host_config))
    checks.append(('gcnet_mm._ext', _check_fused_loops))
    failed = []
    for name, fn in checks:
        try:
            msg = fn()
            if not args.quick:
                print(f'[env_check] ok    {msg}')
        except Exception as e:  # report every failure, not only the first
            failed.append(name)
            print(f'[env_check] FAIL  {name}: {type(e).__name__}: {e}',
                  file=sys.stderr)
    if failed:
        print(f'[env_check] broken: {", ".join(failed)}; rerun '
              'tools/setup_env.sh (delete .venv/ to start over)',
              file=sys.stderr)
        return 1
    print('[env_check] environment OK')
    return 0


if __name__ == '__main__':
    sys.exit(main())
