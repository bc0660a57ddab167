"""Check that the installed stack works: torch, torchvision where the
installed hosts need it, compiled mmcv ops, the OpenMMLab hosts that are
installed (mmdet, mmseg, mmpretrain, mmaction2: any of them; ``--all-hosts``
requires all four, as the project's own environment has them), a host config
and the GC block's fused path.  Every failure says how to fix it in the
environment the check runs in.

``python -m gcnet_mm.utils.env_check [--quick] [--all-hosts]``."""
import argparse
import importlib
import importlib.metadata
import importlib.util
import os
import os.path as osp
import sys

import mmcv
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from gcnet_mm.engine.config_checks import package_configs_dir
from gcnet_mm.ops import use_fused
from gcnet_mm.ops.cpu_kernels import extension_isa
from gcnet_mm.ops.triton_kernels import triton

#: The checkout the package is imported from, if it is one (a clone: its
#: parent folder holds setup.py and tools/setup_env.sh), else None.
_CHECKOUT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if not osp.isfile(osp.join(_CHECKOUT, 'tools', 'setup_env.sh')):
    _CHECKOUT = None

#: host package -> (its name, its requirement as setup.py's extra states it,
#: the extra, a package config whose ``_base_`` lies in that host)
HOSTS = {
    'mmdet': ('mmdet', 'mmdet>=3.0.0,<3.4.0', 'det',
              'detection/gcnet/mask-rcnn_r50-syncbn_fpn_1x_coco.py'),
    'mmseg': ('mmseg', 'mmsegmentation>=1.0.0,<1.3.0', 'seg',
              'segmentation/gcnet/gcnet_r101-d8_4xb2-40k_cityscapes-512x1024'
              '.py'),
    'mmpretrain': ('mmpretrain', 'mmpretrain>=1.0.0,<1.3.0', 'cls',
                   'classification/gcnet/resnet50_8xb64-coslr-120e_in1k.py'),
    'mmaction': ('mmaction2', None, 'video',
                 'recognition/gcnet/slowonly_imagenet-pretrained-r50_8xb16-'
                 '8x8x1-steplr-150e_kinetics400-rgb.py'),
}

#: What each host needs torchvision for: imported by the host itself
#: (required), or only by some of its configs (then a note).
TORCHVISION_USERS = {
    'mmpretrain': (True, 'mmpretrain imports it'),
    'mmdet': (False, 'mmdet configs whose backbone starts from torchvision:// '
              'weights (the package\'s detection configs) need it to train'),
}


#: What to do when a check fails with an error of its own (not an
#: :class:`EnvironmentProblem`, which says it itself).
FIXES = {
    'torch': 'install torch >= 2.4 (https://pytorch.org/get-started/'
    'locally/)',
    'mmcv ops': 'install mmcv 2.0 or 2.1 with its compiled ops, built for '
    'this torch (not mmcv-lite; https://mmcv.readthedocs.io/en/2.x/'
    'get_started/installation.html)',
}


class EnvironmentProblem(Exception):
    """A check that failed, with what to do about it."""


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _in_project_venv() -> bool:
    """Whether this runs in the checkout's own ``.venv/`` (the one
    tools/setup_env.sh makes)."""
    return _CHECKOUT is not None and osp.realpath(sys.prefix) == osp.realpath(
        osp.join(_CHECKOUT, '.venv'))


def _install_hint(host: str) -> str:
    """How to add a missing host where this runs."""
    name, requirement, extra, _ = HOSTS[host]
    if requirement is None:
        return 'docs/mmaction2.md'
    if _CHECKOUT is not None:
        return f'pip install -e .[{extra}]'
    return f'pip install "{requirement}"'


def torchvision_for(torch_version: str) -> str:
    """The pip command of the torchvision release made for ``torch_version``
    (torch 2.N pairs with torchvision 0.(N + 15)), from torch's own index
    for a local build such as ``2.13.0+cpu``."""
    base, _, local = torch_version.partition('+')
    parts = base.split('.')
    if parts[0] != '2' or len(parts) < 2 or not parts[1].isdigit():
        return 'pip install torchvision (the release made for this torch)'
    command = f'pip install "torchvision==0.{int(parts[1]) + 15}.*"'
    if local:
        command += f' --index-url https://download.pytorch.org/whl/{local}'
    return command


def _check_torch():
    x = torch.arange(4.).view(2, 2)
    assert (x @ x).tolist() == [[2., 3.], [6., 11.]]
    cuda = (f', CUDA {torch.version.cuda} ({torch.cuda.get_device_name()})'
            if torch.cuda.is_available() else '')
    return f'torch {torch.__version__}{cuda}'


