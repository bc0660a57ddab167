"""gcnet_mm.ops.global_context against mmcv's ContextBlock, on both paths
and every kernel set of the fused path."""
import copy
import pickle

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import (mmcv_block, ours, outputs_and_grads, reference_path,
                      runs_on)
from gcnet_mm.ops import global_context, set_fused, use_fused
from gcnet_mm.ops.global_context import reference_global_context

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


def fused(y):
    return type(y.grad_fn).__name__.startswith('_FuseAdd')


@pytest.mark.parametrize('pooling', ['att', 'avg'])
@pytest.mark.parametrize('fusions', FUSIONS)
@pytest.mark.parametrize('batch', [1, 3])
def test_matches_mmcv(kernels, pooling, fusions, batch):
    dtype = torch.float32 if kernels == 'triton' else torch.float64
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else {}
    block = mmcv_block(pooling=pooling, fusions=fusions, dtype=dtype)
    x = torch.randn(batch, 16, 5, 7, dtype=dtype)
    runs_on(kernels, x)
    y, _ = assert_matches_mmcv(block, x, **tol)
    assert fused(y) == (pooling == 'att' and fusions == ('channel_add', ))


@pytest.mark.parametrize('shape', [(2, 70, 9, 11), (1, 5, 1, 1),
                                   (3, 130, 1, 37)])
def test_float32_shapes_across_blocks(kernels, shape):
    """Channels and positions not multiples of the kernels' block sizes (64
    channels, 16 to 64 positions): the tails and the merges across blocks."""
    block = mmcv_block(c=shape[1], ratio=1 / 5)
    x = torch.randn(shape)
    runs_on(kernels, x)
    y, _ = assert_matches_mmcv(block, x, atol=1e-4, rtol=1e-3)
    assert fused(y)


def test_set_fused_switches_every_block_to_the_reference_path():
    block = mmcv_block()
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    assert use_fused() and fused(ours(block, x))
    set_fused(False)
    try:
        assert not use_fused()
        y = ours(block, x)
        assert not fused(y)
        torch.testing.assert_close(y, block(x), atol=1e-6, rtol=1e-5)
    finally:
        set_fused(True)
    with pytest.raises(TypeError, match="expects a bool, got 'no'"):
        set_fused('no')


