"""Global Context (GC) block and the simplified non-local (SNL) block.

Paper: "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
Cao et al., ICCV Workshops 2019, https://arxiv.org/abs/1904.11492

Reference code consulted: mmcv's ``mmcv/cnn/bricks/context_block.py``
(``ContextBlock``, whose submodule names every released GCNet checkpoint uses)
and timm's ``timm/layers/global_context.py``.

A GC block has three steps (paper Fig. 4):

* context modelling: attention pooling (a 1x1 conv to one channel, softmax
  over all H*W positions, weighted sum of the features) or average pooling;
* transform: a bottleneck C -> C/r -> C on the (B, C, 1, 1) context;
* fusion: broadcast add (``channel_add``) and/or sigmoid scaling
  (``channel_mul``) at every position.

The heavy part (pooling + fusion) runs in :func:`gcnet_mm.ops.global_context`,
so every user of the block gets its fast path.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

from mmengine.model import BaseModule, constant_init, kaiming_init
from torch import Tensor, nn

from gcnet_mm.ops import global_context
from gcnet_mm.ops.norm_source import NormTracker
from gcnet_mm.registry import MODELS
from ._utils import (ArgumentValueError, check_choice, check_choices,
                     check_input, check_positive_int, reduced_channels)

__all__ = ['ContextBlock', 'SNLBlock']

# One layer of a transform, built from (in_channels C, reduced width P).
_LAYERS: Dict[str, Callable[[int, int], nn.Module]] = {
    'reduce': lambda c, p: nn.Conv2d(c, p, kernel_size=1),
    'ln': lambda c, p: nn.LayerNorm([p, 1, 1]),
    'relu': lambda c, p: nn.ReLU(inplace=True),
    'expand': lambda c, p: nn.Conv2d(p, c, kernel_size=1),
    'full': lambda c, p: nn.Conv2d(c, c, kernel_size=1),
}

# The transform designs of paper Table 2(d), as layer lists. Layers are kept
# in an nn.Sequential, so their names are their indices: 'ln_relu' gives
# mmcv's ``channel_add_conv.{0,1,3}``.
TRANSFORMS: Dict[str, Tuple[str, ...]] = {
    'ln_relu': ('reduce', 'ln', 'relu', 'expand'),  # r16+ReLU+LN (default)
    'relu': ('reduce', 'relu', 'expand'),  # r16+ReLU
    'bottleneck': ('reduce', 'expand'),  # r16
    'linear': ('full', ),  # w/o ratio: one 1x1 conv C -> C
}

POOLING_TYPES = ('att', 'avg')

# Fusion name -> attribute holding its transform (mmcv's names).
FUSIONS: Dict[str, str] = {
    'channel_add': 'channel_add_conv',
    'channel_mul': 'channel_mul_conv',
}

# mmcv's docstring spells 'channels_add'; its code only accepts this one.
_FUSION_ALIASES = {
    'channels_add': 'channel_add', 'channels_mul': 'channel_mul'}


@MODELS.register_module()
class ContextBlock(BaseModule):
    """Global context block, a drop-in for ``mmcv.cnn.ContextBlock``.

    With the defaults it has mmcv's submodules and parameter names
    (``conv_mask``, ``channel_add_conv.{0,1,3}``, ``channel_mul_conv.*``), so
    mmcv state dicts load strictly and give the same outputs. The keyword-only
    ``transform`` and ``channels`` open the rest of the paper's design space.

    The last conv of each fusion branch starts at zero (as in mmcv), so a
    block with ``fusion_types=('channel_add',)`` is the identity at init; a
    ``channel_mul`` branch starts as a constant scaling by ``sigmoid(0)=0.5``.

    Args:
        in_channels: channels C of the input feature map.
        ratio: width of the transform bottleneck as a fraction of C; the
            bottleneck has ``int(in_channels * ratio)`` channels (as in mmcv).
            Defaults to 1/16 when neither ``ratio`` nor ``channels`` is
            given. Must leave at least one channel.
        pooling_type: context modelling, ``'att'`` (attention pooling, GC and
            SNL) or ``'avg'`` (global average pooling, as in SE).
        fusion_types: a non-empty list/tuple of ``'channel_add'`` (broadcast
            add) and/or ``'channel_mul'`` (sigmoid scaling). Multiplication is
            applied first when both are given.
        channels: the bottleneck width as an explicit channel count instead
            of ``ratio``; giving both is an error.
        transform: the transform design (paper Table 2(d)):
            ``'ln_relu'`` conv, LayerNorm, ReLU, conv (default, mmcv layout);
            ``'relu'`` conv, ReLU, conv; ``'bottleneck'`` conv, conv;
            ``'linear'`` a single 1x1 conv C -> C without reduction (takes
            neither ``ratio`` nor ``channels``).
        init_cfg: mmengine initialisation config. When given it replaces the
            block's own initialisation in :meth:`init_weights`.

    Shape:
        input (B, C, H, W) -> output (B, C, H, W).
    """

    _abbr_ = 'context_block'

    def __init__(self,
                 in_channels: int,
                 ratio: Optional[float] = None,
                 pooling_type: str = 'att',
                 fusion_types: Sequence[str] = ('channel_add', ),
                 *,
                 channels: Optional[int] = None,
                 transform: str = 'ln_relu',
                 init_cfg: Union[dict, list, None] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        in_channels = check_positive_int('in_channels', in_channels)
        pooling_type = check_choice('pooling_type', pooling_type,
                                    POOLING_TYPES)
        fusion_types = check_choices(
            'fusion_types', fusion_types, FUSIONS, aliases=_FUSION_ALIASES)
        transform = check_choice('transform', transform, TRANSFORMS)
        if 'reduce' in TRANSFORMS[transform]:
            planes = reduced_channels(
                in_channels, ratio, channels, default_ratio=1 / 16)
        elif ratio is not None or channels is not None:
            raise ArgumentValueError(
                f"transform={transform!r} has no bottleneck, so it takes "
                f"neither ratio nor channels (got ratio={ratio!r}, "
                f"channels={channels!r}); pass None or pick one of "
                f"{[t for t, ls in TRANSFORMS.items() if 'reduce' in ls]}")
        else:
            planes = in_channels

        self.in_channels = in_channels
        self.ratio = ratio
        self.planes = planes  # width of the transform's hidden layer
        self.pooling_type = pooling_type
        self.fusion_types = fusion_types
        self.transform = transform

        # mmcv's submodules; the softmax and the pooling themselves run in
        # gcnet_mm.ops.global_context (neither has parameters).
        if pooling_type == 'att':
            self.conv_mask = nn.Conv2d(in_channels, 1, kernel_size=1)
            self.softmax = nn.Softmax(dim=2)
        else:
            self.conv_mask = None
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
        for fusion, attr in FUSIONS.items():
            branch = None
            if fusion in fusion_types:
                branch = nn.Sequential(*[
                    _LAYERS[layer](in_channels, planes)
                    for layer in TRANSFORMS[transform]
                ])
            setattr(self, attr, branch)
        # Finds the batch norm before the block, whose input the fused path
        # keeps instead of x (gcnet_mm/ops/norm_source.py).
        self._norm_tracker = NormTracker(self)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmcv's initialisation: Kaiming (fan_in) for ``conv_mask``, zeros
        for the last conv of each fusion branch; other layers keep PyTorch's
        default initialisation."""
        if self.conv_mask is not None:
            kaiming_init(self.conv_mask, mode='fan_in')
        for attr in FUSIONS.values():
            branch = getattr(self, attr)
            if branch is not None:
                constant_init(branch[-1], val=0)

    def init_weights(self) -> None:
        """Re-apply :meth:`reset_parameters` (or ``init_cfg`` if given).

        A parent ``BaseModule`` (e.g. an mmdet ResNet) first applies its own
        ``init_cfg`` to every conv below it, Kaiming included, and then calls
        this, which restores the zero-init so the block starts as identity.
        """
        if self.init_cfg:
            super().init_weights()
        else:
            self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels)  # (B, C, H, W)
        # context (B, C, 1, 1) -> transforms -> fused into x: (B, C, H, W)
        return global_context(x, *self._context_args(),
                              norm_tracker=self._norm_tracker)

    def _context_args(self):
        """(mask_weight, mask_bias, add_transform, mul_transform) for
        :func:`gcnet_mm.ops.global_context`."""
        if self.conv_mask is None:
            mask_weight = mask_bias = None
        else:
            mask_weight = self.conv_mask.weight  # (1, C, 1, 1)
            mask_bias = self.conv_mask.bias  # (1, )
        return (mask_weight, mask_bias, self.channel_add_conv,
                self.channel_mul_conv)

    def extra_repr(self) -> str:
        return (f'pooling_type={self.pooling_type!r}, '
                f'fusion_types={self.fusion_types!r}, '
                f'transform={self.transform!r}, planes={self.planes}')


@MODELS.register_module()
class SNLBlock(ContextBlock):
    """Simplified non-local block (paper Sec. 3.2, Fig. 3(b)).

    Attention pooling, then a single 1x1 conv C -> C, then broadcast add: a
    :class:`ContextBlock` with ``transform='linear'``. Its conv starts at
    zero, so the block is the identity at init. Parameters are named
    ``conv_mask`` and ``channel_add_conv.0``.

    Args:
        in_channels: channels C of the input feature map.
        init_cfg: mmengine initialisation config; replaces the block's own
            initialisation in :meth:`init_weights` when given.

    Shape:
        input (B, C, H, W) -> output (B, C, H, W).
    """

    _abbr_ = 'snl_block'

    def __init__(self,
                 in_channels: int,
                 *,
                 init_cfg: Union[dict, list, None] = None) -> None:
        super().__init__(
            in_channels,
            pooling_type='att',
            fusion_types=('channel_add', ),
            transform='linear',
            init_cfg=init_cfg)
