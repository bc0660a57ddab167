"""gcnet_mm.ops.norm_source: a GC block after a batch norm keeps the norm's
input and the per-channel slope ``alpha`` instead of ``x``, and finds
``alpha`` without a pass over the feature map.

The gradients equal the reference path's (which keeps ``x``) for every kind
and mode of batch norm, in float64 to rounding, in low precision as closely
as the reference path comes to a float64 run; the passes over the feature
map per block are counted and pinned."""
import collections
import copy
import weakref

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import reference_path
from gcnet_mm.models import ContextBlock
from gcnet_mm.models.blocks.context_block_3d import ContextBlock3d
from gcnet_mm.ops import norm_source
from gcnet_mm.ops.dispatch import force_kernels

C = 16
EXACT = dict(atol=1e-10, rtol=1e-8)  # float64: rounding only


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def make_norm(kind, mode):
    """A batch norm of ``kind`` in ``mode``, random affine parameters and
    running statistics."""
    kwargs = {'momentum_none': dict(momentum=None),
              'no_running_stats': dict(track_running_stats=False)}
    cls = {'bn2d': nn.BatchNorm2d, 'bn3d': nn.BatchNorm3d,
           'syncbn': nn.SyncBatchNorm}[kind]
    norm = cls(C, **kwargs.get(mode.split(':')[0], {}))
    with torch.no_grad():
        norm.weight.normal_(0.5, 0.5)
        norm.bias.normal_(0., 0.5)
        if norm.running_var is not None:
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
    return norm.train(not mode.endswith(':eval'))


def gc_after(norm, dim=4):
    """Sequential(norm, GC block) with random block weights."""
    block = (ContextBlock if dim == 4 else ContextBlock3d)(C, 1 / 4)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + 0.1)
    return nn.Sequential(norm, block)


def grads(model, inp, gy):
    """Output and gradients (input, then parameters) of one call."""
    x = inp.clone().requires_grad_()
    y = model(x)
    g = torch.autograd.grad(y, [x] + list(model.parameters()), gy)
    return [y.detach()] + list(g)


def saved_full_size(model, inp):
    """How many storages of the feature map's size a call saves for the
    backward pass."""
    sizes = {}

    def pack(t):
        sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(inp.clone().requires_grad_())
    full = inp.numel() * inp.element_size()
    return sum(s >= full for s in sizes.values())


def keeps_x(model, inp):
    """Whether the block (``model[1]``) keeps a copy of its input: saves
    more full-size storages than its norm alone (``model[0]``)."""
    return saved_full_size(model, inp) > saved_full_size(
        copy.deepcopy(model[0]), inp)


def compare_paths(model, inp, gy, calls=3, **tol):
    """The fused path against the reference path on copies of ``model``,
    call after call (the running statistics move alike)."""
    ref = copy.deepcopy(model)
    for _ in range(calls):
        got = grads(model, inp, gy)
        with reference_path():
            want = grads(ref, inp, gy)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(model.state_dict(), ref.state_dict(), **tol)
    assert not keeps_x(model, inp)


MODES = ['train', 'momentum_none', 'no_running_stats', 'train:eval',
         'no_running_stats:eval']


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('kind', ['bn2d', 'bn3d', 'syncbn'])
def test_gradients_equal_the_reference_path_float64(kernels, kind, mode):
    """BatchNorm2d/3d and SyncBN (one process: batch norm), in training
    (momentum, cumulative average, no running statistics) and eval mode
    (running statistics, or the batch's without them)."""
    if kernels == 'triton':
        pytest.skip('the Triton kernels take float32/16 and bfloat16')
    dim = 5 if kind == 'bn3d' else 4
    shape = (2, C, 3, 6, 10) if dim == 5 else (2, C, 12, 20)
    model = gc_after(make_norm(kind, mode), dim).double()
    inp = torch.randn(shape, dtype=torch.float64) * 2 + 1
    gy = torch.randn(shape, dtype=torch.float64)
    compare_paths(model, inp, gy, **EXACT)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16,
                                   torch.bfloat16])
