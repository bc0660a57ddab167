"""The blocks on video features (B, C, T, H, W): ContextBlock3d and
SNLBlock3d against the 2-D blocks and mmcv's ContextBlock on the
(B, C, T, H*W) view, NonLocalBlock3d against mmcv's NonLocal3d; outputs and
gradients on random non-zero weights."""
import copy

import pytest
import torch
from mmcv.cnn import ContextBlock as MMCVContextBlock
from mmcv.cnn import NonLocal3d

from conftest import outputs_and_grads, randomize_, reference_path
from gcnet_mm.models import (ContextBlock, ContextBlock3d, NonLocalBlock3d,
                             SNLBlock, SNLBlock3d)
from gcnet_mm.models.blocks.context_block_3d import inflate_1x1_

C, SHAPE = 16, (2, 16, 3, 5, 6)  # (B, C, T, H, W)

GC_VARIANTS = {
    'gc': dict(ratio=1 / 4),
    'avg-mul': dict(ratio=1 / 4, pooling_type='avg',
                    fusion_types=('channel_mul', )),
    'att-add-mul': dict(ratio=1 / 4,
                        fusion_types=('channel_add', 'channel_mul')),
    'relu': dict(channels=3, transform='relu'),
    'bottleneck': dict(ratio=1 / 8, transform='bottleneck'),
    'linear': dict(transform='linear'),
}


def _as_2d(block3d, block2d):
    """block2d with block3d's weights (each tensor squeezed to 2-D)."""
    shapes = {k: v.shape for k, v in block2d.state_dict().items()}
    block2d.load_state_dict({
        k: v.reshape(shapes[k])
        for k, v in block3d.state_dict().items() if k in shapes
    })
    return block2d.eval()


def _grads(fn, block, x, gy):
    y, grads = outputs_and_grads(fn, block, x, gy)
    return [y, *grads]


@pytest.mark.parametrize('variant', sorted(GC_VARIANTS))
def test_context_block_3d_is_the_2d_block_on_the_thw_view(variant, kernels):
    kwargs = GC_VARIANTS[variant]
    block = randomize_(ContextBlock3d(C, **kwargs), scale=0.5)
    flat = _as_2d(block, ContextBlock(C, **kwargs))
    x, gy = torch.randn(SHAPE), torch.randn(SHAPE)
    b, c, t, h, w = SHAPE
    ours = _grads(block, block, x, gy)
    theirs = _grads(lambda v: flat(v.reshape(b, c, t, h * w)).view(SHAPE),
                    flat, x, gy)
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a, e.reshape(a.shape), rtol=1e-5,
                                   atol=1e-5)


def test_context_block_3d_matches_mmcv(kernels):
    block = randomize_(ContextBlock3d(C, ratio=1 / 4), scale=0.5)
    mmcv = _as_2d(block, MMCVContextBlock(C, 1 / 4))
    x = torch.randn(SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(
            block(x), mmcv(x.flatten(3)).view(SHAPE), rtol=1e-5, atol=1e-5)


def test_parameter_names_and_3d_shapes():
    block = ContextBlock3d(C, ratio=1 / 4)
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items()}
    assert shapes == {
        'conv_mask.weight': (1, C, 1, 1, 1), 'conv_mask.bias': (1, ),
        'channel_add_conv.0.weight': (4, C, 1, 1, 1),
        'channel_add_conv.0.bias': (4, ),
        'channel_add_conv.1.weight': (4, 1, 1, 1),
        'channel_add_conv.1.bias': (4, 1, 1, 1),
        'channel_add_conv.3.weight': (C, 4, 1, 1, 1),
        'channel_add_conv.3.bias': (C, )
    }
    snl = SNLBlock3d(C)
    assert {k: tuple(v.shape) for k, v in snl.state_dict().items()} == {
        'conv_mask.weight': (1, C, 1, 1, 1), 'conv_mask.bias': (1, ),
        'channel_add_conv.0.weight': (C, C, 1, 1, 1),
        'channel_add_conv.0.bias': (C, )
    }
    assert ContextBlock3d._abbr_ == 'context_block'
    assert SNLBlock3d._abbr_ == 'snl_block'


