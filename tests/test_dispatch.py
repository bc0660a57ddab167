"""gcnet_mm.ops.dispatch: the one decision between the fused and the
reference path, and which kernel set runs the fused one."""
import pytest
import torch
from torch import nn

from gcnet_mm.ops import dispatch
from gcnet_mm.ops.cpu_kernels import extension_isa
from gcnet_mm.ops.dispatch import force_kernels, fused_kernels, set_fused

W = torch.ones(1, 8, 1, 1)
ADD = nn.Identity()


def chosen(x, weight=W, add=ADD, mul=None):
    kernels = fused_kernels(x, weight, add, mul)
    return None if kernels is None else kernels.name


@pytest.mark.skipif(extension_isa() is None, reason='gcnet_mm._ext not built')
def test_cpu_choice_by_dtype_and_layout():
    x = torch.randn(2, 8, 3, 4)
    assert chosen(x) == 'cpu'
    assert chosen(x.double()) == 'cpu'
    assert chosen(x.contiguous(memory_format=torch.channels_last)) == 'torch'
    assert chosen(x.bfloat16()) == 'torch'
    assert chosen(x.half()) == 'torch'
    # Triton runs CUDA tensors only, unless a test forces it
    with force_kernels('triton'):
        assert chosen(x) == 'triton'
        assert chosen(x.double()) == 'cpu'  # not a Triton dtype


def test_reference_path_cases():
    x = torch.randn(2, 8, 3, 4)
    assert chosen(x, weight=None) is None  # average pooling
    assert chosen(x, mul=ADD) is None  # multiplicative fusion
    assert chosen(x, add=None, mul=ADD) is None
    assert chosen(torch.randn(2, 8, 3)) is None  # not (B, C, H, W)
    assert chosen(torch.randn(2, 8, 0, 4)) is None
    assert chosen(torch.randn(2, 4, 3, 3)) is None  # weight for 8 channels
    assert chosen(torch.randint(0, 3, (2, 8, 3, 4))) is None
    set_fused(False)
    try:
        assert chosen(x) is None
    finally:
        set_fused(True)


def test_tracing_takes_the_reference_path():
    seen = []

    def fn(x):
        seen.append(chosen(x))
        return x * 2

    torch.jit.trace(fn, torch.randn(2, 8, 3, 4), check_trace=False)
    assert seen == [None]


def test_force_kernels_checks_the_name():
    with pytest.raises(ValueError, match="unknown kernel set 'cuda'"):
        with force_kernels('cuda'):
            pass
    with force_kernels('torch'):
        assert chosen(torch.randn(2, 8, 3, 4)) == 'torch'
    assert dispatch._forced is None


def test_every_device_lists_kernel_sets_that_exist():
    sets = dispatch._kernel_sets()
    for device, order in dispatch._ORDER.items():
        assert order[-1] == 'torch', device  # the set that takes anything
        assert all(name in sets for name in order)
