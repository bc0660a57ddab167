"""gcnet_mm.ops.triton_kernels on the CPU: a failing kernel never stops the
block, GCNET_MM_TRITON=0, sizes the kernels cannot address, the PyTorch ops
around the launches, and (through tools/benchmark/triton_code.py) the code
Triton generates for sm_80 and sm_90."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
import types
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import REPO, mmcv_block, ours, outputs_and_grads
from gcnet_mm.benchmark import layout_of
from gcnet_mm.ops import dispatch
from gcnet_mm.ops import triton_kernels as tk
from gcnet_mm.ops.dispatch import force_kernels, fused_kernels

if tk.triton is None:
    pytest.skip('Triton is not installed', allow_module_level=True)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

interpreted = pytest.mark.skipif(
    not tk._interpreting(), reason='runs CPU tensors in Triton\'s '
    'interpreter (TRITON_INTERPRET=1, set by conftest.py without a GPU)')


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'triton_code', osp.join(REPO, 'tools', 'benchmark', 'triton_code.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_failure_yet(monkeypatch):
    """The process-wide failure record, fresh for the test and restored
    after it."""
    monkeypatch.setattr(tk, 'failure', None, raising=False)


# -- a failing kernel ---------------------------------------------------------

@triton.jit
def _pool_merge_kernel(logit_ptr, part_ctx_ptr, part_max_ptr, part_sum_ptr,
                       ctx_ptr, C, N, K, CB, NB, VEC_C: tl.constexpr,
                       VEC_N: tl.constexpr, BLOCK_C: tl.constexpr,
                       BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    # Not a power of two: Triton refuses the range.
    tl.store(ctx_ptr + tl.arange(0, 3), 0.)


class Raises:
    """Stands in for a Triton kernel whose launch raises ``error``."""

    def __init__(self, kernel, error):
        self.fn, self.error = kernel.fn, error

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            raise self.error
        return launch


FAILURES = {
    # a real Triton kernel that the interpreter refuses
    'merge kernel': ('_pool_merge_kernel', None),
    # Triton's own errors, from a compile and a launch
    'forward compile': ('_pool_forward_kernel', lambda: (
        triton.compiler.errors.CompilationError(
            'def f(): pass', None, 'made to fail'))),
    'backward resources': ('_pool_backward_kernel', lambda: (
        triton.runtime.errors.OutOfResources(262144, 232448,
                                             'shared memory'))),
    # the launcher's build on a machine without a C compiler
    'no C compiler': ('_pool_backward_da_kernel', lambda: RuntimeError(
        'Failed to find C compiler. Please specify via CC environment '
        'variable.')),
}


@interpreted
@pytest.mark.parametrize('case', FAILURES)
@pytest.mark.parametrize('layout', ['contiguous', 'channels_last'])
def test_a_failing_kernel_warns_once_and_the_block_goes_on(
        case, layout, no_failure_yet, monkeypatch):
    """Forward or backward: mmcv's outputs and gradients, one warning that
    names the kernel, dtype, shape and error, and from then on the
    PyTorch-ops kernels for every block of the process."""
    name, error = FAILURES[case]
    broken = (_pool_merge_kernel if error is None else
              Raises(getattr(tk, name), error()))
    monkeypatch.setattr(tk, name, broken)
    block = mmcv_block(c=16)
    x = torch.randn(2, 16, 5, 7).contiguous(memory_format=layout_of(layout))
    gy = torch.randn_like(x)
    y_ref, g_ref = outputs_and_grads(block, block, x, gy)
    with force_kernels('triton'):
        assert fused_kernels(x, block.conv_mask.weight, block, None) \
            is tk.KERNELS
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            for _ in range(2):
                y, g = outputs_and_grads(lambda t: ours(block, t), block, x,
                                         gy)
                torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
                for a, b in zip(g, g_ref):
                    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        # The process goes on without Triton.
        chosen = fused_kernels(x, block.conv_mask.weight, block, None)
        assert chosen is not None and chosen.name != 'triton'
    ours_warned = [w for w in caught if 'gcnet_mm' in str(w.message)]
    assert len(ours_warned) == 1, [str(w.message) for w in caught]
    text = str(ours_warned[0].message)
    assert ours_warned[0].category is RuntimeWarning
    assert f'Triton kernel {name} failed' in text
    assert 'torch.float32' in text and '(2, 16, 35)' in text
    assert {'merge kernel': 'power of 2', 'forward compile': 'made to fail',
            'backward resources': 'shared memory',
            'no C compiler': 'Failed to find C compiler'}[case] in text
    assert 'GCNET_MM_TRITON=0' in text
    assert tk.failure == text


@interpreted
def test_kernels_run_where_nothing_fails(no_failure_yet):
    """The fixture above is not what makes the kernels pass: without a
    failure the Triton kernels run and warn nothing."""
    block = mmcv_block(c=16)
    x = torch.randn(2, 16, 5, 7)
    with force_kernels('triton'), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        torch.testing.assert_close(ours(block, x), block(x), atol=1e-5,
                                   rtol=1e-4)
    assert not [m for m in w if 'gcnet_mm' in str(m.message)]
    assert tk.failure is None


@pytest.mark.parametrize('value,runs', [('0', False), ('1', True)])
def test_gcnet_mm_triton_switch(value, runs):
    """GCNET_MM_TRITON=0 leaves the Triton kernels out (the fused path runs
    its other kernels); a value other than 0/1 names the variable."""
    code = ('import torch\n'
            'from gcnet_mm.ops.dispatch import force_kernels, fused_kernels\n'
            'x = torch.randn(2, 8, 3, 4)\n'
            'with force_kernels("triton"):\n'
            '    k = fused_kernels(x, torch.ones(1, 8, 1, 1), abs, None)\n'
            'print(k.name)')
    env = dict(os.environ, GCNET_MM_TRITON=value, TRITON_INTERPRET='1')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert (out.stdout.split()[-1] == 'triton') is runs
    env['GCNET_MM_TRITON'] = 'off'
    bad = subprocess.run([sys.executable, '-c', 'import gcnet_mm'],
                         capture_output=True, text=True, env=env)
    assert bad.returncode != 0
    assert "GCNET_MM_TRITON='off': expected 1" in bad.stderr


def test_switch_off_in_process(monkeypatch):
    monkeypatch.setattr(dispatch, '_triton', False)
    x = torch.randn(2, 8, 3, 4)
    with force_kernels('triton'):
        assert fused_kernels(x, torch.ones(1, 8, 1, 1), abs,
                             None).name != 'triton'


# -- the kernels against the PyTorch ops --------------------------------------

def as3(t, layout):
    t = t.contiguous(memory_format=layout_of(layout))
    return t.view(t.shape[0], t.shape[1], -1)


@interpreted
@pytest.mark.parametrize('dtype,layout,grads', [
    (d, lay, 'train') for d in ('fp32', 'bf16', 'fp16')
    for lay in ('contiguous', 'channels_last', 'mixed')
] + [('fp32', 'contiguous', g) for g in ('frozen weight', 'frozen input',
                                         'no g', 'no g, frozen weight')])
def test_kernels_match_the_pytorch_ops(dtype, layout, grads, no_failure_yet):
    """Forward and backward of the kernel set against the PyTorch-ops set in
    float64, on rows whose lengths allow 16-byte vectors (72 channels: a
    tail block; 4x6 positions in two chunks), every layout (mixed: g in the
    other one) and every gradient case."""
    tool = load_tool()
    need_x, need_w, has_g = tool.GRADS[grads]
    dt = tool.DTYPES[dtype]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 72, 4, 6, generator=gen)
    g = torch.randn(3, 72, 4, 6, generator=gen) if has_g else None
    w = torch.randn(72, generator=gen)
    dctx = torch.randn(3, 72, generator=gen)
    alpha = torch.rand(72, generator=gen) + 0.5
    # The inputs as the kernels see them (rounded to dt).
    x, dctx = x.to(dt).double(), dctx.to(dt).double()
    dctx_src = (dctx * alpha).to(dt).double()
    g = None if g is None else g.to(dt).double()
    x_layout = 'contiguous' if layout == 'mixed' else layout
    g_layout = 'channels_last' if layout == 'mixed' else layout
    x_mat = as3(x.to(dt), x_layout)
    ctx, attn = tk.KERNELS.forward(x_mat, w)
    ref = tk.torch_kernels.KERNELS
    ctx_ref, attn_ref = ref.forward(as3(x, x_layout), w.double())
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == 'fp32' else dict(atol=2e-2,
                                                                  rtol=2e-2)
    assert ctx.dtype == dt and attn.dtype == torch.float32
    torch.testing.assert_close(ctx.double(), ctx_ref, **tol)
    torch.testing.assert_close(attn.double(), attn_ref, **tol)
    cl = x_layout == 'channels_last'
    dx, dw = tk.KERNELS.backward(
        x_mat, attn, dctx_src.to(dt), dctx.to(dt), w,
        None if g is None else as3(g.to(dt), g_layout).view(g.shape),
        need_x, need_w, cl)
    dx_ref, dw_ref = ref.backward(as3(x, x_layout), attn_ref, dctx_src,
                                  dctx, w.double(), g, need_x, need_w, cl)
    assert (dx is None) is (not need_x) and (dw is None) is (not need_w)
    if need_x:
        assert dx.dtype == dt and dx.stride() == x_mat.stride()
        torch.testing.assert_close(dx.double(), dx_ref, **tol)
    if need_w:
        torch.testing.assert_close(dw.double(), dw_ref, **tol)
    assert tk.failure is None


# -- sizes, grids and devices -------------------------------------------------

@interpreted
def test_accepts_what_its_offsets_address():
    """A batch of 2**31 elements or more is fine (the sample's offset is
    64-bit); a sample whose offsets pass 2**31 - 1 is declined (offsets
    within a sample are 32-bit).  Meta tensors: no memory is allocated."""
    def meta(*shape, layout=torch.contiguous_format):
        return torch.empty(shape, device='meta').contiguous(
            memory_format=layout)

    assert tk.KERNELS.accepts(meta(64, 2048, 128, 128))  # 2**31 elements
    assert tk.KERNELS.accepts(meta(512, 2048, 64, 64))  # 2**32
    assert tk.KERNELS.accepts(meta(1, 2048, 1024, 1024))  # 2**31 - 1
    assert not tk.KERNELS.accepts(meta(1, 2048, 1024, 1025))
    assert not tk.KERNELS.accepts(meta(1, 2048, 1024, 1025,
                                       layout=torch.channels_last))
    # The arithmetic itself: tile overhangs count, grids within CUDA's.
    n = 2**25  # 64 channels: offsets up to 2**31 - 1
    assert tk.fits((1, 64, n), (64 * n, n, 1))
    assert not tk.fits((1, 64, n + 1), (64 * n + 64, n + 1, 1))
    # One channel of 2**25 + 1: the 63 masked rows of its tile count.
    assert not tk.fits((1, 1, n + 1), (n + 1, n + 1, 1))
    assert not tk.fits((1, 64, n), (64 * n, n, 2))  # strided
    assert not tk.fits((1, 64 * 65536, 1), (64 * 65536, 1, 1))
    assert not tk.fits((2**31, 1, 16), (16, 16, 1))


def recorded_grids(x_mat):
    """Grids of one forward + backward of ``x_mat`` (meta tensors: the host
    code runs, no kernel)."""
    tool = load_tool()
    grids = []
    names = [n for n in vars(tk) if n.endswith('_kernel')]
    saved = {n: getattr(tk, n) for n in names}
    launches = []
    for n in names:
        setattr(tk, n, tool._Recorder(saved[n], launches))
    try:
        b, c, n_ = x_mat.shape
        tk.KERNELS.forward(x_mat, torch.empty(c, device='meta'))
        tk.KERNELS.backward(x_mat, torch.empty(b, n_, device='meta'),
                            torch.empty(b, c, device='meta'),
                            torch.empty(b, c, device='meta'),
                            torch.empty(c, device='meta'),
                            torch.empty(b, c, n_, device='meta'), True, True,
                            False)
    finally:
        for n, k in saved.items():
            setattr(tk, n, k)
    for _, grid, _, _ in launches:
        grids.append(tuple(grid) + (1, ) * (3 - len(grid)))
    return grids


@pytest.mark.parametrize('shape', [(1, 8, 2048, 2049), (2, 512, 100, 152),
                                   (4096, 16, 1, 1)])
def test_grids_within_cuda_limits(shape, no_failure_yet):
    """Any H*W: 4.2 million positions are over 65535 blocks of 64, which
    the grid's second and third dimensions cannot hold."""
    b, c, h, w = shape
    x_mat = torch.empty(shape, device='meta').view(b, c, h * w)
    grids = recorded_grids(x_mat)
    for x, y, z in grids:
        assert 1 <= x <= 2**31 - 1 and 1 <= y <= 65535 and 1 <= z <= 65535
    assert len(grids) == 4


