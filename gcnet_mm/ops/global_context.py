"""Global context pooling + fusion, the heavy part of a GC block.

GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond,
https://arxiv.org/abs/1904.11492; same arithmetic as mmcv's ContextBlock.

Two paths behind one signature:

* lean (``attention_pool.py``): attention pooling with additive fusion only,
  when autograd records the call in eager mode.  0.2x to 0.4x of mmcv's time
  for forward + backward on the CPU, and it saves no copy of ``x`` when ``x`` is a
  batch-norm output (a Bottleneck's ``norm3``), see ``affine_source.py``.
* plain (``reference_global_context``): everything else -- average pooling, the
  multiplicative fusion, inference, ``torch.jit`` tracing or scripting,
  ``torch.compile`` / ``torch.export`` / ONNX export -- written with ops those
  tools know (``matmul``, not a 1x1 conv, for the attention logits).
"""
from typing import Callable, Optional

import torch
from torch import Tensor

from .affine_source import batch_norm_source
from .dispatch import use_fused
from .attention_pool import GradLink, as_matrix, attention_pool, depends_on, \
    fuse_add, fuse_residual

__all__ = [
    'global_context', 'global_context_residual', 'reference_global_context'
]

Transform = Callable[[Tensor], Tensor]


def global_context(x: Tensor,
                   mask_weight: Optional[Tensor],
                   mask_bias: Optional[Tensor],
                   add_transform: Optional[Transform] = None,
                   mul_transform: Optional[Transform] = None,
                   ) -> Tensor:
    """``out = x * sigmoid(mul_transform(ctx)) + add_transform(ctx)``.

    Args:
        x: features, (B, C, H, W), any memory layout.
        mask_weight: weight of the 1x1 conv giving attention logits,
            (1, C, 1, 1); ``None`` for average pooling.
        mask_bias: its bias, (1,), or ``None``.
        add_transform / mul_transform: maps the context (B, C, 1, 1) to a
            (B, C, 1, 1) term; ``None`` skips that fusion.

    Returns:
        (B, C, H, W), in the memory layout of ``x``.
    """
    if _lean_path_applies(x, mask_weight, add_transform, mul_transform):
        return _lean_global_context(x, mask_weight, mask_bias, add_transform)
    return reference_global_context(x, mask_weight, mask_bias, add_transform,
                                mul_transform)


def global_context_residual(x: Tensor,
                            mask_weight: Optional[Tensor],
                            mask_bias: Optional[Tensor],
                            add_transform: Optional[Transform],
                            mul_transform: Optional[Transform],
                            identity: Tensor,
                            relu: bool = True,
                            overwrite_x: bool = False) -> Tensor:
    """``relu(global_context(x, ...) + identity)``: a Bottleneck ending in a
    GC block (``after_conv3``), its residual add and ReLU.

    On the lean path the block's fusion, the residual add and the ReLU are one
    pass over the feature map (``attention_pool.py``, ``_FuseResidual``);
    otherwise mmdet's order of ops: ``out = block(x); out += identity;
    relu_(out)``.  ``relu=False`` leaves the ReLU out.

    ``overwrite_x=True`` promises that nothing else reads ``x`` afterwards
    (mmdet's Bottleneck adds the identity into it in place): the result may
    then reuse its storage, where ``x`` is a batch-norm output that the
    pooling does not save (see ``affine_source.py``).
    """
    if (identity.shape == x.shape
            and _lean_path_applies(x, mask_weight, add_transform,
                                   mul_transform)):
        return _lean_global_context(x, mask_weight, mask_bias, add_transform,
                                    identity, relu, overwrite_x)
    out = global_context(x, mask_weight, mask_bias, add_transform,
                         mul_transform)
    return _add_residual(out, identity, relu)


def _add_residual(out: Tensor, identity: Tensor, relu: bool) -> Tensor:
    """mmdet's end of a Bottleneck on a fresh ``out``: ``out += identity``,
    then the in-place ReLU."""
    out += identity
    return out.relu_() if relu else out


def reference_global_context(x: Tensor,
                         mask_weight: Optional[Tensor],
                         mask_bias: Optional[Tensor],
                         add_transform: Optional[Transform] = None,
                         mul_transform: Optional[Transform] = None,
                         ) -> Tensor:
    """Reference :func:`global_context` in plain differentiable ops."""
    b, c, h, w = x.shape
    if mask_weight is None:
        context = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    else:
        x3 = x.reshape(b, c, h * w)  # (B, C, HW); a view for usual layouts
        logits = torch.matmul(mask_weight.reshape(1, 1, c).to(x.dtype), x3)
        if mask_bias is not None:
            logits = logits + mask_bias.to(logits.dtype)
        acc = torch.promote_types(logits.dtype, torch.float32)
        attn = logits.to(acc).softmax(dim=2).to(x3.dtype)  # (B, 1, HW)
        context = torch.matmul(x3, attn.transpose(1, 2))  # (B, C, 1)
        context = context.view(b, c, 1, 1)
    out = x
    if mul_transform is not None:
        out = out * torch.sigmoid(mul_transform(context))
    if add_transform is not None:
        out = out + add_transform(context)
    return out


def _lean_path_applies(x: Tensor, mask_weight: Optional[Tensor],
                       add_transform, mul_transform) -> bool:
    if (not use_fused() or mask_weight is None or add_transform is None
            or mul_transform is not None):
        return False
    if not torch.is_grad_enabled() or not (x.requires_grad
                                           or mask_weight.requires_grad):
        return False  # nothing to save: the plain ops are as fast
    if (torch.jit.is_scripting() or torch.jit.is_tracing()
            or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export()):
        return False
    return (x.dim() == 4 and x.is_floating_point() and x.numel() > 0
            and mask_weight.numel() == x.shape[1])


def _lean_global_context(x: Tensor, mask_weight: Tensor,
                         mask_bias: Optional[Tensor],
                         add_transform: Transform,
                         identity: Optional[Tensor] = None,
                         relu: bool = False,
                         overwrite_x: bool = False) -> Tensor:
    b, c = x.shape[:2]
    source = batch_norm_source(x)
    if source is not None and as_matrix(source.input)[0] is None:
        source = None
    if as_matrix(x)[0] is None:
        x = x.contiguous()  # one copy; the pooling reads x twice
    # Only where the pooling saves batch norm's tensors instead of x.
    overwrite_x = overwrite_x and source is not None
    link = GradLink()
    context = attention_pool(x, mask_weight, mask_bias, link, source)
    t = add_transform(context.view(b, c, 1, 1))  # (B, C, 1, 1)
    if x.requires_grad and not depends_on(t, context.grad_fn):
        # dL/dx would never reach the pooling node; let autograd add it.
        out = x + t
        return out if identity is None else _add_residual(out, identity, relu)
    if identity is not None:
        return fuse_residual(x, t, identity, link, relu, overwrite_x)
    return fuse_add(x, t, link)
