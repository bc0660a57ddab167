"""Squeeze-and-Excitation (SE) block, the other end of GCNet's design space.

Papers: "Squeeze-and-Excitation Networks", Hu et al., CVPR 2018,
https://arxiv.org/abs/1709.01507; compared against in "GCNet: Non-local
Networks Meet Squeeze-Excitation Networks and Beyond", Cao et al., 2019,
https://arxiv.org/abs/1904.11492 (Table 2(f), "avg + scale").

Reference code: timm's ``timm/layers/squeeze_excite.py`` (``SEModule``, whose
``fc1``/``fc2`` names this block keeps). Pooling and scaling run in
:func:`gcnet_mm.ops.global_context` (average pooling, ``channel_mul`` fusion).
"""
from typing import Optional, Union

from mmengine.model import BaseModule
from torch import Tensor, nn

from gcnet_mm.ops import global_context
from gcnet_mm.registry import MODELS
from ._utils import check_input, check_positive_int, reduced_channels

__all__ = ['SEBlock']


@MODELS.register_module()
class SEBlock(BaseModule):
    """Squeeze-and-Excitation block.

    ``y = x * sigmoid(fc2(relu(fc1(avgpool(x)))))``, with ``fc1``/``fc2``
    1x1 convs C -> C/r -> C. Unlike the GC block it is not the identity at
    init (the paper does not ask for it); layers keep PyTorch's default init.

    Args:
        in_channels: channels C of the input feature map.
        ratio: bottleneck width as a fraction of C,
            ``int(in_channels * ratio)`` channels. Defaults to 1/16 when
            neither ``ratio`` nor ``channels`` is given.
        channels: the bottleneck width as an explicit channel count instead
            of ``ratio``; giving both is an error.
        init_cfg: mmengine initialisation config.

    Shape:
        input (B, C, H, W) -> output (B, C, H, W).
    """

    _abbr_ = 'se_block'

    def __init__(self,
                 in_channels: int,
                 ratio: Optional[float] = None,
                 *,
                 channels: Optional[int] = None,
                 init_cfg: Union[dict, list, None] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        in_channels = check_positive_int('in_channels', in_channels)
        planes = reduced_channels(
            in_channels, ratio, channels, default_ratio=1 / 16)
        self.in_channels = in_channels
        self.ratio = ratio
        self.planes = planes
        self.fc1 = nn.Conv2d(in_channels, planes, kernel_size=1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(planes, in_channels, kernel_size=1)

    def _excite(self, context: Tensor) -> Tensor:
        # (B, C, 1, 1) -> (B, C/r, 1, 1) -> (B, C, 1, 1) gate logits
        return self.fc2(self.act(self.fc1(context)))

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, self.in_channels)  # (B, C, H, W)
        # x * sigmoid(excite(mean over H, W)): (B, C, H, W)
        return global_context(
            x, None, None, add_transform=None, mul_transform=self._excite)
