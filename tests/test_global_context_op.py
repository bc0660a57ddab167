"""gcnet_mm.ops.global_context against mmcv's ContextBlock, on every path."""
import pytest
import torch
from torch import nn

from gcnet_mm.ops import global_context
from gcnet_mm.ops.affine_source import batch_norm_source
from gcnet_mm.ops.global_context import reference_global_context
from helpers import lean_path, mmcv_block, ours, outputs_and_grads  # noqa: F401

FUSIONS = [('channel_add', ), ('channel_mul', ),
           ('channel_add', 'channel_mul')]


def assert_matches_mmcv(block, x, atol=1e-10, rtol=1e-8):
    """Same outputs and gradients as mmcv (which needs a contiguous x)."""
    gy = torch.randn_like(x)
    y_ref, g_ref = outputs_and_grads(lambda t: block(t.contiguous()), block,
                                     x, gy)
    y, g = outputs_and_grads(lambda t: ours(block, t), block, x, gy)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, y_ref, atol=atol, rtol=rtol)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    return y, g


def lean(y):
    return type(y.grad_fn).__name__.startswith('_FuseAdd')


@pytest.mark.parametrize('pooling', ['att', 'avg'])
@pytest.mark.parametrize('fusions', FUSIONS)
@pytest.mark.parametrize('batch', [1, 3])
@pytest.mark.usefixtures('lean_path')
def test_matches_mmcv(pooling, fusions, batch):
    block = mmcv_block(pooling=pooling, fusions=fusions, dtype=torch.float64)
    x = torch.randn(batch, 16, 5, 7, dtype=torch.float64)
    y, _ = assert_matches_mmcv(block, x)
    assert lean(y) == (pooling == 'att' and fusions == ('channel_add', ))


