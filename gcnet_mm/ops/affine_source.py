"""Find what autograd already keeps that recomputes a batch-norm output.

In a ResNet Bottleneck a GC block placed ``after_conv3`` reads ``norm3``'s
output, which nothing else saves for backward.  Batch norm saves its own input
and statistics, and its output is a per-channel affine map of that input::

    x[:, c] = input[:, c] * alpha[c] + beta[c],   alpha = weight * invstd

The GC block's backward only needs ``x`` through ``x @ v`` products whose
per-channel shift ``beta`` cancels under the softmax (see
``attention_pool.py``), so saving references to the tensors batch norm has
already saved (``input``, ``weight``, ``invstd`` or ``running_var``) replaces a
new copy of ``x`` at no memory cost.  Saving them with ``save_for_backward``
keeps PyTorch's version-counter checks: modifying any of them in place before
backward raises, exactly as it does for batch norm's own backward.
"""
from typing import NamedTuple, Optional

import torch
from torch import Tensor

__all__ = ['AffineSource', 'batch_norm_source']

# Node type of ``torch.nn.functional.batch_norm`` in eager mode on the CPU (and
# on CUDA when cuDNN is not used).  cuDNN's node stores its statistics under
# other conventions and is left to the plain path of saving ``x``.
_BN_NODE = 'NativeBatchNormBackward0'


class AffineSource(NamedTuple):
    """``x[:, c] == input[:, c] * alpha[c] + beta[c]``, ``alpha`` from these.

    ``alpha = weight * invstd`` in training mode, ``weight / sqrt(var + eps)``
    in eval mode (``invstd`` is ``None`` then); ``weight`` is ``None`` for a
    batch norm without affine parameters.
    """
    input: Tensor
    weight: Optional[Tensor]
    invstd: Optional[Tensor]
    var: Optional[Tensor]
    eps: float

    def alpha(self) -> Tensor:
        """Per-channel scale, float32 (or float64 for float64 inputs), (C,)."""
        dtype = torch.promote_types(self.input.dtype, torch.float32)
        if self.invstd is not None:
            scale = self.invstd.to(dtype)
        else:
            scale = torch.rsqrt(self.var.to(dtype) + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.to(dtype)
        return scale


def _saved_tensor_hooks_from_torch() -> bool:
    """Whether torch's own saved-tensor hooks (checkpoint, offload) are on.

    Reading a node's saved tensor calls the unpack hook; under those hooks that
    would recompute or copy the tensor, defeating the point, so the caller
    saves ``x`` instead.  Hooks of other code (memory accounting, for one)
    return the tensor itself and keep the lean path.
    """
    top = torch._C._autograd._top_saved_tensors_default_hooks(True)
    if top is None:
        return False
    pack = top[0]
    module = getattr(pack, '__module__', None) or ''
    return module == 'torch' or module.startswith('torch.')


def batch_norm_source(x: Tensor) -> Optional[AffineSource]:
    """Return the batch-norm tensors that recompute ``x``, or ``None``.

    ``x`` qualifies when it is, unmodified, the output of an eager batch norm
    (training or eval mode) over a tensor of its own shape and dtype.
    """
    fn = x.grad_fn
    if fn is None or type(fn).__name__ != _BN_NODE or x._version != 0:
        return None
    if _saved_tensor_hooks_from_torch():
        return None
    try:
        inp = fn._saved_input
        weight = fn._saved_weight
        eps = float(fn._saved_eps)
        if fn._saved_training:
            invstd, var = fn._saved_result2, None
            if invstd is None or invstd.numel() != x.shape[1]:
                return None
        else:
            invstd, var = None, fn._saved_running_var
            if var is None or var.numel() != x.shape[1]:
                return None
    except (AttributeError, RuntimeError):  # layout of the node changed
        return None
    if (not isinstance(inp, Tensor) or inp.shape != x.shape
            or inp.dtype != x.dtype or inp.device != x.device):
        return None
    return AffineSource(inp, weight, invstd, var, eps)
