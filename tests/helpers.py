"""Helpers shared by the block, head, op and placement tests."""
import pytest
import torch
from mmcv.cnn import ContextBlock as MMCVContextBlock
from torch import nn

from gcnet_mm.ops import global_context
from gcnet_mm.ops.attention_pool import extension_isa, use_extension


@pytest.fixture(params=['fused', 'ops'])
def lean_path(request):
    """Both implementations of the lean path: the fused CPU loops
    (gcnet_mm._ext, float32/float64 with unit stride along HW) and PyTorch
    ops (everything, and the only one without the extension).  Import it
    into a test module to use it."""
    fused = request.param == 'fused'
    if fused and extension_isa() is None:
        pytest.skip('gcnet_mm._ext not built')
    with use_extension(fused):
        yield request.param


def randomize_(model: nn.Module, seed: int = 0, scale: float = 0.2,
               eval_mode: bool = True) -> nn.Module:
    """Random non-zero weights (zero-initialised layers included) and BN
    statistics, so a comparison cannot pass on zeros; eval mode by default."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith('running_var'):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * scale)
    if eval_mode:
        model.eval()  # (mmdet's ResNet.train() returns None: no chaining)
    return model


def run_fwd_bwd(module: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """Output, input gradient and parameter gradients of one backward."""
    x = x.clone().requires_grad_(True)
    module.zero_grad()
    out = module(x)
    out.backward(grad)
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    return out.detach(), x.grad.clone(), grads


def mmcv_block(c=16, pooling='att', fusions=('channel_add', ), ratio=0.25,
               dtype=torch.float32, seed=0):
    """mmcv's ContextBlock with random weights, none of them zero."""
    torch.manual_seed(seed)
    block = MMCVContextBlock(c, ratio, pooling_type=pooling,
                             fusion_types=fusions).to(dtype)
    for p in block.parameters():  # random, never zero
        nn.init.normal_(p, mean=0.1, std=0.5)
    return block


def ours(block, x):
    """gcnet_mm's global_context op with ``block``'s (mmcv's) weights."""
    mask = getattr(block, 'conv_mask', None)
    return global_context(
        x, None if mask is None else mask.weight,
        None if mask is None else mask.bias,
        add_transform=block.channel_add_conv,
        mul_transform=block.channel_mul_conv)


def outputs_and_grads(fn, block, x, gy):
    """``fn(x)`` and the gradients of ``x`` and ``block``'s parameters."""
    x = x.detach().requires_grad_()
    y = fn(x)
    params = list(block.parameters())
    grads = torch.autograd.grad(y, [x] + params, gy)
    return y, grads


def submodules(module: nn.Module) -> list:
    """(name, type) of every submodule: the tree that checkpoints, plugins
    and upstream's unit tests see."""
    return [(name, type(m)) for name, m in module.named_modules() if name]