def test_launches_run_under_the_tensors_device(monkeypatch):
    entered = []
    monkeypatch.setattr(torch.cuda, 'device',
                        lambda d: entered.append(d) or types.SimpleNamespace(
                            __enter__=None))
    t = types.SimpleNamespace(device=torch.device('cuda', 1))
    tk._on_device(t)
    assert entered == [torch.device('cuda', 1)]
    assert isinstance(tk._on_device(torch.empty(1)),
                      type(tk.contextlib.nullcontext()))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs 2 GPUs')
def test_second_gpu_while_the_first_is_current():
    block = mmcv_block().cuda(1)
    x = torch.randn(2, 16, 5, 7, device='cuda:1')
    with torch.cuda.device(0):
        y = ours(block, x)
    torch.testing.assert_close(y, block(x), atol=1e-5, rtol=1e-4)


# -- PyTorch ops around the launches ------------------------------------------

class CountOps(TorchDispatchMode):
    """Counts the ATen ops that compute (no views, no allocations)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if not func.is_view and name not in ('aten::empty',
                                             'aten::empty_strided'):
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_one_pytorch_op_around_the_kernels(dtype, no_failure_yet):
    """A forward and a training backward: the kernels' launches and one
    PyTorch op (the weight gradient's sum over the chunks)."""
    tool = load_tool()
    names = [n for n in vars(tk) if n.endswith('_kernel')]
    saved = {n: getattr(tk, n) for n in names}
    launches = []
    x_mat = torch.randn(2, 64, 35).to(dtype)
    w, g = torch.randn(64), torch.randn_like(x_mat)
    dctx_src, dctx = torch.randn(2, 2, 64).to(dtype)
    counter = CountOps()
    try:
        for n in names:
            setattr(tk, n, tool._Recorder(saved[n], launches))
        with counter:
            _, attn = tk.KERNELS.forward(x_mat, w)
            forward = list(counter.ops)
            tk.KERNELS.backward(x_mat, attn, dctx_src, dctx, w, g, True, True,
                                False)
    finally:
        for n, k in saved.items():
            setattr(tk, n, k)
    assert forward == []
    assert counter.ops == ['aten::sum']
    assert len(launches) == 4


# -- the generated code -------------------------------------------------------

def allowed_bytes(row):
    """The widest access the feature map's alignment allows: along H*W
    (contiguous) or C (channels_last), at most 16 bytes."""
    b, c, h, w = row['shape']
    elem = 4 if row['dtype'] == 'fp32' else 2
    if (row['g_layout'] is not None
            and row['kernel'] == '_pool_backward_kernel'):
        return elem  # x and g of two layouts in one tile
    length = h * w if row['layout'] == 'contiguous' else c
    vec = 16 // elem
    while length % vec:
        vec //= 2
    return vec * elem


def compiled(cases, archs, tmp_path):
    out = tmp_path / 'code.json'
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'benchmark',
                                  'triton_code.py'), '--cases', cases,
         '--arch', *map(str, archs), '--json', str(out)],
        capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())['rows'], proc.stdout


