"""gcnet_mm._ext, the fused CPU loops of the GC block's attention pooling,
against the fused path's PyTorch-ops kernels and mmcv's ContextBlock on
random inputs."""
import os
import warnings

import pytest
import torch
from torch import nn

from conftest import mmcv_block, ours, outputs_and_grads
from gcnet_mm.ops import cpu_kernels, global_context
from gcnet_mm.ops.cpu_kernels import _ext, extension_isa
from gcnet_mm.ops.dispatch import force_kernels

needs_ext = pytest.mark.skipif(_ext is None, reason='gcnet_mm._ext not built')


def test_extension_is_built():
    """tools/setup_env.sh builds it (a failed build fails the install); only
    an install that opted out (GCNET_MM_WITH_EXT=0) may lack it."""
    if os.environ.get('GCNET_MM_WITH_EXT') == '0':
        pytest.skip('installed with GCNET_MM_WITH_EXT=0')
    assert _ext is not None
    assert extension_isa() in ('avx2', 'generic')


def test_extension_that_does_not_load_warns(monkeypatch):
    """Built against another torch: a warning that says how to rebuild, and
    the PyTorch-ops kernels; not built at all: those kernels, silently."""
    attention_pool = cpu_kernels

    def broken(name):
        raise ImportError(f'{name}: undefined symbol: _ZN3c104cuda9SetDevice')

    monkeypatch.setattr(attention_pool.importlib, 'import_module', broken)
    with pytest.warns(UserWarning, match=r'does not load \(gcnet_mm._ext: '
                      r'undefined symbol.*--no-build-isolation'):
        assert attention_pool._load_extension() is None

    def missing(name):
        raise ModuleNotFoundError(f"No module named '{name}'")

    monkeypatch.setattr(attention_pool.importlib, 'import_module', missing)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert attention_pool._load_extension() is None


@pytest.fixture(params=['avx2', 'generic'])
def isa(request, monkeypatch):
    """Both copies of the loops: AVX2 + FMA where the CPU has them, and the
    portable one."""
    if _ext is None:
        pytest.skip('gcnet_mm._ext not built')
    if request.param == 'generic':
        monkeypatch.setenv('GCNET_MM_EXT_ISA', 'generic')
    if _ext.isa() != request.param:
        pytest.skip(f'this CPU has no {request.param}')
    return request.param


def run(m, x, gy, fused):
    """Output and gradients (x, then m's parameters) on the fused path, in
    the CPU loops (``fused``) or in PyTorch ops."""
    with force_kernels('cpu' if fused else 'torch'):
        y, grads = outputs_and_grads(lambda t: ours(m, t), m, x, gy)
    assert type(y.grad_fn).__name__ == '_FuseAddBackward'
    return [y] + list(grads)


@pytest.mark.parametrize('shape', [(2, 16, 5, 7), (3, 18, 4, 9),
                                   (1, 5, 1, 1), (2, 9, 1, 37)])
@pytest.mark.parametrize('chunk_bytes', [None, '1024'])
def test_fused_matches_ops_and_mmcv_float64(isa, shape, chunk_bytes,
                                            monkeypatch):
    """Channels not a multiple of 4, positions not a multiple of the vector
    width, and (with 1 KiB chunks: 16 positions) several chunks per sample
    with a short last one, so the softmax and dw merges across chunks run."""
    if chunk_bytes:
        monkeypatch.setenv('GCNET_MM_CHUNK_BYTES', chunk_bytes)
    m = mmcv_block(shape[1], dtype=torch.float64)
    x = torch.randn(shape, dtype=torch.float64)
    gy = torch.randn_like(x)
    fused = run(m, x, gy, True)
    ops = run(m, x, gy, False)
    with torch.no_grad():
        ref = m(x)
    torch.testing.assert_close(fused[0], ref, atol=1e-12, rtol=1e-10)
    for a, b in zip(fused, ops):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_concentrated_attention_across_chunks(isa, monkeypatch):
    """Logits a thousand apart: whole chunks get exactly zero attention (exp
    underflows), which the merges of the softmax and of dw must survive."""
    monkeypatch.setenv('GCNET_MM_CHUNK_BYTES', '1024')  # 16 positions
    m = mmcv_block(8, dtype=torch.float64)
    nn.init.uniform_(m.conv_mask.weight, 0.5, 1.5)
    x = torch.randn(2, 8, 66, dtype=torch.float64)
    x[:, :, 16:32] -= 200  # logits >= 800 below the rest
    x = x.view(2, 8, 6, 11)
    gy = torch.randn_like(x)
    with torch.no_grad():
        attn = torch.einsum('c,bcp->bp', m.conv_mask.weight.flatten(),
                            x.flatten(2)).softmax(1)
    assert any((attn[:, p:p + 16] == 0).all(1).any() for p in range(0, 66, 16))
    fused, ops = run(m, x, gy, True), run(m, x, gy, False)
    for a, b in zip(fused, ops):
        assert torch.isfinite(a).all()
        # Logits of magnitude ~100 carry rounding errors 100x larger (and
        # the weight's gradient is a near-cancelling sum): 1e-10, not 1e-12.
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_float32_within_rounding_of_float64(isa):
    """At a c4-like shape (the default chunks), as close to the float64
    result as the PyTorch-ops path is."""
    m64 = mmcv_block(256, dtype=torch.float64)
    x64 = torch.randn(2, 256, 13, 17, dtype=torch.float64)
    gy64 = torch.randn_like(x64)
    ref = run(m64, x64, gy64, False)
    m32 = mmcv_block(256)
    m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    fused = run(m32, x64.float(), gy64.float(), True)
    ops = run(m32, x64.float(), gy64.float(), False)
    for f, o, r in zip(fused, ops, ref):
        err_f = (f.double() - r).abs().max().item()
        err_o = (o.double() - r).abs().max().item()
        scale = r.abs().max().item()
        assert err_f <= max(4 * err_o, 1e-6 * scale), (err_f, err_o, scale)