@pytest.mark.parametrize('mode', ['train', 'train:eval'])
def test_low_precision_is_as_close_to_float64_as_the_reference(dtype, mode):
    """In float32/16 and bfloat16 the fused path's gradients are as close to
    a float64 run's as the reference path's are (the sampled slope adds no
    error beyond x's own rounding), and within the tolerances used for the
    block elsewhere."""
    model = gc_after(make_norm('bn2d', mode))
    inp = torch.randn(2, C, 24, 20) * 2 + 1
    gy = torch.randn(2, C, 24, 20)
    exact = grads(copy.deepcopy(model).double(), inp.double(), gy.double())
    low = model.to(dtype)
    got = grads(copy.deepcopy(low), inp.to(dtype), gy.to(dtype))
    with reference_path():
        want = grads(copy.deepcopy(low), inp.to(dtype), gy.to(dtype))
    tol = dict(atol=2e-5, rtol=2e-4)
    for a, b, e in zip(got, want, exact):
        if dtype == torch.float32:
            torch.testing.assert_close(a, b, **tol)
        scale = e.abs().max().clamp_min(1e-30)  # (the mask bias: 0)
        err_fused = (a.double() - e).abs().max() / scale
        err_ref = (b.double() - e).abs().max() / scale
        assert err_fused <= 2 * err_ref + 4 * torch.finfo(dtype).eps
    assert not keeps_x(low, inp.to(dtype))


def test_alpha_is_the_batch_norms_slope():
    """``alpha`` equals ``weight / sqrt(var + eps)`` of the batch (training)
    or of the running statistics (eval) to float64 rounding."""
    norm = make_norm('bn2d', 'train').double()
    inp = torch.randn(2, C, 30, 40, dtype=torch.float64) * 3 + 2
    dims = (0, 2, 3)
    for train in (True, False):
        norm.train(train)
        var = inp.var(dims, unbiased=False) if train else norm.running_var
        x = norm(inp)
        alpha = norm_source._alpha(norm, inp, x)
        torch.testing.assert_close(
            alpha, norm.weight.detach() * torch.rsqrt(var + norm.eps),
            atol=0, rtol=1e-13)


def test_zero_weights_and_constant_channels():
    """A channel with a zero weight (mmdet's zero_init_residual norm3) has
    alpha 0; a channel whose input is constant, whatever alpha: the
    gradients equal the reference path's."""
    norm = make_norm('bn2d', 'train').double()
    with torch.no_grad():
        norm.weight[:4] = 0
    inp = torch.randn(2, C, 12, 20, dtype=torch.float64)
    inp[:, 4] = 3.0
    model = gc_after(norm).double()
    x = norm(inp)
    assert (norm_source._alpha(norm, inp, x)[:4] == 0).all()
    compare_paths(model, inp, torch.randn_like(inp), **EXACT)


def sampled(inp):
    """(positions, channels) index of ``inp``'s sampled positions."""
    index = norm_source._sample_index((inp.shape[0], ) + inp.shape[2:],
                                      inp.device)
    return (index[0], slice(None)) + index[1:]


@pytest.mark.parametrize('channels', [slice(None), slice(3, 5)])
def test_a_sample_that_misses_the_spread_takes_all_positions(channels):
    """Where the sampled positions of a channel hold one value (a padded
    corner, say), that channel's alpha comes from all its positions, and the
    gradients stay exact."""
    inp = torch.randn(2, C, 12, 20, dtype=torch.float64)
    key = sampled(inp)
    sample = inp[key]
    sample[:, channels] = 0.5
    inp[key] = sample
    norm = make_norm('bn2d', 'train').double()
    slope, ok = norm_source._sampled_slope(norm, inp, norm(inp))
    assert not ok[channels].any() and ok.sum() == C - len(range(C)[channels])
    model = gc_after(norm).double()
    compare_paths(model, inp, torch.randn_like(inp), **EXACT)