def _check_torchvision(hosts):
    """torchvision imports and its nms runs.  Missing, it is a failure only
    where an installed host imports it; broken (built for another torch), it
    always is: mmengine's Runner imports it when present."""
    fix = torchvision_for(torch.__version__)
    try:  # the check: an import that fails is reported, with the fix
        import torchvision
        from torchvision.ops import nms
        keep = nms(torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]]),
                   torch.tensor([0.9, 0.8]), 0.5)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split('.')[0] != 'torchvision':
            raise
        users = sorted((TORCHVISION_USERS[h] for h in hosts
                        if h in TORCHVISION_USERS), key=lambda u: not u[0])
        why = '; '.join(why for _, why in users)
        if any(required for required, _ in users):
            raise EnvironmentProblem(
                f'torchvision is not installed and {why}: {fix}') from None
        return None, ('torchvision: not installed' +
                      (f' ({why}: {fix})' if why else
                       '; none of the installed hosts needs it'))
    except RuntimeError as e:
        if 'torchvision::' not in str(e):
            raise
        version = _distribution_version('torchvision')
        cpu = ('(a CPU-only torch next to torchvision from PyPI, which is '
               'built for PyPI\'s CUDA torch, fails this way); '
               if '+cpu' in torch.__version__ else '')
        raise EnvironmentProblem(
            f'torchvision {version} does not fit torch {torch.__version__}: '
            f'its compiled ops do not load ({e}); {cpu}install the '
            f'torchvision made for this torch: {fix}') from None
    assert keep.tolist() == [0], keep
    return (f'torchvision {torchvision.__version__}: nms runs', None)


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return '(version unknown)'


def _check_mmcv_ops():
    from mmcv.ops import RoIAlign, nms  # the check: mmcv built with its ops
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
    import decord  # an optional host and its video reader
    import mmaction
    try:
        import mmaction.models  # noqa: F401
        from mmaction.registry import MODELS
    except ImportError as e:
        raise ImportError(
            f'{e}; run python -m gcnet_mm.utils.mmaction_compat (see '
            'docs/mmaction2.md)') from e
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
    name = HOSTS[host][3]
    try:
        Config.fromfile(osp.join(package_configs_dir(), name))
    except ImportError as e:
        if 'pkg_resources' not in str(e):
            raise
        raise EnvironmentProblem(
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
                        help='print only failures and one line at the end')
    parser.add_argument('--all-hosts', action='store_true',
                        help='fail unless all four hosts are installed (the '
                        "project's own environment)")
    args = parser.parse_args(argv)
    missing = [h for h in HOSTS if not _installed(h)]
    present = [h for h in HOSTS if h not in missing or args.all_hosts]
    checks = [('torch', _check_torch),
              ('torchvision', lambda: _check_torchvision(present)),
              ('mmcv ops', _check_mmcv_ops),
              ('mmengine', lambda: _check_host('mmengine'))]
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
              f'mmaction2 is installed; {_install_hint("mmdet")} (or another '
              'host)', file=sys.stderr)
    notes = []
    for name, fn in checks:
        try:
            msg = fn()
        except Exception as e:  # report every failure, not only the first
            failed.append(name)
            what = str(e) if isinstance(e, EnvironmentProblem) else \
                f'{type(e).__name__}: {e}' + (
                    f'; {FIXES[name]}' if name in FIXES else '')
            print(f'[env_check] FAIL  {name}: {what}', file=sys.stderr)
            continue
        if isinstance(msg, tuple):  # (ok line or None, note or None)
            msg, note = msg
            notes += [note] if note else []
        if msg and not args.quick:
            print(f'[env_check] ok    {msg}')
    if not args.quick and not args.all_hosts:
        for host in missing:
            print(f'[env_check] --    {HOSTS[host][0]}: not installed '
                  f'({_install_hint(host)}); its configs will not run')
    if not args.quick:
        for note in notes:
            print(f'[env_check] --    {note}')
    if failed:
        fix = ('rerun tools/setup_env.sh (delete .venv/ to start over)'
               if _in_project_venv() else 'each FAIL line says how to fix it')
        print(f'[env_check] broken: {", ".join(failed)}; {fix}',
              file=sys.stderr)
        return 1
    print('[env_check] environment OK')
    return 0


if __name__ == '__main__':
    sys.exit(main())
