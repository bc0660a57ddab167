"""Check that the installed stack works: compiled mmcv ops, torchvision ops,
the OpenMMLab hosts that are installed (mmdet, mmseg, mmpretrain, mmaction2:
any of them; ``--all-hosts`` requires all four, as the project's own
environment has them), a host config and the GC block's fused path.

``python -m gcnet_mm.utils.env_check [--quick] [--all-hosts]``."""
import argparse
import importlib
import importlib.util
import sys

#: host package -> (its name, how to install it, a package config whose
#: ``_base_`` lies in that host)
HOSTS = {
    'mmdet': ('mmdet', 'pip install -e .[det]',
              'detection/gcnet/mask-rcnn_r50-syncbn_fpn_1x_coco.py'),
    'mmseg': ('mmseg', 'pip install -e .[seg]',
              'segmentation/gcnet/gcnet_r101-d8_4xb2-40k_cityscapes-512x1024'
              '.py'),
    'mmpretrain': ('mmpretrain', 'pip install -e .[cls]',
                   'classification/gcnet/resnet50_8xb64-coslr-120e_in1k.py'),
    'mmaction': ('mmaction2', 'docs/mmaction2.md',
                 'recognition/gcnet/slowonly_imagenet-pretrained-r50_8xb16-'
                 '8x8x1-steplr-150e_kinetics400-rgb.py'),
}


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


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
    """The GC block's fused path: gcnet_mm._ext (its CPU loops, built by
    setup.py) and, with a GPU, Triton.

    Without the loops the fused path runs PyTorch ops on the CPU (same
    results, slower); the check fails unless they were skipped on purpose
    (GCNET_MM_WITH_EXT=0 at install) or the fused path is off
    (GCNET_MM_FUSED=0).
    """
    import os

    import torch

    from gcnet_mm.ops import use_fused
    from gcnet_mm.ops.cpu_kernels import extension_isa
    from gcnet_mm.ops.triton_kernels import triton
    if not use_fused():
        return 'GC blocks: reference PyTorch ops (GCNET_MM_FUSED=0)'
    isa = extension_isa()
    if isa is None and os.environ.get('GCNET_MM_WITH_EXT') != '0':
        raise AssertionError(
            'gcnet_mm._ext is not built: reinstall with a C++ compiler '
            '(pip install --no-build-isolation -e .), or set '
            'GCNET_MM_WITH_EXT=0')
    cpu = f'CPU loops ({isa})' if isa else 'CPU: PyTorch ops ' \
        '(GCNET_MM_WITH_EXT=0)'
    from gcnet_mm.ops import dispatch
    gpu = ''
    if torch.cuda.is_available():
        gpu = ', CUDA: ' + (
            'PyTorch ops (GCNET_MM_TRITON=0)' if not dispatch._triton else
            'Triton kernels' if triton is not None else
            'PyTorch ops (no Triton)')
    return f'GC blocks: fused path, {cpu}{gpu}'


def _check_mmaction():
    """mmaction2 imports (its PyPI wheel needs the stand-in of
    ``gcnet_mm.utils.mmaction_compat``), decord loads, and a tiny slow-only
    recognizer with a GC block classifies a random clip."""
    import decord
    import mmaction
    import torch
    from mmengine.registry import DefaultScope
    try:
        import mmaction.models  # noqa: F401
        from mmaction.registry import MODELS
    except ImportError as e:
        raise ImportError(
            f'{e}; run python -m gcnet_mm.utils.mmaction_compat (see '
            'docs/mmaction2.md)') from e
    import gcnet_mm  # noqa: F401  (the blocks)
    with DefaultScope.overwrite_default_scope('mmaction'):
        model = MODELS.build(dict(
            type='Recognizer3D',
            backbone=dict(
                type='gcnet_mm.BackboneWithBlocks',
                backbone_type='mmaction.ResNet3dSlowOnly', depth=18,
                pretrained=None, base_channels=8, lateral=False,
                plugins=[dict(cfg=dict(type='gcnet_mm.ContextBlock3d',
                                       ratio=1 / 4),
                              stages=(False, False, False, True),
                              position='after_add')]),
            cls_head=dict(type='I3DHead', in_channels=64, num_classes=3,
                          average_clips='prob')))
    with torch.no_grad():
        feats = model(torch.rand(1, 1, 3, 4, 32, 32), mode='tensor')
        scores = model.cls_head(feats)
    assert scores.shape == (1, 3) and torch.isfinite(scores).all(), scores
    return (f'mmaction2 {mmaction.__version__} (decord {decord.__version__}):'
            ' a slow-only recognizer with a GC block runs')


def _check_host_config(host):
    """A package config whose base is ``HOST::...`` reads: mmengine 0.10
    resolves such bases with pkg_resources, which setuptools 81 removed."""
    import os.path as osp

    from mmengine.config import Config

    from gcnet_mm.engine.config_checks import package_configs_dir
    name = HOSTS[host][2]
    try:
        Config.fromfile(osp.join(package_configs_dir(), name))
    except ImportError as e:
        if 'pkg_resources' not in str(e):
            raise
        raise RuntimeError(
            f'cannot read {name} (its base is {host}::...): mmengine needs '
            'pkg_resources, which setuptools >= 81 no longer has; run '
            '"pip install \'setuptools<81\'"') from None
    return f'configs: {name} reads (its base: {host}::...)'


def _check_host(name):
    mod = importlib.import_module(name)
    return f'{name} {mod.__version__}'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--quick', action='store_true',
                        help='skip nothing but print one line')
    parser.add_argument('--all-hosts', action='store_true',
                        help='fail unless all four hosts are installed (the '
                        "project's own environment)")
    args = parser.parse_args(argv)
    checks = [('torch', _check_torch), ('mmcv ops', _check_mmcv_ops),
              ('mmengine', lambda: _check_host('mmengine'))]
    missing = [h for h in HOSTS if not _installed(h)]
    present = [h for h in HOSTS if h not in missing or args.all_hosts]
    for host in present:
        checks.append((HOSTS[host][0], _check_mmaction if host == 'mmaction'
                       else lambda h=host: _check_host(h)))
    checks.append(('gcnet_mm', lambda: _check_host('gcnet_mm')))
    if present:
        checks.append(('host configs',
                       lambda: _check_host_config(present[0])))
    checks.append(('fused path', _check_fused_loops))
    failed = []
    if not present:
        failed.append('hosts')
        print('[env_check] FAIL  hosts: none of mmdet, mmseg, mmpretrain, '
              'mmaction2 is installed; pip install -e .[det] (or [seg], '
              '[cls], [all])', file=sys.stderr)
    for name, fn in checks:
        try:
            msg = fn()
            if not args.quick:
                print(f'[env_check] ok    {msg}')
        except Exception as e:  # report every failure, not only the first
            failed.append(name)
            print(f'[env_check] FAIL  {name}: {type(e).__name__}: {e}',
                  file=sys.stderr)
    if not args.quick and not args.all_hosts:
        for host in missing:
            name, how, _ = HOSTS[host]
            print(f'[env_check] --    {name}: not installed ({how}); its '
                  'configs will not run')
    if failed:
        print(f'[env_check] broken: {", ".join(failed)}; rerun '
              'tools/setup_env.sh (delete .venv/ to start over)',
              file=sys.stderr)
        return 1
    print('[env_check] environment OK')
    return 0


if __name__ == '__main__':
    sys.exit(main())
