"""Non-local (NL) block, the baseline GCNet simplifies.

Papers: "Non-local Neural Networks", Wang et al., CVPR 2018,
https://arxiv.org/abs/1711.07971; compared against in "GCNet: Non-local
Networks Meet Squeeze-Excitation Networks and Beyond", Cao et al., 2019,
https://arxiv.org/abs/1904.11492 (Tables 2(a), 4, 5).

Reference code: mmcv's ``mmcv/cnn/bricks/non_local.py`` (``NonLocal2d``,
``NonLocal3d``). The blocks subclass them (``NonLocalBlock3d`` is the same
block on video features), so its parameter names are mmcv's and mmcv/mmdet
NL checkpoints load unchanged. It adds argument checks, an mmengine
``BaseModule`` with an ``init_weights`` that survives a parent's init, a
float32 softmax for mixed precision, and the original non-local code's
sub-sampling (``sub_sample='input'``): the 2x2 max-pool applied to the block's
input before ``phi`` and ``g``, as in the Caffe2 code of the non-local paper
(facebookresearch/video-nonlocal-net, ``NONLOCAL.USE_MAXPOOL``) and the
Detectron-based detection code built on it. mmcv's ``sub_sample=True`` pools
the outputs of ``phi`` and ``g`` instead, after running them at full
resolution.
"""
import copy
from typing import Dict, Optional, Tuple, Union

import torch
from mmcv.cnn import NonLocal2d, NonLocal3d
from mmengine.model import BaseModule, constant_init, normal_init
from torch import Tensor, nn

from gcnet_mm.registry import MODELS
from ._utils import (ArgumentTypeError, ArgumentValueError, check_choice,
                     check_input, check_positive_int)

__all__ = [
    'NonLocalBlock', 'NonLocalBlock3d', 'key_input', 'pairwise_operands',
    'nonlocal_branch', 'sub_sample_of'
]

NL_MODES = ('embedded_gaussian', 'gaussian', 'dot_product', 'concatenation')


def key_input(block: NonLocal2d, x: Tensor) -> Tensor:
    """What ``phi`` and ``g`` read: ``x``, or ``x`` max-pooled 2x2 (over H
    and W) for a block with ``sub_sample='input'``."""
    return block.input_pool(x) if getattr(block, 'pool_input', False) else x


def sub_sample_of(block: NonLocal2d) -> Union[bool, str]:
    """``block``'s sub-sampling: ``False``, ``True`` (mmcv's) or ``'input'``
    (:class:`NonLocalBlock`'s original-code option)."""
    return 'input' if getattr(block, 'pool_input', False) else bool(
        block.sub_sample)


def pairwise_operands(block: NonLocal2d,
                      x: Tensor,
                      source: Optional[Tensor] = None
                      ) -> Tuple[Tensor, Tensor]:
    """The two operands of ``block``'s pairwise function, as mmcv's
    ``_NonLocalNd.forward`` builds them (and as :class:`NonLocalBlock` does,
    also with ``sub_sample='input'``).

    Args:
        block: an ``mmcv.cnn.NonLocal2d`` or ``NonLocal3d`` (subclasses
            included) in any mode.
        x: its input, (B, C, H, W) or (B, C, T, H, W).
        source: what ``phi`` reads, :func:`key_input` of ``x`` (computed
            when not given).

    Returns:
        ``theta_x`` (B, H*W, C') and ``phi_x`` (B, C', H'*W'); for
        ``'concatenation'`` (B, C', H*W, 1) and (B, C', 1, H'*W'). ``H' x W'``
        is ``H x W`` max-pooled by 2 when the block sub-samples; a 3-D block
        has T*H*W query and T*H'*W' key positions.
    """
    n = x.size(0)
    if source is None:
        source = key_input(block, x)
    if block.mode == 'gaussian':
        theta_x = x.reshape(n, block.in_channels, -1).permute(0, 2, 1)
        phi_x = (block.phi(source) if block.sub_sample else source).reshape(
            n, block.in_channels, -1)
    elif block.mode == 'concatenation':
        theta_x = block.theta(x).reshape(n, block.inter_channels, -1, 1)
        phi_x = block.phi(source).reshape(n, block.inter_channels, 1, -1)
    else:
        theta_x = block.theta(x).reshape(n, block.inter_channels, -1)
        theta_x = theta_x.permute(0, 2, 1)
        phi_x = block.phi(source).reshape(n, block.inter_channels, -1)
    return theta_x, phi_x


