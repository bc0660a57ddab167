"""mmdet's ResNet and ResNeXt, with a GC block's fusion fused into the
residual add.

Paper: "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
Cao et al., ICCV Workshops 2019, https://arxiv.org/abs/1904.11492 (GC blocks
after the last 1x1 conv of every residual block of c3-c5).

``gcnet_mm.ResNet`` and ``gcnet_mm.ResNeXt`` take mmdet's arguments and build
mmdet's modules under mmdet's names, so configs and state dicts are mmdet's
(every released GCNet checkpoint loads strictly).  The only difference is the
end of a Bottleneck whose ``after_conv3`` plugin is one
:class:`~gcnet_mm.models.blocks.ContextBlock`: where mmdet runs ::

    out = block(norm3(conv3(...)))     # y = x + t: read x, write y
    out += identity                    # read y and identity, write y
    out = relu(out)                    # read y, write y

these Bottlenecks call ``block.forward_residual(x, identity)``, one pass
(read x and identity, write out) with the fused CPU loops, and in backward
the ReLU's mask and the block's ``sum(g)`` come from one read of the
gradient.  Same arithmetic as mmdet's Bottleneck (its outputs to float
rounding); anything else (other plugins, hooks on the block, tracing,
scripting, ``torch.compile``) runs mmdet's own forward.
"""
from typing import Optional

import torch
import torch.utils.checkpoint as cp
from mmdet.models.backbones import ResNet as MMDetResNet
from mmdet.models.backbones import ResNeXt as MMDetResNeXt
from mmdet.models.backbones.resnet import Bottleneck as ResNetBottleneck
from mmdet.models.backbones.resnext import Bottleneck as ResNeXtBottleneck
from torch import Tensor
from torch.nn.modules import module as _module_hooks

from gcnet_mm.registry import MODELS
from .blocks import ContextBlock

__all__ = ['ResNet', 'ResNeXt']


class _FusedResidualMixin:
    """``forward`` of an mmdet Bottleneck whose last plugin is a GC block."""

    def _residual_block(self) -> Optional[ContextBlock]:
        """The ``after_conv3`` GC block to fuse with the residual add, or
        ``None`` to run mmdet's forward."""
        if not self.with_plugins or len(self.after_conv3_plugin_names) != 1:
            return None
        block = getattr(self, self.after_conv3_plugin_names[0])
        if not isinstance(block, ContextBlock):
            return None
        if (block._forward_hooks or block._forward_pre_hooks
                or _module_hooks._global_forward_hooks
                or _module_hooks._global_forward_pre_hooks):
            return None  # observers of the block expect it to be called
        if (torch.jit.is_scripting() or torch.jit.is_tracing()
                or torch.compiler.is_compiling()
                or torch.onnx.is_in_onnx_export()):
            return None
        return block

    def forward(self, x: Tensor) -> Tensor:
        block = self._residual_block()
        if block is None:
            return super().forward(x)

        def _inner_forward(x):  # mmdet's, up to the residual add
            identity = x
            out = self.conv1(x)
            out = self.norm1(out)
            out = self.relu(out)
            out = self.forward_plugin(out, self.after_conv1_plugin_names)
            out = self.conv2(out)
            out = self.norm2(out)
            out = self.relu(out)
            out = self.forward_plugin(out, self.after_conv2_plugin_names)
            out = self.conv3(out)
            out = self.norm3(out)
            if self.downsample is not None:
                identity = self.downsample(x)
            # norm3's output is read by nothing else (unless hooked), and
            # mmdet adds the identity into it in place too.
            return block.forward_residual(
                out, identity, relu=True,
                overwrite_x=not (self.norm3._forward_hooks
                                 or self.norm3._forward_pre_hooks))

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


class FusedResNetBottleneck(_FusedResidualMixin, ResNetBottleneck):
    """mmdet's ResNet Bottleneck, its GC block fused with the residual add."""


class FusedResNeXtBottleneck(_FusedResidualMixin, ResNeXtBottleneck):
    """mmdet's ResNeXt Bottleneck, its GC block fused with the residual add."""


class _FusedBackboneMixin:
    """Builds each residual layer with the fused subclass of mmdet's block;
    ``arch_settings`` (and so ``self.block``, which mmdet's initialisation
    compares with its own Bottleneck) stay mmdet's."""

    _fused_blocks: dict = {}

    def make_res_layer(self, **kwargs):
        block = kwargs.get('block')
        kwargs['block'] = self._fused_blocks.get(block, block)
        return super().make_res_layer(**kwargs)


@MODELS.register_module()
class ResNet(_FusedBackboneMixin, MMDetResNet):
    """mmdet's ``ResNet`` whose Bottlenecks fuse an ``after_conv3``
    :class:`~gcnet_mm.models.blocks.ContextBlock` with the residual add and
    ReLU; same arguments, modules and state dict (see module doc)."""

    _fused_blocks = {ResNetBottleneck: FusedResNetBottleneck}


@MODELS.register_module()
class ResNeXt(_FusedBackboneMixin, MMDetResNeXt):
    """mmdet's ``ResNeXt`` whose Bottlenecks fuse an ``after_conv3``
    :class:`~gcnet_mm.models.blocks.ContextBlock` with the residual add and
    ReLU; same arguments, modules and state dict (see module doc)."""

    _fused_blocks = {ResNeXtBottleneck: FusedResNeXtBottleneck}
