"""The attention map of a GC block: where its context comes from.

A GC block with attention pooling (``pooling_type='att'``) computes one
weight per position, ``softmax over the H*W positions of conv_mask(x)``, and
pools the features with it into the (B, C, 1, 1) global context (paper Fig.
4(a), "context modelling"). :func:`context_attention` recomputes those
weights from the block's own ``conv_mask`` and input;
:func:`record_context_attention` captures them for the GC blocks of a whole
model while it runs, with forward pre-hooks (the model's outputs are
unchanged).

Works for ``gcnet_mm.ContextBlock`` / ``SNLBlock`` and for mmcv's
``ContextBlock`` alike (both name the conv ``conv_mask``).
"""
import contextlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = [
    'context_attention', 'find_context_blocks', 'record_context_attention'
]


def _has_attention(module: nn.Module) -> bool:
    mask = getattr(module, 'conv_mask', None)
    return (getattr(module, 'pooling_type', None) == 'att'
            and isinstance(mask, nn.Conv2d) and mask.out_channels == 1)


def find_context_blocks(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(name, block)`` of every GC block with attention pooling in
    ``model``, in module order (``'avg'`` pooling has no attention map)."""
    return [(name, m) for name, m in model.named_modules()
            if _has_attention(m)]


def context_attention(block: nn.Module, x: Tensor) -> Tensor:
    """The attention weights of ``block`` on its input ``x``.

    Args:
        block: a GC block with ``pooling_type='att'`` (gcnet_mm's or mmcv's
            ``ContextBlock``, or ``SNLBlock``).
        x: the block's input, (B, C, H, W).

    Returns:
        (B, H, W) float32, non-negative, summing to 1 over H x W for each
        image: ``softmax(conv_mask(x).flatten())`` reshaped.

    Raises:
        ValueError: ``block`` has no attention pooling, or ``x`` is not
            (B, C, H, W) with the block's channels.
    """
    if not _has_attention(block):
        raise ValueError(
            f'{type(block).__name__} has no attention pooling (it needs '
            "pooling_type='att' and a conv_mask to one channel), got "
            f"pooling_type={getattr(block, 'pooling_type', None)!r}")
    if x.dim() != 4 or x.shape[1] != block.conv_mask.in_channels:
        raise ValueError(
            f'expected the block input (B, {block.conv_mask.in_channels}, H, '
            f'W), got a tensor of shape {tuple(x.shape)}')
    b, _, h, w = x.shape
    logits = block.conv_mask(x).reshape(b, h * w)  # (B, H*W)
    return logits.float().softmax(dim=1).reshape(b, h, w)


@contextlib.contextmanager
def record_context_attention(
    model: nn.Module,
    names: Optional[Sequence[str]] = None
) -> Iterator[Dict[str, List[Tensor]]]:
    """Record the attention maps of GC blocks while ``model`` runs.

    Example::

        name = 'backbone.layer3.5.context_block'
        with record_context_attention(model, [name]) as maps:
            model.test_step(data)
        attention = maps[name][0]  # (B, H, W)

    Args:
        model: any module holding GC blocks.
        names: which blocks (module names); default every block with
            attention pooling.

    Yields:
        A dict, block name -> list of (B, H, W) maps (detached, on the CPU),
        one per call of the block, filled as the model runs.

    Raises:
        ValueError: a name is not a GC block with attention pooling of the
            model (the message lists the ones there are).
    """
    blocks = dict(find_context_blocks(model))
    if names is None:
        names = list(blocks)
    unknown = [n for n in names if n not in blocks]
    if unknown:
        raise ValueError(
            f'no GC block with attention pooling named {unknown} in '
            f'{type(model).__name__}; there are {list(blocks) or "none"}')
    maps: Dict[str, List[Tensor]] = {name: [] for name in names}
    handles = []
    for name in names:

        def hook(block, args, name=name):
            with torch.no_grad():
                maps[name].append(
                    context_attention(block, args[0]).detach().cpu())

        handles.append(blocks[name].register_forward_pre_hook(hook))
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()