@needs_ext
def test_gradcheck_through_the_loops(monkeypatch):
    monkeypatch.setenv('GCNET_MM_CHUNK_BYTES', '1024')
    m = mmcv_block(6, dtype=torch.float64)
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64, requires_grad=True)
    w = m.conv_mask.weight.detach().clone().requires_grad_()

    def fn(x, w):
        with force_kernels('cpu'):
            return global_context(x, w, None, add_transform=m.channel_add_conv)

    assert torch.autograd.gradcheck(fn, (x, w))


@needs_ext
def test_errors_name_what_was_given():
    with pytest.raises(RuntimeError, match=r'x must be \(B, C, HW\), got '
                       r'shape \[4, 5\]'):
        _ext.attention_pool_forward(torch.randn(4, 5), torch.randn(5))
    with pytest.raises(RuntimeError, match='float32 or float64, got Half'):
        _ext.attention_pool_forward(torch.randn(1, 4, 5).half(),
                                    torch.randn(4).half())
    with pytest.raises(RuntimeError, match=r'weight must have shape \[4\], '
                       r'got \[5\]'):
        _ext.attention_pool_forward(torch.randn(1, 4, 5), torch.randn(5))
    with pytest.raises(RuntimeError, match='unit stride along HW'):
        _ext.attention_pool_forward(
            torch.randn(1, 5, 4).transpose(1, 2), torch.randn(4))


def load_setup_py(monkeypatch):
    """setup.py's namespace, with setuptools.setup() not run."""
    import runpy
    import setuptools
    monkeypatch.setattr(setuptools, 'setup', lambda **kwargs: None)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(repo)
    return runpy.run_path(os.path.join(repo, 'setup.py'), run_name='setup')


@pytest.mark.parametrize('mode', ['', '1'])
def test_setup_build_is_optional_unless_required(monkeypatch, capsys, mode):
    """GCNET_MM_WITH_EXT unset: a failed compile warns and the install goes
    on; =1: it fails the install; =0: nothing to build."""
    from torch.utils.cpp_extension import BuildExtension
    setup_ns = load_setup_py(monkeypatch)
    monkeypatch.setenv('GCNET_MM_WITH_EXT', '0')
    assert setup_ns['ext_modules']() == ([], {})

    monkeypatch.setenv('GCNET_MM_WITH_EXT', mode)
    (ext, ), cmdclass = setup_ns['ext_modules']()
    assert ext.name == 'gcnet_mm._ext'
    assert '-fopenmp' in ext.extra_compile_args['cxx']

    def no_compiler(self, ext):
        raise RuntimeError('command \'c++\' failed: No such file')

    monkeypatch.setattr(BuildExtension, 'build_extension', no_compiler)
    build = cmdclass['build_ext'].__new__(cmdclass['build_ext'])
    if mode == '1':
        with pytest.raises(RuntimeError, match='No such file'):
            build.build_extension(ext)
    else:
        build.build_extension(ext)
        assert 'building gcnet_mm._ext failed' in capsys.readouterr().err


@pytest.mark.parametrize('value,expected', [
    ('0', 'GC blocks: reference PyTorch ops (GCNET_MM_FUSED=0)'),
    ('1', 'GC blocks: fused path, CPU loops'),
])
def test_switched_at_run_time(value, expected):
    """GCNET_MM_FUSED=0: the reference path everywhere, and env_check says
    so; a value other than 0/1 is an error naming the variable."""
    import subprocess
    import sys
    code = ('import torch\n'
            'from gcnet_mm.ops import use_fused\n'
            'from gcnet_mm.utils.env_check import _check_fused_loops\n'
            'print(use_fused(), "|", _check_fused_loops())')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True,
                         env={**os.environ, 'GCNET_MM_FUSED': value})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith(
        f'{value == "1"} | {expected}')
    bad = subprocess.run([sys.executable, '-c', 'import gcnet_mm'],
                         capture_output=True, text=True,
                         env={**os.environ, 'GCNET_MM_FUSED': 'yes'})
    assert bad.returncode != 0
    assert "GCNET_MM_FUSED='yes': expected 1" in bad.stderr


def test_env_check_fails_without_the_extension(monkeypatch, capsys):
    from gcnet_mm.utils import env_check
    monkeypatch.delenv('GCNET_MM_WITH_EXT', raising=False)
    monkeypatch.setattr(cpu_kernels, '_ext', None)
    assert env_check.main(['--quick']) == 1
    err = capsys.readouterr().err
    assert 'FAIL  fused path' in err and '--no-build-isolation' in err
