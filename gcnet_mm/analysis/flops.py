"""The FLOP-counting harness: parameters and FLOPs of a config's model.

Counting convention (stated in every output): **one fused multiply-add is one
FLOP** (fvcore's and mmengine's convention, which is also the papers' "FLOPs":
about 4G for a ResNet-50 at 224x224, i.e. multiply-adds).  Counts come from
:class:`mmengine.analysis.FlopAnalyzer`, which traces one forward pass and
counts convolutions, linear layers and matrix products (``matmul``/``bmm``/
``einsum``) as multiply-adds, normalisation layers (BN, LN, GN) as a few FLOPs
per element, and nearest/bilinear upsampling and adaptive pooling per element;
activations, element-wise additions, softmax, max-pooling and RoIAlign are
free.  ``counter='mmcv'`` uses mmcv's older module-hook counter instead
(:func:`mmcv.cnn.get_model_complexity_info`, the lineage of the counter
mmdetection v1 shipped when the paper was written): it adds conv biases,
ReLUs and pooling, but never sees functional matrix products, so the attention
of a non-local block is free there.

How each kind of model is run, following the upstream ``get_flops`` tools:

* detection (mmdet): a random image of ``shape`` goes through the model's
  ``data_preprocessor`` (so it is padded as at test time, 800x1333 ->
  800x1344) and then ``model(inputs, data_samples, mode='tensor')``: backbone,
  neck, the RPN with its proposal NMS (``test_cfg.rpn``: up to 1000
  proposals), the box head on every proposal and the mask head on the first
  100 RoIs, as mmdet's ``TwoStageDetector._forward`` (the mask heads of a
  cascade, which mmdet runs on every proposal in tensor mode, are capped at
  ``test_cfg.rcnn.max_per_img`` = 100 RoIs too, as at inference).  The
  number of RoIs is reported: with random weights it is data dependent, so
  the seed is fixed.
* segmentation (mmseg): the auxiliary head is dropped (it does not run at
  test time), then the same tensor-mode forward on one image of ``shape``.
* classification (mmpretrain): the whole classifier in tensor mode (backbone,
  neck and the fc head; mmpretrain's tool counts ``extract_feat`` only, i.e.
  2.05M fewer for a 1000-way ResNet-50 head).
* action recognition (mmaction2): one clip, (1, 1, 3, T, H, W), through the
  whole recognizer (backbone and ``cls_head``, ``extract_feat(stage='head')``;
  mmaction2's tool stops before the head, 0.8M fewer for a 400-way one); T is
  the clip length of the config's ``val_dataloader`` ``SampleFrames`` (8 for
  the paper's 8x8 slow-only models), the FLOPs those of one clip.

Parameters are counted on the model the config builds, every module included
(the auxiliary head of a segmentor too), as ``tests/test_configs.py`` does.
SyncBN is turned into BN and pretrained initialisation dropped, so everything
runs on a CPU with nothing downloaded.
"""
import copy
import functools
import glob
import hashlib
import json
import os
import os.path as osp
from importlib import metadata
from pathlib import Path
from typing import (Any, Callable, Dict, List, NamedTuple, Optional, Sequence,
                    Tuple, Union)
from unittest import mock

import torch
from mmcv.cnn import get_model_complexity_info as mmcv_counter
from mmcv.cnn.utils import flops_counter
from mmcv.ops import (DeformConv2d, DeformConv2dPack, ModulatedDeformConv2d,
                      ModulatedDeformConv2dPack)
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.utils import get_installed_path
from torch import nn

from ..engine.checkpoint import write_atomically
from ..engine.config_checks import (drop_pretrained, package_configs_dir,
                                    sync_bn_to_bn)

__all__ = [
    'COUNTING_CONVENTION', 'DEFAULT_SHAPES', 'TASK_OF_SCOPE', 'CONFIGS_DIR',
    'Complexity', 'resolve_config', 'check_shape', 'build_model',
    'count_params', 'count_flops', 'get_complexity', 'dump_json',
    'default_cache_dir', 'is_cached'
]

#: One line saying what a FLOP is here; printed with every result.
COUNTING_CONVENTION = (
    'FLOPs: one fused multiply-add = 1 FLOP (fvcore / mmengine FlopAnalyzer '
    'convention; conv, linear, matmul counted, BN/LN/GN a few per element, '
    'activations, additions, softmax and RoIAlign free)')

