"""Shared pytest configuration, fixtures and helpers.

``slow`` marks the end-to-end runs of the tools (subprocesses training and
testing on generated data, minutes on 2 cores); skip them locally with
``pytest -m 'not slow'``.  CI runs everything.

Without a GPU the Triton kernels run in Triton's interpreter (on CPU
tensors), so their arithmetic is tested everywhere.

Test modules import the helpers below with ``from conftest import ...``;
``randomize_`` (random non-zero weights) comes from gcnet_mm.benchmark, which
the benchmark and the GPU check share.
"""
import glob
import json
import os
import os.path as osp
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from mmcv.cnn import ContextBlock as MMCVContextBlock
from torch import nn

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

from gcnet_mm.benchmark import gc_path, randomize_  # noqa: E402,F401
from gcnet_mm.ops import global_context  # noqa: E402
from gcnet_mm.ops.cpu_kernels import extension_isa  # noqa: E402
from gcnet_mm.ops.dispatch import force_kernels, fused_kernels  # noqa: E402
from gcnet_mm.ops.triton_kernels import triton  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'slow: end-to-end runs of the tools (minutes); deselect '
        "with -m 'not slow'")


# -- the GC block's kernels ---------------------------------------------------
@pytest.fixture(params=['cpu', 'torch', 'triton'])
def kernels(request):
    """Each kernel set of the fused path in turn: the fused CPU loops
    (gcnet_mm._ext), PyTorch ops, and the Triton kernels (on a machine
    without a GPU through Triton's interpreter, TRITON_INTERPRET=1, which
    this file sets).  A test checks with :func:`runs_on` that its inputs
    take the set."""
    if request.param == 'cpu' and extension_isa() is None:
        pytest.skip('gcnet_mm._ext not built')
    if request.param == 'triton' and triton is None:
        pytest.skip('Triton not installed')
    with force_kernels(request.param):
        yield request.param
    if request.param == 'triton':  # not passed on the PyTorch ops instead
        from gcnet_mm.ops import triton_kernels
        assert triton_kernels.failure is None, triton_kernels.failure


def reference_path():
    """GC blocks on their reference path (PyTorch ops, mmcv's arithmetic)
    inside the ``with`` block."""
    return gc_path('reference')


def runs_on(name, x, block=None):
    """Skip unless the fused path takes ``x`` to kernel set ``name`` (e.g.
    float64 is not a Triton dtype); returns ``name``."""
    weight = torch.ones(1, x.shape[1], 1, 1) if block is None else \
        block.conv_mask.weight
    chosen = fused_kernels(x, weight, nn.Identity(), None)
    if chosen is None or chosen.name != name:
        pytest.skip(f'{name} kernels do not take {x.dtype} '
                    f'{tuple(x.stride())} on {x.device}')
    return name


def run_fwd_bwd(module: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """Output, input gradient and parameter gradients of one backward."""
    x = x.clone().requires_grad_(True)
    module.zero_grad()
    out = module(x)
    out.backward(grad)
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    return out.detach(), x.grad.clone(), grads


def mmcv_block(c=16, pooling='att', fusions=('channel_add', ), ratio=0.25,
               dtype=torch.float32, seed=0):
    """mmcv's ContextBlock with random weights, none of them zero."""
    torch.manual_seed(seed)
    block = MMCVContextBlock(c, ratio, pooling_type=pooling,
                             fusion_types=fusions).to(dtype)
    for p in block.parameters():  # random, never zero
        nn.init.normal_(p, mean=0.1, std=0.5)
    return block


def ours(block, x):
    """gcnet_mm's global_context op with ``block``'s (mmcv's) weights."""
    mask = getattr(block, 'conv_mask', None)
    return global_context(
        x, None if mask is None else mask.weight,
        None if mask is None else mask.bias,
        add_transform=block.channel_add_conv,
        mul_transform=block.channel_mul_conv)


def outputs_and_grads(fn, block, x, gy):
    """``fn(x)`` and the gradients of ``x`` and ``block``'s parameters."""
    x = x.detach().requires_grad_()
    y = fn(x)
    params = list(block.parameters())
    grads = torch.autograd.grad(y, [x] + params, gy)
    return y, grads


def submodules(module: nn.Module) -> list:
    """(name, type) of every submodule: the tree that checkpoints, plugins
    and upstream's unit tests see."""
    return [(name, type(m)) for name, m in module.named_modules() if name]


# -- the tools, run as a user runs them ---------------------------------------
def free_port() -> str:
    """A free TCP port on localhost, for a process group's rendezvous."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def run_fresh(code: str, cwd=None, check=True) -> str:
    """Run ``code`` in a new interpreter, where gcnet_mm is not imported;
    its last line of output (``check=False``: all of its output)."""
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          capture_output=True, text=True, cwd=cwd)
    if not check:
        return proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def host_tool(host, name):
    """A host's own tools/NAME (shipped in its wheel under .mim/tools)."""
    import importlib
    path = osp.join(osp.dirname(importlib.import_module(host).__file__),
                    '.mim', 'tools', name)
    if not osp.isfile(path):
        pytest.skip(f'{host} was installed without its tools/{name}')
    return path


def run_tool(cwd, *args, check=True, nproc=None, host=None, umask=None):
    """``python tools/ARGS[0] ARGS[1:]`` in ``cwd``; ``host='mmdet'`` runs
    that host's own tool instead, through ``python -m gcnet_mm``."""
    env = dict(os.environ, OMP_NUM_THREADS='2', PORT=free_port())
    if nproc:
        cmd = ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), *args]
    elif host:
        cmd = [sys.executable, '-m', 'gcnet_mm', host_tool(host, args[0]),
               *args[1:]]
    else:
        cmd = [sys.executable, osp.join(REPO, 'tools', args[0]), *args[1:]]
    proc = subprocess.run(
        cmd, cwd=str(cwd), env=env, capture_output=True, text=True,
        preexec_fn=None if umask is None else lambda: os.umask(umask))
    out = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        pytest.fail(
            f'{" ".join(cmd)} exited {proc.returncode}:\n{out[-6000:]}')
    return proc.returncode, out


def metrics_of(work_dir):
    files = sorted(glob.glob(osp.join(work_dir, 'metrics_*.json')))
    assert files, f'no metrics JSON in {work_dir}'
    with open(files[-1]) as f:
        return json.load(f)['metrics']


@pytest.fixture
def ws(tmp_path_factory):
    """The distributed tests' folder: toy Cityscapes and ``seg.py``."""
    from distributed_runs import workspace  # it imports this module
    return workspace(tmp_path_factory)


@pytest.fixture
def ref(tmp_path_factory):
    """The final checkpoint of an uninterrupted two-process run."""
    from distributed_runs import reference  # it imports this module
    return reference(tmp_path_factory)
