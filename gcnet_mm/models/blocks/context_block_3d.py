"""The GC block and the simplified NL block on video features.

Paper: "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
Cao et al., ICCV Workshops 2019, https://arxiv.org/abs/1904.11492 (Sec. 5.3,
Table 5: slow-only ResNet-50 on Kinetics-400).

Attention pooling weighs every position of a clip, T x H x W, with one
softmax, so a (B, C, T, H, W) tensor goes through the 2-D blocks' op,
:func:`gcnet_mm.ops.global_context`, as its (B, C, T, H*W) view: same
arithmetic, same fast path.  :class:`ContextBlock3d` and :class:`SNLBlock3d`
are :class:`~gcnet_mm.models.blocks.ContextBlock` and
:class:`~gcnet_mm.models.blocks.SNLBlock` (same arguments, design space and
parameter names) with each 1x1 conv a 1x1x1 ``Conv3d`` and each
``LayerNorm([P, 1, 1])`` a ``LayerNorm([P, 1, 1, 1])``, so their state dicts
are those of a 3-D model (``conv_mask.weight`` is (1, C, 1, 1, 1)), and a
2-D block's state dict loads after ``unsqueeze(-1)`` of every tensor.
"""
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from gcnet_mm.ops import global_context
from gcnet_mm.ops.norm_source import NormSource, NormTracker
from gcnet_mm.registry import MODELS
from ._utils import check_input
from .context_block import ContextBlock, SNLBlock

__all__ = ['ContextBlock3d', 'SNLBlock3d', 'inflate_1x1_']


def inflate_1x1_(module: nn.Module) -> nn.Module:
    """Turn the 2-D layers below ``module`` into their 3-D twins, in place.

    A 1x1 ``Conv2d`` becomes a 1x1x1 ``Conv3d``, a ``LayerNorm([P, 1, 1])`` a
    ``LayerNorm([P, 1, 1, 1])`` and an ``AdaptiveAvgPool2d(1)`` an
    ``AdaptiveAvgPool3d(1)``, with the same parameters (``unsqueeze(-1)``);
    on a (B, C, 1, 1, 1) tensor each computes what the 2-D layer does on
    (B, C, 1, 1).  Conv and LayerNorm weights gain a trailing dimension of
    one; biases keep their shape.  Layers without parameters (ReLU, Softmax)
    stay.

    Raises:
        TypeError: a layer with parameters that has no such twin.
    """
    for name, child in module.named_children():
        if type(child) is nn.Conv2d:
            if (child.kernel_size != (1, 1) or child.stride != (1, 1)
                    or child.padding != (0, 0) or child.dilation != (1, 1)
                    or child.groups != 1):
                raise TypeError(f'{name}: only plain 1x1 convs inflate to '
                                f'1x1x1, got {child}')
            new = nn.Conv3d(child.in_channels, child.out_channels, 1,
                            bias=child.bias is not None,
                            device=child.weight.device,
                            dtype=child.weight.dtype)
        elif type(child) is nn.LayerNorm:
            new = nn.LayerNorm(
                tuple(child.normalized_shape) + (1, ), eps=child.eps,
                elementwise_affine=child.elementwise_affine,
                device=None if child.weight is None else child.weight.device,
                dtype=None if child.weight is None else child.weight.dtype)
        elif type(child) is nn.AdaptiveAvgPool2d:
            new = nn.AdaptiveAvgPool3d(1)
        elif any(True for _ in child.parameters(recurse=False)):
            raise TypeError(f'{name}: no 3-D twin for {type(child).__name__}')
        else:
            inflate_1x1_(child)
            continue
        with torch.no_grad():
            for key, param in child.named_parameters(recurse=False):
                target = getattr(new, key)
                target.copy_(param.reshape(target.shape))
        setattr(module, name, new)
    return module


def _on_context(branch: Optional[nn.Module]
                ) -> Optional[Callable[[Tensor], Tensor]]:
    """A 3-D transform branch as the op's transform of a (B, C, 1, 1)
    context: run on its (B, C, 1, 1, 1) view."""
    if branch is None:
        return None
    return lambda context: branch(context.unsqueeze(-1)).squeeze(-1)