def test_sample_positions_spread_over_the_map():
    """64 distinct positions per channel in runs along the last dimension,
    from every sample of the batch and many rows, the same every call; all
    positions of a small map; no draw from the global generators."""
    state = torch.get_rng_state()
    shape = (4, 50, 68)
    b, h, w = norm_source._sample_index(shape, torch.device('cpu'))
    assert torch.equal(torch.get_rng_state(), state)
    norm_source._sample_index.cache_clear()
    again = norm_source._sample_index(shape, torch.device('cpu'))
    assert all(torch.equal(a, e) for a, e in zip((b, h, w), again))
    assert len(b) == norm_source.SAMPLE_POSITIONS
    assert set(b.tolist()) == {0, 1, 2, 3} and len(set(h.tolist())) == 8
    flat = (b * 50 + h) * 68 + w
    assert len(set(flat.tolist())) == 64
    assert set((flat[1:] - flat[:-1]).tolist()[:7]) == {1}  # a run
    b, h, w = norm_source._sample_index((1, 3, 5), torch.device('cpu'))
    assert sorted(((b * 3 + h) * 5 + w).tolist()) == list(range(15))


# -- SyncBN over several processes --------------------------------------------
class GlooSyncBatchNorm(nn.SyncBatchNorm):
    """SyncBN's arithmetic with the statistics of all processes over gloo
    (torch's own SyncBN runs on GPUs only): differentiable all-reduces of
    the per-channel sums, as ``SyncBatchNorm``'s backward all-reduces its
    gradient terms."""

    def forward(self, inp):
        if not self.training:
            return super().forward(inp)
        from torch.distributed.nn.functional import all_reduce
        dims = [0] + list(range(2, inp.dim()))
        count = torch.full((1, ), inp.numel() / inp.shape[1],
                           dtype=inp.dtype)
        sums = all_reduce(torch.cat([inp.sum(dims), (inp * inp).sum(dims),
                                     count]))
        n = sums[-1]
        mean = sums[:C] / n
        var = sums[C:2 * C] / n - mean * mean
        with torch.no_grad():
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / (n - 1), self.momentum)
        shape = (1, -1) + (1, ) * (inp.dim() - 2)
        scale = self.weight * torch.rsqrt(var + self.eps)
        return ((inp - mean.view(shape)) * scale.view(shape) +
                self.bias.view(shape))


def _two_process_check(rank, path):
    dist.init_process_group('gloo', init_method=f'file://{path}',
                            rank=rank, world_size=2)
    try:
        for constant_sample in (False, True):
            torch.manual_seed(0)
            norm = GlooSyncBatchNorm(C).double()
            with torch.no_grad():
                norm.weight.normal_(0.5, 0.5)
                norm.bias.normal_()
            model = gc_after(norm).double()
            torch.manual_seed(1 + rank)  # each process its own batch
            inp = torch.randn(2, C, 12, 20, dtype=torch.float64) * (1 + rank)
            if constant_sample:  # this process's sample: no spread at all
                inp[sampled(inp)] = 0.25
            assert norm_source._synchronised(norm)
            compare_paths(model, inp, torch.randn_like(inp), **EXACT)
    finally:
        dist.destroy_process_group()


def test_syncbn_over_two_processes(tmp_path):
    """x normalised with both processes' statistics (which differ from each
    one's own): the sampled slope, and where a process's sample has no
    spread the least-squares slope over all positions, give the reference
    path's gradients in each process."""
    import torch.multiprocessing as mp
    mp.spawn(_two_process_check, args=(str(tmp_path / 'store'), ), nprocs=2)


# -- the note's lifetime ------------------------------------------------------
class NormBlockNorm(nn.Module):
    """norm, GC block, then another batch norm (a Bottleneck's downsample
    runs after the block in mmdet's)."""

    def __init__(self):
        super().__init__()
        self.norm = make_norm('bn2d', 'train')
        self.block = ContextBlock(C, 1 / 4)
        self.after = nn.BatchNorm2d(C)

    def forward(self, x):
        return self.after(self.block(self.norm(x)))