def nonlocal_branch(block: NonLocal2d,
                    x: Tensor,
                    attention: Tensor,
                    source: Optional[Tensor] = None) -> Tensor:
    """``z = conv_out(attention @ g(x))``, the block's output before the
    residual addition (the block returns ``x + z``); ``g`` reads the pooled
    ``x`` with ``sub_sample='input'``.

    Args:
        block: an ``mmcv.cnn.NonLocal2d`` or ``NonLocal3d`` (subclasses
            included).
        x: its input, (B, C, H, W) or (B, C, T, H, W).
        attention: (B, H*W, H'*W') (3-D: (B, T*H*W, T*H'*W')), the pairwise
            weight of :func:`pairwise_operands`'s operands.
        source: what ``g`` reads, :func:`key_input` of ``x`` (computed when
            not given).

    Returns:
        the shape of ``x``.
    """
    n = x.size(0)
    if source is None:
        source = key_input(block, x)
    g_x = block.g(source).reshape(n, block.inter_channels, -1)
    y = torch.matmul(attention, g_x.permute(0, 2, 1))  # (B, HW, C')
    y = y.permute(0, 2, 1).reshape(n, block.inter_channels, *x.shape[2:])
    return block.conv_out(y)


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


class _NonLocalBlockNd:
    """What :class:`NonLocalBlock` and :class:`NonLocalBlock3d` add to mmcv's
    ``NonLocal2d`` / ``NonLocal3d`` (listed after this class in their bases):
    argument checks, ``sub_sample='input'``, an ``init_weights`` that survives
    a parent's init, a float32 softmax and a working concatenation backward.
    """

    _conv_type = 'Conv2d'  # the 1x1 convs when conv_cfg is None
    _input_ndim = 4  # (B, C, H, W)

    @staticmethod
    def _make_input_pool() -> nn.Module:
        """The max-pool of ``sub_sample='input'`` (mmcv's, spatial only)."""
        return nn.MaxPool2d(kernel_size=(2, 2))

    def __init__(self,
                 in_channels: int,
                 sub_sample: Union[bool, str] = False,
                 conv_cfg: Optional[Dict] = None,
                 *,
                 reduction: int = 2,
                 use_scale: bool = True,
                 norm_cfg: Optional[Dict] = None,
                 mode: str = 'embedded_gaussian',
                 zeros_init: bool = True,
                 std: float = 0.01,
                 init_cfg: Union[dict, list, None] = None) -> None:
        in_channels = check_positive_int('in_channels', in_channels)
        reduction = check_positive_int('reduction', reduction)
        if in_channels // reduction < 1:
            raise ArgumentValueError(
                f'reduction={reduction} leaves no channels for in_channels='
                f'{in_channels} (in_channels // reduction = 0); use '
                f'reduction <= {in_channels}')
        mode = check_choice('mode', mode, NL_MODES)
        if not (isinstance(sub_sample, bool) or sub_sample == 'input'):
            raise ArgumentValueError(
                f'sub_sample must be False, True or \'input\' (max-pool the '
                f'input of phi and g, as the original non-local code), got '
                f'{sub_sample!r}')
        for name, cfg in (('conv_cfg', conv_cfg), ('norm_cfg', norm_cfg)):
            if cfg is not None and not isinstance(cfg, dict):
                raise ArgumentTypeError(
                    f'{name} must be a dict or None, got {cfg!r}')
        # Read by init_weights(), which mmcv's __init__ already calls.
        self.zeros_init = bool(zeros_init)
        self.std = float(std)
        super().__init__(
            in_channels,
            sub_sample=sub_sample is True,
            conv_cfg=copy.deepcopy(conv_cfg) or dict(type=self._conv_type),
            reduction=reduction,
            use_scale=use_scale,
            norm_cfg=copy.deepcopy(norm_cfg),
            mode=mode)
        self.init_cfg = copy.deepcopy(init_cfg)
        # mmcv's ``self.sub_sample`` (pool after phi/g) stays a bool.
        self.pool_input = sub_sample == 'input'
        if self.pool_input:
            # No parameters: the state dict is sub_sample=False's.
            self.input_pool = self._make_input_pool()

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
        check_input(x, self.in_channels, ndim=self._input_ndim)
        if sub_sample_of(self) and min(x.shape[-2:]) < 2:
            raise ValueError(f'sub_sample={sub_sample_of(self)!r} max-pools '
                             f'H and W by 2 and needs H, W >= 2, got an input '
                             f'of shape {tuple(x.shape)}')
        # mmcv's forward, with phi and g reading the pooled input for
        # sub_sample='input' (the same ops as mmcv's otherwise).
        source = key_input(self, x)  # pooled once for phi and g
        theta_x, phi_x = pairwise_operands(self, x, source)
        attention = getattr(self, self.mode)(theta_x, phi_x)
        return x + nonlocal_branch(self, x, attention, source)

    def extra_repr(self) -> str:
        return f'sub_sample={sub_sample_of(self)!r}'