_MMCV_CONVENTION = (
    'FLOPs: mmcv module-hook counter (multiply-adds of conv/linear plus '
    'biases, BN, ReLU, pooling, upsampling; functional matmul/softmax free)')

#: The default input size (height, width) per task: detection at the paper's
#: short side 800 with mmdet's long-side cap 1333 (padded to 800x1344 by the
#: detector), ImageNet's 224x224, a full Cityscapes image.
DEFAULT_SHAPES: Dict[str, Tuple[int, int]] = {
    'detection': (800, 1333),
    'segmentation': (1024, 2048),
    'classification': (224, 224),
    'recognition': (224, 224),  # per frame; the clip length is the config's
}

#: A config's ``default_scope`` (the host package it builds with) -> task.
TASK_OF_SCOPE: Dict[str, str] = {
    'mmdet': 'detection',
    'mmseg': 'segmentation',
    'mmpretrain': 'classification',
    'mmaction': 'recognition',
}

#: The package's ``configs/``: ``gcnet_mm/.mim/configs`` as installed (in a
#: checkout, a link to ``configs/``).
CONFIGS_DIR = Path(package_configs_dir()).resolve()


class Complexity(NamedTuple):
    """What :func:`get_complexity` measures for one config."""
    config: str
    task: str
    params: int
    flops: Optional[int]  # None with params_only
    shape: Optional[Tuple[int, int]]  # the size asked for (H, W)
    input_shape: Optional[Tuple[int, ...]]  # what the network saw (N,C,H,W)
    flops_by_operator: Dict[str, int]
    notes: str  # e.g. the number of RoIs of a detector
    convention: str
    #: FLOPs per top-level part of the model (``backbone``, ``neck``,
    #: ``rpn_head``, ``roi_head``, ``decode_head``, ``head``...), fvcore only
    flops_by_part: Dict[str, int] = {}
    #: RoI head stages of a two-stage detector (3 for a cascade), else 0
    roi_stages: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return self._asdict()


# --------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------
def resolve_config(config: Union[str, Path]) -> str:
    """The path of a config file: as given, relative to ``configs/``, or
    ``'pkg::rel/path.py'`` for a config of an installed OpenMMLab package.

    Raises:
        ValueError: if neither exists or it is not a ``.py`` file.
    """
    path = str(config)
    candidates = [path, str(CONFIGS_DIR / path)]
    if '::' in path:  # 'mmdet::gcnet/x.py': a config of an installed package
        package, rel = path.split('::', 1)
        try:
            root = (CONFIGS_DIR if package == 'gcnet_mm' else osp.join(
                get_installed_path(package), '.mim', 'configs'))
            candidates = [osp.join(root, rel)]
        except Exception:  # not installed
            candidates = []
    for candidate in candidates:
        if osp.isfile(candidate):
            if not candidate.endswith('.py'):
                raise ValueError(
                    f'a config must be a .py file, but got {path!r}')
            return candidate
    raise ValueError(f'config file {path!r} not found (looked for it as '
                     f'given, under {CONFIGS_DIR}, or as pkg::path in an '
                     'installed package)')


def check_shape(
        shape: Union[int, Sequence[int], None]) -> Optional[Tuple[int, int]]:
    """``shape`` as an (H, W) pair of positive ints; one int means square.

    Raises:
        ValueError: for anything else, saying what was given.
    """
    if shape is None:
        return None
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape, shape)
    try:
        values = tuple(shape)
    except TypeError:
        values = None
    if (values is None or len(values) not in (1, 2)
            or not all(isinstance(v, int) and not isinstance(v, bool)
                       and v > 0 for v in values)):
        raise ValueError('shape must be one or two positive ints (H W or a '
                         f'square side), but got {shape!r}')
    return (values[0], values[-1])


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------
def _task_of(cfg) -> str:
    scope = cfg.get('default_scope')
    if scope not in TASK_OF_SCOPE:
        raise ValueError(f'cannot tell the task of a config with default_scope'
                         f' {scope!r}; expected one of {list(TASK_OF_SCOPE)}')
    return TASK_OF_SCOPE[scope]