def check_code(rows):
    """The properties the docs state, for every compiled launch."""
    assert rows
    for r in rows:
        what = (r['case'], r['dtype'], r['layout'], r['grads'], r['kernel'],
                r['arch'])
        feature_map = r['kernel'] != '_pool_merge_kernel'
        expected = allowed_bytes(r) if feature_map else r['allowed_bytes']
        tiles = r['tile_loads'] + r['tile_stores']
        # Every tile access as wide as the alignment allows, and the PTX
        # has accesses of that width.
        assert tiles and set(tiles) == {expected}, (what, tiles, expected)
        if r['tile_loads']:
            assert r['ptx_loads'].get(str(expected), 0) >= 1, what
        over_c = [x for x in r['reductions'] if x['over'] == 'channels']
        assert not any(x['in_loop'] for x in over_c), what
        if r['kernel'] in ('_pool_forward_kernel',
                           '_pool_backward_da_kernel'):
            assert len(over_c) == 1, what  # one per program
        if feature_map:  # the sample's offset in 64 bits
            assert r['sample_offsets'] and set(
                r['sample_offsets'].values()) == {'i64'}, what


def test_generated_code_of_the_block_shapes(tmp_path):
    """c3/c4/c5 at batch 2 of an 800x1216 input, float32 and bfloat16,
    both layouts, a training step, compiled for sm_90: 16-byte accesses
    wherever the rows' alignment allows them (c5's 25x38 positions only 2
    elements), one reduction over the channels per program."""
    rows, table = compiled('blocks', [90], tmp_path)
    check_code(rows)
    kernels = {r['kernel'] for r in rows}
    assert kernels == {'_pool_forward_kernel', '_pool_merge_kernel',
                       '_pool_backward_da_kernel', '_pool_backward_kernel'}
    widths = {(r['case'][:2], r['dtype'], r['layout']): r['tile_loads'][0]
              for r in rows if r['kernel'] == '_pool_forward_kernel'}
    assert widths[('c4', 'fp32', 'contiguous')] == 16
    assert widths[('c5', 'fp32', 'contiguous')] == 8
    assert widths[('c5', 'bf16', 'contiguous')] == 4
    assert widths[('c5', 'bf16', 'channels_last')] == 16
    assert '| c4 800x1216 b2 | 2x1024x50x76 | fp32 | contiguous |' in table


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_every_variant_compiles_for_sm80_and_sm90(tmp_path):
    """Every kernel variant the cases reach (each dtype, layout, vector
    width, block of positions and gradient case) compiles for both
    targets, with the properties above."""
    rows, _ = compiled('all', [80, 90], tmp_path)
    check_code(rows)
    assert {r['arch'] for r in rows} == {'sm_80', 'sm_90'}
    variants = {(r['kernel'], json.dumps(r['constexprs'], sort_keys=True),
                 r['dtype']) for r in rows}
    layouts = {json.loads(v)['LAYOUT'] for k, v, _ in variants
               if k == '_pool_backward_kernel'}
    assert layouts == {0, 1, 2}
    assert {json.loads(v)['BLOCK_P'] for k, v, _ in variants
            if k == '_pool_forward_kernel'} == {16, 32, 64}


