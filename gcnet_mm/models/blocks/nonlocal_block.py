"""Non-local (NL) block, the baseline GCNet simplifies.

Papers: "Non-local Neural Networks", Wang et al., CVPR 2018,
https://arxiv.org/abs/1711.07971; compared against in "GCNet: Non-local
Networks Meet Squeeze-Excitation Networks and Beyond", Cao et al., 2019,
https://arxiv.org/abs/1904.11492 (Tables 2(a), 4, 5).

Reference code: mmcv's ``mmcv/cnn/bricks/non_local.py`` (``NonLocal2d``).
This block subclasses it, so its parameter names are mmcv's and mmcv/mmdet
NL checkpoints load unchanged. It adds argument checks, an mmengine
``BaseModule`` with an ``init_weights`` that survives a parent's init, and a
float32 softmax for mixed precision.
"""
import copy
from typing import Dict, Optional, Union

import torch
from mmcv.cnn import NonLocal2d
from mmengine.model import BaseModule, constant_init, normal_init
from torch import Tensor, nn

from gcnet_mm.registry import MODELS
from ._utils import check_choice, check_input, check_positive_int

__all__ = ['NonLocalBlock']

NL_MODES = ('embedded_gaussian', 'gaussian', 'dot_product', 'concatenation')


def _conv_of(branch: nn.Module) -> nn.Module:
    """The conv of a ``ConvModule`` branch, also when ``sub_sample`` has
    wrapped it as ``nn.Sequential(ConvModule, MaxPool2d)``."""
    if isinstance(branch, nn.Sequential):
        branch = branch[0]
    return branch.conv


def _float32_softmax(logits_fn, theta_x: Tensor, phi_x: Tensor,
                     scale: float) -> Tensor:
    """``softmax(theta_x @ phi_x / scale)`` computed in float32 (float64
    stays float64) even under autocast, returned in ``theta_x``'s dtype."""
    dtype = torch.promote_types(theta_x.dtype, torch.float32)
    with torch.autocast(device_type=theta_x.device.type, enabled=False):
        weight = logits_fn(theta_x.to(dtype), phi_x.to(dtype))
        if scale != 1.0:
            weight = weight / scale
        weight = weight.softmax(dim=-1)
    return weight.to(theta_x.dtype)


