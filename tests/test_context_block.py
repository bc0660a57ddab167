"""ContextBlock and SNLBlock: mmcv parity, init, gradients, design space,
errors and mixed precision. CPU, tiny tensors."""
import inspect

import pytest
import torch
from mmengine.model import BaseModule
from torch import nn

from conftest import randomize_, reference_path, run_fwd_bwd, submodules
from gcnet_mm.models.blocks import ContextBlock, SNLBlock
from gcnet_mm.models.blocks import context_block as context_block_module
from gcnet_mm.ops.global_context import flat_transform
from gcnet_mm.registry import MODELS

POOLINGS = ('att', 'avg')
FUSIONS = (('channel_add', ), ('channel_mul', ), ('channel_add',
                                                  'channel_mul'))
TRANSFORMS = ('ln_relu', 'relu', 'bottleneck', 'linear')


def ratio_kwargs(transform: str) -> dict:
    return {} if transform == 'linear' else {'ratio': 1 / 4}


# --------------------------------------------------------------- mmcv parity
@pytest.mark.parametrize('pooling', POOLINGS)
@pytest.mark.parametrize('fusion', FUSIONS)
def test_matches_mmcv(pooling, fusion):
    from mmcv.cnn import ContextBlock as MMCVContextBlock
    torch.manual_seed(0)
    ref = randomize_(MMCVContextBlock(8, 1 / 4, pooling, fusion),
                     eval_mode=False, scale=0.5)
    ours = ContextBlock(8, 1 / 4, pooling, fusion)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert ours.planes == ref.planes == 2

    x = torch.randn(2, 8, 5, 4)
    grad = torch.randn(2, 8, 5, 4)
    out_ref, gx_ref, gp_ref = run_fwd_bwd(ref, x, grad)
    out, gx, gp = run_fwd_bwd(ours, x, grad)
    assert not torch.allclose(out, x)  # the block does something
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-5)
    assert gp.keys() == gp_ref.keys()
    for name in gp:
        if name != 'conv_mask.bias':  # softmax is shift-invariant: grad 0
            assert gp[name].abs().sum() > 0, name
        torch.testing.assert_close(gp[name], gp_ref[name], rtol=1e-4,
                                   atol=1e-5, msg=name)


@pytest.mark.parametrize('pooling', POOLINGS)
@pytest.mark.parametrize('fusion', FUSIONS)
def test_init_matches_mmcv(pooling, fusion):
    """Same zero-init layers and a zero-bias conv_mask, like mmcv."""
    from mmcv.cnn import ContextBlock as MMCVContextBlock
    ref = MMCVContextBlock(8, 1 / 4, pooling, fusion)
    ours = ContextBlock(8, 1 / 4, pooling, fusion)
    for (name, p_ref), p in zip(ref.state_dict().items(),
                                ours.state_dict().values()):
        assert torch.equal(p_ref == 0, p == 0), name
    if pooling == 'att':
        assert ours.conv_mask.weight.abs().sum() > 0
        assert torch.all(ours.conv_mask.bias == 0)


def test_signature_extends_mmcvs():
    """mmcv's parameters come first, positional as in mmcv, with mmcv's
    defaults; ours only adds a default ratio and keyword-only extras."""
    from mmcv.cnn import ContextBlock as MMCVContextBlock
    theirs = list(inspect.signature(MMCVContextBlock.__init__).parameters
                  .values())
    ours = list(inspect.signature(ContextBlock.__init__).parameters.values())
    assert [(p.name, p.kind) for p in ours[:len(theirs)]] == [
        (p.name, p.kind) for p in theirs]
    for o, t in zip(ours, theirs):
        if t.default is not t.empty:
            assert o.default == t.default, t.name
    assert all(p.kind == p.KEYWORD_ONLY for p in ours[len(theirs):])


@pytest.mark.parametrize('pooling', POOLINGS)
@pytest.mark.parametrize('fusion', FUSIONS)
def test_structure_is_mmcvs(pooling, fusion):
    """What mmcv's and mmdet's unit tests read: the submodules (conv_mask and
    softmax, or avg_pool; a branch per fusion) and the attributes."""
    from mmcv.cnn import ContextBlock as MMCVContextBlock
    ref = MMCVContextBlock(16, 1 / 4, pooling, fusion)
    ours = ContextBlock(16, 1 / 4, pooling, fusion)
    assert submodules(ours) == submodules(ref)
    for attr in ('in_channels', 'ratio', 'planes', 'pooling_type',
                 'fusion_types'):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    for attr in ('conv_mask', 'channel_add_conv', 'channel_mul_conv'):
        assert (getattr(ours, attr, None) is None) == (
            getattr(ref, attr, None) is None), attr
    if pooling == 'att':
        assert ours.softmax.dim == ref.softmax.dim
        assert (ours.conv_mask.in_channels, ours.conv_mask.out_channels) == (
            16, 1)
    else:
        assert ours.avg_pool.output_size == ref.avg_pool.output_size


