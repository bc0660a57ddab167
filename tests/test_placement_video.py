"""insert_blocks in mmaction2's ResNet3d: every position of a Bottleneck3d
and a BasicBlock3d against the residual block's forward written out by hand,
the blocks' own init after ResNet3d's, mmaction2's non_local beside them, and
copies of the model."""
import copy
import pickle

import pytest
import torch
from torch import nn

import gcnet_mm  # noqa: F401
from conftest import randomize_
from gcnet_mm.models import insert_blocks

mmaction = pytest.importorskip('mmaction')
from mmaction.registry import MODELS  # noqa: E402

GC = dict(type='gcnet_mm.ContextBlock3d', ratio=1 / 4)


def _slowonly(depth=50, **kwargs):
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmaction'):
        return MODELS.build(dict(type='ResNet3dSlowOnly', depth=depth,
                                 pretrained=None, lateral=False,
                                 base_channels=8, **kwargs))


def _by_hand(res, x, position, block):
    """mmaction2's Bottleneck3d/BasicBlock3d forward with ``block`` at
    ``position``, calling the layers' ``forward`` (not their hooks)."""
    at = (lambda name, v: block(v) if name == position else v)
    identity = x
    out = at('after_conv1', res.conv1.forward(x))
    out = res.conv2.forward(out)
    if hasattr(res, 'conv3'):
        out = res.conv3.forward(at('after_conv2', out))
        out = at('after_conv3', out)
    else:
        out = at('after_conv2', out)
    if res.downsample is not None:
        identity = res.downsample.forward(x)
    out = res.relu(out + identity)
    if res.non_local:
        out = res.non_local_block(out)
    return at('after_add', out)


@pytest.mark.parametrize('depth,position', [
    (50, 'after_conv1'), (50, 'after_conv2'), (50, 'after_conv3'),
    (50, 'after_add'), (18, 'after_conv1'), (18, 'after_conv2'),
    (18, 'after_add')
])
def test_each_position_is_where_the_name_says(depth, position):
    torch.manual_seed(0)
    backbone = insert_blocks(_slowonly(depth), [
        dict(cfg=GC, blocks={'layer3': [0]}, position=position)])
    randomize_(backbone)
    res = backbone.layer3[0]
    block = res.context_block
    x = torch.randn(1, res.conv1.in_channels, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(res(x), _by_hand(res, x, position, block))
        assert not torch.allclose(res(x), _by_hand(res, x, None, block))


def test_after_conv3_does_not_exist_in_a_basic_block():
    with pytest.raises(ValueError, match="'after_conv3' does not exist"):
        insert_blocks(_slowonly(18), [
            dict(cfg=GC, stages=(False, False, True, False),
                 position='after_conv3')])


def test_blocks_start_as_identity_after_resnet3d_init():
    """ResNet3d's init_weights puts Kaiming in every Conv3d and ones in every
    norm below it, the blocks' included; then the blocks re-initialise."""
    backbone = insert_blocks(_slowonly(), [
        dict(cfg=GC, stages=(False, True, True, True), position='after_conv3'),
        dict(cfg=dict(type='gcnet_mm.NonLocalBlock3d', sub_sample='input',
                      norm_cfg=dict(type='BN3d')),
             blocks={'layer2': [1]}, position='after_add')])
    plain = _slowonly()
    plain.load_state_dict(backbone.state_dict(), strict=False)
    torch.manual_seed(1)
    backbone.init_weights()
    assert not backbone.layer2[0].context_block.channel_add_conv[
        3].weight.any()
    assert not backbone.layer2[1].nonlocal_block.conv_out.bn.weight.any()
    plain.load_state_dict({k: v for k, v in backbone.state_dict().items()
                           if k in plain.state_dict()})
    backbone.eval()  # (ResNet3d.train() returns None: no chaining)
    plain.eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), plain(x))


def test_beside_mmaction2_non_local():
    """mmaction2's own NL block runs first, on the residual block's output;
    an 'after_add' block runs after it."""
    backbone = insert_blocks(
        _slowonly(non_local=((0, 0, 0), (0, 1, 0, 0), (0, 0, 0, 0, 0, 0),
                             (0, 0, 0)),
                  non_local_cfg=dict(norm_cfg=dict(type='BN3d'))),
        [dict(cfg=GC, blocks={'layer2': [1]}, position='after_add')])
    randomize_(backbone)
    res = backbone.layer2[1]
    x = torch.randn(1, res.conv1.in_channels, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            res(x), _by_hand(res, x, 'after_add', res.context_block))
    assert 'layer2.1.non_local_block.g.conv.weight' in backbone.state_dict()


def test_copies_run_their_own_blocks():
    backbone = insert_blocks(_slowonly(), [
        dict(cfg=GC, stages=(False, False, True, True),
             position='after_conv3')])
    randomize_(backbone)
    x = torch.randn(1, 3, 4, 32, 32)
    for copied in (copy.deepcopy(backbone),
                   pickle.loads(pickle.dumps(backbone))):
        with torch.no_grad():
            torch.testing.assert_close(copied(x), backbone(x))
        before = copy.deepcopy(backbone.state_dict())
        mask = copied.layer4[0].context_block.conv_mask.weight
        nn.init.zeros_(mask)
        copied.init_weights()  # its own wrapper, on its own blocks
        assert mask.any()  # re-initialised
        assert all(torch.equal(v, backbone.state_dict()[k])
                   for k, v in before.items())  # the original untouched
