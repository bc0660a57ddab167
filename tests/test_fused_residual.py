"""gcnet_mm.ResNet / ResNeXt: a GC block fused with the residual add and ReLU,
against mmdet's ResNet with mmcv's ContextBlock plugin."""
import copy

import pytest
import torch
from mmdet.models.backbones import ResNet as MMDetResNet
from mmdet.models.backbones import ResNeXt as MMDetResNeXt
from torch import nn

from gcnet_mm.models import ResNet, ResNeXt
from gcnet_mm.models.blocks import ContextBlock
from gcnet_mm.ops import global_context, global_context_residual
from gcnet_mm.ops.attention_pool import extension_isa, use_extension
from helpers import lean_path, mmcv_block, randomize_  # noqa: F401

needs_ext = pytest.mark.skipif(extension_isa() is None,
                               reason='gcnet_mm._ext not built')


def backbone_cfg(block_type, fusions=('channel_add', ), **kwargs):
    """A small R-50 layout (base width 8) with a GC block after conv3 of
    c3-c5, as the package's detection configs."""
    cfg = dict(
        depth=50, base_channels=8, stem_channels=8, num_stages=4,
        out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=False,
        plugins=[dict(cfg=dict(type=block_type, ratio=1. / 4,
                               fusion_types=fusions),
                      stages=(False, True, True, True),
                      position='after_conv3')])
    cfg.update(kwargs)
    return cfg


def pair(fusions=('channel_add', ), resnext=False, ref_block='ContextBlock',
         **kwargs):
    """(mmdet backbone with mmcv's block (or ``ref_block``), gcnet_mm
    backbone), same random weights (no zeros), float64, train mode."""
    ref_cls, cls = (MMDetResNeXt, ResNeXt) if resnext else (MMDetResNet,
                                                             ResNet)
    if resnext:
        kwargs.setdefault('groups', 2)
        kwargs.setdefault('base_width', 4)
    torch.manual_seed(0)
    ref = ref_cls(**backbone_cfg(ref_block, fusions, **kwargs))
    ours = cls(**backbone_cfg('gcnet_mm.ContextBlock', fusions, **kwargs))
    ref, ours = ref.double(), ours.double()
    randomize_(ref, seed=1, eval_mode=False)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.train()
    ours.train()
    return ref, ours


def fwd_bwd(model, x, grads):
    """Outputs, input gradient and parameter gradients of one step."""
    x = x.detach().requires_grad_()
    model.zero_grad(set_to_none=True)
    outs = model(x)
    torch.autograd.backward(
        [o for o in outs if o.requires_grad],
        [g for o, g in zip(outs, grads) if o.requires_grad])
    params = {n: p.grad for n, p in model.named_parameters()
              if p.grad is not None}
    return [o.detach() for o in outs], x.grad, params


def assert_same_step(ref, ours, x, bias_grad_zero=True):
    with torch.no_grad():
        grads = [torch.randn_like(o) for o in ref(x)]
    o_ref, dx_ref, p_ref = fwd_bwd(ref, x, grads)
    o, dx, p = fwd_bwd(ours, x, grads)
    for a, b in zip(o, o_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-9, atol=1e-11)
    assert p.keys() == p_ref.keys()
    for name in p:
        if bias_grad_zero and name.endswith('conv_mask.bias'):
            # softmax ignores a shift: exactly zero here, rounding in mmcv
            assert torch.count_nonzero(p[name]) == 0
            assert p_ref[name].abs().max() < 1e-12
            continue
        torch.testing.assert_close(p[name], p_ref[name], rtol=1e-8,
                                   atol=1e-10, msg=name)
    return o


def fused_nodes(model, x):
    """Names of the autograd nodes of the model's outputs."""
    return {type(o.grad_fn).__name__ for o in model(x)}


@pytest.mark.usefixtures('lean_path')
@pytest.mark.parametrize('resnext', [False, True])
@pytest.mark.parametrize('batch', [1, 2])
def test_matches_mmdet_with_mmcv_block(resnext, batch):
    ref, ours = pair(resnext=resnext)
    x = torch.randn(batch, 3, 64, 48, dtype=torch.float64)
    assert_same_step(ref, ours, x)
    # The fused path ran: the stage outputs come from _FuseResidual.
    assert fused_nodes(ours, x) >= {'_FuseResidualBackward'}