def build_model(config: Union[str, Path, Any],
                meta: bool = False) -> Tuple[nn.Module, str]:
    """Build a config's model on the CPU: (model in eval mode, task).

    ``config`` is a config file (see :func:`resolve_config`) or a loaded
    mmengine ``Config`` (e.g. with ``--cfg-options`` merged; left as it is).
    SyncBN becomes BN and pretrained initialisation is dropped, so nothing is
    downloaded.  ``meta=True`` builds detectors, segmentors and video
    recognizers on the meta device (no memory; enough to count parameters);
    mmpretrain's ResNet reads tensor values while building, so classifiers
    are always real.
    """
    cfg = config if isinstance(config, Config) else Config.fromfile(
        resolve_config(config))
    task = _task_of(cfg)
    registry = {
        'detection': 'mmdet.registry',
        'segmentation': 'mmseg.registry',
        'classification': 'mmpretrain.registry',
        'recognition': 'mmaction.registry'
    }[task]
    models = __import__(registry, fromlist=['MODELS']).MODELS
    model_cfg = copy.deepcopy(cfg.model)
    sync_bn_to_bn(model_cfg)  # the CPU has no SyncBN
    drop_pretrained(model_cfg)  # nothing to download
    # the config's scope for this build only: no global state left behind
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        if meta and task != 'classification':
            with torch.device('meta'):
                model = models.build(model_cfg)
        else:
            model = models.build(model_cfg)
    return model.eval(), task


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones once)."""
    return sum(p.numel() for p in model.parameters())


class _TensorForward(nn.Module):
    """``model(inputs, data_samples, mode='tensor', **kwargs)`` as a
    one-input module."""

    def __init__(self, model: nn.Module, data_samples=None, **kwargs) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples
        self.kwargs = kwargs

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, self.data_samples, mode='tensor',
                          **self.kwargs)


def _matmul_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """``aten::matmul``: output elements x the contracted size, any
    broadcasting."""
    first = get_shape(inputs[0])
    out = get_shape(outputs[0])
    size = 1
    for dim in out:
        size *= dim
    return size * first[-1]


def _deform_conv_flop_jit(weight_index: int) -> Callable[..., int]:
    """Handle of mmcv's (modulated) deformable convolution, an autograd
    Function the tracer sees as ``prim::PythonOp``: counted as the
    convolution it is (output elements x ``C_in / groups x kh x kw``), like
    ``aten::_convolution``; its offset conv is an ``nn.Conv2d`` and counted
    as such.  The bilinear sampling is free, as RoIAlign's is."""

    def handle(inputs: List[Any], outputs: List[Any]) -> int:
        weight = get_shape(inputs[weight_index])
        out = get_shape(outputs[0])
        count = 1
        for dim in list(out) + list(weight[1:]):
            count *= dim
        return count

    return handle


#: Extra operator handles of the fvcore counter: op name -> handle.
_EXTRA_OP_HANDLES = {
    # mmengine's matmul handle misses a batch that comes from broadcasting
    # the second operand ((1, 1, C) @ (B, C, N) counts C * N); count every
    # output element as one k-long dot product.
    'aten::matmul': _matmul_flop_jit,
    # mmcv.ops.DeformConv2dFunction(input, offset, weight)
    'prim::PythonOp.DeformConv2dFunction': _deform_conv_flop_jit(2),
    # mmcv.ops.ModulatedDeformConv2dFunction(input, offset, mask, weight, bias)
    'prim::PythonOp.ModulatedDeformConv2dFunction': _deform_conv_flop_jit(3),
}


def _mmcv_deform_conv_hook(module: nn.Module, inputs: tuple,
                           output: torch.Tensor) -> None:
    """mmcv-counter hook of a deformable conv: multiply-adds plus bias."""
    kh, kw = module.kernel_size
    per_output = kh * kw * module.in_channels // module.groups
    flops = output.numel() * per_output
    if getattr(module, 'bias', None) is not None:
        flops += output.numel()
    module.__flops__ += int(flops)


def _mmcv_modules_mapping(
        mapping: Dict[type, Callable]) -> Dict[type, Callable]:
    """mmcv's module -> hook table with its deformable convs added (mmcv's
    own counter skips them: they are not ``nn.Conv2d`` subclasses)."""
    mapping = dict(mapping)
    for cls in (DeformConv2d, DeformConv2dPack, ModulatedDeformConv2d,
                ModulatedDeformConv2dPack):
        mapping[cls] = _mmcv_deform_conv_hook
    return mapping


class _FixedInputs(nn.Module):
    """``module(*inputs)`` with no arguments (mmcv's counter calls
    ``model(**input_constructor(shape))``)."""

    def __init__(self, module: nn.Module, inputs: Tuple[Any, ...]) -> None:
        super().__init__()
        self.module = module
        self.inputs = inputs

    def forward(self):
        return self.module(*self.inputs)