def test_ttgir_and_ptx_readers():
    tool = load_tool()
    ttgir = '\n'.join([
        '#blocked = #ttg.blocked<{sizePerThread = [1, 4], threadsPerWarp = '
        '[4, 8], warpsPerCTA = [4, 1], order = [1, 0]}>',
        'module {',
        '  tt.func @k() {',
        '    %a = scf.for %i = %c0 to %C step %c64 iter_args() -> () {',
        '      %x = tt.load %p, %m : tensor<64x16x!tt.ptr<bf16>, #blocked>',
        '      %r = "tt.reduce"(%x) <{axis = 0 : i32}> ({',
        '      }) : (tensor<64x16xf32, #blocked>) -> tensor<16xf32>',
        '    }',
        '    %s = "tt.reduce"(%a) <{axis = 1 : i32}> ({',
        '    }) : (tensor<64x16xf32, #blocked>) -> tensor<64xf32>',
        '    %t = "tt.reduce"(%v) <{axis = 0 : i32}> ({',
        '    }) : (tensor<16xf32, #blocked>) -> f32',
        '    %o = tt.addptr %x_ptr, %off : !tt.ptr<f32>, i64',
        '  }',
        '}'])
    assert tool.reductions(ttgir, ('channels', 'positions')) == [
        dict(over='channels', in_loop=True),
        dict(over='positions', in_loop=False)]
    assert tool.tile_accesses(ttgir) == {'ld': [8], 'st': []}
    assert tool.sample_offsets(ttgir) == {'x_ptr': 'i64'}
    ptx = ('@%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];\n'
           'ld.global.L1::evict_last.b32 %r5, [ %rd2 ];\n'
           '@%p2 st.global.v2.b16 [ %rd3 ], { %rs1, %rs2 };')
    assert tool.accesses(ptx) == {'ld': {16: 1, 4: 1}, 'st': {4: 1}}
