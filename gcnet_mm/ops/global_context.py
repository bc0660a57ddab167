"""Global context pooling + fusion, the heavy part of a GC block.

This is the plain reference version (the same arithmetic as mmcv's
ContextBlock); the fast path replaces it behind the same signature.
"""
from typing import Callable, Optional

import torch
from torch import Tensor


def global_context(x: Tensor,
                   mask_weight: Optional[Tensor],
                   mask_bias: Optional[Tensor],
                   add_transform: Optional[Callable[[Tensor], Tensor]] = None,
                   mul_transform: Optional[Callable[[Tensor], Tensor]] = None,
                   ) -> Tensor:
    """``out = x * sigmoid(mul_transform(ctx)) + add_transform(ctx)``.

    Args:
        x: features, (B, C, H, W).
        mask_weight: weight of the 1x1 conv giving attention logits, (1, C, 1, 1);
            ``None`` for average pooling.
        mask_bias: its bias, (1,), or ``None``.
        add_transform / mul_transform: maps the context (B, C, 1, 1) to a
            (B, C, 1, 1) term; ``None`` skips that fusion.
    """
    b, c, h, w = x.shape
    if mask_weight is None:
        context = x.mean(dim=(2, 3), keepdim=True)
    else:
        logits = torch.nn.functional.conv2d(x, mask_weight, mask_bias)
        attn = logits.view(b, 1, h * w).float().softmax(dim=2).to(x.dtype)
        context = torch.bmm(x.reshape(b, c, h * w), attn.transpose(1, 2))
        context = context.view(b, c, 1, 1)  # (B, C, 1, 1)
    out = x
    if mul_transform is not None:
        out = out * torch.sigmoid(mul_transform(context))
    if add_transform is not None:
        out = out + add_transform(context)
    return out
