"""The models measured: random non-zero weights, the GC blocks of mmcv,
timm and gcnet_mm, gcnet_mm's paths, and a detection config's backbone."""
import contextlib
from typing import Iterator, List

import torch
from mmengine.config import Config, ConfigDict
from mmengine.hub import get_config
from torch import nn

from gcnet_mm.models.blocks import ContextBlock
from gcnet_mm.ops import set_fused, use_fused
from gcnet_mm.ops.cpu_kernels import extension_isa
from gcnet_mm.ops.dispatch import force_kernels

#: gcnet_mm's paths: the fused one (its default kernels), the fused one on
#: its PyTorch-ops kernels, and the reference one (mmcv's arithmetic).
GCNET_PATHS = ('fused', 'fused, torch ops', 'reference')


def randomize_(module: nn.Module, seed: int = 0, scale: float = 0.2,
               eval_mode: bool = True, fan_in: bool = False) -> nn.Module:
    """Random non-zero weights (zero-initialised layers included), so that a
    comparison cannot pass on zeros; eval mode by default.

    ``fan_in=False``: every floating-point entry of the state dict ~ N(0,
    ``scale``²), batch norms' ``running_var`` ~ U(0.5, 1.5).
    ``fan_in=True``: the parameters only, conv and linear weights ~ N(0,
    1/fan_in) (a deep network's activations keep their scale), the others ~
    N(0.1, ``scale``²)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if fan_in:
            for p in module.parameters():
                if p.dim() > 1:
                    new = torch.randn(p.shape, generator=gen) * (
                        p[0].numel()**-0.5)
                else:
                    new = torch.randn(p.shape, generator=gen) * scale + 0.1
                p.copy_(new.to(p.dtype))
        else:
            for name, t in module.state_dict().items():
                if not t.is_floating_point():
                    continue
                if name.endswith('running_var'):
                    t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=gen) * scale)
    if eval_mode:
        module.eval()  # (mmdet's ResNet.train() returns None: no chaining)
    return module


def timm_block(channels: int) -> nn.Module:
    """timm's GlobalContext as a GC r16 block: attention pooling, bottleneck
    C/16 with LayerNorm and ReLU, add fusion, last conv zero-initialised."""
    from timm.layers import GlobalContext  # timm: optional
    return GlobalContext(channels, use_attn=True, fuse_add=True,
                         fuse_scale=False, init_last_zero=True,
                         rd_ratio=1 / 16)


def gcnet_block(mmcv_block: nn.Module) -> nn.Module:
    """gcnet_mm's block with the weights of ``mmcv_block`` (mmcv's
    ContextBlock), on its device."""
    block = ContextBlock(mmcv_block.in_channels, ratio=mmcv_block.ratio)
    block.load_state_dict(mmcv_block.state_dict())
    return block.to(next(mmcv_block.parameters()).device)


@contextlib.contextmanager
def gc_path(name: str) -> Iterator[None]:
    """Run GC blocks on one of :data:`GCNET_PATHS` inside the ``with``
    block: 'fused' (the kernels the fused path chooses), 'fused, torch ops'
    (the fused path on its PyTorch-ops kernels) or 'reference'."""
    if name not in GCNET_PATHS:
        raise ValueError(f'unknown path {name!r}, expected one of '
                         f'{GCNET_PATHS}')
    before = use_fused()
    set_fused(name != 'reference')
    try:
        with (force_kernels('torch') if name == 'fused, torch ops' else
              contextlib.nullcontext()):
            yield
    finally:
        set_fused(before)


def gcnet_paths(device: str) -> List[str]:
    """gcnet_mm's paths measured on ``device``: the fused one, its
    PyTorch-ops kernels where the fused path has other kernels (the CPU
    loops), and the reference one."""
    torch_ops = (torch.device(device).type == 'cpu'
                 and extension_isa() is not None)
    return ['fused'] + (['fused, torch ops'] if torch_ops else []) + [
        'reference'
    ]


def block_types(model: nn.Module) -> List[str]:
    """Module and class of ``model`` and of its GC blocks (mmdet's plugin
    name ``context_block``), e.g. which ContextBlock a backbone holds."""
    return sorted({f'{type(m).__module__}.{type(m).__name__}'
                   for n, m in model.named_modules()
                   if n.endswith('context_block') or not n})


def config_backbone(config: str) -> ConfigDict:
    """``model.backbone`` of a config (a file, or ``pkg::path`` such as
    ``mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py``), ``init_cfg=None``:
    random weights, no download."""
    cfg = get_config(config) if '::' in config else Config.fromfile(config)
    cfg = cfg.model.backbone
    cfg.init_cfg = None
    return cfg


def backbone(config: str, device: str, norm_eval: bool = True) -> nn.Module:
    """``model.backbone`` of a detection config, randomly initialised, its
    batch norms in eval mode (``norm_eval``) or training mode; in training
    mode (where frozen_stages and norm_eval apply)."""
    from mmdet.registry import MODELS  # mmdet: optional
    cfg = config_backbone(config)
    cfg.norm_eval = norm_eval
    torch.manual_seed(0)
    model = MODELS.build(cfg).to(device)
    model.train()  # frozen_stages and norm_eval apply here
    return model
