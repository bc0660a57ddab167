"""The comparison blocks (NonLocalBlock, SEBlock, SNLBlock) and the calling
convention all blocks share. CPU, tiny tensors."""
import inspect
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import BaseModule
from torch import nn

from conftest import randomize_, run_fwd_bwd, submodules
from gcnet_mm.models.blocks import (ContextBlock, NonLocalBlock, SEBlock,
                                    SNLBlock)
from gcnet_mm.registry import MODELS

MODES = ('embedded_gaussian', 'gaussian', 'dot_product', 'concatenation')
ALL_BLOCKS = (ContextBlock, SNLBlock, NonLocalBlock, SEBlock)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------ shared convention
@pytest.mark.parametrize('cls', ALL_BLOCKS)
def test_common_calling_convention(cls):
    block = cls(16)  # in_channels first, everything else has a default
    assert isinstance(block, BaseModule)
    assert MODELS.get(f'gcnet_mm.{cls.__name__}') is cls
    block = randomize_(block, eval_mode=False, scale=0.5)
    x = torch.randn(2, 16, 4, 6, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_abbrs():
    assert ContextBlock._abbr_ == 'context_block'
    assert SNLBlock._abbr_ == 'snl_block'
    assert NonLocalBlock._abbr_ == 'nonlocal_block'
    assert SEBlock._abbr_ == 'se_block'


@pytest.mark.parametrize('cls', ALL_BLOCKS)
def test_forward_shape_errors(cls):
    block = cls(16)
    with pytest.raises(ValueError, match=r'4-D.*5-D'):
        block(torch.randn(1, 16, 2, 3, 3))
    with pytest.raises(ValueError, match=r'C=16.*C=4'):
        block(torch.randn(2, 4, 3, 3))


@pytest.mark.parametrize('cls', ALL_BLOCKS)
@pytest.mark.parametrize('in_channels,exc', [(0, ValueError),
                                             (-1, ValueError),
                                             ('8', TypeError)])
def test_in_channels_errors(cls, in_channels, exc):
    with pytest.raises(exc, match='in_channels') as info:
        cls(in_channels)
    assert repr(in_channels) in str(info.value)


def test_param_counts_paper_r50():
    assert count(ContextBlock(1024, 1 / 16)) == 133_313
    assert count(SNLBlock(1024)) == 1_050_625
    # the paper's NL: BN on conv_out (no conv bias then)
    assert count(NonLocalBlock(1024, norm_cfg=dict(type='BN'))) == 2_100_736
    assert count(NonLocalBlock(1024)) == 2_100_736 - 2048 + 1024
    assert count(SEBlock(1024, 1 / 16)) == 1024 * 64 + 64 + 64 * 1024 + 1024


# ---------------------------------------------------------- NonLocalBlock
def _mmcv_nonlocal_defaults() -> dict:
    """Every argument mmcv's ``NonLocal2d`` takes with a default: its own,
    then ``_NonLocalNd.__init__``'s and ``init_weights``'s (reached through
    ``**kwargs``)."""
    from mmcv.cnn import NonLocal2d
    from mmcv.cnn.bricks.non_local import _NonLocalNd
    defaults = {}
    for fn in (NonLocal2d.__init__, _NonLocalNd.__init__,
               _NonLocalNd.init_weights):
        for name, param in inspect.signature(fn).parameters.items():
            if param.default is not param.empty:
                defaults.setdefault(name, param.default)
    return defaults


def test_nonlocal_signature_is_mmcvs():
    """mmcv's positional parameters in mmcv's order, and each of its
    arguments with mmcv's default (norm_cfg=None included)."""
    from mmcv.cnn import NonLocal2d

    def positional(fn):
        return [name for name, p in inspect.signature(fn).parameters.items()
                if p.kind == p.POSITIONAL_OR_KEYWORD]

    assert positional(NonLocalBlock.__init__) == positional(
        NonLocal2d.__init__) == ['self', 'in_channels', 'sub_sample',
                                 'conv_cfg']
    ours = inspect.signature(NonLocalBlock.__init__).parameters
    defaults = _mmcv_nonlocal_defaults()
    assert {'sub_sample', 'conv_cfg', 'reduction', 'use_scale', 'norm_cfg',
            'mode', 'std', 'zeros_init'} <= set(defaults)
    for name, default in defaults.items():
        assert ours[name].default == default, name


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('sub_sample', [False, True])
def test_nonlocal_built_as_mmcv_is_mmcvs(mode, sub_sample):
    """Built as mmcv's unit tests build NonLocal2d (``sub_sample``
    positionally, nothing else but ``mode``): the same submodules, no norm
    on ``conv_out``, identity at init, mmcv's random weights load strictly
    and give mmcv's output."""
    from mmcv.cnn import NonLocal2d
    torch.manual_seed(0)
    ref = NonLocal2d(8, sub_sample, mode=mode)
    ours = NonLocalBlock(8, sub_sample, mode=mode)
    assert submodules(ours) == submodules(ref)
    assert not ours.conv_out.with_norm and not ref.conv_out.with_norm
    x = torch.randn(2, 8, 4, 6)
    with torch.no_grad():
        assert torch.equal(ours(x), x)
        randomize_(ref, eval_mode=False, scale=0.5)
        ours.load_state_dict(ref.state_dict(), strict=True)
        out = ours(x)
        assert not torch.allclose(out, x)
        torch.testing.assert_close(out, ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('config,norm', [
    ('detection/gcnet_paper/mask-rcnn_r50-syncbn-nl-c4-1blk_fpn_1x_coco.py',
     'SyncBN'),
    ('classification/gcnet/resnet50-nl-c4-1blk_8xb64-ft-coslr-40e_in1k.py',
     'BN'),
])
def test_paper_nl_configs_ask_for_bn_on_conv_out(config, norm):
    """The papers' NL block has a norm on its last conv only, starting at
    zero; NonLocalBlock (as mmcv's) has none unless the config says so."""
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    cfg = Config.fromfile(osp.join(repo, 'configs', config))
    plugins = [p for p in cfg.model.backbone.plugins
               if p['cfg']['type'] == 'gcnet_mm.NonLocalBlock']
    assert len(plugins) == 1
    assert (plugins[0]['cfg'].get('norm_cfg') or {}).get('type') == norm
    block = MODELS.build(dict(plugins[0]['cfg'], in_channels=16))
    assert block.conv_out.with_norm and not block.conv_out.with_bias
    assert torch.all(block.conv_out.norm.weight == 0)


def _assert_same_fwd_bwd(ours, ref, x, grad, ref_name=lambda k: k):
    """Same output (not the identity), input and parameter gradients;
    ``ref_name`` maps the reference's parameter names to ours."""
    out_ref, gx_ref, gp_ref = run_fwd_bwd(ref, x, grad)
    out, gx, gp = run_fwd_bwd(ours, x, grad)
    assert not torch.allclose(out, x)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-5)
    gp_ref = {ref_name(k): v for k, v in gp_ref.items()}
    assert gp.keys() == gp_ref.keys()
    for name in gp:
        torch.testing.assert_close(gp[name], gp_ref[name], rtol=1e-4,
                                   atol=1e-5, msg=name)


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('sub_sample', [False, True])
@pytest.mark.parametrize('norm_cfg', [dict(type='BN'), None])
def test_nonlocal_matches_mmcv(mode, sub_sample, norm_cfg):
    from mmcv.cnn import NonLocal2d
    torch.manual_seed(0)
    ref = randomize_(
        NonLocal2d(8, sub_sample=sub_sample, mode=mode, norm_cfg=norm_cfg),
        eval_mode=False, scale=0.5)
    ours = NonLocalBlock(8, mode=mode, sub_sample=sub_sample,
                         norm_cfg=norm_cfg)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ours.load_state_dict(ref.state_dict(), strict=True)

    x = torch.randn(2, 8, 4, 6)
    grad = torch.randn(2, 8, 4, 6)
    if mode == 'concatenation':
        # mmcv divides the ReLU output in place: its forward is fine but its
        # backward raises; compare forward only, gradients are gradchecked.
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
        return
    _assert_same_fwd_bwd(ours, ref, x, grad)
    for name, buf in ref.named_buffers():  # BN running stats, same update
        torch.testing.assert_close(dict(ours.named_buffers())[name], buf)
    ours.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def _input_pooled_mmcv(block: nn.Module) -> nn.Module:
    """mmcv's ``NonLocal2d`` with the original non-local code's sub-sampling:
    an mmcv block built with ``sub_sample=False`` whose ``phi`` and ``g``
    read the 2x2 max-pooled input (mmcv's forward runs unchanged)."""
    pool = nn.MaxPool2d(kernel_size=(2, 2))
    block.g = nn.Sequential(pool, block.g)
    if block.mode == 'gaussian':
        block.phi, block.sub_sample = pool, True  # phi_x = pool(x)
    else:
        block.phi = nn.Sequential(pool, block.phi)
    return block


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('shape', [(2, 8, 4, 6), (1, 8, 5, 7)])
def test_nonlocal_input_pooling_matches_mmcv_on_pooled_input(mode, shape):
    from mmcv.cnn import NonLocal2d
    torch.manual_seed(0)
    mmcv_block = randomize_(
        NonLocal2d(8, mode=mode, norm_cfg=dict(type='BN')), eval_mode=False,
        scale=0.5)
    ours = NonLocalBlock(8, mode=mode, sub_sample='input',
                         norm_cfg=dict(type='BN'))
    # same parameters as sub_sample=False: its checkpoints load unchanged
    assert ours.state_dict().keys() == mmcv_block.state_dict().keys()
    ours.load_state_dict(mmcv_block.state_dict(), strict=True)
    ref = _input_pooled_mmcv(mmcv_block)

    x = torch.randn(*shape)
    grad = torch.randn(*shape)
    if mode == 'concatenation':  # mmcv's backward is broken, see below
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
        return
    # the reference's g / phi are nn.Sequential(pool, conv): '.1.' in names
    _assert_same_fwd_bwd(
        ours, ref, x, grad,
        ref_name=lambda k: k.replace('g.1.', 'g.').replace('phi.1.', 'phi.'))


def test_nonlocal_input_pooling_differs_from_mmcv_sub_sample():
    """Pooling before the convs is a different function from mmcv's pooling
    after them (max does not commute with a conv), at the same cost of
    attention and a quarter of the cost of phi and g."""
    from mmcv.cnn import NonLocal2d
    after = randomize_(
        NonLocal2d(8, sub_sample=True, norm_cfg=dict(type='BN')),
        eval_mode=False, scale=0.5)
    ours = NonLocalBlock(8, sub_sample='input', norm_cfg=dict(type='BN'))
    state = {k.replace('.0.conv', '.conv'): v
             for k, v in after.state_dict().items()}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 8, 4, 6)
    with torch.no_grad():
        assert not torch.allclose(ours(x), after(x), atol=1e-3)
    assert ours.phi.conv.weight is not None
    from gcnet_mm.analysis.flops import count_flops
    after_flops = count_flops(after.eval(), x)[0]
    ours_flops = count_flops(ours.eval(), x)[0]
    b, n, inner = 2, 24, 4  # batch, positions, phi/g channels
    # phi and g (8 -> 4 channels) on n // 4 positions instead of n
    assert after_flops - ours_flops == b * 2 * (n - n // 4) * 8 * inner


def test_mmcv_concatenation_backward_is_broken_ours_is_not():
    """Documents why NonLocalBlock overrides ``concatenation``."""
    from mmcv.cnn import NonLocal2d
    x = torch.randn(1, 8, 3, 3, requires_grad=True)
    ref = randomize_(NonLocal2d(8, mode='concatenation'), eval_mode=False,
                     scale=0.5)
    with pytest.raises(RuntimeError, match='inplace'):
        ref(x).sum().backward()
    ours = randomize_(NonLocalBlock(8, mode='concatenation'), eval_mode=False,
                      scale=0.5)
    ours(x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('sub_sample', [False, True, 'input'])
@pytest.mark.parametrize('norm_cfg', [None, dict(type='BN')])
def test_nonlocal_identity_at_init(mode, sub_sample, norm_cfg):
    block = NonLocalBlock(8, mode=mode, sub_sample=sub_sample,
                          norm_cfg=norm_cfg)
    last = block.conv_out.norm if norm_cfg else block.conv_out.conv
    assert torch.all(last.weight == 0) and torch.all(last.bias == 0)
    x = torch.randn(2, 8, 4, 4)
    assert torch.equal(block(x), x)
    assert torch.equal(block.eval()(x), x)


class _Parent(BaseModule):
    """Stands in for an mmdet ResNet: Kaiming for every conv, BN to 1, then
    the children's init_weights."""

    def __init__(self, block):
        super().__init__(init_cfg=[
            dict(type='Kaiming', layer='Conv2d'),
            dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
        ])
        self.block = block


@pytest.mark.parametrize('cls,kwargs', [
    (NonLocalBlock, {}),
    (NonLocalBlock, dict(norm_cfg=dict(type='BN'))),
    (NonLocalBlock, dict(sub_sample=True)),
    (NonLocalBlock, dict(sub_sample=True, mode='gaussian')),
    (NonLocalBlock, dict(sub_sample='input')),
    (NonLocalBlock, dict(mode='concatenation', norm_cfg=None)),
    (SNLBlock, {}),
    (ContextBlock, {}),
])
def test_identity_survives_parent_init(cls, kwargs):
    block = randomize_(cls(16, **kwargs), eval_mode=False, scale=0.5)
    x = torch.randn(2, 16, 3, 3)
    assert not torch.equal(block(x), x)
    _Parent(block).init_weights()
    assert torch.equal(block(x), x)


def test_nonlocal_init_weights_restores_mmcv_init():
    block = randomize_(NonLocalBlock(8, std=0.01, norm_cfg=dict(type='BN')),
                       eval_mode=False, scale=0.5)
    block.init_weights()
    assert block.g.conv.weight.std() < 0.05
    assert torch.all(block.g.conv.bias == 0)
    assert torch.all(block.conv_out.norm.weight == 0)
    no_zero = NonLocalBlock(8, zeros_init=False, norm_cfg=None)
    assert no_zero.conv_out.conv.weight.abs().sum() > 0


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('sub_sample', [False, True, 'input'])
def test_nonlocal_gradcheck(mode, sub_sample):
    block = randomize_(
        NonLocalBlock(8, mode=mode, sub_sample=sub_sample,
                      norm_cfg=dict(type='BN')).double(),
        eval_mode=False, scale=0.5)
    block.eval()  # BN with fixed (random) statistics
    with torch.no_grad():
        block.conv_out.norm.running_mean.normal_()
        block.conv_out.norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x, ), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize('kwargs,exc,fragments', [
    (dict(mode='embedded'), ValueError,
     ['mode', "'embedded'", "did you mean 'embedded_gaussian'?"]),
    (dict(mode='softmax'), ValueError, ['mode', "'softmax'", 'gaussian']),
    (dict(reduction=0), ValueError, ['reduction', '0']),
    (dict(reduction=1.5), TypeError, ['reduction', '1.5']),
    (dict(reduction=16), ValueError, ['reduction=16', 'in_channels=8']),
    (dict(norm_cfg='BN'), TypeError, ['norm_cfg', "'BN'"]),
    (dict(sub_sample='inputs'), ValueError,
     ['sub_sample', "'inputs'", "'input'", 'True']),
    (dict(sub_sample=2), ValueError, ['sub_sample', '2', 'False']),
])
def test_nonlocal_errors(kwargs, exc, fragments):
    with pytest.raises(exc) as info:
        NonLocalBlock(8, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


@pytest.mark.parametrize('sub_sample', [True, 'input'])
def test_nonlocal_sub_sample_needs_2x2(sub_sample):
    block = NonLocalBlock(8, sub_sample=sub_sample)
    with pytest.raises(ValueError) as info:
        block(torch.randn(1, 8, 1, 5))
    for fragment in (f'sub_sample={sub_sample!r}', '(1, 8, 1, 5)', '>= 2'):
        assert fragment in str(info.value), str(info.value)
    assert f'sub_sample={sub_sample!r}' in repr(block)


@pytest.mark.parametrize('mode', ['embedded_gaussian', 'gaussian'])
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_nonlocal_autocast_large_inputs(mode, dtype):
    block = randomize_(NonLocalBlock(8, mode=mode), eval_mode=False,
                       scale=0.5).eval()
    # gaussian logits x_i . x_j reach ~8 * 300^2 = 7e5: inf in float16
    x = torch.randn(2, 8, 4, 4) * 300
    try:
        with torch.autocast('cpu', dtype=dtype):
            out = block(x)
    except RuntimeError as e:  # pragma: no cover
        pytest.skip(f'CPU autocast with {dtype}: {e}')
    assert torch.isfinite(out).all()


def test_nonlocal_half_module_large_inputs():
    """No autocast: a float16 module on float16 inputs stays finite."""
    block = randomize_(NonLocalBlock(8, mode='gaussian'), eval_mode=False,
                       scale=0.5).eval().half()
    x = (torch.randn(1, 8, 3, 3) * 300).half()
    try:
        out = block(x)
    except RuntimeError as e:  # pragma: no cover
        pytest.skip(f'float16 on CPU: {e}')
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------- SEBlock
def test_se_matches_formula():
    block = randomize_(SEBlock(8, 1 / 4), eval_mode=False, scale=0.5)
    x = torch.randn(2, 8, 3, 5)
    s = x.mean(dim=(2, 3), keepdim=True)
    s = torch.sigmoid(block.fc2(torch.relu(block.fc1(s))))
    torch.testing.assert_close(block(x), x * s)
    assert set(block.state_dict()) == {
        'fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias'
    }


def test_se_width():
    assert SEBlock(32).planes == 2  # default 1/16
    assert SEBlock(32, 1 / 4).planes == 8
    assert SEBlock(32, channels=5).fc1.out_channels == 5


def test_se_gradcheck():
    block = randomize_(SEBlock(8, 1 / 4).double(), eval_mode=False, scale=0.5)
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x, ), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize('kwargs,exc,fragments', [
    (dict(ratio=1 / 4, channels=2), ValueError, ['ratio', 'channels=2']),
    (dict(ratio=0.0), ValueError, ['ratio', '0.0']),
    (dict(ratio=1 / 16), ValueError, ['ratio', '0.0625', 'in_channels=8']),
    (dict(channels=0), ValueError, ['channels', '0']),
    (dict(channels='4'), TypeError, ['channels', "'4'"]),
])
def test_se_errors(kwargs, exc, fragments):
    with pytest.raises(exc) as info:
        SEBlock(8, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_se_autocast_large_inputs():
    block = randomize_(SEBlock(8, 1 / 4), eval_mode=False, scale=0.5)
    x = torch.randn(2, 8, 4, 4) * 300
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = block(x)
    assert torch.isfinite(out).all()