class _VideoBlock:
    """Makes a 2-D GC-style block (listed after this class in the bases) the
    same block on (B, C, T, H, W): 3-D layers, and the 2-D op on the
    (B, C, T, H*W) view; ``mask_bias=False`` drops ``conv_mask``'s bias."""

    def __init__(self, *args, mask_bias: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        inflate_1x1_(self)
        if not isinstance(mask_bias, bool):
            raise TypeError(f'mask_bias must be True or False, got '
                            f'{mask_bias!r}')
        self.mask_bias = mask_bias
        if not mask_bias and self.conv_mask is not None:
            weight = self.conv_mask.weight
            self.conv_mask = nn.Conv3d(self.in_channels, 1, 1, bias=False,
                                       device=weight.device,
                                       dtype=weight.dtype)
            with torch.no_grad():
                self.conv_mask.weight.copy_(weight)

    def _video_args(self, c: int):
        mask = self.conv_mask
        return (None if mask is None else mask.weight.view(1, c, 1, 1),
                None if mask is None else mask.bias,
                _on_context(self.channel_add_conv),
                _on_context(self.channel_mul_conv))

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels, ndim=5)  # (B, C, T, H, W)
        b, c, t, h, w = x.shape
        x4 = x.reshape(b, c, t, h * w)
        out = global_context(x4, *self._video_args(c),
                             norm_tracker=_OnView(self._norm_tracker, x))
        return out.reshape(b, c, t, h, w)


class _OnView:
    """The block's :class:`NormTracker` asked about the (B, C, T, H, W)
    input ``x`` when the op asks about its (B, C, T, H*W) view."""

    def __init__(self, tracker: NormTracker, x: Tensor) -> None:
        self.tracker = tracker
        self.x = x

    def source(self, view: Tensor) -> Optional[NormSource]:
        found = self.tracker.source(self.x)
        if found is None:
            return None
        return NormSource(found.input.reshape(view.shape), found.alpha)


@MODELS.register_module()
class ContextBlock3d(_VideoBlock, ContextBlock):
    """Global context block on video features (B, C, T, H, W).

    :class:`ContextBlock` with attention (or average) pooling over all
    T x H x W positions and 1x1x1 convs: the same arguments (``ratio``,
    ``pooling_type``, ``fusion_types``, ``channels``, ``transform``,
    ``init_cfg``), design space, initialisation (zero last conv: the
    identity at init) and parameter names (``conv_mask``,
    ``channel_add_conv.{0,1,3}``, ...), with 3-D shapes.  The paper's video GC
    block (Table 5) is ``ContextBlock3d(C, ratio=1 / 4, mask_bias=False)``.

    Args:
        mask_bias: keyword-only; ``False`` builds ``conv_mask`` without its
            bias (mmcv's has one). The bias adds the same constant to every
            attention logit, which the softmax ignores: it changes no output
            and gets an exact zero gradient. Without it the block has one
            parameter less, as the paper's Table 5 counts (42.45M for GC in
            every residual block of c3-c5; mmcv's layout has 42.455005M).
        others: as :class:`ContextBlock`.

    Shape:
        input (B, C, T, H, W) -> output (B, C, T, H, W).
    """


@MODELS.register_module()
class SNLBlock3d(_VideoBlock, SNLBlock):
    """Simplified non-local block on video features (B, C, T, H, W).

    :class:`SNLBlock` (attention pooling over all T x H x W positions, one
    1x1x1 conv C -> C starting at zero, broadcast add); parameters
    ``conv_mask`` and ``channel_add_conv.0``.

    Args:
        in_channels: channels C of the input feature map.
        mask_bias: ``False`` builds ``conv_mask`` without its (inert) bias,
            see :class:`ContextBlock3d`.
        init_cfg: mmengine initialisation config; replaces the block's own
            initialisation in :meth:`init_weights` when given.

    Shape:
        input (B, C, T, H, W) -> output (B, C, T, H, W).
    """