def _fvcore_counts(module: nn.Module, inputs: Tuple[Any, ...]
                   ) -> Tuple[int, Dict[str, int], Dict[str, int]]:
    """One trace of :class:`mmengine.analysis.FlopAnalyzer`: (total, by
    operator, by module)."""
    with torch.no_grad():
        analyzer = FlopAnalyzer(module, inputs)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        analyzer.tracer_warnings('none')
        analyzer.set_op_handle(**_EXTRA_OP_HANDLES)
        return (int(analyzer.total()), dict(analyzer.by_operator()),
                dict(analyzer.by_module()))


def count_flops(module: nn.Module,
                inputs: Union[torch.Tensor, Tuple[Any, ...]],
                counter: str = 'fvcore') -> Tuple[int, Dict[str, int]]:
    """FLOPs of ``module(*inputs)``: (total, by operator).

    ``counter='fvcore'`` (default) is :class:`mmengine.analysis.FlopAnalyzer`
    (one fused multiply-add = 1 FLOP; see :data:`COUNTING_CONVENTION`);
    ``counter='mmcv'`` is mmcv's module-hook counter (no per-operator split).
    """
    if not isinstance(inputs, tuple):
        inputs = (inputs, )
    if counter == 'fvcore':
        total, by_op, _ = _fvcore_counts(module, inputs)
        return total, by_op
    if counter == 'mmcv':
        mapping = _mmcv_modules_mapping(flops_counter.get_modules_mapping())
        with torch.no_grad(), mock.patch.object(
                flops_counter, 'get_modules_mapping', lambda: mapping):
            flops, _ = mmcv_counter(
                _FixedInputs(module, inputs),
                tuple(inputs[0].shape[1:]),
                print_per_layer_stat=False,
                as_strings=False,
                input_constructor=lambda _: {})
        return int(flops), {}
    raise ValueError(f"counter must be 'fvcore' or 'mmcv', but got "
                     f'{counter!r}')


def _detector_inputs(model: nn.Module, shape: Tuple[int, int]):
    from mmdet.structures import DetDataSample  # an optional host
    h, w = shape
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.))
    data = model.data_preprocessor(
        dict(
            inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8)],
            data_samples=[DetDataSample(metainfo=meta)]), False)
    return data['inputs'], data['data_samples']


def _segmentor_inputs(model: nn.Module, shape: Tuple[int, int]):
    from mmseg.structures import SegDataSample  # an optional host
    h, w = shape
    data = model.data_preprocessor(
        dict(
            inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8)],
            data_samples=[
                SegDataSample(
                    metainfo=dict(ori_shape=(h, w), img_shape=(h, w)))
            ]), False)
    return data['inputs'], data['data_samples']


def _roi_counter(model: nn.Module) -> Tuple[Callable[[], str], List[Any]]:
    """Hooks recording how many RoIs reach the box and mask heads."""
    seen: Dict[str, int] = {}
    handles = []
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None:
        return (lambda: ''), handles
    for kind in ('bbox_head', 'mask_head'):
        head = getattr(roi_head, kind, None)
        # a cascade has one head per stage: record the first stage's
        heads = list(head) if isinstance(head, nn.ModuleList) else [head]
        if heads and heads[0] is not None:

            def hook(mod, args, out, kind=kind):
                seen.setdefault(kind, int(args[0].shape[0]))

            handles.append(heads[0].register_forward_hook(hook))

    def describe() -> str:
        if not seen:
            return ''
        return ', '.join(f'{n} RoIs to the {k.replace("_", " ")}'
                         for k, n in sorted(seen.items()))

    return describe, handles


def _roi_stages(model: nn.Module) -> int:
    """How many RoI head stages a detector runs (0 without RoI heads)."""
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None:
        return 0
    return int(getattr(roi_head, 'num_stages', 1))