def test_mmcv_abbr_and_plugin_build():
    from mmcv.cnn import build_plugin_layer
    assert ContextBlock._abbr_ == 'context_block'
    name, layer = build_plugin_layer(
        dict(type='gcnet_mm.ContextBlock', ratio=1 / 4), in_channels=8)
    assert name == 'context_block'
    assert type(layer) is ContextBlock


def test_registry():
    # Unprefixed names follow mmengine's default scope (mmcv's ContextBlock
    # under mmdet's), so look up in the package's registry and build with the
    # prefix, as the configs do.
    assert MODELS.get('ContextBlock') is ContextBlock
    block = MODELS.build(dict(type='gcnet_mm.ContextBlock', in_channels=8,
                              ratio=0.5))
    assert type(block) is ContextBlock and block.planes == 4
    snl = MODELS.build(dict(type='gcnet_mm.SNLBlock', in_channels=8))
    assert type(snl) is SNLBlock


def test_forward_uses_global_context_op(monkeypatch):
    calls = []
    real = context_block_module.global_context

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(context_block_module, 'global_context', spy)
    ContextBlock(8, 1 / 4)(torch.randn(1, 8, 2, 2))
    assert len(calls) == 1


# -------------------------------------------------------------------- init
@pytest.mark.parametrize('transform', TRANSFORMS)
@pytest.mark.parametrize('pooling', POOLINGS)
def test_identity_at_init(transform, pooling):
    block = ContextBlock(8, pooling_type=pooling, transform=transform,
                         **ratio_kwargs(transform))
    x = torch.randn(2, 8, 3, 5)
    assert torch.equal(block(x), x)


def test_snl_identity_at_init():
    x = torch.randn(2, 8, 3, 5)
    assert torch.equal(SNLBlock(8)(x), x)


def test_mul_fusion_starts_at_half():
    block = ContextBlock(8, 1 / 4, fusion_types=('channel_mul', ))
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(block(x), 0.5 * x)


class _Parent(BaseModule):
    """Stands in for an mmdet ResNet: Kaiming for every conv, then the
    children's init_weights."""

    def __init__(self, block):
        super().__init__(
            init_cfg=[dict(type='Kaiming', layer='Conv2d'),
                      dict(type='Constant', val=1, layer='LayerNorm')])
        self.block = block


@pytest.mark.parametrize('cls,kwargs', [
    (ContextBlock, dict(ratio=1 / 4)),
    (ContextBlock, dict(ratio=1 / 4, transform='relu', pooling_type='avg')),
    (SNLBlock, {}),
])
def test_init_weights_survives_parent_init(cls, kwargs):
    block = randomize_(cls(8, **kwargs), eval_mode=False, scale=0.5)
    x = torch.randn(2, 8, 3, 3)
    assert not torch.equal(block(x), x)
    parent = _Parent(block)
    parent.init_weights()
    assert torch.equal(block(x), x)
    # the parent's Kaiming did reach the other convs
    if block.conv_mask is not None:
        assert block.conv_mask.weight.abs().sum() > 0


def test_init_cfg_is_honoured():
    block = ContextBlock(
        8, 1 / 4, init_cfg=dict(type='Constant', val=0.25, layer='Conv2d'))
    block.init_weights()
    assert torch.all(block.channel_add_conv[3].weight == 0.25)


# --------------------------------------------------------------- gradients
@pytest.mark.parametrize('pooling', POOLINGS)
@pytest.mark.parametrize('fusion', FUSIONS)
@pytest.mark.parametrize('transform', TRANSFORMS)
def test_gradcheck(pooling, fusion, transform):
    torch.manual_seed(1)
    block = ContextBlock(8, pooling_type=pooling, fusion_types=fusion,
                         transform=transform, **ratio_kwargs(transform))
    block = randomize_(block.double(), eval_mode=False, scale=0.5)
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x, ), eps=1e-6, atol=1e-5)


def test_gradcheck_snl():
    block = randomize_(SNLBlock(8).double(), eval_mode=False, scale=0.5)
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x, ), eps=1e-6, atol=1e-5)


