"""Recompute a GC block's input from the batch norm before it.

A GC block placed after a ResNet Bottleneck's last 1x1 conv (mmdet's
``after_conv3``) reads ``norm3``'s output ``x``, which nothing else keeps for
the backward pass.  Batch norm keeps its own input there, and ``x`` is a
per-channel affine map of it::

    x[:, c] = input[:, c] * alpha[c] + beta[c]

The block's backward reads ``x`` only through products in which ``beta``
cancels (softmax ignores a constant shift of its logits, and the attention
sums to one), so the fused path keeps a reference to batch norm's input and
the C values of ``alpha`` instead of a full copy of ``x``: with the CPU's,
cuDNN's or SyncBN's batch norm alike, the GC block then adds no activation
memory of the feature map's size to a train step.

Everything here uses public PyTorch interfaces:

* :class:`NormTracker` (one per block) learns the block's parent module when
  the parent registers it (a module-registration hook,
  ``torch.nn.modules.module.register_module_module_registration_hook``,
  removed once the block is registered or gone), and gives the parent a
  forward pre-hook (:class:`HookNorms`).
* Before each call of the parent, that pre-hook puts a forward hook
  (:func:`note_norm_io`, ``prepend=True``) on each batch norm among the
  parent's children and grandchildren (mmdet's, mmseg's and mmpretrain's
  Bottleneck ``norm1`` to ``norm3``; mmaction2's ``conv3.bn``) that lacks
  one, so a layer swapped for another (``nn.SyncBatchNorm
  .convert_sync_batchnorm``, mmengine's ``revert_sync_batchnorm``) is hooked
  before it runs.
* The hook notes the layer's ``(input, output)`` (weak references) and the
  output's ``grad_fn``; the block, called on that output unmodified (the
  same ``grad_fn``), takes the note, and the parent's forward hook
  (:func:`drop_note`) drops one that no block took.  From the
  first training call on, the same way in every run, so a resumed run
  computes what a run that went straight through does.
* ``alpha`` costs no pass over the feature map.  In eval mode it is the
  layer's ``weight / sqrt(running_var + eps)``.  In training mode (the
  batch's statistics, of this process or, for a SyncBN, of all of them) it
  is the per-channel least-squares slope of ``x`` on the input at 64 fixed
  positions per channel: ``x`` is exactly affine in the input, so the slope
  is exact up to the rounding of ``x``, which the fit's residuals measure.
  A channel whose sample does not pin the slope down to ``x``'s precision
  (its input nearly constant there) takes the slope from all its positions
  (the batch variance, or with several processes the least-squares slope).

Where no batch norm made ``x`` (or it was modified in place since, e.g. by a
ReLU), the block keeps ``x``, as mmcv's does.
"""
import functools
import math
import random
import threading
import weakref
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules import module as module_hooks

from .threads import one_thread

__all__ = [
    'NormSource', 'NormTracker', 'HookNorms', 'note_norm_io', 'drop_note'
]

# Layers whose output is an affine map of their input, per channel.
_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class NormSource(NamedTuple):
    """``x[:, c] == input[:, c] * alpha[c] + beta[c]`` for some ``beta``.

    ``alpha`` is float32 (float64 for a float64 input), shape (C,).
    """
    input: Tensor
    alpha: Tensor


class _Note(NamedTuple):
    output: 'weakref.ref[Tensor]'
    # The output's grad_fn when it was noted: held, as torch may give a node
    # a new Python object (at another address) once none refers to it.  It
    # holds the graph up to the norm, so the note lives no longer than the
    # parent's call (:func:`drop_note`).
    output_node: object
    input: 'weakref.ref[Tensor]'
    module: 'weakref.ref[nn.Module]'


_local = threading.local()  # .note: the last _Note of this thread


def note_norm_io(module: nn.Module, args: tuple, output) -> None:
    """Forward hook on a batch-norm layer: note its input and output (not
    under ``torch.compile``, where the reference path runs)."""
    if torch.compiler.is_compiling():
        return
    if (not torch.is_grad_enabled() or not isinstance(output, Tensor)
            or output.grad_fn is None or not args
            or not isinstance(args[0], Tensor)):
        return
    _local.note = _Note(weakref.ref(output), output.grad_fn,
                        weakref.ref(args[0]), weakref.ref(module))


def drop_note(module: nn.Module, args: tuple, output) -> None:
    """Forward hook on a GC block's parent (run also when the call
    raises): a note that no block took is dropped, and with it the note's
    hold on the graph."""
    _local.note = None