def test_snl_block_3d_is_the_2d_block_on_the_thw_view(kernels):
    block = randomize_(SNLBlock3d(C), scale=0.5)
    flat = _as_2d(block, SNLBlock(C))
    x = torch.randn(SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(block(x),
                                   flat(x.flatten(3)).view(SHAPE))


def test_mask_bias_is_inert_and_optional(kernels):
    """conv_mask's bias shifts every logit alike: dropping it changes
    nothing but the parameter count."""
    with_bias = randomize_(ContextBlock3d(C, ratio=1 / 4), scale=0.5)
    without = ContextBlock3d(C, ratio=1 / 4, mask_bias=False)
    state = with_bias.state_dict()
    assert state['conv_mask.bias'].abs().item() > 0.01
    del state['conv_mask.bias']
    without.load_state_dict(state)
    without.eval()
    assert without.conv_mask.bias is None
    count = sum(p.numel() for p in without.parameters())
    assert count == sum(p.numel() for p in with_bias.parameters()) - 1
    x, gy = torch.randn(SHAPE), torch.randn(SHAPE)
    y1, g1 = outputs_and_grads(with_bias, with_bias, x, gy)
    y2, g2 = outputs_and_grads(without, without, x, gy)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(g1[0], g2[0])  # dx
    assert g1[2].abs().max() < 1e-6  # d conv_mask.bias: zero
    with pytest.raises(TypeError, match='mask_bias must be True or False'):
        ContextBlock3d(C, mask_bias='no')


def test_identity_at_init_and_after_init_weights():
    x = torch.randn(SHAPE)
    for block in (ContextBlock3d(C, ratio=1 / 4), SNLBlock3d(C),
                  NonLocalBlock3d(C, sub_sample='input')):
        for m in block.modules():
            if isinstance(m, torch.nn.Conv3d):
                torch.nn.init.normal_(m.weight)  # a parent's init
        block.init_weights()
        with torch.no_grad():
            assert torch.equal(block.eval()(x), x), type(block).__name__


@pytest.mark.parametrize('train', [True, False])
def test_after_batch_norm_3d_keeps_its_input_not_x(kernels, train):
    """After a BatchNorm3d the 3-D block keeps the norm's input for the
    backward pass, as the 2-D block does."""
    from torch import nn
    model = nn.Sequential(nn.BatchNorm3d(C), randomize_(
        ContextBlock3d(C, ratio=1 / 4), scale=0.5)).train(train)
    x = torch.randn(SHAPE, requires_grad=True)
    gy = torch.randn(SHAPE)
    with torch.no_grad():
        model[0].running_var.uniform_(0.5, 2)
    ref = copy.deepcopy(model)
    with reference_path():
        y_ref, g_ref = outputs_and_grads(ref, ref, x, gy)
    for call in range(2):
        model.load_state_dict(ref.state_dict())
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y, g = outputs_and_grads(model, model, x, gy)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
        for a, e in zip(g, g_ref):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)
        full = sum(n == x.numel() for n in storages.values())
        assert full == 1, (call, full)


@pytest.mark.parametrize('make', [ContextBlock3d, SNLBlock3d, NonLocalBlock3d])
def test_wrong_rank_says_so(make):
    block = make(C)
    with pytest.raises(ValueError, match=r'5-D input \(B, C, T, H, W\)'):
        block(torch.randn(2, C, 5, 6))
    with pytest.raises(ValueError, match='C=16 channels'):
        block(torch.randn(2, 8, 3, 5, 6))


def test_inflate_refuses_layers_without_a_3d_twin():
    with pytest.raises(TypeError, match='only plain 1x1 convs'):
        inflate_1x1_(torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3)))
    with pytest.raises(TypeError, match='no 3-D twin for BatchNorm2d'):
        inflate_1x1_(torch.nn.Sequential(torch.nn.BatchNorm2d(4)))


NL_CASES = {
    'embedded': dict(),
    'sub-sample': dict(sub_sample=True),
    'gaussian': dict(mode='gaussian', sub_sample=True),
    'dot-product': dict(mode='dot_product', use_scale=False),
    'concatenation': dict(mode='concatenation'),
}


@pytest.mark.parametrize('case', sorted(NL_CASES))
def test_nonlocal_block_3d_matches_mmcv(case):
    kwargs = NL_CASES[case]
    ours = randomize_(NonLocalBlock3d(C, zeros_init=False,
                                      norm_cfg=dict(type='BN3d'), **kwargs),
                      scale=0.3)
    theirs = NonLocal3d(C, norm_cfg=dict(type='BN3d'), **kwargs)
    theirs.load_state_dict(ours.state_dict())
    theirs.eval()
    x, gy = torch.randn(SHAPE), torch.randn(SHAPE)
    y1, g1 = outputs_and_grads(ours, ours, x, gy)
    if case == 'concatenation':  # mmcv's backward fails (in-place division)
        with torch.no_grad():
            torch.testing.assert_close(y1, theirs(x), rtol=1e-5, atol=1e-5)
        return
    y2, g2 = outputs_and_grads(theirs, theirs, x, gy)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    for a, e in zip(g1, g2):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


def test_nonlocal_block_3d_input_sub_sampling():
    """sub_sample='input': phi and g read the input max-pooled by (1, 2, 2),
    i.e. mmcv's block without sub-sampling run with phi/g on that input."""
    ours = randomize_(NonLocalBlock3d(C, sub_sample='input',
                                      zeros_init=False,
                                      norm_cfg=dict(type='BN3d')), scale=0.3)
    plain = NonLocal3d(C, norm_cfg=dict(type='BN3d'))
    plain.load_state_dict(ours.state_dict())
    plain.eval()
    x = torch.randn(SHAPE)
    pooled = torch.nn.functional.max_pool3d(x, (1, 2, 2))
    n, ci = x.shape[0], plain.inter_channels
    with torch.no_grad():
        theta = plain.theta(x).reshape(n, ci, -1).permute(0, 2, 1)
        phi = plain.phi(pooled).reshape(n, ci, -1)
        attn = plain.embedded_gaussian(theta, phi)  # (B, THW, T(H/2)(W/2))
        assert attn.shape == (2, 3 * 5 * 6, 3 * 2 * 3)
        g = plain.g(pooled).reshape(n, ci, -1).permute(0, 2, 1)
        y = (attn @ g).permute(0, 2, 1).reshape(n, ci, *x.shape[2:])
        torch.testing.assert_close(ours(x), x + plain.conv_out(y))
    assert 'input_pool' not in ''.join(ours.state_dict())


def test_nonlocal_block_3d_has_mmcv_signature_and_defaults():
    """NonLocal3d(in_channels, sub_sample, conv_cfg, ...): positionally as
    mmcv's, Conv3d convs, and no norm on conv_out unless asked."""
    ours = NonLocalBlock3d(C, True, dict(type='Conv3d'))
    theirs = NonLocal3d(C, True, dict(type='Conv3d'))
    assert ours.sub_sample and not ours.conv_out.with_norm
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()}