# ------------------------------------------------------------ design space
@pytest.mark.parametrize('transform,names', [
    ('ln_relu', ['0.weight', '0.bias', '1.weight', '1.bias', '3.weight',
                 '3.bias']),
    ('relu', ['0.weight', '0.bias', '2.weight', '2.bias']),
    ('bottleneck', ['0.weight', '0.bias', '1.weight', '1.bias']),
    ('linear', ['0.weight', '0.bias']),
])
@pytest.mark.parametrize('pooling', POOLINGS)
@pytest.mark.parametrize('fusion', FUSIONS)
def test_design_space(transform, names, pooling, fusion):
    block = ContextBlock(16, pooling_type=pooling, fusion_types=fusion,
                         transform=transform, **ratio_kwargs(transform))
    randomize_(block, eval_mode=False, scale=0.5)
    with torch.no_grad():  # keep the ReLU of the tiny bottleneck alive
        for f in fusion:
            branch = getattr(block, f'{f}_conv')
            for i, layer in enumerate(branch):
                if isinstance(layer, nn.ReLU):
                    branch[i - 1].bias.add_(3.0)
    expected = set()
    if pooling == 'att':
        expected |= {'conv_mask.weight', 'conv_mask.bias'}
    for f in fusion:
        expected |= {f'{f}_conv.{n}' for n in names}
    assert set(block.state_dict()) == expected
    x = torch.randn(2, 16, 4, 3, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        if name != 'conv_mask.bias':  # softmax is shift-invariant: grad 0
            assert p.grad.abs().sum() > 0, name
    first = getattr(block, f'{fusion[0]}_conv')[0]
    hidden = 16 if transform == 'linear' else 4
    assert first.out_channels == hidden == block.planes


@pytest.mark.parametrize('transform', ['ln_relu', 'relu', 'bottleneck'])
def test_channels_instead_of_ratio(transform):
    a = ContextBlock(16, channels=3, transform=transform)
    assert a.planes == 3 and a.channel_add_conv[0].out_channels == 3
    b = ContextBlock(16, 1 / 4, transform=transform)
    assert b.planes == 4
    assert ContextBlock(16).planes == 1  # default ratio 1/16


def test_param_counts_paper_r50():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(ContextBlock(1024, 1 / 16)) == 133_313
    assert count(SNLBlock(1024)) == 1_050_625


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize('kwargs,exc,fragments', [
    (dict(pooling_type='max'), ValueError, ['pooling_type', "'max'", 'att']),
    (dict(fusion_types=('channels_add', )), ValueError,
     ['fusion_types', "'channels_add'", "did you mean 'channel_add'?"]),
    (dict(fusion_types=('channel_sum', )), ValueError,
     ['fusion_types', "'channel_sum'", 'channel_mul']),
    (dict(fusion_types=()), ValueError, ['fusion_types', '()']),
    (dict(fusion_types=[]), ValueError, ['fusion_types', '[]']),
    (dict(fusion_types='channel_add'), TypeError,
     ['fusion_types', "'channel_add'", 'list or tuple']),
    (dict(transform='ln'), ValueError, ['transform', "'ln'", 'ln_relu']),
    (dict(ratio=0), ValueError, ['ratio', '0', 'positive']),
    (dict(ratio=-0.5), ValueError, ['ratio', '-0.5']),
    (dict(ratio=1 / 32), ValueError, ['ratio', '0.03125', 'in_channels=16']),
    (dict(ratio='1/16'), TypeError, ['ratio', "'1/16'"]),
    (dict(ratio=1 / 4, channels=4), ValueError,
     ['ratio=0.25', 'channels=4', 'not both']),
    (dict(channels=0), ValueError, ['channels', '0']),
    (dict(channels=-3), ValueError, ['channels', '-3']),
    (dict(channels=2.5), TypeError, ['channels', '2.5', 'int']),
    (dict(transform='linear', ratio=1 / 4), ValueError,
     ['transform', 'linear', 'ratio=0.25']),
    (dict(transform='linear', channels=4), ValueError,
     ['transform', 'linear', 'channels=4']),
])
def test_constructor_errors(kwargs, exc, fragments):
    with pytest.raises(exc) as info:
        ContextBlock(16, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    # mmcv checks its arguments with assert: code written against it (its
    # own unit tests too) catches AssertionError
    assert isinstance(info.value, AssertionError)


@pytest.mark.parametrize('kwargs', [
    dict(pooling_type='unsupport_type'), dict(fusion_types='channel_add'),
    dict(fusion_types=('unsupport_type', )), dict(fusion_types=())])
def test_errors_caught_as_mmcv_s_are(kwargs):
    """Where mmcv's block raises AssertionError, ours raises an error that
    is one too (and a ValueError or TypeError with a message)."""
    from mmcv.cnn.bricks import ContextBlock as MMCVContextBlock
    with pytest.raises(AssertionError):
        MMCVContextBlock(16, 1 / 4, **kwargs)
    with pytest.raises(AssertionError) as info:
        ContextBlock(16, 1 / 4, **kwargs)
    assert isinstance(info.value, (ValueError, TypeError))
    assert str(info.value)


@pytest.mark.parametrize('in_channels,exc', [(0, ValueError),
                                             (-8, ValueError),
                                             (8.0, TypeError),
                                             (True, TypeError)])
def test_in_channels_errors(in_channels, exc):
    with pytest.raises(exc, match='in_channels') as info:
        ContextBlock(in_channels, 1 / 4)
    assert repr(in_channels) in str(info.value)
    with pytest.raises(exc, match='in_channels'):
        SNLBlock(in_channels)


@pytest.mark.parametrize('cls,kwargs', [(ContextBlock, dict(ratio=1 / 4)),
                                        (SNLBlock, {})])
def test_forward_shape_errors(cls, kwargs):
    block = cls(8, **kwargs)
    with pytest.raises(ValueError, match=r'4-D.*3-D'):
        block(torch.randn(8, 3, 3))
    with pytest.raises(ValueError, match=r'C=8.*C=6'):
        block(torch.randn(2, 6, 3, 3))


# --------------------------------------------------------- mixed precision
def _autocast_ok(dtype):
    try:
        with torch.autocast('cpu', dtype=dtype):
            torch.nn.functional.conv2d(torch.randn(1, 2, 2, 2),
                                       torch.randn(1, 2, 1, 1))
    except (RuntimeError, AssertionError):  # pragma: no cover
        return False
    return True


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('pooling', POOLINGS)
@pytest.mark.parametrize('fusion', FUSIONS)
def test_autocast_large_inputs(dtype, pooling, fusion):
    if not _autocast_ok(dtype):
        pytest.skip(f'CPU autocast with {dtype} unsupported')
    torch.manual_seed(0)
    block = randomize_(ContextBlock(16, 1 / 4, pooling, fusion),
                       eval_mode=False, scale=0.5)
    # logits of conv_mask reach ~1e3: exp() would overflow in any dtype
    # without the max-subtraction and float32 softmax of the op
    x = torch.randn(2, 16, 6, 6) * 300
    ref = block(x)
    with torch.autocast('cpu', dtype=dtype):
        out = block(x)
    assert torch.isfinite(out).all()
    scale = ref.abs().max()
    assert (out.float() - ref).abs().max() < 0.05 * scale


# ------------------------------------------------- transform on (B, C) views
@pytest.mark.parametrize('transform', TRANSFORMS)
@pytest.mark.parametrize('fusion', FUSIONS)
def test_flat_transform_matches_modules(transform, fusion):
    """The transform run as linear / layer_norm on (B, C) equals the
    Sequential of 1x1 convs on (B, C, 1, 1), values and gradients."""
    block = randomize_(ContextBlock(8, fusion_types=fusion,
                                    transform=transform,
                                    **ratio_kwargs(transform)),
                       eval_mode=False, scale=0.5).double()
    ctx = torch.randn(3, 8, 1, 1, dtype=torch.float64, requires_grad=True)
    for attr in ('channel_add_conv', 'channel_mul_conv'):
        branch = getattr(block, attr)
        if branch is None:
            continue
        flat = flat_transform(branch)
        assert flat is not branch
        gy = torch.randn(3, 8, 1, 1, dtype=torch.float64)
        ref = torch.autograd.grad(branch(ctx), [ctx, *branch.parameters()],
                                  gy)
        out = torch.autograd.grad(flat(ctx), [ctx, *branch.parameters()], gy)
        torch.testing.assert_close(flat(ctx), branch(ctx))
        for a, b in zip(out, ref):
            torch.testing.assert_close(a, b)


def test_hooks_on_transform_layers_see_the_reference_path():
    """The fused path runs the transform as linear layers on (B, C); with
    set_fused(False) every layer is called as a module, so hooks on them
    (feature extraction, counters) fire; hooks on the block always do."""
    block = randomize_(ContextBlock(8, 1 / 4), eval_mode=False, scale=0.5)
    layer_calls, block_calls = [], []
    block.channel_add_conv[0].register_forward_hook(
        lambda *args: layer_calls.append(1))
    block.register_forward_hook(lambda *args: block_calls.append(1))
    x = torch.randn(2, 8, 3, 3)
    y = block(x)
    assert layer_calls == [] and block_calls == [1]
    with reference_path():
        torch.testing.assert_close(block(x), y, atol=1e-6, rtol=1e-5)
    assert layer_calls == [1] and block_calls == [1, 1]