def _take_note(x: Tensor) -> Optional[Tuple[nn.Module, Tensor]]:
    """(layer, input) of the layer whose noted output is ``x``, unmodified,
    or ``None``; the note is used up either way."""
    note = getattr(_local, 'note', None)
    if note is None or note.output() is not x:
        return None
    _local.note = None
    if x.grad_fn is not note.output_node:
        return None  # modified in place since (e.g. an in-place ReLU)
    inp, module = note.input(), note.module()
    if inp is None or module is None:
        return None
    return module, inp


# Registration hooks whose block is registered (or gone), to be removed.
_done: list = []


def _sweep() -> None:
    while _done:
        _done.pop().remove()


def _synchronised(module: nn.Module) -> bool:
    """Whether a training ``module`` normalises with the statistics of
    several processes."""
    if not isinstance(module, nn.SyncBatchNorm):
        return False
    if not (dist.is_available() and dist.is_initialized()):
        return False
    group = module.process_group or dist.group.WORLD
    return dist.get_world_size(group) > 1


# Positions per channel that the slope of x on the input is fitted on: runs
# of _RUN consecutive positions along the last dimension (one cache line or
# so of each channel), one starting in each of as many equal strata of the
# map's positions (all samples in turn, row by row), where drawn from a
# fixed seed (an own generator: the global ones are not touched).  A map
# with few positions gives all of them.
SAMPLE_POSITIONS = 64
_RUN = 8