def _cap_mask_rois(model: nn.Module) -> Optional[Callable[[], None]]:
    """Run a detector's mask heads on at most ``test_cfg.rcnn.max_per_img``
    RoIs, as at inference; returns the undo, or None if nothing changed.

    mmdet's tensor-mode forward runs the box heads on every proposal and the
    mask head of a ``StandardRoIHead`` on the first 100 RoIs, but the three
    mask heads of a ``CascadeRoIHead`` on every proposal (1000): ten times
    the mask work of inference, where masks are only predicted for the kept
    detections.  The capped heads see the first RoIs; their output is
    zero-padded back to the full count so the rest of the forward runs.
    """
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None or not getattr(roi_head, 'with_mask', False):
        return None
    rcnn_cfg = getattr(roi_head, 'test_cfg', None) or {}
    limit = rcnn_cfg.get('max_per_img', 100) if hasattr(
        rcnn_cfg, 'get') else 100
    original = roi_head._mask_forward

    def capped(*args, **kwargs):
        args = list(args)
        num = None
        for i, arg in enumerate(args):
            if (isinstance(arg, torch.Tensor) and arg.dim() == 2
                    and arg.shape[1] == 5 and arg.shape[0] > limit):
                num, args[i] = arg.shape[0], arg[:limit]
        results = original(*args, **kwargs)
        if num is not None and isinstance(results, dict):
            for key, value in results.items():
                if isinstance(value, torch.Tensor) and value.shape[0] == limit:
                    pad = value.new_zeros((num - limit, *value.shape[1:]))
                    results[key] = torch.cat([value, pad])
        return results

    roi_head._mask_forward = capped

    def undo() -> None:
        del roi_head._mask_forward

    return undo


def _clip_len(config: str) -> int:
    """Frames per clip of a video config: ``clip_len`` of the first
    ``SampleFrames`` of its ``val_dataloader`` (else ``test_dataloader``)."""
    cfg = Config.fromfile(config)
    for split in ('val', 'test'):
        dataset = (cfg.get(f'{split}_dataloader') or {}).get('dataset') or {}
        for step in dataset.get('pipeline') or []:
            if str(step.get('type', '')).endswith('SampleFrames'):
                return int(step.get('clip_len', 1))
    raise ValueError(f'{config!r} has no SampleFrames in its val or test '
                     'pipeline to take the clip length from')


def default_cache_dir() -> str:
    """Where measurements are kept: ``$GCNET_MM_CACHE/complexity``
    (default ``~/.cache/gcnet_mm/complexity``)."""
    root = os.environ.get('GCNET_MM_CACHE') or osp.join(
        osp.expanduser('~'), '.cache', 'gcnet_mm')
    return osp.join(root, 'complexity')


@functools.lru_cache(maxsize=None)
def _code_version() -> str:
    """What a measurement depends on besides the config: this package's
    sources and the installed stack's versions."""
    digest = hashlib.sha256()
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    for path in sorted(glob.glob(osp.join(package, '**', '*.py'),
                                 recursive=True)):
        with open(path, 'rb') as f:
            digest.update(path[len(package):].encode() + f.read())
    for name in ('torch', 'mmengine', 'mmcv', 'mmdet', 'mmsegmentation',
                 'mmpretrain', 'mmaction2'):
        try:
            digest.update(f'{name}={metadata.version(name)}'.encode())
        except metadata.PackageNotFoundError:
            pass
    return digest.hexdigest()


def _cache_file(cache_dir: str, path: str, shape, params_only: bool,
                counter: str, seed: int) -> str:
    cfg = Config.fromfile(path).to_dict()
    key = json.dumps([cfg, shape, params_only, counter, seed,
                      _code_version()], sort_keys=True, default=str)
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    return osp.join(cache_dir, f'{osp.basename(path)[:-3]}-{name}.json')


def _from_cache(file: str, config: str) -> Optional[Complexity]:
    try:
        with open(file) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    for key in ('shape', 'input_shape'):
        if data.get(key) is not None:
            data[key] = tuple(data[key])
    data['config'] = config
    try:
        return Complexity(**data)
    except TypeError:  # written by another version of Complexity
        return None


def _to_cache(file: str, result: Complexity) -> None:
    write_atomically(file, json.dumps(result.to_dict()).encode())


def is_cached(config: Union[str, Path],
              shape: Union[int, Sequence[int], None] = None,
              params_only: bool = False,
              counter: str = 'fvcore',
              seed: int = 0,
              cache_dir: Optional[str] = None) -> bool:
    """Whether :func:`get_complexity` with these arguments reads its result
    from ``cache_dir`` (default :func:`default_cache_dir`)."""
    file = _cache_file(cache_dir or default_cache_dir(),
                       resolve_config(config), check_shape(shape),
                       params_only, counter, seed)
    return _from_cache(file, str(config)) is not None