@pytest.mark.usefixtures('lean_path')
@pytest.mark.parametrize('kwargs', [
    dict(norm_eval=True),  # frozen BN statistics, as the zoo configs
    dict(with_cp=True),
    dict(style='caffe'),
])
def test_matches_mmdet_options(kwargs):
    ref, ours = pair(**kwargs)
    ref.train()
    ours.train()
    x = torch.randn(2, 3, 40, 56, dtype=torch.float64)
    assert_same_step(ref, ours, x)


@pytest.mark.parametrize('fusions', [('channel_mul', ),
                                     ('channel_add', 'channel_mul')])
def test_other_fusions_take_mmdet_order(fusions):
    ref, ours = pair(fusions=fusions)
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64)
    assert_same_step(ref, ours, x, bias_grad_zero=False)


def test_inference_and_no_grad():
    ref, ours = pair()
    ref.eval()
    ours.eval()
    x = torch.randn(2, 3, 48, 64, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x)):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_state_dict_and_init_are_mmdets():
    for resnext in (False, True):
        ref_cls, cls = (MMDetResNeXt, ResNeXt) if resnext else (MMDetResNet,
                                                                 ResNet)
        kw = dict(groups=2, base_width=4) if resnext else {}
        torch.manual_seed(0)
        ref = ref_cls(**backbone_cfg('gcnet_mm.ContextBlock', **kw))
        torch.manual_seed(0)
        ours = cls(**backbone_cfg('gcnet_mm.ContextBlock', **kw))
        assert list(ours.state_dict()) == list(ref.state_dict())
        torch.manual_seed(1)
        ref.init_weights()
        torch.manual_seed(1)
        ours.init_weights()
        # Same initialisation as mmdet's class with the same blocks; mmdet
        # zero-initialises norm3 of its ResNet Bottlenecks
        # (zero_init_residual) and not of its ResNeXt ones.
        for (name, a), b in zip(ref.named_parameters(), ours.parameters()):
            assert torch.equal(a, b), name
        norm3 = ours.layer2[0].norm3.weight
        assert torch.count_nonzero(norm3) == (norm3.numel() if resnext else 0)


def test_hooked_block_runs_as_module():
    _, ours = pair()
    seen = []
    block = ours.layer3[1].context_block
    handle = block.register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.randn(1, 3, 48, 48, dtype=torch.float64)
    ours(x)
    handle.remove()
    assert len(seen) == 1 and seen[0].shape[1] == block.in_channels


def test_hooked_norm3_output_is_not_overwritten():
    """norm3's output is reused for the result only when nobody else can
    hold it: a hook's copy of it keeps its values."""
    _, ours = pair()
    bottleneck = ours.layer2[0]
    kept = []
    handle = bottleneck.norm3.register_forward_hook(
        lambda m, i, o: kept.append((o, o.detach().clone())))
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64, requires_grad=True)
    ours(x)[1].sum().backward()
    handle.remove()
    (seen, copy_), = kept
    assert torch.equal(seen, copy_)


@needs_ext
def test_result_reuses_norm3_storage():
    """With the fused loops the result takes norm3's output's storage, as
    mmdet's in-place residual add does: no new full-size tensor per block."""
    _, ours = pair()
    bottleneck = ours.layer2[1]
    norm3 = bottleneck.norm3
    ptrs = []

    def norm3_forward(t):  # an instance attribute, not a hook
        out = type(norm3).forward(norm3, t)
        ptrs.append(out.data_ptr())
        return out

    norm3.forward = norm3_forward
    x = torch.randn(2, 64, 12, 12, dtype=torch.float64, requires_grad=True)
    with use_extension(True):
        out = bottleneck(x)
    assert out.data_ptr() == ptrs[0]
    with use_extension(False):  # the ops path allocates its result
        out = bottleneck(x)
    assert out.data_ptr() != ptrs[1]


@needs_ext
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('isa', ['native', 'generic'])
@pytest.mark.parametrize('relu', [True, False])
@pytest.mark.parametrize('n', [1, 7, 130, 300])
def test_residual_loops(monkeypatch, dtype, isa, relu, n):
    from gcnet_mm import _ext
    if isa == 'generic':
        monkeypatch.setenv('GCNET_MM_EXT_ISA', 'generic')
    x = torch.randn(2, 3, n, dtype=dtype)
    r = torch.randn_like(x)
    t = torch.randn(2, 3, dtype=dtype)
    ref = x + t[..., None] + r
    if relu:
        ref = ref.relu()
    out = torch.empty_like(x)
    _ext.residual_forward(x, t, r, relu, out)
    assert torch.equal(out, ref)
    inplace = x.clone()
    _ext.residual_forward(inplace, t, r, relu, inplace)
    assert torch.equal(inplace, ref)
    grad = torch.randn_like(x)
    g, dt = _ext.residual_backward(grad, out, relu)
    g_ref = torch.where(ref > 0, grad, 0) if relu else grad
    if relu:
        assert torch.equal(g, g_ref)
    else:
        assert g is None  # the gradient passes unchanged
    torch.testing.assert_close(dt, g_ref.double().sum(2).to(dtype),
                               rtol=1e-6, atol=1e-6)
    # (B, C, H, W) as well; g is a tensor of its own, not a view (autograd
    # accumulates into it in place only then).
    g4, _ = _ext.residual_backward(grad.view(2, 3, n, 1), out.view(2, 3, n, 1),
                                   relu)
    if relu:
        assert g4.shape == (2, 3, n, 1) and g4._base is None
        assert torch.equal(g4.view(2, 3, n), g_ref)


