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
  removed once the block is registered or gone).
* On the block's first call that autograd records, with an input made by a
  batch-norm autograd node (``Node.name()``), it puts a forward hook
  (:func:`note_norm_io`) on each batch-norm child of the parent (mmdet's,
  mmseg's, mmpretrain's Bottleneck: ``norm1`` to ``norm3``); that call keeps
  ``x`` as mmcv's block does.
* On the next such call the hook of the layer that produced ``x`` has noted
  ``(input, output)`` (weak references only): that hook stays, the others go.
  If none matches, all go and the block keeps ``x`` from then on.
* ``alpha`` comes from the layer's public state: the running variance in eval
  mode, the batch variance of the input in training mode, and, for a
  :class:`~torch.nn.SyncBatchNorm` that synchronises over several processes,
  the per-channel least-squares slope of ``x`` on the input.

A layer swapped for another (``nn.SyncBatchNorm.convert_sync_batchnorm``,
mmengine's ``revert_sync_batchnorm``) loses the hook; the block then looks
again once.
"""
import threading
import weakref
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules import module as module_hooks

__all__ = ['NormSource', 'NormTracker', 'note_norm_io']

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
    output_node: int  # id of the output's grad_fn when it was noted
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
    _local.note = _Note(weakref.ref(output), id(output.grad_fn),
                        weakref.ref(args[0]), weakref.ref(module))


def _take_note(x: Tensor) -> Optional[Tuple[nn.Module, Tensor]]:
    """(layer, input) of the layer whose noted output is ``x``, unmodified,
    or ``None``; the note is used up either way."""
    note = getattr(_local, 'note', None)
    if note is None or note.output() is not x:
        return None
    _local.note = None
    if id(x.grad_fn) != note.output_node:
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


def _from_norm_node(x: Tensor) -> bool:
    fn = x.grad_fn
    return fn is not None and 'BatchNorm' in fn.name()


def _synchronised(module: nn.Module, training: bool) -> bool:
    if not isinstance(module, nn.SyncBatchNorm) or not training:
        return False
    if not (dist.is_available() and dist.is_initialized()):
        return False
    group = module.process_group or dist.group.WORLD
    return dist.get_world_size(group) > 1


def _alpha(module: nn.Module, inp: Tensor, x: Tensor) -> Tensor:
    """``alpha`` (C,) of ``x = norm(inp)``, float32 or float64."""
    dtype = torch.promote_types(inp.dtype, torch.float32)
    training = module.training or module.running_var is None
    dims = [0] + list(range(2, inp.dim()))
    with torch.no_grad():
        if _synchronised(module, training):
            # Statistics of all processes: the least-squares slope of x on
            # the input, per channel (exact for any affine map).
            i = inp.to(dtype)
            di = i - i.mean(dims, keepdim=True)
            num = (di * x.to(dtype)).sum(dims)
            den = (di * di).sum(dims)
            return torch.where(den > 0, num / den.clamp_min(1e-30),
                               torch.zeros_like(num))
        if training:
            var = inp.to(dtype).var(dim=dims, unbiased=False)
        else:
            var = module.running_var.to(dtype)
        alpha = torch.rsqrt(var + module.eps)
        if module.weight is not None:
            alpha = alpha * module.weight.detach().to(dtype)
        return alpha


class NormTracker:
    """Finds, once, the batch-norm layer whose output is a block's input
    (see the module doc); :meth:`source` then gives its :class:`NormSource`.

    Args:
        block: the block; the tracker learns its parent when the parent
            registers it.
    """
    UNKNOWN, LOOKING, FOUND, NONE = range(4)

    def __init__(self, block: nn.Module) -> None:
        self.state = self.UNKNOWN
        self._parent: Optional['weakref.ref[nn.Module]'] = None
        self._hooks: List[Tuple[nn.Module, object]] = []
        _sweep()
        block_ref = weakref.ref(block)
        handle = None

        def on_registration(module, name, submodule):
            if handle in _done:
                return
            block = block_ref()
            if block is not None and submodule is block:
                self._parent = weakref.ref(module)
            if block is None or self._parent is not None:
                # Removed later: torch is iterating over these hooks now.
                _done.append(handle)

        handle = module_hooks.register_module_module_registration_hook(
            on_registration)

    # A copy of the block (copy.deepcopy, pickle) keeps what was found; the
    # copy's parent is the copy of the parent, when that is copied too.
    def __deepcopy__(self, memo) -> 'NormTracker':
        copy = NormTracker.__new__(NormTracker)
        parent = self._parent() if self._parent is not None else None
        parent = memo.get(id(parent)) if parent is not None else None
        copy._parent = weakref.ref(parent) if parent is not None else None
        copy._hooks = []
        copy.state = self.state if self.state in (self.FOUND,
                                                  self.NONE) else self.UNKNOWN
        return copy

    def __getstate__(self) -> dict:
        return {'state': self.state if self.state == self.FOUND else
                self.UNKNOWN}

    def __setstate__(self, state: dict) -> None:
        self.state = state['state']
        self._parent = None
        self._hooks = []

    def _look(self) -> None:
        """Hook every batch-norm child of the parent; found: LOOKING."""
        parent = self._parent() if self._parent is not None else None
        norms = [] if parent is None else [
            m for m in parent.children() if isinstance(m, _NORMS)
        ]
        for m in norms:
            if not getattr(m, _HOOKED, False):
                self._hooks.append((m, m.register_forward_hook(
                    note_norm_io, prepend=True)))
                setattr(m, _HOOKED, True)
        self.state = self.LOOKING if norms else self.NONE

    def _keep_only(self, keep: Optional[nn.Module]) -> None:
        for m, handle in self._hooks:
            if m is not keep:
                handle.remove()
                setattr(m, _HOOKED, False)
        self._hooks = []

    def source(self, x: Tensor) -> Optional[NormSource]:
        """The source of ``x`` if a batch-norm layer's hook has just noted it;
        else ``None`` (keep ``x`` itself).  Only for an ``x`` recorded by
        autograd; the search advances on such calls only."""
        if x.grad_fn is None or not torch.is_grad_enabled():
            return None
        _sweep()
        found = _take_note(x)
        if found is None:
            if self.state == self.LOOKING:
                self._keep_only(None)
                self.state = self.NONE
            elif self.state in (self.UNKNOWN,
                                self.FOUND) and _from_norm_node(x):
                self._look()  # first call, or the layer was swapped
            return None
        module, inp = found
        if self.state == self.LOOKING:
            self._keep_only(module)
        self.state = self.FOUND
        if (inp.shape != x.shape or inp.dtype != x.dtype
                or inp.device != x.device):
            return None
        return NormSource(inp, _alpha(module, inp, x))


# Attribute set on a layer that carries the note_norm_io hook (copied with
# the layer, as its hooks are).
_HOOKED = 'gcnet_mm_notes_io'