@pytest.mark.parametrize('fusions', FUSIONS)
def test_channels_last(kernels, fusions):
    dtype = torch.float32 if kernels == 'triton' else torch.float64
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else {}
    block = mmcv_block(fusions=fusions, dtype=dtype)
    x = torch.randn(2, 16, 6, 5, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    if kernels != 'cpu':  # the CPU loops need unit stride along H*W
        runs_on(kernels, x)
    y, g = assert_matches_mmcv(block, x, **tol)
    assert y.is_contiguous(memory_format=torch.channels_last)
    if fusions == ('channel_add', ):
        assert fused(y)
        assert g[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('make', [
    lambda d: torch.randn(2, 16, 6, 8, dtype=d)[:, :, :, ::2],  # strided
    lambda d: torch.randn(2, 16, 6, 8, dtype=d).transpose(2, 3),  # H <-> W
    lambda d: torch.randn(2, 18, 6, 8, dtype=d)[:, 1:17],  # channel slice
    lambda d: torch.randn(2, 6, 8, 18, dtype=d).permute(0, 3, 1, 2)[:, 1:17],
])
def test_non_contiguous(kernels, make):
    block = mmcv_block(dtype=torch.float64)
    x = make(torch.float64)
    assert not x.is_contiguous()
    y, _ = assert_matches_mmcv(block, x)
    assert fused(y)


@pytest.mark.parametrize('batch', [1, 2])
def test_float32_within_rounding(kernels, batch):
    block = mmcv_block(c=64, ratio=1 / 16)
    x = torch.randn(batch, 64, 9, 11)
    runs_on(kernels, x)
    y, _ = assert_matches_mmcv(block, x, atol=1e-4, rtol=1e-4)
    assert fused(y)


def test_no_grad_and_inference_run_the_fused_kernels(kernels, monkeypatch):
    """test.py's forward: the fused kernels, no graph, mmcv's values."""
    import importlib

    from gcnet_mm.ops import attention_pool
    op = importlib.import_module('gcnet_mm.ops.global_context')
    block = mmcv_block()
    x = torch.randn(2, 16, 4, 4)
    runs_on(kernels, x)
    calls = []
    monkeypatch.setattr(op, 'attention_pool',
                        lambda *a: calls.append(a[4].name)
                        or attention_pool._AttentionPool.apply(*a))
    with torch.no_grad():
        y = ours(block, x)
    assert y.grad_fn is None
    torch.testing.assert_close(y, block(x), atol=1e-5, rtol=1e-4)
    with torch.inference_mode():
        torch.testing.assert_close(ours(block, x), block(x), atol=1e-5,
                                   rtol=1e-4)
    assert calls == [kernels, kernels]


def test_only_parameter_grads_and_frozen_input(kernels):
    block = mmcv_block()
    x = torch.randn(2, 16, 4, 5)  # does not require grad
    gy = torch.randn_like(x)
    params = list(block.parameters())
    g_ref = torch.autograd.grad(block(x), params, gy)
    y = ours(block, x)
    assert fused(y)
    for a, b in zip(torch.autograd.grad(y, params, gy), g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_retain_graph_twice(kernels):
    block = mmcv_block()
    x = torch.randn(2, 16, 4, 5, requires_grad=True)
    y = ours(block, x)
    gy = torch.randn_like(y)
    (g1, ) = torch.autograd.grad(y, [x], gy, retain_graph=True)
    (g2, ) = torch.autograd.grad(y, [x], gy)
    torch.testing.assert_close(g1, g2)


def test_transform_ignoring_context_keeps_dx(kernels):
    """If t does not depend on the context, dL/dx must still include g."""
    bias = nn.Parameter(torch.randn(1, 16, 1, 1))
    w = torch.randn(1, 16, 1, 1, requires_grad=True)
    x = torch.randn(2, 16, 3, 3, requires_grad=True)
    y = global_context(x, w, None, add_transform=lambda c: bias.expand_as(c))
    gy = torch.randn_like(y)
    (dx, ) = torch.autograd.grad(y, [x], gy)
    torch.testing.assert_close(dx, gy)


class ThreadsPerOp(TorchDispatchMode):
    """The CPU threads (``torch.get_num_threads()``) each ATen operator ran
    with, split by whether it touched a tensor of at least ``numel``
    elements (the feature map)."""

    def __init__(self, numel):
        super().__init__()
        self.numel = numel
        self.small, self.large = set(), set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [t for t in list(args) + list((kwargs or {}).values())
                   if isinstance(t, torch.Tensor)]
        if not func.is_view and tensors:
            large = any(t.numel() >= self.numel for t in tensors)
            (self.large if large else self.small).add(
                (func.name(), torch.get_num_threads()))
        return func(*args, **(kwargs or {}))


def test_transform_runs_on_one_thread(kernels):
    """The transform's small (B, C) products run on one thread, forward and
    backward; the passes over the feature map on all of them; the gradients
    of the transform's parameters are the reference path's."""
    block = mmcv_block(c=32, ratio=0.25)
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    gy = torch.randn_like(x)
    params = list(block.parameters())
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with ThreadsPerOp(x.numel()) as seen:
            y = ours(block, x)
            grads = torch.autograd.grad(y, [x] + params, gy)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    assert fused(y) and runs_on(kernels, x)
    assert after == 2
    small = {op: n for op, n in seen.small}
    for op in ('aten::addmm', 'aten::mm', 'aten::native_layer_norm',
               'aten::native_layer_norm_backward'):
        assert small.get(op) == 1, (op, sorted(seen.small))
    assert {n for _, n in seen.large} == {2}, sorted(seen.large)
    with reference_path():
        ref = torch.autograd.grad(ours(block, x), [x] + params, gy)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('channels_last', [False, True])
def test_gradcheck_float64(kernels, channels_last):
    if kernels == 'triton':
        pytest.skip('the Triton kernels take float32/16 and bfloat16')
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

    assert fused(fn(x, *params))
    assert torch.autograd.gradcheck(fn, (x, ) + params)


def bottleneck(gc, dtype=torch.float64, seed=0):
    """mmdet's Bottleneck, with mmcv's (``gc='mmcv'``) or gcnet_mm's GC block
    after conv3, or none; random weights and statistics."""
    from mmdet.models.backbones.resnet import Bottleneck
    torch.manual_seed(seed)
    plugins = None
    if gc:
        kind = 'ContextBlock' if gc == 'mmcv' else 'gcnet_mm.ContextBlock'
        plugins = [dict(cfg=dict(type=kind, ratio=0.25),
                        position='after_conv3')]
    block = Bottleneck(16, 4, plugins=plugins).to(dtype)
    for name, p in block.named_parameters():
        nn.init.normal_(p, mean=0.5 if 'norm' in name else 0.0, std=0.3)
    for m in block.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return block


def saved_storages(fn):
    """``fn()`` and {storage: bytes} of every tensor autograd saved."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, storages


def n_big(storages, x):
    return sum(v >= x.numel() * x.element_size() for v in storages.values())


@pytest.mark.parametrize('train', [True, False])
@pytest.mark.parametrize('channels_last', [False, True])
def test_bottleneck_keeps_no_copy_of_its_input(kernels, train,
                                               channels_last):
    """After norm3 the block keeps batch norm's input, not a copy of x: the
    same full-size saved storages as the plain Bottleneck, from the first
    call on."""
    dtype = torch.float32 if kernels == 'triton' else torch.float64
    tol = dict(atol=2e-5, rtol=2e-4) if dtype == torch.float32 else dict(
        atol=1e-10, rtol=1e-8)
    ref, new, plain = (bottleneck(gc, dtype) for gc in ('mmcv', 'ours', None))
    new.load_state_dict(ref.state_dict())
    for m in (ref, new, plain):
        m.train(train)
    x = torch.randn(2, 16, 6, 5, dtype=dtype) * 2 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if kernels != 'cpu' or not channels_last:
        runs_on(kernels, x)
    gy = torch.randn(2, 16, 6, 5, dtype=dtype)

    x_ref = x.clone().requires_grad_()
    y_ref = ref(x_ref)
    g_ref = torch.autograd.grad(y_ref, [x_ref] + list(ref.parameters()), gy)
    _, saved_plain = saved_storages(lambda: plain(x.clone().requires_grad_()))
    for call in range(3):
        x_new = x.clone().requires_grad_()
        y_new, saved = saved_storages(lambda: new(x_new))
        g_new = torch.autograd.grad(y_new, [x_new] + list(new.parameters()),
                                    gy)
        torch.testing.assert_close(y_new, y_ref, **tol)
        for a, b in zip(g_new, g_ref):
            torch.testing.assert_close(a, b, **tol)
        assert n_big(saved, x) == n_big(saved_plain, x), call
        if train:  # the running statistics moved: start again from ref's
            new.load_state_dict(ref.state_dict())


def gc_after(norm, c=16):
    from gcnet_mm.models import ContextBlock
    block = ContextBlock(c, 1 / 4)
    for p in block.parameters():
        nn.init.normal_(p, 0.1, 0.5)
    return nn.Sequential(norm, block)


def test_the_parent_hooks_its_batch_norms_before_they_run():
    """The block's parent gets a pre-hook that puts a note hook on each of
    its batch norms; the very first training call keeps no copy of x, and
    copies (deepcopy, pickle) of the model do the same."""
    from gcnet_mm.ops import norm_source
    model = gc_after(nn.BatchNorm2d(16))
    model.add_module('other', nn.BatchNorm2d(16))  # a sibling, after it
    assert getattr(model, norm_source._HOOKS_NORMS)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    # x (the first batch norm's input, which the block shares) and the
    # block's output (the input of the sibling after it)
    for dup in (model, copy.deepcopy(model),
                pickle.loads(pickle.dumps(model))):
        _, saved = saved_storages(lambda: dup(x))
        assert n_big(saved, x) == 2
        assert getattr(dup[0], norm_source._NOTES_IO)
        assert getattr(dup.other, norm_source._NOTES_IO)
    with torch.no_grad():  # nothing is noted without autograd
        model(x)
    assert norm_source._take_note(x) is None


def test_a_block_alone_keeps_x_and_leaves_no_hook():
    from torch.nn.modules import module as module_hooks

    from gcnet_mm.models import ContextBlock
    from gcnet_mm.ops import norm_source
    before = set(module_hooks._global_module_registration_hooks)
    block = ContextBlock(16, 1 / 4)
    mine = set(module_hooks._global_module_registration_hooks) - before
    assert len(mine) == 1
    bn = nn.BatchNorm2d(16)
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    _, saved = saved_storages(lambda b=block: b(bn(x)))
    assert n_big(saved, x) == 2  # x for batch norm, its output for the block
    del block
    nn.Sequential(nn.ReLU())  # the next registration lets the hook go
    norm_source._sweep()
    assert mine.isdisjoint(module_hooks._global_module_registration_hooks)


@pytest.mark.parametrize('case', ['conv', 'functional', 'inplace_relu'])
def test_no_batch_norm_layer_keeps_x(case):
    """Where no batch-norm layer produced x, unmodified, the block keeps x
    and its gradients stay right."""
    norm = {'conv': nn.Conv2d(16, 16, 1),
            'functional': nn.Identity(),
            'inplace_relu': nn.Sequential(nn.BatchNorm2d(16),
                                          nn.ReLU(inplace=True))}[case]
    model = gc_after(norm)
    if case == 'functional':
        model[0].forward = lambda t: nn.functional.batch_norm(
            t, None, None, training=True)
    ref = gc_after(norm)
    ref[1].load_state_dict(model[1].state_dict())
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    gy = torch.randn(2, 16, 4, 4)
    for _ in range(3):
        y = model(x)
        (dx, ) = torch.autograd.grad(y, [x], gy)
        with reference_path():
            y_ref = ref(x)
            (dx_ref, ) = torch.autograd.grad(y_ref, [x], gy)
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(dx, dx_ref, atol=1e-5, rtol=1e-4)


def test_a_swapped_batch_norm_is_hooked_before_it_runs():
    """A conversion that replaces the norm layer (revert_sync_batchnorm,
    convert_sync_batchnorm) drops its hook: the parent's pre-hook puts one on
    the new layer before it runs, so no call keeps a copy of x."""
    from gcnet_mm.ops import norm_source
    model = gc_after(nn.BatchNorm2d(16))
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    model(x).sum().backward()
    model[0] = nn.BatchNorm2d(16)
    assert not getattr(model[0], norm_source._NOTES_IO, False)
    _, saved = saved_storages(lambda: model(x))
    assert n_big(saved, x) == 1
    assert getattr(model[0], norm_source._NOTES_IO)


def test_in_place_change_of_batch_norm_input_raises():
    bn = nn.BatchNorm2d(16)
    model = gc_after(bn)
    z = torch.randn(2, 16, 4, 4)
    for _ in range(2):  # learn
        model(z * 2).sum().backward()
    inp = z * 2  # not a leaf, so it can be modified in place
    y = model(inp)
    with torch.no_grad():
        inp.add_(1)
    with pytest.raises(RuntimeError, match='modified by an inplace'):
        y.sum().backward()


@pytest.mark.parametrize('reentrant', [False, True])
def test_activation_checkpointing(reentrant):
    """torch.utils.checkpoint around batch norm + block (mmdet's with_cp)."""
    from torch.utils.checkpoint import checkpoint
    model = gc_after(nn.BatchNorm2d(16))
    ref = gc_after(nn.BatchNorm2d(16))
    ref.load_state_dict(model.state_dict())
    x = torch.randn(2, 16, 4, 4, requires_grad=True)
    gy = torch.randn(2, 16, 4, 4)
    with reference_path():
        y_ref = ref(x)
        (g_ref, ) = torch.autograd.grad(y_ref, [x], gy)
    for _ in range(3):
        x.grad = None
        y = checkpoint(model, x, use_reentrant=reentrant)
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
        y.backward(gy)  # (reentrant checkpointing takes no autograd.grad)
        torch.testing.assert_close(x.grad, g_ref, atol=1e-5, rtol=1e-4)
        model.load_state_dict(ref.state_dict())  # undo the BN statistics


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
    assert fused(y) and y.dtype == torch.bfloat16
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
    y = reference_global_context(x, block.conv_mask.weight,
                                 block.conv_mask.bias, block.channel_add_conv,
                                 block.channel_mul_conv)
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