@functools.lru_cache(maxsize=64)
def _sample_index(shape: Tuple[int, ...],
                  device: torch.device) -> Tuple[Tensor, ...]:
    """Index tensors, one per dimension of ``(B, *spatial)``, of the
    positions sampled from a map of that shape (the same every call)."""
    width = shape[-1]
    total = math.prod(shape)
    if total <= 2 * SAMPLE_POSITIONS:
        flat = list(range(total))
    else:
        run = min(width, _RUN)
        runs = -(-SAMPLE_POSITIONS // run)
        draw = random.Random(0)
        flat = []
        for j in range(runs):
            row, col = divmod(
                draw.randrange(j * total // runs, (j + 1) * total // runs),
                width)
            first = row * width + min(col, width - run)
            flat.extend(range(first, first + run))
    return torch.unravel_index(torch.tensor(flat, device=device), shape)


def _sampled_slope(module: nn.Module, inp: Tensor,
                   x: Tensor) -> Tuple[Tensor, Tensor]:
    """The per-channel least-squares slope of ``x`` on ``inp`` over the
    sampled positions (float64, (C,)), and where the sample pins it down
    (bool, (C,))."""
    index = _sample_index((inp.shape[0], ) + inp.shape[2:], inp.device)
    key = (index[0], slice(None)) + index[1:]
    s = torch.stack((inp[key], x[key])).double()  # (2, K, C)
    k = s.shape[1]
    s = s - s.mean(1, keepdim=True)
    d, v = s  # centred input and output, (K, C) each
    sdd, sdv = (s * d).sum(1)
    slope = sdv / sdd  # not finite where sdd == 0, which ok rules out
    # x is exactly affine in inp, so the residuals are x's rounding, and the
    # slope's standard error, sqrt(sum(r^2) / ((K - 2) sdd)), says how far
    # that moves the slope.
    err2 = torch.addcmul(v, d, slope, value=-1).square_().sum(0)
    tol2 = (torch.finfo(x.dtype).eps / 2)**1.5 * (k - 2)
    ok = (sdd > 0) & (err2 <= slope.square() * sdd * tol2) & (k > 2)
    if module.weight is not None:  # a zero weight: x is constant
        zero = module.weight.detach() == 0
        ok |= zero
        slope.masked_fill_(zero, 0.)
    return slope, ok


def _full_alpha(module: nn.Module, inp: Tensor, x: Tensor,
                weight: Optional[Tensor], dtype: torch.dtype) -> Tensor:
    """``alpha`` from passes over all positions of the given channels: the
    input's batch variance (one process), the least-squares slope of x on
    the input (several processes)."""
    dims = [0] + list(range(2, inp.dim()))
    i = inp.to(dtype)
    if not _synchronised(module):
        alpha = torch.rsqrt(i.var(dim=dims, unbiased=False) + module.eps)
        return alpha if weight is None else alpha * weight.to(dtype)
    di = i - i.mean(dims, keepdim=True)
    num = (di * x.to(dtype)).sum(dims)
    den = (di * di).sum(dims)
    return torch.where(den > 0, num / den.clamp_min(1e-30),
                       torch.zeros_like(num))


def _alpha(module: nn.Module, inp: Tensor, x: Tensor) -> Tensor:
    """``alpha`` (C,) of ``x = norm(inp)``, float32 or float64."""
    dtype = torch.promote_types(inp.dtype, torch.float32)
    weight = None if module.weight is None else module.weight.detach()
    with torch.no_grad():
        if not module.training and module.running_var is not None:
            alpha = torch.rsqrt(module.running_var.to(dtype) + module.eps)
            return alpha if weight is None else alpha * weight.to(dtype)
        # Training: the batch's statistics, fitted on a sample of positions
        # (64 per channel); channels the sample leaves unsure of (nearly
        # constant there, or x rounded coarsely) from all their positions.
        with one_thread(inp.device):  # small: (64, C) elements
            slope, ok = _sampled_slope(module, inp, x)
        alpha = slope.to(dtype)
        if bool(ok.all()):
            return alpha
        if not bool(ok.any()):
            return _full_alpha(module, inp, x, weight, dtype)
        redo = (~ok).nonzero().squeeze(1)
        alpha[redo] = _full_alpha(
            module, inp.index_select(1, redo), x.index_select(1, redo),
            None if weight is None else weight[redo], dtype)
        return alpha


class HookNorms:
    """Forward pre-hook on a GC block's parent: hooks :func:`note_norm_io`
    onto each batch norm among the parent's children and grandchildren that
    lacks it.

    Picklable, and copied with the parent, as its hooks are.
    """

    def __init__(self) -> None:
        # Paths of the norms, found on the first call (the parent's layers
        # all exist by then).
        self.norm_paths: Optional[List[str]] = None

    def __call__(self, parent: nn.Module, args: tuple) -> None:
        if torch.compiler.is_compiling():
            return
        if self.norm_paths is None:
            self.norm_paths = [
                name for name, m in parent.named_modules()
                if name and name.count('.') <= 1 and isinstance(m, _NORMS)
            ]
        for name in self.norm_paths:
            m = parent.get_submodule(name)
            if isinstance(m, _NORMS) and not getattr(m, _NOTES_IO, False):
                m.register_forward_hook(note_norm_io, prepend=True)
                setattr(m, _NOTES_IO, True)


class NormTracker:
    """Gives a block the :class:`NormSource` of its input when a batch norm
    of its parent has just produced it (see the module doc).

    Args:
        block: the block; the tracker gives its parent a :class:`HookNorms`
            pre-hook when the parent registers the block.
    """

    def __init__(self, block: nn.Module) -> None:
        _sweep()
        block_ref = weakref.ref(block)
        handle = None

        def on_registration(module, name, submodule):
            if handle in _done:
                return
            block = block_ref()
            if block is not None and submodule is block:
                if not getattr(module, _HOOKS_NORMS, False):
                    module.register_forward_pre_hook(HookNorms())
                    module.register_forward_hook(drop_note, always_call=True)
                    setattr(module, _HOOKS_NORMS, True)
            if block is None or submodule is block:
                # Removed later: torch is iterating over these hooks now.
                _done.append(handle)

        handle = module_hooks.register_module_module_registration_hook(
            on_registration)

    # Nothing to copy: the parent's hook travels with the parent.
    def __deepcopy__(self, memo) -> 'NormTracker':
        return NormTracker.__new__(NormTracker)

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        pass

    @staticmethod
    def source(x: Tensor) -> Optional[NormSource]:
        """The source of ``x`` if a batch-norm layer's hook has just noted it
        and autograd records this call; else ``None`` (keep ``x`` itself)."""
        if x.grad_fn is None or not torch.is_grad_enabled():
            return None
        _sweep()
        found = _take_note(x)
        if found is None:
            return None
        module, inp = found
        if (inp.shape != x.shape or inp.dtype != x.dtype
                or inp.device != x.device):
            return None
        return NormSource(inp, _alpha(module, inp, x))


# Attributes that say a batch norm carries the note_norm_io hook and a parent
# the HookNorms pre-hook (copied with the module, as its hooks are).
_NOTES_IO = 'gcnet_mm_notes_io'
_HOOKS_NORMS = 'gcnet_mm_hooks_norms'