def test_a_note_no_block_takes_holds_no_graph():
    """The note holds its norm's output's grad_fn (so that the block
    recognises the node by identity), and with it the graph up to that
    norm: a note that no block takes is dropped at the end of the parent's
    call, so the graph goes with the output, and an exception in the parent
    drops it as well."""
    model = NormBlockNorm()
    saved = []
    model.after.register_forward_hook(
        lambda m, args, out: saved.append(weakref.ref(args[0])))
    inp = torch.randn(2, C, 12, 20)
    for _ in range(2):
        y = model(inp.clone().requires_grad_())
    with reference_path():  # the block keeps x
        assert saved_full_size(model, inp) == 3
    assert saved_full_size(model, inp) == 2  # the norms' inputs only
    del y
    assert saved[-1]() is None  # the after norm's input: its graph is gone

    def fail(m, args, out):
        raise RuntimeError('stop')

    handle = model.after.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match='stop'):
        model(inp.clone().requires_grad_())
    handle.remove()
    assert saved[-1]() is None
    assert getattr(norm_source._local, 'note', None) is None


# -- resume -------------------------------------------------------------------
def test_resumed_training_equals_straight_training():
    """Nothing is carried between steps: a fresh model that loads a
    checkpoint trains on exactly as the one that went straight through."""
    def steps(model, opt, start, stop):
        for i in range(start, stop):
            gen = torch.Generator().manual_seed(i)
            inp = torch.randn(2, C, 12, 20, generator=gen,
                              dtype=torch.float64) + i
            opt.zero_grad()
            (model(inp)**2).mean().backward()
            opt.step()

    def fresh():
        torch.manual_seed(0)
        model = gc_after(make_norm('bn2d', 'train')).double()
        return model, torch.optim.SGD(model.parameters(), lr=0.1,
                                      momentum=0.9)

    straight, opt = fresh()
    steps(straight, opt, 0, 4)
    first, opt = fresh()
    steps(first, opt, 0, 2)
    state = copy.deepcopy((first.state_dict(), opt.state_dict()))
    resumed, opt = fresh()
    resumed.load_state_dict(state[0])
    opt.load_state_dict(state[1])
    steps(resumed, opt, 2, 4)
    for a, b in zip(straight.state_dict().values(),
                    resumed.state_dict().values()):
        assert torch.equal(a, b)


# -- passes over the feature map ----------------------------------------------
_ALLOCATIONS = {torch.ops.aten.empty_like.default,
                torch.ops.aten.new_empty.default,
                torch.ops.aten.empty.memory_format,
                torch.ops.aten.empty_strided.default,
                torch.ops.aten.new_empty_strided.default}
_GATHERS = {torch.ops.aten.index.Tensor, torch.ops.aten.index_select.default,
            torch.ops.aten.gather.default}


class FeatureMapTraffic(TorchDispatchMode):
    """Counts, per ATen operator, reads and writes of tensors of at least
    ``numel`` elements (the feature map's size): one per such operand (a
    gather: the elements it reads, as a fraction of the map), one write per
    such result or written operand.  Views and allocations touch no data."""

    def __init__(self, numel):
        super().__init__()
        self.numel = numel
        self.reads = collections.Counter()
        self.writes = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.is_view or func in _ALLOCATIONS:
            return out
        name = func.name()
        outs = out if isinstance(out, (tuple, list)) else (out, )
        if func in _GATHERS:
            self.reads[name] += sum(o.numel() for o in outs) / self.numel
            return out
        written = set()
        for i, arg in enumerate(func._schema.arguments):
            value = args[i] if i < len(args) else kwargs.get(arg.name)
            if not (isinstance(value, torch.Tensor)
                    and value.numel() >= self.numel):
                continue
            if arg.alias_info is not None and arg.alias_info.is_write:
                self.writes[name] += 1
                written.add(id(value))
                if arg.is_out:
                    continue
            self.reads[name] += 1
        self.writes[name] += sum(
            isinstance(o, torch.Tensor) and o.numel() >= self.numel
            and id(o) not in written for o in outs)
        return out


def traffic(model, inp, gy):
    """(forward, forward + backward) FeatureMapTraffic of one call."""
    x = inp.clone().requires_grad_()
    with FeatureMapTraffic(inp.numel()) as fwd:
        y = model(x)
    with FeatureMapTraffic(inp.numel()) as bwd:
        torch.autograd.grad(y, [x] + list(model.parameters()), gy)
    both = FeatureMapTraffic(inp.numel())
    both.reads = fwd.reads + bwd.reads
    both.writes = fwd.writes + bwd.writes
    return fwd, both