@pytest.mark.parametrize('fusions', FUSIONS)
def test_channels_last(fusions):
    block = mmcv_block(fusions=fusions, dtype=torch.float64)
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    x = x.contiguous(memory_format=torch.channels_last)
    y, g = assert_matches_mmcv(block, x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    if fusions == ('channel_add', ):
        assert lean(y)
        assert g[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('make', [
    lambda d: torch.randn(2, 16, 6, 8, dtype=d)[:, :, :, ::2],  # strided
    lambda d: torch.randn(2, 16, 6, 8, dtype=d).transpose(2, 3),  # H <-> W
    lambda d: torch.randn(2, 18, 6, 8, dtype=d)[:, 1:17],  # channel slice
    lambda d: torch.randn(2, 6, 8, 18, dtype=d).permute(0, 3, 1, 2)[:, 1:17],
])
@pytest.mark.usefixtures('lean_path')
def test_non_contiguous(make):
    block = mmcv_block(dtype=torch.float64)
    x = make(torch.float64)
    assert not x.is_contiguous()
    y, _ = assert_matches_mmcv(block, x)
    assert lean(y)


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.usefixtures('lean_path')
def test_float32_within_rounding(batch):
    block = mmcv_block(c=64, ratio=1 / 16)
    x = torch.randn(batch, 64, 9, 11)
    y, _ = assert_matches_mmcv(block, x, atol=1e-4, rtol=1e-4)
    assert lean(y)


def test_no_grad_and_inference_use_plain_path():
    block = mmcv_block()
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        y = ours(block, x)
    torch.testing.assert_close(y, block(x), atol=1e-5, rtol=1e-4)
    with torch.inference_mode():
        torch.testing.assert_close(ours(block, x), block(x), atol=1e-5,
                                   rtol=1e-4)


@pytest.mark.usefixtures('lean_path')
def test_only_parameter_grads_and_frozen_input():
    block = mmcv_block()
    x = torch.randn(2, 16, 4, 5)  # does not require grad
    gy = torch.randn_like(x)
    params = list(block.parameters())
    g_ref = torch.autograd.grad(block(x), params, gy)
    y = ours(block, x)
    assert lean(y)
    for a, b in zip(torch.autograd.grad(y, params, gy), g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.usefixtures('lean_path')
def test_retain_graph_twice():
    block = mmcv_block()
    x = torch.randn(2, 16, 4, 5, requires_grad=True)
    y = ours(block, x)
    gy = torch.randn_like(y)
    (g1, ) = torch.autograd.grad(y, [x], gy, retain_graph=True)
    (g2, ) = torch.autograd.grad(y, [x], gy)
    torch.testing.assert_close(g1, g2)


@pytest.mark.usefixtures('lean_path')
def test_transform_ignoring_context_keeps_dx():
    """If t does not depend on the context, dL/dx must still include g."""
    bias = nn.Parameter(torch.randn(1, 16, 1, 1))
    w = torch.randn(1, 16, 1, 1, requires_grad=True)
    x = torch.randn(2, 16, 3, 3, requires_grad=True)
    y = global_context(x, w, None, add_transform=lambda c: bias.expand_as(c))
    gy = torch.randn_like(y)
    (dx, ) = torch.autograd.grad(y, [x], gy)
    torch.testing.assert_close(dx, gy)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.usefixtures('lean_path')
def test_gradcheck_float64(channels_last):
    block = mmcv_block(dtype=torch.float64, c=8, ratio=0.5)
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    params = tuple(block.parameters())

    def fn(x, *ps):
        mw, mb, w0, b0, lnw, lnb, w3, b3 = ps

        def transform(c):
            c = nn.functional.conv2d(c, w0, b0)
            c = nn.functional.layer_norm(c, c.shape[1:], lnw, lnb)
            return nn.functional.conv2d(c.relu(), w3, b3)

        return global_context(x, mw, mb, add_transform=transform)

    assert lean(fn(x, *params))
    assert torch.autograd.gradcheck(fn, (x, ) + params)


def bottleneck(gc: bool, seed=0):
    from mmdet.models.backbones.resnet import Bottleneck
    torch.manual_seed(seed)
    plugins = [dict(cfg=dict(type='ContextBlock', ratio=0.25),
                    position='after_conv3')] if gc else None
    block = Bottleneck(16, 4, plugins=plugins).double()
    for name, p in block.named_parameters():
        nn.init.normal_(p, mean=0.5 if 'norm' in name else 0.0, std=0.3)
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return block


def with_our_op(block):
    """A copy of an mmcv-GC Bottleneck whose plugin runs global_context."""
    import copy
    block = copy.deepcopy(block)
    plugin = getattr(block, block.after_conv3_plugin_names[0])
    plugin.forward = lambda x: ours(plugin, x)
    return block


def saved_storages(fn):
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, storages


@pytest.mark.parametrize('train', [True, False])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.usefixtures('lean_path')
def test_bottleneck_batch_norm_recompute(train, channels_last):
    ref = bottleneck(gc=True)
    new = with_our_op(ref)
    plain = bottleneck(gc=False)
    for m in (ref, new, plain):
        m.train(train)
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64) * 2 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    gy = torch.randn(2, 16, 6, 5, dtype=torch.float64)

    x_ref = x.clone().requires_grad_()
    y_ref = ref(x_ref)
    g_ref = torch.autograd.grad(y_ref, [x_ref] + list(ref.parameters()), gy)
    x_new = x.clone().requires_grad_()
    y_new, saved = saved_storages(lambda: new(x_new))
    g_new = torch.autograd.grad(y_new, [x_new] + list(new.parameters()), gy)
    torch.testing.assert_close(y_new, y_ref)
    for a, b in zip(g_new, g_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)

    # The block saved no new full-size tensor: the same big storages as plain.
    _, saved_plain = saved_storages(lambda: plain(x.clone().requires_grad_()))
    big = x.numel() * x.element_size()
    n_big = sum(v >= big for v in saved.values())
    assert n_big == sum(v >= big for v in saved_plain.values())


@pytest.mark.parametrize('train', [True, False])
@pytest.mark.usefixtures('lean_path')
def test_batch_norm_source(train):
    bn = nn.BatchNorm2d(4).train(train)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    y = bn(x)
    src = batch_norm_source(y)
    assert src is not None and src.input is x
    alpha = bn.weight / torch.sqrt(
        (x.var((0, 2, 3), unbiased=False) if train else bn.running_var)
        + bn.eps)
    torch.testing.assert_close(src.alpha(), alpha.detach())
    assert batch_norm_source(y.relu()) is None
    assert batch_norm_source(y[:, :2]) is None
    with torch.no_grad():
        y.mul_(2)
    assert batch_norm_source(y) is None  # modified after batch norm


def test_in_place_change_of_batch_norm_input_raises():
    bn = nn.BatchNorm2d(16)
    block = mmcv_block()
    z = torch.randn(2, 16, 4, 4)
    inp = z * 2  # not a leaf, so it can be modified in place
    y = ours(block, bn(inp))
    with torch.no_grad():
        inp.add_(1)
    with pytest.raises(RuntimeError, match='modified by an inplace'):
        y.sum().backward()


@pytest.mark.usefixtures('lean_path')
def test_checkpoint_hooks_keep_saving_x():
    from torch.utils.checkpoint import checkpoint
    bn = nn.BatchNorm2d(16)
    block = mmcv_block()
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    gy = torch.randn(2, 16, 4, 4)
    y_ref = block(bn(x))
    g_ref = torch.autograd.grad(y_ref, [x], gy)
    y = checkpoint(lambda t: ours(block, bn(t)), x, use_reentrant=False)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.autograd.grad(y, [x], gy)[0], g_ref[0],
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast(dtype):
    block = mmcv_block(c=32, ratio=0.25)
    x = torch.randn(2, 32, 6, 6, requires_grad=True)
    with torch.autocast('cpu', dtype=dtype):
        y = ours(block, x)
        y_ref = block(x)
    assert y.dtype == y_ref.dtype
    gy = torch.randn_like(y)
    (dx, ) = torch.autograd.grad(y, [x], gy)
    (dx_ref, ) = torch.autograd.grad(y_ref, [x], gy)
    assert torch.isfinite(y).all() and torch.isfinite(dx).all()
    torch.testing.assert_close(y.float(), y_ref.float(), atol=0.1, rtol=0.05)
    torch.testing.assert_close(dx, dx_ref, atol=0.1, rtol=0.05)


def test_low_precision_inputs():
    block = mmcv_block(c=32, dtype=torch.bfloat16)
    x = torch.randn(2, 32, 6, 6, dtype=torch.bfloat16, requires_grad=True)
    y = ours(block, x)
    assert lean(y) and y.dtype == torch.bfloat16
    (dx, ) = torch.autograd.grad(y, [x], torch.randn_like(y))
    assert dx.dtype == torch.bfloat16 and torch.isfinite(dx).all()


class OpBlock(nn.Module):
    """The op wrapped as a module around mmcv's parameters."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        return ours(self.block, x)


@pytest.mark.parametrize('fusions', FUSIONS)
def test_jit_trace(fusions):
    block = OpBlock(mmcv_block(fusions=fusions))
    x = torch.randn(2, 16, 5, 6)
    traced = torch.jit.trace(block, x)
    x2 = torch.randn(1, 16, 7, 3)
    torch.testing.assert_close(traced(x2), block.block(x2), atol=1e-5,
                               rtol=1e-4)


@pytest.mark.timeout(600)
def test_torch_compile():
    block = OpBlock(mmcv_block())
    compiled = torch.compile(block)
    x = torch.randn(2, 16, 5, 6, requires_grad=True)
    gy = torch.randn(2, 16, 5, 6)
    y = compiled(x)
    (dx, ) = torch.autograd.grad(y, [x], gy)
    y_ref = block.block(x)
    (dx_ref, ) = torch.autograd.grad(y_ref, [x], gy)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dx, dx_ref, atol=1e-5, rtol=1e-4)


@pytest.mark.timeout(600)
@pytest.mark.parametrize('fusions', [('channel_add', ),
                                     ('channel_add', 'channel_mul')])
def test_onnx_export_matches_eager(fusions, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    pytest.importorskip('onnxscript')
    block = OpBlock(mmcv_block(fusions=fusions)).eval()
    x = torch.randn(2, 16, 5, 6)
    path = str(tmp_path / 'gc.onnx')
    torch.onnx.export(block, (x, ), path, input_names=['x'],
                      output_names=['y'])
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    (y, ) = sess.run(None, {'x': x.numpy()})
    with torch.no_grad():
        y_ref = block(x)
    torch.testing.assert_close(torch.from_numpy(y), y_ref, atol=1e-5,
                               rtol=1e-4)


def test_plain_matches_mmcv():
    block = mmcv_block(fusions=('channel_add', 'channel_mul'))
    x = torch.randn(2, 16, 4, 4)
    y = reference_global_context(x, block.conv_mask.weight, block.conv_mask.bias,
                             block.channel_add_conv, block.channel_mul_conv)
    torch.testing.assert_close(y, block(x), atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_cuda_matches_cpu():
    block = mmcv_block()
    x = torch.randn(2, 16, 5, 7)
    gy = torch.randn_like(x)
    y_cpu, g_cpu = outputs_and_grads(lambda t: ours(block, t), block, x, gy)
    block.cuda()
    y, g = outputs_and_grads(lambda t: ours(block, t), block, x.cuda(),
                             gy.cuda())
    torch.testing.assert_close(y.cpu(), y_cpu, atol=1e-5, rtol=1e-4)
    for a, b in zip(g, g_cpu):
        torch.testing.assert_close(a.cpu(), b, atol=1e-5, rtol=1e-4)