@MODELS.register_module()
class NonLocalBlock(NonLocal2d, BaseModule):
    """2-D non-local block; ``mmcv.cnn.NonLocal2d`` with GCNet's defaults.

    ``y = x + BN(conv_out(sum_j f(x_i, x_j) g(x_j)))``. With the defaults
    (embedded Gaussian, ``reduction=2``, BN on ``conv_out`` initialised to
    zero) it is the NL block of the GCNet paper and starts as the identity.

    Args:
        in_channels: channels C of the input feature map.
        mode: pairwise function, ``'embedded_gaussian'`` (default),
            ``'gaussian'``, ``'dot_product'`` or ``'concatenation'``.
        sub_sample: max-pool (2x2) the ``g`` and ``phi`` branches, which
            cuts the pairwise cost by four.
        reduction: ``theta``/``phi``/``g`` have ``in_channels // reduction``
            channels; must leave at least one.
        use_scale: divide the embedded-Gaussian logits by
            ``sqrt(in_channels // reduction)``.
        conv_cfg: conv config for the 1x1 convs; ``None`` is ``Conv2d``.
        norm_cfg: norm layer after ``conv_out`` only; ``None`` for none.
        zeros_init: start ``conv_out``'s norm (or ``conv_out`` itself when
            ``norm_cfg`` is ``None``) at zero, so the block is the identity.
            Same name as mmcv's keyword.
        std: std of the normal init of ``g``/``theta``/``phi`` (and of the
            last layer when ``zeros_init`` is False).
        init_cfg: mmengine initialisation config; replaces the block's own
            initialisation in :meth:`init_weights` when given.

    Shape:
        input (B, C, H, W) -> output (B, C, H, W); with ``sub_sample`` H and W
        must be at least 2.
    """

    _abbr_ = 'nonlocal_block'

    def __init__(self,
                 in_channels: int,
                 *,
                 mode: str = 'embedded_gaussian',
                 sub_sample: bool = False,
                 reduction: int = 2,
                 use_scale: bool = True,
                 conv_cfg: Optional[Dict] = None,
                 norm_cfg: Optional[Dict] = dict(type='BN'),
                 zeros_init: bool = True,
                 std: float = 0.01,
                 init_cfg: Union[dict, list, None] = None) -> None:
        in_channels = check_positive_int('in_channels', in_channels)
        reduction = check_positive_int('reduction', reduction)
        if in_channels // reduction < 1:
            raise ValueError(f'reduction={reduction} leaves no channels for '
                             f'in_channels={in_channels} (in_channels // '
                             f'reduction = 0); use reduction <= {in_channels}')
        mode = check_choice('mode', mode, NL_MODES)
        if norm_cfg is not None and not isinstance(norm_cfg, dict):
            raise TypeError(f'norm_cfg must be a dict or None, got '
                            f'{norm_cfg!r}')
        # Read by init_weights(), which mmcv's __init__ already calls.
        self.zeros_init = bool(zeros_init)
        self.std = float(std)
        super().__init__(
            in_channels,
            sub_sample=sub_sample,
            conv_cfg=copy.deepcopy(conv_cfg) or dict(type='Conv2d'),
            reduction=reduction,
            use_scale=use_scale,
            norm_cfg=copy.deepcopy(norm_cfg),
            mode=mode)
        self.init_cfg = copy.deepcopy(init_cfg)

    def init_weights(self) -> None:
        """mmcv's NL initialisation (normal ``std`` for ``g``/``theta``/
        ``phi``, zeros for the last layer), or ``init_cfg`` if given.

        A parent ``BaseModule`` applies its own ``init_cfg`` (e.g. Kaiming) to
        every conv first and then calls this, which restores the NL init.
        Unlike mmcv's, this also works after ``sub_sample`` has wrapped
        ``g``/``phi`` in an ``nn.Sequential``.
        """
        if getattr(self, 'init_cfg', None):
            BaseModule.init_weights(self)
            return
        branches = [self.g] if self.mode == 'gaussian' else [
            self.g, self.theta, self.phi
        ]
        for branch in branches:
            normal_init(_conv_of(branch), std=self.std)
        last = self.conv_out.norm if self.conv_out.with_norm else \
            self.conv_out.conv
        if self.zeros_init:
            constant_init(last, 0)
        else:
            normal_init(last, std=self.std)

    # Softmax over positions in float32, so fp16/bf16 stays finite.
    def gaussian(self, theta_x: Tensor, phi_x: Tensor) -> Tensor:
        return _float32_softmax(torch.matmul, theta_x, phi_x, 1.0)

    def embedded_gaussian(self, theta_x: Tensor, phi_x: Tensor) -> Tensor:
        # theta_x.shape[-1] is inter_channels
        scale = theta_x.shape[-1]**0.5 if self.use_scale else 1.0
        return _float32_softmax(torch.matmul, theta_x, phi_x, scale)

    def concatenation(self, theta_x: Tensor, phi_x: Tensor) -> Tensor:
        # mmcv divides the ReLU output in place, which breaks backward.
        h, w = theta_x.size(2), phi_x.size(3)
        concat = torch.cat(
            [theta_x.repeat(1, 1, 1, w),
             phi_x.repeat(1, 1, h, 1)], dim=1)  # (B, 2C', HW, HW')
        weight = self.concat_project(concat)  # (B, 1, HW, HW')
        weight = weight.view(weight.size(0), h, w)
        return weight / w

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels)  # (B, C, H, W)
        return super().forward(x)