def block_traffic(norm, inp, gy):
    """The GC block's own traffic: norm + block minus norm alone."""
    model = gc_after(norm)
    for _ in range(2):  # the hooks are in place from the first call
        traffic(model, inp, gy)
    fwd, both = traffic(model, inp, gy)
    fwd0, both0 = traffic(nn.Sequential(copy.deepcopy(norm)), inp, gy)
    count = (lambda m, m0: (sum(m.reads.values()) - sum(m0.reads.values()),
                            sum(m.writes.values()) - sum(m0.writes.values())))
    return count(fwd, fwd0), count(both, both0), both.reads


@pytest.mark.parametrize('mode', ['train', 'train:eval', 'momentum_none',
                                  'no_running_stats'])
@pytest.mark.parametrize('kind', ['bn2d', 'syncbn'])
def test_feature_map_passes_per_block_are_pinned(kind, mode):
    """The fused path on its PyTorch-ops kernels, after a batch norm, reads
    the feature map 8 times per forward + backward and writes it 3 times;
    alpha reads no more than the sampled positions (64 per channel).

    8 is the least these ops allow: forward, the logits (x . w), the context
    (x @ softmax, which needs every logit first) and y = x + t (read x,
    write y); backward, dt = sum(g), da = dctx . src, dw = src @ dl (dl
    needs all of da first), and dx = g + dctx a^T + w dl^T, two passes
    (addcmul into dx, then addcmul_ on it: no PyTorch op adds a rank-2
    product to a tensor into a new one in one pass; baddbmm copies first).
    The fused CPU loops take 5 reads and 2 writes (gcnet_mm/csrc)."""
    inp = torch.randn(2, C, 32, 40) * 2 + 1
    gy = torch.randn_like(inp)
    with force_kernels('torch'):
        (fwd_r, fwd_w), (r, w), reads = block_traffic(
            make_norm(kind, mode), inp, gy)
    assert (round(fwd_r, 1), fwd_w) == (3.0, 1)
    assert int(r) == 8 and w == 3, dict(reads)
    sample = 2 * norm_source.SAMPLE_POSITIONS * C / inp.numel()
    assert r - 8 == pytest.approx(0 if mode == 'train:eval' else sample)
    assert 'aten::var.correction' not in reads


def test_a_full_pass_shows_in_the_count():
    """The counter sees a pass where one is made: the fallback for a sample
    with no spread reads the input once more (its variance)."""
    inp = torch.randn(2, C, 32, 40)
    key = sampled(inp)
    inp[key] = 1.0
    with force_kernels('torch'):
        _, (r, _), reads = block_traffic(make_norm('bn2d', 'train'), inp,
                                         torch.randn_like(inp))
    assert int(r) == 9 and reads['aten::var.correction'] == 1


class ThreadsPerOp(TorchDispatchMode):
    """The CPU threads (``torch.get_num_threads()``) each ATen operator ran
    with, by operator name."""

    def __init__(self):
        super().__init__()
        self.seen = collections.defaultdict(set)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen[func.name()].add(torch.get_num_threads())
        return func(*args, **(kwargs or {}))


def test_the_sample_is_fitted_on_one_thread():
    """The slope's sample ((64, C) elements: the gather and the fit) runs on
    one thread, the batch norm and the block's passes on all of them."""
    model = gc_after(make_norm('bn2d', 'train'))
    inp = torch.randn(2, C, 32, 40)
    gy = torch.randn_like(inp)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for _ in range(2):  # the hooks are in place from the first call
            grads(model, inp, gy)
        with ThreadsPerOp() as mode:
            grads(model, inp, gy)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    assert after == 2
    assert mode.seen['aten::index.Tensor'] == {1}  # the gather
    assert mode.seen['aten::stack'] == {1}
    assert mode.seen['aten::native_batch_norm'] == {2}
    assert mode.seen['aten::native_batch_norm_backward'] == {2}