@needs_ext
def test_residual_loops_errors():
    from gcnet_mm import _ext
    x = torch.randn(2, 3, 5)
    with pytest.raises(RuntimeError, match=r'identity must have shape'):
        _ext.residual_forward(x, torch.randn(2, 3), torch.randn(2, 3, 4),
                              True, torch.empty_like(x))
    with pytest.raises(RuntimeError, match=r't must have shape'):
        _ext.residual_forward(x, torch.randn(3), x, True, torch.empty_like(x))
    with pytest.raises(RuntimeError, match='float32 or float64'):
        _ext.residual_backward(x.half(), x.half(), True)


@pytest.mark.usefixtures('lean_path')
@pytest.mark.parametrize('relu', [True, False])
@pytest.mark.parametrize('fusions', [('channel_add', ), ('channel_mul', )])
def test_global_context_residual_op(relu, fusions):
    block = mmcv_block(fusions=fusions, dtype=torch.float64)
    bn = nn.BatchNorm2d(16).double()
    inp = torch.randn(2, 16, 5, 7, dtype=torch.float64, requires_grad=True)
    identity = torch.randn_like(inp, requires_grad=True)
    mask = block.conv_mask
    args = (mask.weight, mask.bias, block.channel_add_conv,
            block.channel_mul_conv)
    out = global_context_residual(bn(inp), *args, identity, relu,
                                  overwrite_x=True)
    ref = global_context(bn(inp), *args) + identity
    if relu:
        ref = ref.relu()
    gy = torch.randn_like(ref)
    params = [inp, identity] + list(block.parameters())
    g = torch.autograd.grad(out, params, gy)
    g_ref = torch.autograd.grad(ref, params, gy)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_forward_residual_checks_identity():
    block = ContextBlock(16)
    x = torch.randn(2, 16, 4, 4)
    with pytest.raises(ValueError, match=r'identity of the shape of x '
                       r'\(2, 16, 4, 4\), got \(2, 16, 2, 2\)'):
        block.forward_residual(x, torch.randn(2, 16, 2, 2))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_matches_mmdet(dtype):
    """Under autocast, the same as mmdet's ResNet with the same blocks."""
    ref, ours = pair(ref_block='gcnet_mm.ContextBlock')
    ref, ours = ref.float(), ours.float()
    x = torch.randn(2, 3, 48, 48)
    with torch.autocast('cpu', dtype=dtype):
        o_ref = ref(x)
        o = ours(x)
    for a, b in zip(o, o_ref):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_deepcopy_and_channels_last():
    ref, ours = pair()
    ours2 = copy.deepcopy(ours)
    x = torch.randn(2, 3, 48, 48, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last)
    ref = ref.to(memory_format=torch.channels_last)
    ours2 = ours2.to(memory_format=torch.channels_last)
    assert_same_step(ref, ours2, x)


def test_package_gc_detection_configs_use_the_fused_backbones():
    """Every detection config of the package with GC blocks after conv3 (the
    zoo's placement) builds gcnet_mm's ResNet / ResNeXt by default."""
    import glob
    import os.path as osp

    from mmengine.config import Config
    root = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                    'configs', 'detection')
    checked = 0
    for path in sorted(glob.glob(osp.join(root, '*', '*gcb*.py'))):
        backbone = Config.fromfile(path).model.backbone
        plugins = backbone.get('plugins') or []
        if backbone.type == 'gcnet_mm.BackboneWithBlocks' or not any(
                p['position'] == 'after_conv3' for p in plugins):
            continue
        want = 'gcnet_mm.ResNeXt' if 'x101' in path else 'gcnet_mm.ResNet'
        assert backbone.type == want, (path, backbone.type)
        checked += 1
    assert checked >= 20, checked