@MODELS.register_module()
class NonLocalBlock(_NonLocalBlockNd, NonLocal2d, BaseModule):
    """2-D non-local block, a drop-in for ``mmcv.cnn.NonLocal2d``.

    ``y = x + norm(conv_out(sum_j f(x_i, x_j) g(x_j)))``. Same signature and
    defaults as mmcv's (``in_channels, sub_sample=False, conv_cfg=...``
    positionally, everything else by keyword), same submodules and parameter
    names, so mmcv/mmdet NL checkpoints load strictly.

    As in mmcv, ``conv_out`` has no norm unless ``norm_cfg`` is given. The NL
    block of the non-local and GCNet papers has BN on ``conv_out`` only,
    zero-initialised so the block starts as the identity:
    ``NonLocalBlock(C, norm_cfg=dict(type='BN'))`` (``'SyncBN'`` in
    multi-GPU detection). Without a norm, ``conv_out`` itself starts at zero,
    which is the identity too.

    Args:
        in_channels: channels C of the input feature map.
        sub_sample: ``False`` (default), ``True`` or ``'input'``. ``True``
            is mmcv's: max-pool (2x2) the outputs of the ``g`` and ``phi``
            branches, which cuts the pairwise cost by four.
            ``'input'`` is the original non-local code's: max-pool the block's
            input before ``g`` and ``phi``, so those two convs also run on a
            quarter of the positions (a different function from ``True``:
            the max does not commute with the convs). The paper's NL FLOPs
            are this block's. Parameters, and so checkpoints, are the same
            for all three (``True`` nests ``g``/``phi`` one level deeper in
            the state dict, as mmcv does).
        conv_cfg: conv config for the 1x1 convs; ``None`` is ``Conv2d`` too.
        reduction: ``theta``/``phi``/``g`` have ``in_channels // reduction``
            channels; must leave at least one.
        use_scale: divide the embedded-Gaussian logits by
            ``sqrt(in_channels // reduction)``.
        norm_cfg: norm layer after ``conv_out`` only; ``None`` (default, as
            in mmcv) for none.
        mode: pairwise function, ``'embedded_gaussian'`` (default),
            ``'gaussian'``, ``'dot_product'`` or ``'concatenation'``.
        zeros_init: start ``conv_out``'s norm (or ``conv_out`` itself when
            ``norm_cfg`` is ``None``) at zero, so the block is the identity.
            Same name as mmcv's keyword.
        std: std of the normal init of ``g``/``theta``/``phi`` (and of the
            last layer when ``zeros_init`` is False).
        init_cfg: mmengine initialisation config; replaces the block's own
            initialisation in :meth:`init_weights` when given.

    Shape:
        input (B, C, H, W) -> output (B, C, H, W); with ``sub_sample`` H and W
        must be at least 2 (odd sizes lose their last row/column to the pool,
        as in mmcv).
    """

    _abbr_ = 'nonlocal_block'

    # mmcv's NonLocal2d signature, spelled out.
    def __init__(self,
                 in_channels: int,
                 sub_sample: Union[bool, str] = False,
                 conv_cfg: Optional[Dict] = dict(type='Conv2d'),
                 *,
                 reduction: int = 2,
                 use_scale: bool = True,
                 norm_cfg: Optional[Dict] = None,
                 mode: str = 'embedded_gaussian',
                 zeros_init: bool = True,
                 std: float = 0.01,
                 init_cfg: Union[dict, list, None] = None) -> None:
        super().__init__(in_channels, sub_sample, conv_cfg,
                         reduction=reduction, use_scale=use_scale,
                         norm_cfg=norm_cfg, mode=mode, zeros_init=zeros_init,
                         std=std, init_cfg=init_cfg)


