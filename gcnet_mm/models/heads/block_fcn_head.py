"""FCN-style decode heads with a block between their two convs.

Paper: "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
Cao et al., ICCV Workshops 2019, https://arxiv.org/abs/1904.11492 (the
Cityscapes head comparison: FCN baseline, NL-Head, SNL-Head, GC-Head, all on
the same two-conv FCN head).

Reference code consulted: mmsegmentation 1.2.2
``mmseg/models/decode_heads/{gc_head,nl_head,fcn_head}.py``. :class:`GCHead`
and :class:`NonLocalHead` keep the arguments and parameter names of mmseg's
``GCHead`` and ``NLHead`` (``decode_head.gc_block.*``,
``decode_head.nl_block.*``), so mmseg's released checkpoints load strictly,
but build gcnet_mm's blocks. The plain FCN baseline is mmseg's
``FCNHead(num_convs=2)``.
"""
from typing import Any, List, Sequence

import torch
from mmengine.registry import DefaultScope
from mmseg.models.decode_heads.fcn_head import FCNHead
from torch import Tensor

from gcnet_mm.registry import MODELS

__all__ = ['BlockFCNHead', 'GCHead', 'NonLocalHead', 'SNLHead']


@MODELS.register_module()
class BlockFCNHead(FCNHead):
    """An mmseg ``FCNHead`` with ``num_convs=2`` and a block between the convs.

    ``x -> convs[0] -> block -> convs[1] -> (conv_cat with x) -> cls_seg``,
    the layout of mmseg's ``GCHead`` and ``NLHead``.

    Args:
        block_cfg: config of the block, built with
            ``gcnet_mm.registry.MODELS`` (an unscoped type resolves to
            gcnet_mm's class first); ``in_channels`` is set to ``channels``.
        block_name: attribute (and state-dict) name of the block, e.g.
            ``'gc_block'``.
        **kwargs: the arguments of mmseg's ``FCNHead`` (``in_channels``,
            ``channels``, ``num_classes``, ``kernel_size``,
            ``concat_input``, ``dilation``, ``norm_cfg``, ...) except
            ``num_convs``, which is always 2.

    Raises:
        TypeError: ``block_cfg`` is not a config dict, or ``num_convs`` is
            given.
        ValueError: ``block_name`` is not a free identifier, or
            ``block_cfg`` sets a different ``in_channels``.
    """

    def __init__(self,
                 *,
                 block_cfg: dict,
                 block_name: str = 'block',
                 **kwargs: Any) -> None:
        if 'num_convs' in kwargs:
            raise TypeError(
                f'{type(self).__name__} always has num_convs=2 (the block '
                f"sits between the two convs); got num_convs="
                f"{kwargs['num_convs']!r}. Use mmseg's FCNHead for other "
                f'depths')
        if not isinstance(block_cfg, dict) or 'type' not in block_cfg:
            raise TypeError(f"block_cfg must be a config dict with a 'type', "
                            f'got {block_cfg!r}')
        super().__init__(num_convs=2, **kwargs)
        if not (isinstance(block_name, str) and block_name.isidentifier()
                and not hasattr(self, block_name)):
            raise ValueError(f'block_name must be an identifier not used by '
                             f'the head, got {block_name!r}')
        cfg = dict(block_cfg)
        given = cfg.get('in_channels')
        if given is not None and given != self.channels:
            raise ValueError(
                f'block_cfg sets in_channels={given!r}, but the block sees '
                f'the head\'s channels={self.channels}; leave it out')
        cfg['in_channels'] = self.channels
        with DefaultScope.overwrite_default_scope('gcnet_mm'):
            block = MODELS.build(cfg)
        self.block_name = block_name
        self.add_module(block_name, block)

    def forward(self, inputs: List[Tensor]) -> Tensor:
        """Segmentation logits (B, num_classes, H, W) of the chosen input."""
        x = self._transform_inputs(inputs)  # (B, in_channels, H, W)
        output = self.convs[0](x)  # (B, channels, H, W)
        output = getattr(self, self.block_name)(output)
        output = self.convs[1](output)
        if self.concat_input:
            output = self.conv_cat(torch.cat([x, output], dim=1))
        return self.cls_seg(output)


@MODELS.register_module()
class GCHead(BlockFCNHead):
    """GC-Head: mmseg's ``GCHead`` built with gcnet_mm's ``ContextBlock``.

    Same signature, defaults and parameter names as
    ``mmseg.models.decode_heads.GCHead``; the block is ``gc_block``.

    Args:
        ratio: bottleneck ratio of the GC block (``int(channels * ratio)``
            hidden channels).
        pooling_type: ``'att'`` (attention pooling) or ``'avg'``.
        fusion_types: ``'channel_add'`` and/or ``'channel_mul'``.
        **kwargs: the arguments of mmseg's ``FCNHead`` except ``num_convs``.
    """

    def __init__(self,
                 ratio: float = 1 / 4.,
                 pooling_type: str = 'att',
                 fusion_types: Sequence[str] = ('channel_add', ),
                 **kwargs: Any) -> None:
        super().__init__(block_cfg=dict(type='gcnet_mm.ContextBlock',
                                        ratio=ratio,
                                        pooling_type=pooling_type,
                                        fusion_types=tuple(fusion_types)),
                         block_name='gc_block',
                         **kwargs)
        self.ratio = ratio
        self.pooling_type = pooling_type
        self.fusion_types = tuple(fusion_types)


@MODELS.register_module()
class NonLocalHead(BlockFCNHead):
    """NL-Head: mmseg's ``NLHead`` built with gcnet_mm's ``NonLocalBlock``.

    Same signature, defaults and parameter names as
    ``mmseg.models.decode_heads.NLHead``; the block is ``nl_block`` and uses
    the head's ``conv_cfg`` and ``norm_cfg`` (a norm on the block's
    ``conv_out`` when the head has one, as in mmseg).

    Args:
        reduction: channel reduction of the theta/phi/g projections.
        use_scale: scale the pairwise weights by ``1/sqrt(inter_channels)``.
        mode: ``'embedded_gaussian'``, ``'dot_product'``, ``'gaussian'`` or
            ``'concatenation'`` (mmcv's ``NonLocal2d`` modes).
        **kwargs: the arguments of mmseg's ``FCNHead`` except ``num_convs``.
    """

    def __init__(self,
                 reduction: int = 2,
                 use_scale: bool = True,
                 mode: str = 'embedded_gaussian',
                 **kwargs: Any) -> None:
        super().__init__(block_cfg=dict(type='gcnet_mm.NonLocalBlock',
                                        reduction=reduction,
                                        use_scale=use_scale,
                                        conv_cfg=kwargs.get('conv_cfg'),
                                        norm_cfg=kwargs.get('norm_cfg'),
                                        mode=mode),
                         block_name='nl_block',
                         **kwargs)
        self.reduction = reduction
        self.use_scale = use_scale
        self.mode = mode


@MODELS.register_module()
class SNLHead(BlockFCNHead):
    """SNL-Head: the FCN head with a simplified non-local block ``snl_block``.

    Args:
        **kwargs: the arguments of mmseg's ``FCNHead`` except ``num_convs``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(block_cfg=dict(type='gcnet_mm.SNLBlock'),
                         block_name='snl_block',
                         **kwargs)
