"""GCHead / NonLocalHead / SNLHead against mmseg's GCHead and NLHead."""
import inspect

import pytest
import torch

import gcnet_mm  # noqa: F401
from conftest import randomize_
from gcnet_mm.models.blocks import ContextBlock, NonLocalBlock, SNLBlock
from gcnet_mm.models.heads import BlockFCNHead, GCHead, NonLocalHead, SNLHead
from gcnet_mm.registry import MODELS

mmseg_heads = pytest.importorskip('mmseg.models.decode_heads')

HEAD = dict(in_channels=8,
            channels=16,
            num_classes=3,
            norm_cfg=dict(type='BN'),
            dropout_ratio=0.0)


def inputs():
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(2, 8, 6, 7, generator=gen)]


def assert_match(ours, theirs, train):
    """Same state-dict keys, strict load, same outputs and gradients."""
    randomize_(theirs, scale=0.3, eval_mode=False)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.train(train)
    theirs.train(train)
    x = inputs()
    out, ref = ours(x), theirs(x)
    torch.testing.assert_close(out, ref)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    grads = {n: p.grad for n, p in theirs.named_parameters()}
    # float32 noise (the block sums in another order than mmcv) and an
    # absolute tolerance relative to the largest gradient: conv_mask.bias has
    # a zero gradient in exact arithmetic (softmax ignores a shift), so only
    # rounding noise is compared there
    scale = max(g.abs().max().item() for g in grads.values())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad,
                                   grads[name],
                                   rtol=1e-4,
                                   atol=1e-5 * scale,
                                   msg=lambda m, n=name: f'{n}: {m}')


@pytest.mark.parametrize('train', [False, True])
@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(ratio=1 / 8, concat_input=False),
    dict(pooling_type='avg', fusion_types=('channel_add', 'channel_mul')),
])
def test_gc_head_matches_mmseg(kwargs, train):
    ours = GCHead(**HEAD, **kwargs)
    theirs = mmseg_heads.GCHead(**HEAD, **kwargs)
    assert type(ours.gc_block) is ContextBlock
    assert assert_match(ours, theirs, train) is None
    assert 'gc_block.channel_add_conv.1.weight' in ours.state_dict()


@pytest.mark.parametrize('ours,theirs', [('GCHead', 'GCHead'),
                                         ('NonLocalHead', 'NLHead')])
def test_signature_is_mmsegs(ours, theirs):
    """The same parameters, in the same order, of the same kind (mmseg's
    may be given positionally), with the same defaults."""

    def params(cls):
        return [(p.name, p.kind, p.default)
                for p in inspect.signature(cls.__init__).parameters.values()]

    ours = getattr(gcnet_mm.models.heads, ours)
    assert params(ours) == params(getattr(mmseg_heads, theirs))


def test_heads_built_as_mmsegs_unit_tests_build_them():
    """mmseg's own tests' construction (``in_channels=32, channels=16,
    num_classes=19``, no norm): two convs, the block under mmseg's name,
    mmseg's weights load strictly and give mmseg's output."""
    x = [torch.randn(1, 32, 9, 9, generator=torch.Generator().manual_seed(3))]
    for ours, theirs, name in ((GCHead, mmseg_heads.GCHead, 'gc_block'),
                               (NonLocalHead, mmseg_heads.NLHead,
                                'nl_block')):
        head = ours(in_channels=32, channels=16, num_classes=19)
        ref = randomize_(theirs(in_channels=32, channels=16, num_classes=19))
        assert len(head.convs) == 2 and hasattr(head, name)
        head.load_state_dict(ref.state_dict(), strict=True)
        head.eval()
        with torch.no_grad():
            torch.testing.assert_close(head(x), ref(x))
        assert head(x).shape == (1, 19, 9, 9)


@pytest.mark.parametrize('kwargs',
                         [dict(), dict(reduction=4, use_scale=False)])
def test_nonlocal_head_matches_mmseg(kwargs):
    ours = NonLocalHead(**HEAD, **kwargs)
    theirs = mmseg_heads.NLHead(**HEAD, **kwargs)
    assert type(ours.nl_block) is NonLocalBlock
    assert_match(ours, theirs, train=False)
    assert 'nl_block.conv_out.bn.weight' in ours.state_dict()


def test_snl_head():
    head = SNLHead(**HEAD)
    assert type(head.snl_block) is SNLBlock
    keys = [k for k in head.state_dict() if 'snl_block' in k]
    assert keys == [
        'snl_block.conv_mask.weight', 'snl_block.conv_mask.bias',
        'snl_block.channel_add_conv.0.weight',
        'snl_block.channel_add_conv.0.bias'
    ]
    # same layout as the FCN baseline plus the block
    fcn = mmseg_heads.FCNHead(num_convs=2, **HEAD)
    assert set(head.state_dict()) - set(fcn.state_dict()) == set(keys)
    assert head(inputs()).shape == (2, 3, 6, 7)


@pytest.mark.parametrize('name', ['GCHead', 'NonLocalHead', 'SNLHead'])
def test_registered_and_block_identity_after_init(name):
    head = MODELS.build(dict(type=f'gcnet_mm.{name}', **HEAD))
    randomize_(head, scale=0.3, eval_mode=False)
    head.init_weights()
    head.eval()
    block = getattr(head, head.block_name)
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(block(x), x)


def test_generic_head_and_errors():
    head = BlockFCNHead(block_cfg=dict(type='SEBlock'),
                        block_name='se',
                        **HEAD)
    assert type(head.se).__name__ == 'SEBlock'
    assert head(inputs()).shape == (2, 3, 6, 7)
    with pytest.raises(TypeError, match=r'num_convs=2.*num_convs=3'):
        GCHead(num_convs=3, **HEAD)
    with pytest.raises(TypeError, match=r"block_cfg must be a config dict"):
        BlockFCNHead(block_cfg='ContextBlock', **HEAD)
    with pytest.raises(ValueError, match=r"block_name.*'convs'"):
        BlockFCNHead(block_cfg=dict(type='ContextBlock'),
                     block_name='convs',
                     **HEAD)
    with pytest.raises(ValueError, match=r'in_channels=8.*channels=16'):
        BlockFCNHead(block_cfg=dict(type='ContextBlock', in_channels=8),
                     **HEAD)