@MODELS.register_module()
class NonLocalBlock3d(_NonLocalBlockNd, NonLocal3d, BaseModule):
    """Non-local block on video features, a drop-in for
    ``mmcv.cnn.NonLocal3d`` as :class:`NonLocalBlock` is for ``NonLocal2d``.

    Attention over all T x H x W positions of a clip, with 1x1x1 convs
    (``Conv3d``), so mmcv ``NonLocal3d`` state dicts (mmaction2's
    ``non_local_block``) load unchanged. As in mmcv, ``conv_out`` has no norm
    unless ``norm_cfg`` is given. The GCNet paper's video NL (Table 5, after
    the non-local paper's code) is ``norm_cfg=dict(type='BN3d')`` with
    ``sub_sample='input'``: ``phi`` and ``g`` read the input max-pooled by
    (1, 2, 2), over space only, as mmcv's ``sub_sample=True`` pools their
    outputs.

    Args:
        in_channels: channels C of the input feature map.
        sub_sample: ``False`` (default), ``True`` (mmcv's: max-pool the
            outputs of ``g`` and ``phi`` by (1, 2, 2)) or ``'input'`` (the
            original non-local code's: max-pool the block's input by
            (1, 2, 2) before ``g`` and ``phi``).
        conv_cfg: conv config for the 1x1x1 convs; ``None`` is ``Conv3d``
            too.
        mode: pairwise function, ``'embedded_gaussian'`` (default),
            ``'gaussian'``, ``'dot_product'`` or ``'concatenation'``.
        reduction: ``theta``/``phi``/``g`` have ``in_channels // reduction``
            channels; must leave at least one.
        use_scale: divide the embedded-Gaussian logits by
            ``sqrt(in_channels // reduction)``.
        norm_cfg: norm layer after ``conv_out`` only; ``None`` (default, as
            in mmcv) for none.
        zeros_init: start ``conv_out``'s norm (or ``conv_out`` itself when
            ``norm_cfg`` is ``None``) at zero, so the block is the identity.
        std: std of the normal init of ``g``/``theta``/``phi`` (and of the
            last layer when ``zeros_init`` is False).
        init_cfg: mmengine initialisation config; replaces the block's own
            initialisation in :meth:`init_weights` when given.

    Shape:
        input (B, C, T, H, W) -> output (B, C, T, H, W); with ``sub_sample``
        H and W must be at least 2.
    """

    _abbr_ = 'nonlocal_block'
    _conv_type = 'Conv3d'
    _input_ndim = 5

    @staticmethod
    def _make_input_pool() -> nn.Module:
        return nn.MaxPool3d(kernel_size=(1, 2, 2))

    def __init__(self,
                 in_channels: int,
                 sub_sample: Union[bool, str] = False,
                 conv_cfg: Optional[Dict] = dict(type='Conv3d'),
                 **kwargs) -> None:
        super().__init__(in_channels, sub_sample, conv_cfg, **kwargs)