def get_complexity(config: Union[str, Path],
                   shape: Union[int, Sequence[int], None] = None,
                   params_only: bool = False,
                   counter: str = 'fvcore',
                   seed: int = 0,
                   cache_dir: Optional[str] = None) -> Complexity:
    """Parameters and FLOPs of a config's model at an input size.

    Args:
        config (str | Path): A config file, as a path or relative to the
            package's ``configs/``.
        shape (int | sequence[int], optional): Input (H, W), or one side of a
            square.  Defaults to :data:`DEFAULT_SHAPES` of the config's task.
        params_only (bool): Count parameters only (fast: detectors and
            segmentors are built on the meta device). Defaults to False.
        counter (str): ``'fvcore'`` (mmengine's FlopAnalyzer, default) or
            ``'mmcv'``; see the module docstring.
        seed (int): Seed of the random input (a detector's RoI count
            depends on it). Defaults to 0.
        cache_dir (str, optional): Keep the result in this folder and reuse
            it while the config (with its bases), the arguments, this
            package's code and the installed stack stay the same (see
            :func:`default_cache_dir`). Defaults to None: always measure.

    Returns:
        Complexity: params, FLOPs (one multiply-add = 1 FLOP), the input
        shape the network saw and the counting convention.

    Raises:
        ValueError: for a missing config, a bad shape or counter.
    """
    shape = check_shape(shape)
    if counter not in ('fvcore', 'mmcv'):
        raise ValueError(f"counter must be 'fvcore' or 'mmcv', but got "
                         f'{counter!r}')
    path = resolve_config(config)
    if cache_dir is None:
        return _measure(config, path, shape, params_only, counter, seed)
    file = _cache_file(cache_dir, path, shape, params_only, counter, seed)
    result = _from_cache(file, str(config))
    if result is None:
        result = _measure(config, path, shape, params_only, counter, seed)
        _to_cache(file, result)
    return result


def _measure(config, path: str, shape: Optional[Tuple[int, int]],
             params_only: bool, counter: str, seed: int) -> Complexity:
    """:func:`get_complexity` without the cache."""
    convention = COUNTING_CONVENTION if counter == 'fvcore' else \
        _MMCV_CONVENTION
    torch.manual_seed(seed)
    model, task = build_model(path, meta=params_only)
    params = count_params(model)
    if params_only:
        return Complexity(str(config), task, params, None, shape, None, {},
                          '', convention)
    shape = shape or DEFAULT_SHAPES[task]
    describe, cleanups = (lambda: ''), []
    forward_kwargs, notes = {}, ''
    if task == 'detection':
        inputs, samples = _detector_inputs(model, shape)
        describe, handles = _roi_counter(model)
        cleanups = [handle.remove for handle in handles]
        undo = _cap_mask_rois(model)
        if undo is not None:
            cleanups.append(undo)
    elif task == 'segmentation':
        if getattr(model, 'auxiliary_head', None) is not None:
            model.auxiliary_head = None  # not run at test time
        inputs, samples = _segmentor_inputs(model, shape)
    elif task == 'recognition':
        frames = _clip_len(path)
        inputs = torch.randn(1, 1, 3, frames, *shape)  # one clip
        samples = None
        forward_kwargs = dict(stage='head')  # mmaction2: through cls_head
        notes = f'one clip of {frames} frames'
    else:
        inputs = torch.randn(1, 3, *shape)
        samples = None
    parts = {}
    try:
        if counter == 'fvcore':
            flops, by_op, by_module = _fvcore_counts(
                _TensorForward(model, samples, **forward_kwargs), (inputs, ))
            # '_TensorForward.model.<part>' -> '<part>'
            parts = {
                name[len('model.'):]: count
                for name, count in by_module.items()
                if name.count('.') == 1 and name.startswith('model.')
                and count
            }
        else:
            flops, by_op = count_flops(
                _TensorForward(model, samples, **forward_kwargs), inputs,
                counter=counter)
    finally:
        for cleanup in cleanups:
            cleanup()
    notes = describe() or notes
    if task == 'segmentation':
        notes = 'auxiliary head not counted in FLOPs (test-time model)'
    return Complexity(
        str(config), task, params, flops, shape, tuple(inputs.shape), by_op,
        notes, convention, parts, _roi_stages(model))


def dump_json(data: Any, path: str) -> None:
    """Write results (:class:`Complexity` or row dicts, or lists) as JSON."""

    def plain(obj):
        if isinstance(obj, Complexity):
            return plain(obj.to_dict())
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [plain(v) for v in obj]
        return obj

    with open(path, 'w') as f:
        json.dump(plain(data), f, indent=2)
