"""Helpers shared by the block, head and placement tests."""
import torch
from torch import nn


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
