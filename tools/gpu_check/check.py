"""The measurements of the GPU check (``tools/gpu_check/run.sh``).

    python tools/gpu_check/check.py SECTION --json PATH [--dry-run]
    (SECTION: env, parity, blocks, head or resnet)
    python tools/gpu_check/check.py report --work DIR --out DIR [--dry-run]

Sections, each printing its Markdown table and writing its rows as JSON:

* ``env``: Python, torch, CUDA, cuDNN, GPU, package versions, settings;
* ``parity``: ``gcnet_mm.ContextBlock`` (fused and reference path) and
  mmcv's ``ContextBlock`` (state dict loaded from mmcv's), outputs and
  gradients against mmcv's module in float64; float32 (TF32 off), autocast
  bfloat16 and float16, contiguous and channels_last (mmcv's Python part
  suffices);
* ``blocks``: forward + backward of one GC r16 block at the c3/c4/c5 shapes
  of an 800x1216 input, batch 2 and 8: time and peak memory of gcnet_mm
  (fused, its PyTorch-ops kernels, reference), mmcv and timm's
  ``GlobalContext``;
* ``head``: ``gcnet_mm.GCHead`` against mmseg's ``GCHead`` as ``parity``
  (mmseg imports mmcv's compiled ops);
* ``resnet``: a train step (forward, backward of the sum of the outputs'
  means; no optimizer) of the Mask R-CNN ResNet-50 backbone (mmdet's
  ``ResNet``, input 2x3x800x1216): plain, GC r16 c3-c5 with mmcv's block, GC
  with gcnet_mm's, as mmdet's plugins; BN (as in the SyncBN configs, with
  batch statistics), BN with ``norm_eval=True`` (mmdet's BN configs) and
  SyncBN; time and peak memory as ratios to plain.

``report`` merges the sections, run.sh's preflight line and stage times and
the user's loop into ``OUT/report.md``, ``OUT/results.json`` and
``OUT/gpu_check.png``, with the targets as pass/fail lines, and says what
did not run and why.

Every candidate of a case (gcnet_mm's paths, mmcv, timm; the three
backbones) runs on its own first: one that raises is reported with its error
and left out of that case's timing, and the others are measured.  Where the
Triton kernels fail, gcnet_mm warns and runs its PyTorch-ops kernels; each
section records that warning, and the report shows it.

SyncBN on one GPU: ``torch.nn.SyncBatchNorm`` runs plain batch norm when its
process group has one rank, and NCCL refuses two ranks on one GPU.  The
SyncBN models here run torch's own SyncBN autograd Function
(``torch.nn.modules._functions.SyncBatchNorm``, a private interface) in a
one-rank NCCL group, as every rank of a multi-GPU job does: batch statistics,
an all-gather of them, the element-wise normalisation, and in backward the
reduction and all-reduce of the gradient terms.

``--dry-run`` runs everything on the CPU at toy sizes (the numbers mean
nothing; it checks the code).  There, memory is the bytes saved for backward
(no allocator statistics), and SyncBN is plain batch norm (torch has no CPU
kernel for SyncBN's statistics).
"""
import argparse
import contextlib
import copy
import glob
import json
import math
import os
import os.path as osp
import platform
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules._functions import SyncBatchNorm as SyncBNFunction

try:  # the sections measure with gcnet_mm; the report reads their JSON only
    from mmcv.cnn import ContextBlock as MMCVContextBlock

    import gcnet_mm
    from gcnet_mm import benchmark as bench
    from gcnet_mm.models.blocks import ContextBlock
    from gcnet_mm.models.heads import GCHead
    from gcnet_mm.ops import use_fused
    from gcnet_mm.ops.cpu_kernels import extension_isa
    from gcnet_mm.ops.dispatch import fused_kernels
except Exception as e:  # noqa: BLE001  (the report still runs)
    GCNET_MM_ERROR: Optional[str] = f'{type(e).__name__}: {e}'
else:
    GCNET_MM_ERROR = None

PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
STAGES = ('c3', 'c4', 'c5')

# Relative error allowed against the float64 module, per precision; or twice
# the mmcv / mmseg module's own error under the same precision, if larger.
TOLERANCE = {'fp32': 1e-4, 'bf16': 3e-2, 'fp16': 1e-2}

# Targets: the GC R-50 step at most 1.03x the plain step's time and peak
# memory; the block at most 0.5x mmcv's time.
STEP_TARGET = 1.03
BLOCK_TARGET = 0.5

SIZES = {
    'device': dict(
        image=(800, 1216), batches=(2, 8), resnet_batch=2, repeat=15,
        resnet_repeat=10, inner=10, warmup=2,
        resnet_precisions=tuple(PRECISIONS),
        parity_shapes=[(2, 512, 100, 152), (3, 64, 7, 9)],
        head=dict(in_channels=1024, channels=512, batch=2, hw=(32, 64))),
    'dry': dict(
        image=(32, 64), batches=(2, 8), resnet_batch=2, repeat=1,
        resnet_repeat=1, inner=1, warmup=1,
        # torch's float16 convolution backward on the CPU takes seconds
        # even at toy sizes.
        resnet_precisions=('fp32', 'bf16'),
        parity_shapes=[(2, 64, 6, 7)],
        head=dict(in_channels=32, channels=16, batch=2, hw=(6, 7))),
}

# SyncBN last: a collective that hangs costs only its own rows.
DET_CONFIGS = {
    'BN': 'mmdet::gcnet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py',
    'BN, norm_eval': 'mmdet::gcnet/mask-rcnn_r50-gcb-r16-c3-c5_fpn_1x_coco.py',
    'SyncBN': 'mmdet::gcnet/mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py',
}
MODELS = ('plain', 'mmcv GC', 'gcnet_mm GC')
BLOCKS = ('fused', 'fused, torch ops', 'reference', 'mmcv', 'timm')
# gcnet_mm's candidates: its fused path (Triton kernels on CUDA), the same
# path on its PyTorch-ops kernels, and its reference path: which of them is
# fastest decides what runs on CUDA (gcnet_mm/ops/dispatch.py, _ORDER).
GCNET_PATHS = BLOCKS[:3]


# -- shared -------------------------------------------------------------------

def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Random non-zero parameters scaled by fan-in (a deep network keeps
    its activations' scale), the module's mode unchanged."""
    return bench.randomize_(module, seed, eval_mode=False, fan_in=True)


def device_of(dry_run: bool) -> str:
    if torch.cuda.is_available():
        return 'cuda'
    if not dry_run:
        raise SystemExit('check.py: no CUDA device (torch.cuda.is_available() '
                         'is False); --dry-run runs the check on the CPU')
    return 'cpu'


def autocast(device: str, precision: str):
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=dtype)


@contextlib.contextmanager
def no_tf32():
    """float32 matrix products and convolutions in float32, not TF32."""
    saved = (torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = saved


def md_table(header: List[str], rows: List[List]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join('---' for _ in header) + '|']
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


def fmt(v: Optional[float], spec: str = '.3f') -> str:
    return 'n/a' if v is None else format(v, spec)


class Results:
    """A section's results, written to ``path`` after every row, so a
    section stopped by its timeout still reports what it measured; a case
    that raises is recorded (with its traceback in the log) and the section
    goes on with the next."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data = {'rows': [], 'errors': [], 'complete': False}
        self.save()

    def add(self, row: dict) -> None:
        self.data['rows'].append(row)
        self.save()

    @contextlib.contextmanager
    def case(self, what: str):
        try:
            yield
        except Exception as e:  # noqa: BLE001  (one case, not the run)
            traceback.print_exc()
            self.data['errors'].append(f'{what}: {type(e).__name__}: {e}')
            self.save()

    def save(self) -> None:
        self.data['triton_failure'] = triton_failure()
        tmp = self.path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)


def error_text(e: BaseException) -> str:
    return ' '.join(f'{type(e).__name__}: {e}'.split())[:300]


def one_by_one(fns: Dict[str, Callable[[], None]],
               errors: Dict[str, str]) -> Dict[str, Callable[[], None]]:
    """The candidates of ``fns`` that run: each is called once on its own;
    one that raises is left out, its error in ``errors``.  The others come
    back wrapped, so that a later failure leaves out only that one (a
    caller drops the names in ``errors`` from what it measured)."""
    def guarded(name: str, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            if name in errors:
                return
            try:
                fn()
            except Exception as e:  # noqa: BLE001  (one candidate)
                traceback.print_exc()
                errors[name] = error_text(e)
        return run

    ok = {}
    for name, fn in fns.items():
        ok[name] = guarded(name, fn)
        ok[name]()
    return {k: v for k, v in ok.items() if k not in errors}


def triton_failure() -> Optional[str]:
    """gcnet_mm's warning after a failed Triton launch in this process
    (its fused path then runs PyTorch ops), or None."""
    module = sys.modules.get('gcnet_mm.ops.triton_kernels')
    return getattr(module, 'failure', None)


# -- env ----------------------------------------------------------------------

def fused_kernel_names(device: str) -> Dict[str, Optional[str]]:
    """The kernel set the fused path runs on ``device`` per precision and
    layout (gcnet_mm.ops.dispatch.fused_kernels), or None (reference)."""
    names = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for layout in bench.LAYOUTS:
            x = torch.zeros(1, 8, 2, 2, dtype=dtype, device=device).to(
                memory_format=bench.layout_of(layout))
            kernels = fused_kernels(x, torch.zeros(1, 8, 1, 1), nn.Identity(),
                                    None)
            names[f'{str(dtype)[6:]} {layout}'] = getattr(kernels, 'name',
                                                          None)
    return names


def section_env(args, res: Results) -> None:
    info = {
        'python': platform.python_version(),
        'torch': torch.__version__,
        'cuda': torch.version.cuda,
        'cudnn': (torch.backends.cudnn.version()
                  if torch.backends.cudnn.is_available() else None),
        'device': device_of(args.dry_run),
        'cpu_cores': os.cpu_count(),
        'gcnet_mm': (f'{gcnet_mm.__version__} '
                     f'({osp.dirname(gcnet_mm.__file__)})'),
        'gcnet_mm_fused_default': use_fused(),
        'GCNET_MM_FUSED': os.environ.get('GCNET_MM_FUSED'),
        'GCNET_MM_TRITON': os.environ.get('GCNET_MM_TRITON'),
        'cpu_loops': extension_isa(),
        'tf32_matmul': torch.backends.cuda.matmul.allow_tf32,
        'tf32_cudnn': torch.backends.cudnn.allow_tf32,
        'cudnn_benchmark': torch.backends.cudnn.benchmark,
        'fused_kernels': fused_kernel_names(device_of(args.dry_run)),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info['gpu'] = props.name
        info['gpu_memory_gib'] = round(props.total_memory / 2**30, 1)
        info['capability'] = '.'.join(
            map(str, torch.cuda.get_device_capability(0)))
        info['nccl'] = str(torch.cuda.nccl.version())
        try:
            info['driver'] = subprocess.run(
                ['nvidia-smi', '--query-gpu=driver_version',
                 '--format=csv,noheader'], capture_output=True, text=True,
                timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            info['driver'] = None
    for name in ('triton', 'mmcv', 'mmengine', 'mmdet', 'mmseg', 'mmpretrain',
                 'timm', 'numpy', 'torchvision'):
        try:
            info[name] = __import__(name).__version__
        except Exception as e:  # an import that fails is worth reporting
            info[name] = f'import failed: {type(e).__name__}: {e}'
    try:
        from mmcv.ops import get_compiling_cuda_version
        info['mmcv_ops'] = f'built (CUDA: {get_compiling_cuda_version()})'
    except Exception as e:
        info['mmcv_ops'] = f'not loadable: {type(e).__name__}: {e}'
    res.data['info'] = info
    print(md_table(['what', 'value'], [[k, v] for k, v in info.items()]))


# -- parity -------------------------------------------------------------------

def rel_err(a: Tensor, b: Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def terms(module: nn.Module, inputs: Tensor, gy: Tensor, device: str,
          precision: str, residual: bool) -> Dict[str, Tensor]:
    """The module's output and gradients for one backward of ``gy``, as
    float64: ``out`` (minus the input for a residual block: the branch),
    ``dx`` (minus ``gy`` likewise) and ``params`` (all parameter gradients,
    flattened together in the order of their names)."""
    x = inputs.detach().requires_grad_()
    params = [p for _, p in sorted(module.named_parameters())
              if p.requires_grad]
    with autocast(device, precision):
        y = module([x] if not residual else x)
    grads = torch.autograd.grad(y, [x] + params, gy)
    out, dx = y.double(), grads[0].double()
    if residual:
        out, dx = out - x.double(), dx - gy.double()
    return {'out': out.detach(), 'dx': dx,
            'params': torch.cat([g.double().flatten() for g in grads[1:]])}


def parity_rows(name: str, theirs: nn.Module, ours: nn.Module, x: Tensor,
                gy: Tensor, device: str, precision: str, layout: str,
                residual: bool, ref: Dict[str, Tensor]) -> List[dict]:
    """Errors of the host module and of ours (fused, reference) against the
    host module in float64 (``ref``); each of the three runs on its own (one
    that raises gives a row with its error, the others are compared)."""
    fmt_ = bench.layout_of(layout)
    x = x.to(memory_format=fmt_)
    gy = gy.to(memory_format=fmt_)
    theirs = theirs.to(memory_format=fmt_)
    ours = ours.to(memory_format=fmt_)
    errors = {}
    host_err = None
    try:
        host_err = {k: rel_err(v, ref[k]) for k, v in
                    terms(theirs, x, gy, device, precision, residual).items()}
    except Exception as e:  # noqa: BLE001  (then the tolerance alone)
        traceback.print_exc()
        errors['host'] = error_text(e)
    results = {}
    for path in ('fused', 'reference'):
        try:
            with bench.gc_path(path):
                results[path] = terms(ours, x, gy, device, precision,
                                      residual)
        except Exception as e:  # noqa: BLE001  (one path)
            traceback.print_exc()
            errors[path] = error_text(e)
    tol = TOLERANCE[precision]
    rows = []
    for path in ('fused', 'reference'):
        row = dict(check=name, path=path, shape=list(x.shape),
                   precision=precision, layout=layout, host_err=host_err,
                   host_error=errors.get('host'), error=errors.get(path),
                   err=None, limit=None, fused_vs_reference=None, ok=False)
        if path in results:
            err = {k: rel_err(v, ref[k]) for k, v in results[path].items()}
            limit = {k: max(tol, 2 * host_err[k] if host_err else 0)
                     for k in err}
            row.update(err=err, limit=limit,
                       ok=all(err[k] <= limit[k] for k in err))
            if len(results) == 2:
                row['fused_vs_reference'] = {
                    k: rel_err(results['fused'][k], results['reference'][k])
                    for k in err}
        rows.append(row)
    return rows


def compare(res: Results, name: str, theirs: nn.Module, ours: nn.Module,
            shape, gy_shape, device: str, residual: bool,
            gen: torch.Generator) -> None:
    """``parity_rows`` for every precision and layout; ``ours`` gets the
    state dict of ``theirs``."""
    ours.load_state_dict(theirs.state_dict())
    theirs, ours = theirs.to(device), ours.to(device)
    ref_module = copy.deepcopy(theirs).double()
    for precision, dtype in PRECISIONS.items():
        dtype = dtype or torch.float32
        x = torch.randn(shape, generator=gen).to(device, dtype)
        # A gradient with a mean, as after a loss: a block's input gradient
        # then has a branch term not far below the identity's.
        gy = (torch.randn(gy_shape, generator=gen) + 0.5).to(device, dtype)
        # The same input values in float64 (no autocast).
        ref = terms(ref_module, x.double(), gy.double(), device, 'fp32',
                    residual)
        for layout in bench.LAYOUTS:
            with res.case(f'{name} {precision} {layout}'):
                for row in parity_rows(name, theirs, ours, x, gy, device,
                                       precision, layout, residual, ref):
                    res.add(row)


def section_parity(args, res: Results) -> None:
    device = device_of(args.dry_run)
    sizes = SIZES['dry' if args.dry_run else 'device']
    gen = torch.Generator().manual_seed(0)
    res.data['tolerance'] = TOLERANCE
    with no_tf32():  # float32 means float32 here
        for fusions in (('channel_add', ), ('channel_add', 'channel_mul')):
            for shape in sizes['parity_shapes']:
                theirs = randomize(MMCVContextBlock(
                    shape[1], 1 / 16, fusion_types=fusions), 1)
                ours = ContextBlock(shape[1], 1 / 16, fusion_types=fusions)
                compare(res, f"ContextBlock {'+'.join(fusions)} vs mmcv",
                        theirs, ours, shape, shape, device, True, gen)
    print(parity_markdown(res.data))


def section_head(args, res: Results) -> None:
    # mmseg: optional, installed with mmcv's compiled ops (run.sh's builds)
    from mmseg.models.decode_heads import GCHead as MMSegGCHead
    device = device_of(args.dry_run)
    h = SIZES['dry' if args.dry_run else 'device']['head']
    gen = torch.Generator().manual_seed(0)
    res.data['tolerance'] = TOLERANCE
    kwargs = dict(in_channels=h['in_channels'], channels=h['channels'],
                  num_classes=19, ratio=1 / 4, dropout_ratio=0.0,
                  norm_cfg=dict(type='BN', requires_grad=True))
    with no_tf32():
        theirs = randomize(MMSegGCHead(**kwargs), 2).train()
        ours = GCHead(**kwargs).train()
        compare(res, 'GCHead vs mmseg (train mode)', theirs, ours,
                (h['batch'], h['in_channels'], *h['hw']),
                (h['batch'], 19, *h['hw']), device, False, gen)
    print(parity_markdown(res.data))


def parity_markdown(result: dict) -> str:
    def three(values: Optional[dict]) -> str:
        if not values:
            return 'n/a'
        return ' / '.join(f"{values[k]:.1e}" for k in ('out', 'dx', 'params'))

    table = []
    for r in result['rows']:
        if r['err'] is None:
            limit, verdict = 'n/a', f"**FAILED**: {r['error']}"
        else:
            worst = max(r['err'], key=lambda k: r['err'][k] / r['limit'][k])
            limit = f"{r['limit'][worst]:.1e} ({worst})"
            verdict = 'ok' if r['ok'] else '**FAIL**'
        if r.get('host_error'):
            verdict += f" (host failed: {r['host_error']})"
        table.append([
            r['check'], r['path'], 'x'.join(map(str, r['shape'])),
            r['precision'], r['layout'], three(r['err']),
            three(r['host_err']), limit, three(r['fused_vs_reference']),
            verdict])
    return ('Relative errors (||a - b|| / ||b||) against the mmcv / mmseg '
            'module in float64, for the output, the input gradient and the '
            "parameters' gradients (a block's output and input gradient "
            'minus the identity: its branch).\n\n' + md_table(
                ['check', 'gcnet_mm path', 'shape', 'precision', 'layout',
                 'gcnet_mm err out / dx / params',
                 'host err out / dx / params', 'limit (tightest)',
                 'fused vs reference', 'result'], table))


# -- blocks -------------------------------------------------------------------

def section_blocks(args, res: Results) -> None:
    device = device_of(args.dry_run)
    sizes = SIZES['dry' if args.dry_run else 'device']
    res.data.update(memory_measure=bench.memory_measure(device),
                    repeat=sizes['repeat'], inner=sizes['inner'])
    gen = torch.Generator().manual_seed(0)
    for batch in sizes['batches']:
        for stage, shape in zip(STAGES, bench.block_shapes(*sizes['image'],
                                                           batch)):
            c = shape[1]
            mmcv = randomize(MMCVContextBlock(c, ratio=1 / 16), 3).to(device)
            ours = bench.gcnet_block(mmcv)
            modules = {**{p: ours for p in GCNET_PATHS}, 'mmcv': mmcv}
            missing = {}
            try:
                modules['timm'] = randomize(bench.timm_block(c), 4).to(device)
            except Exception as e:  # noqa: BLE001  (the others still run)
                traceback.print_exc()
                missing['timm'] = error_text(e)
            blocks = list({id(m): m for m in modules.values()}.values())
            for precision, dtype in PRECISIONS.items():
                for layout in bench.LAYOUTS:
                    fmt_ = bench.layout_of(layout)
                    for m in blocks:
                        m.to(memory_format=fmt_)
                    x = torch.randn(shape, generator=gen).to(
                        device, dtype or torch.float32).to(memory_format=fmt_)
                    x.requires_grad_()
                    gy = torch.randn(shape, generator=gen).to(
                        device, x.dtype).to(memory_format=fmt_)

                    def clear():
                        x.grad = None
                        for m in blocks:
                            m.zero_grad(set_to_none=True)

                    def step(name, module):
                        def path():
                            return (bench.gc_path(name) if name in GCNET_PATHS
                                    else contextlib.nullcontext())

                        def run():
                            x.grad = None
                            with path(), autocast(device, precision):
                                y = module(x)
                            y.backward(gy)
                        return run

                    clear()
                    label = f'block {stage} b{batch} {precision} {layout}'
                    with res.case(label):
                        errors = dict(missing)
                        fns = one_by_one({n: step(n, m)
                                          for n, m in modules.items()},
                                         errors)
                        t = bench.time_interleaved(
                            fns, sizes['repeat'], label,
                            inner=sizes['inner'],
                            warmup=sizes['warmup']) if fns else {}
                        mem = {}
                        for n in fns:
                            if n not in errors:
                                try:
                                    mem[n] = bench.measure_memory(
                                        device, fns[n], modules[n], clear)
                                except Exception as e:  # noqa: BLE001
                                    errors[n] = error_text(e)
                        ok = [n for n in BLOCKS if n in t and n in mem
                              and n not in errors]
                        res.add(dict(stage=stage, batch=batch,
                                     shape=list(shape), precision=precision,
                                     layout=layout,
                                     seconds={n: t[n] for n in ok},
                                     memory={n: mem[n] for n in ok},
                                     errors=errors,
                                     fused_kernels=kernel_name(ours, x)))
                        print(f'  {label}: ' + ', '.join(
                            f'{n} {t[n] * 1e3:.3f} ms' for n in ok) + ''.join(
                                f'; {n} FAILED: {e}'
                                for n, e in errors.items()), flush=True)
    print(blocks_markdown(res.data))


def kernel_name(block: nn.Module, x: Tensor) -> Optional[str]:
    """The kernel set gcnet_mm's fused path runs on ``x`` now (``triton``,
    or ``torch`` after a Triton failure), or None (reference path)."""
    kernels = fused_kernels(x.detach(), block.conv_mask.weight,
                            block.channel_add_conv, None)
    return getattr(kernels, 'name', None)


def ratio(values: dict, a: str, b: str) -> Optional[float]:
    """``values[a] / values[b]``, None if either was not measured."""
    if values.get(a) is None or not values.get(b):
        return None
    return values[a] / values[b]


def blocks_markdown(result: dict) -> str:
    table = []
    for r in result['rows']:
        t, m = r['seconds'], r['memory']
        table.append([
            r['stage'], 'x'.join(map(str, r['shape'])), r['precision'],
            r['layout'], r.get('fused_kernels') or '-',
            *(fmt(t[n] * 1e3 if n in t else None) for n in BLOCKS),
            *(fmt(ratio(t, n, 'mmcv'), '.2f')
              for n in BLOCKS if n != 'mmcv'),
            fmt(m['mmcv'] / 2**20 if 'mmcv' in m else None, '.1f'),
            *(fmt(ratio(m, n, 'mmcv'), '.2f')
              for n in BLOCKS if n != 'mmcv'),
            '; '.join(f'{n}: {e}' for n, e in r.get('errors', {}).items())
            or '-'])
    return (f"GC r16 block forward + backward, median of {result['repeat']} "
            f"rounds of {result['inner']} calls; memory: "
            f"{result['memory_measure']}; 'fused kernels': what gcnet_mm's "
            'fused path ran.\n\n' + md_table(
                ['stage', 'shape', 'precision', 'layout', 'fused kernels',
                 *(f'{n} ms' for n in BLOCKS),
                 *(f'{n} / mmcv' for n in BLOCKS if n != 'mmcv'),
                 'mmcv MiB',
                 *(f'{n} mem / mmcv' for n in BLOCKS if n != 'mmcv'),
                 'failed'],
                table))


# -- resnet -------------------------------------------------------------------

class OneRankSyncBatchNorm(nn.SyncBatchNorm):
    """``nn.SyncBatchNorm`` that runs torch's SyncBN autograd Function even in
    a one-rank process group (where ``nn.SyncBatchNorm`` itself runs plain
    batch norm), so one GPU measures what each rank of a multi-GPU job runs.
    Elsewhere (eval mode, CPU tensors) it is plain batch norm."""

    @staticmethod
    def synchronises(x: Tensor) -> bool:
        """Whether ``x`` goes through the SyncBN Function (in training)."""
        return x.is_cuda and dist.is_initialized()

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.synchronises(x)):
            return nn.BatchNorm2d.forward(self, x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / self.num_batches_tracked.item()
        group = self.process_group or dist.group.WORLD
        return SyncBNFunction.apply(x, self.weight, self.bias,
                                    self.running_mean, self.running_var,
                                    self.eps, momentum, group,
                                    dist.get_world_size(group))


def backbone_cfg(norm: str, model: str) -> dict:
    """``model.backbone`` of mmdet's GC R-50 Mask R-CNN config for ``norm``,
    as mmdet's own ResNet, without plugins ('plain'), with mmcv's
    ContextBlock ('mmcv GC', the config's) or with gcnet_mm's."""
    cfg = bench.config_backbone(DET_CONFIGS[norm])
    cfg.type = 'mmdet.ResNet'
    if norm == 'BN':
        cfg.norm_cfg = dict(type='BN', requires_grad=True)
    assert cfg.norm_cfg.type == ('SyncBN' if norm == 'SyncBN' else 'BN')
    if model == 'plain':
        cfg.plugins = None
    elif model == 'gcnet_mm GC':
        cfg.plugins[0].cfg.type = 'gcnet_mm.ContextBlock'
    return cfg.to_dict()


def build_backbones(norm: str, device: str,
                    errors: Optional[Dict[str, str]] = None
                    ) -> Dict[str, nn.Module]:
    """The three backbones, same weights (the GC blocks' random, not the
    zero init).  With ``errors``, one that does not build is left out with
    its error there; without, the error propagates."""
    from mmdet.registry import MODELS as MMDET_MODELS  # mmdet: optional
    models = {}
    for name in MODELS:
        torch.manual_seed(0)
        try:
            model = MMDET_MODELS.build(backbone_cfg(norm, name))
        except Exception as e:  # noqa: BLE001  (the others still run)
            if errors is None:
                raise
            traceback.print_exc()
            errors[name] = error_text(e)
            continue
        for m in model.modules():
            if isinstance(m, nn.SyncBatchNorm):
                m.__class__ = OneRankSyncBatchNorm
        models[name] = model.to(device)
    source = models.get('mmcv GC') or models.get('gcnet_mm GC')
    if source is not None:
        randomize(source, 5)
        state = source.state_dict()
        for name, model in models.items():
            if model is not source:
                model.load_state_dict(state, strict=name != 'plain')
    for model in models.values():
        model.train()  # frozen_stages and norm_eval apply here
    return models


def section_resnet(args, res: Results) -> None:
    from mmdet.utils import register_all_modules  # mmdet: optional
    register_all_modules()
    device = device_of(args.dry_run)
    sizes = SIZES['dry' if args.dry_run else 'device']
    shape = (sizes['resnet_batch'], 3, *sizes['image'])
    res.data.update(input=list(shape), models={},
                    memory_measure=bench.memory_measure(device),
                    repeat=sizes['resnet_repeat'], configs=DET_CONFIGS)
    norms = list(DET_CONFIGS)
    with res.case('SyncBN: a one-rank process group'):
        dist.init_process_group('nccl' if device == 'cuda' else 'gloo',
                                store=dist.HashStore(), rank=0, world_size=1)
    if not dist.is_initialized():
        norms.remove('SyncBN')
    img0 = torch.randn(shape, generator=torch.Generator().manual_seed(6))
    built = {}  # norm: (backbones, those that did not build, GC diff)
    for norm in norms:
        with res.case(f'{norm}: building the backbones'):
            missing = {}
            models = build_backbones(norm, device, missing)
            res.data['models'][norm] = {k: bench.block_types(m)
                                        for k, m in models.items()}
            diff = None
            if 'mmcv GC' in models and 'gcnet_mm GC' in models:
                with torch.no_grad():
                    a = models['mmcv GC'](img0.to(device))
                    b = models['gcnet_mm GC'](img0.to(device))
                # mmcv's and gcnet_mm's GC backbones, same weights.
                diff = max(rel_err(p, q) for p, q in zip(b, a))
            built[norm] = (models, missing, diff)
    # The targets' layout (contiguous) for every norm first, then
    # channels_last: a section stopped by its time cap loses the latter.
    for layout in bench.LAYOUTS:
        fmt_ = bench.layout_of(layout)
        img = img0.to(device).to(memory_format=fmt_)
        for norm, (models, missing, diff) in built.items():
            for m in models.values():
                m.to(memory_format=fmt_)
            for precision in sizes['resnet_precisions']:
                with res.case(f'resnet {norm} {precision} {layout}'):
                    row = resnet_row(models, img, device, norm, precision,
                                     layout, sizes, dict(missing))
                    res.add(dict(row, gc_output_rel_diff=diff))
    built.clear()
    if dist.is_initialized():
        dist.destroy_process_group()
    print(resnet_markdown(res.data))


def resnet_row(models: Dict[str, nn.Module], img: Tensor, device: str,
               norm: str, precision: str, layout: str, sizes: dict,
               errors: Dict[str, str]) -> dict:
    """One train step of each backbone, timed together; one that raises is
    left out (its error in the row), the others are measured."""
    nodes = []

    def record_node(module, inputs, output):
        nodes.append(type(output.grad_fn).__name__ if output.grad_fn
                     else None)

    def step(model):
        def run():
            model.zero_grad(set_to_none=True)
            with autocast(device, precision):
                outs = model(img)
            # frozen_stages=1: c2's output has no gradient.
            sum(o.float().mean() for o in outs if o.requires_grad).backward()
        return run

    # The grad_fn of the first trainable norm layer's output: which batch
    # norm ran (e.g. SyncBatchNormBackward, CudnnBatchNormBackward0).
    first = next(iter(models.values()))
    handle = first.layer2[0].bn1.register_forward_hook(record_node)
    fns = one_by_one({k: step(m) for k, m in models.items()}, errors)
    handle.remove()
    label = f'resnet {norm} {precision} {layout}'
    t = bench.time_interleaved(fns, sizes['resnet_repeat'], label,
                               warmup=sizes['warmup']) if fns else {}
    mem = {}
    for k, fn in fns.items():
        if k in errors:
            continue
        model = models[k]
        static = bench.state_bytes(img, *model.parameters(), *model.buffers())
        try:
            extra = bench.measure_memory(
                device, fn, model,
                lambda m=model: m.zero_grad(set_to_none=True))
        except Exception as e:  # noqa: BLE001  (one candidate)
            errors[k] = error_text(e)
            continue
        mem[k] = extra + (static if device == 'cuda' else 0)
    ok = [k for k in MODELS if k in t and k in mem and k not in errors]
    print(f'  {label}: ' + ', '.join(f'{k} {t[k] * 1e3:.1f} ms' for k in ok)
          + f" ({nodes[0] if nodes else '-'})" + ''.join(
              f'; {k} FAILED: {e}' for k, e in errors.items()), flush=True)
    return dict(norm=norm, precision=precision, layout=layout,
                seconds={k: t[k] for k in ok},
                memory={k: mem[k] for k in ok}, errors=errors,
                norm_node=nodes[0] if nodes else None)


def resnet_markdown(result: dict) -> str:
    table = []
    for r in result['rows']:
        t, m = r['seconds'], r['memory']
        table.append([
            r['norm'], r['precision'], r['layout'],
            fmt(t['plain'] * 1e3 if 'plain' in t else None, '.1f'),
            *(fmt(ratio(t, k, 'plain')) for k in MODELS[1:]),
            fmt(m['plain'] / 2**20 if 'plain' in m else None, '.0f'),
            *(fmt(ratio(m, k, 'plain')) for k in MODELS[1:]),
            r['norm_node'],
            '; '.join(f'{k}: {e}' for k, e in r.get('errors', {}).items())
            or '-'])
    return (f"ResNet-50 backbone train step, input "
            f"{'x'.join(map(str, result['input']))}, median of "
            f"{result['repeat']}; memory: {result['memory_measure']}, with "
            "the model's parameters, buffers and the input.\n\n" + md_table(
                ['norm', 'precision', 'layout', 'plain ms', 'mmcv GC time x',
                 'gcnet_mm GC time x', 'plain MiB', 'mmcv GC mem x',
                 'gcnet_mm GC mem x', 'norm layer backward', 'failed'],
                table))


# -- report -------------------------------------------------------------------

def _line(target: str, case: str, value: Optional[float], limit: float,
          missing: str = '') -> dict:
    """A target line; without a value it says what was not measured."""
    return dict(target=target, case=case, value=value, limit=limit,
                ok=None if value is None else value <= limit,
                missing=missing if value is None else '')


def targets(blocks: Optional[dict], resnet: Optional[dict]) -> List[dict]:
    """Pass/fail lines: the GC R-50 step (gcnet_mm's block) at most 1.03x
    the plain step's time and peak memory for every norm and precision, and
    the block (fused path) at most 0.5x mmcv's time at c3/c4/c5; contiguous
    layout (the configs').  And, for every precision and layout, the fused
    path (what runs by default) no slower than the faster of the package's
    PyTorch-ops paths (the geometric mean over the block shapes): where it
    is, those kernels must not run there (gcnet_mm/ops/dispatch.py).  A line
    whose candidates did not run says which (``ok`` None)."""
    def missing(r: dict, *names: str) -> str:
        errors = r.get('errors', {})
        return '; '.join(f"{n}: {errors.get(n, 'not measured')}"
                         for n in names if n not in r['seconds'])

    lines = []
    for r in (resnet or {}).get('rows', []):
        if r['layout'] != 'contiguous':
            continue
        for what, key in (('time', 'seconds'), ('peak memory', 'memory')):
            lines.append(_line(
                f'GC R-50 step {what} <= {STEP_TARGET}x plain',
                f"{r['norm']}, {r['precision']}",
                ratio(r[key], 'gcnet_mm GC', 'plain'), STEP_TARGET,
                missing(r, 'gcnet_mm GC', 'plain')))
    for r in (blocks or {}).get('rows', []):
        if r['layout'] != 'contiguous':
            continue
        lines.append(_line(
            f"block time <= {BLOCK_TARGET}x mmcv's",
            f"{r['stage']} batch {r['batch']}, {r['precision']}",
            ratio(r['seconds'], 'fused', 'mmcv'), BLOCK_TARGET,
            missing(r, 'fused', 'mmcv')))
    ratios: Dict[Tuple[str, str], List[Optional[float]]] = {}
    ran: Dict[Tuple[str, str], set] = {}
    for r in (blocks or {}).get('rows', []):
        t = r['seconds']
        key = (r['precision'], r['layout'])
        others = [t[n] for n in ('fused, torch ops', 'reference') if n in t]
        ratios.setdefault(key, []).append(
            t['fused'] / min(others) if 'fused' in t and others else None)
        ran.setdefault(key, set()).add(r.get('fused_kernels'))
    for (precision, layout), values in ratios.items():
        case = f'{precision}, {layout}'
        kernels = ran[(precision, layout)] - {None}
        if kernels and kernels != {'triton'}:
            case += f" (fused ran {', '.join(sorted(kernels))})"
        v = None
        if all(x is not None for x in values):
            v = math.exp(sum(map(math.log, values)) / len(values))
        lines.append(_line('fused block <= PyTorch-ops paths', case, v, 1.0,
                           'a shape lacks a candidate (see blocks)'))
    return lines


def verdict(line: dict) -> str:
    if line['ok'] is None:
        return f"not measured ({line['missing']})"
    return 'pass' if line['ok'] else '**fail**'


LOOP_NOTE = (
    '`tools/dist_train.sh` on `configs/_toy_/gcnet_r50-d8_toy-cityscapes.py` '
    '(data from `tools/misc/make_toy_data.py cityscapes`), one process, '
    'every norm layer SyncBN (in a one-process group torch runs it as plain '
    'batch norm), 4 iterations with a validation at the end; then '
    '`tools/test.py` on its last checkpoint.')

NOTES = """\
- Times: medians over interleaved rounds (the candidates in rotated order),
  the device synchronised around each timed round, after warm-up rounds.
- Memory: the block's peak CUDA memory above what was allocated before it
  (`torch.cuda.max_memory_allocated`); the step's peak above what was
  allocated before it, plus the model's parameters and buffers and the
  input, i.e. the step's peak as if its model were alone on the GPU.
- Parity: float32 with TF32 off; the timings run with torch's defaults
  (see the environment).
- BN: the SyncBN config's backbone with `type='BN'` (cuDNN batch norm,
  batch statistics); `BN, norm_eval`: mmdet's BN config (`norm_eval=True`,
  frozen statistics); SyncBN: the SyncBN config, each SyncBN layer running
  torch's SyncBN autograd Function (`torch.nn.modules._functions.
  SyncBatchNorm`, a private interface) in a one-rank NCCL group: batch
  statistics, their all-gather, the normalisation, and in backward the
  reduction and all-reduce, as on every rank of a multi-GPU job
  (`nn.SyncBatchNorm` itself runs plain batch norm in a one-rank group).
  The last column of the step table names the backward node of one norm
  layer, which shows the path that ran.
- The train step: forward, the sum of the outputs' means, backward (no
  optimizer step); frozen_stages=1 as in the configs.
"""


def read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_stages(path: str) -> List[dict]:
    """run.sh's stages.tsv: key, name, seconds, status, exit code and the
    last line a failed stage printed; the first line of each name."""
    stages, seen = [], set()
    try:
        with open(path) as f:
            for line in f:
                key, name, seconds, status, rc, why = (
                    line.rstrip('\n').split('\t') + [''] * 6)[:6]
                if not name or name in seen:
                    continue
                seen.add(name)
                stages.append(dict(key=key, stage=name,
                                   seconds=float(seconds or 0),
                                   status=status, rc=int(rc or -1), why=why))
    except OSError:
        pass
    return stages


def read_plan(work: str, stages: List[dict]) -> List[dict]:
    """Stages of run.sh's plan that never started (the run ended first)."""
    try:
        with open(osp.join(work, 'plan.txt')) as f:
            keys = [line.split(':')[0] for line in f if line.strip()]
    except OSError:
        return []
    started = {s['key'] for s in stages}
    return [dict(key=k, stage=k, seconds=0.0, rc=-1, why='',
                 status='not started (the run ended before it)')
            for k in keys if k not in started]


def read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ''


def read_loop(work: str) -> dict:
    """The user's loop: the last training loss and the test metrics."""
    wd = osp.join(work, 'loop', 'work_dir')
    loop = {'checkpoint': None, 'last_loss': None, 'metrics': None}
    ckpts = sorted(glob.glob(osp.join(wd, 'iter_*.pth')))
    if ckpts:
        loop['checkpoint'] = osp.basename(ckpts[-1])
    scalars = osp.join(wd, '*', 'vis_data', 'scalars.json')
    for path in sorted(glob.glob(scalars)):
        with open(path) as f:
            for line in f:
                entry = json.loads(line)
                if 'loss' in entry:
                    loop['last_loss'] = entry['loss']
    metrics = sorted(glob.glob(osp.join(wd, 'metrics_*.json')))
    if metrics:
        loop['metrics'] = (read_json(metrics[-1]) or {}).get('metrics')
    return loop


def plot(path: str, title: str, blocks: Optional[dict],
         resnet: Optional[dict]) -> None:
    """Left: the block's time over mmcv's (fused path, contiguous) per
    shape and precision, with the 0.5x target; right: the GC step's time and
    peak memory over the plain one's, with the 1.03x target."""
    # matplotlib and numpy: the picture only (the report runs without them)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8))
    if blocks and blocks['rows']:
        rows = [r for r in blocks['rows'] if r['layout'] == 'contiguous']
        cases = list(dict.fromkeys(f"{r['stage']} b{r['batch']}"
                                   for r in rows))
        xs = np.arange(len(cases))
        width = 0.8 / len(PRECISIONS)
        for i, precision in enumerate(PRECISIONS):
            values = {f"{r['stage']} b{r['batch']}":
                      ratio(r['seconds'], 'fused', 'mmcv')
                      for r in rows if r['precision'] == precision}
            bars = left.bar(xs + (i - 1) * width,
                            [values.get(c) or np.nan for c in cases], width,
                            label=f'gcnet_mm fused, {precision}')
            left.bar_label(bars, fmt='%.2f', fontsize=6)
        left.axhline(1.0, color='k', lw=0.8)
        left.axhline(BLOCK_TARGET, color='r', ls='--', lw=1,
                     label=f'target ({BLOCK_TARGET}x)')
        left.set_xticks(xs, cases)
        left.set_ylabel("block forward + backward time / mmcv's")
        left.legend(fontsize=7)
    else:
        left.text(0.5, 0.5, 'not measured (see report.md)', ha='center',
                  transform=left.transAxes)
    left.set_title('GC r16 block')
    if resnet and resnet['rows']:
        rows = [r for r in resnet['rows'] if r['layout'] == 'contiguous']
        cases = [f"{r['norm']}\n{r['precision']}" for r in rows]
        xs = np.arange(len(cases))
        series = [('mmcv GC', 'seconds', 'mmcv GC time'),
                  ('gcnet_mm GC', 'seconds', 'gcnet_mm GC time'),
                  ('mmcv GC', 'memory', 'mmcv GC memory'),
                  ('gcnet_mm GC', 'memory', 'gcnet_mm GC memory')]
        width = 0.8 / len(series)
        for i, (model, key, label) in enumerate(series):
            bars = right.bar(xs + (i - 1.5) * width,
                             [ratio(r[key], model, 'plain') or np.nan
                              for r in rows], width, label=label)
            right.bar_label(bars, fmt='%.2f', fontsize=5)
        right.axhline(STEP_TARGET, color='r', ls='--', lw=1,
                      label=f'target ({STEP_TARGET}x)')
        right.set_xticks(xs, cases, fontsize=7)
        right.set_ylim(0.8, None)
        right.set_ylabel("ratio to the plain backbone's")
        right.legend(fontsize=7)
    else:
        right.text(0.5, 0.5, 'not measured (see report.md)', ha='center',
                   transform=right.transAxes)
    right.set_title('ResNet-50 backbone train step')
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SECTION_NAMES = ('env', 'parity', 'blocks', 'head', 'resnet')


def not_run(stages: List[dict], parts: Dict[str, Optional[dict]]) -> List[str]:
    """What did not run or failed, and why: stages, section cases, the
    candidates of a case, the Triton kernels."""
    out = [f"stage {s['stage']}: {s['status']}"
           + (f" - {s['why']}" if s.get('why') else '')
           for s in stages if s['status'] != 'ok']
    for name in SECTION_NAMES:
        part = parts.get(name)
        if not part:
            continue
        out += [f'{name}: {e}' for e in part.get('errors', [])]
        for r in part.get('rows', []):
            what = ' '.join(
                str(r[k]) if k != 'batch' else f'b{r[k]}'
                for k in ('check', 'stage', 'norm', 'batch', 'precision',
                          'layout') if k in r)
            if r.get('error'):
                out.append(f"{name} {what} {r['path']}: {r['error']}")
            for cand, e in r.get('errors', {}).items():
                out.append(f'{name} {what}, {cand}: {e}')
    failures = {part.get('triton_failure') for part in parts.values()
                if part and part.get('triton_failure')}
    out += [f'Triton kernels (the fused path ran PyTorch ops after this): '
            f'{f}' for f in sorted(failures)]
    return out


def section_report(args) -> int:
    work, out = args.work, args.out
    parts = {name: read_json(osp.join(work, f'{name}.json'))
             for name in SECTION_NAMES}
    stages = read_stages(osp.join(work, 'stages.tsv'))
    stages += read_plan(work, stages)
    preflight = read_text(osp.join(work, 'preflight.txt'))
    loop = read_loop(work)
    lines = targets(parts['blocks'], parts['resnet'])
    missing = not_run(stages, parts)
    parity_rows_ = [r for name in ('parity', 'head')
                    for r in (parts[name] or {}).get('rows', [])]
    env = (parts['env'] or {}).get('info', {})
    where = (f"{env.get('gpu', env.get('device', '?'))}, torch "
             f"{env.get('torch', '?')}, CUDA {env.get('cuda')}, cuDNN "
             f"{env.get('cudnn')}")
    title = ('gcnet_mm GPU check' + (' (DRY RUN on the CPU, toy sizes: '
                                     'the numbers mean nothing)'
                                     if args.dry_run else '')
             + f' - {where}')
    results = dict(dry_run=args.dry_run, preflight=preflight, env=env,
                   stages=stages, not_run=missing, loop=loop, targets=lines,
                   **{k: parts[k] for k in SECTION_NAMES if k != 'env'})
    os.makedirs(out, exist_ok=True)
    with open(osp.join(out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)

    md = [f'# {title}', '', f'Preflight: {preflight or "not recorded"}', '']
    md += ['## What did not run, and why', '']
    md += [f'- {m}' for m in missing] if missing else ['Everything ran.']
    md += ['', '## Targets', '', md_table(
        ['target', 'case', 'measured', 'result'],
        [[g['target'], g['case'], fmt(g['value']), verdict(g)]
         for g in lines])
        if lines else 'No target measured (blocks and resnet did not run).',
        '']
    md += ['## Stages', '', md_table(
        ['stage', 'seconds', 'status', 'last line (failed stages)'],
        [[s['stage'], f"{s['seconds']:.1f}", s['status'], s['why'] or '-']
         for s in stages]), '']
    md += ['## Environment', '', md_table(
        ['what', 'value'], [[k, v] for k, v in env.items()]), '']
    merged = None
    if parts['parity'] or parts['head']:
        merged = dict(rows=parity_rows_, complete=all(
            (parts[k] or {}).get('complete', False)
            for k in ('parity', 'head')),
            errors=[e for k in ('parity', 'head')
                    for e in (parts[k] or {}).get('errors', [])])
    for name, part, render in (('parity', merged, parity_markdown),
                               ('blocks', parts['blocks'], blocks_markdown),
                               ('resnet', parts['resnet'], resnet_markdown)):
        md += [f'## {name}', '']
        if not part:
            md += [f'{name} did not run (see the stages and run.log).', '']
            continue
        md += [render(part), '']
        if not part['complete']:
            md += [f'{name} stopped before its end (see the stages); the '
                   'rows above are what it measured.', '']
    if parts['resnet'] and parts['resnet'].get('models'):
        md += ['Blocks in the models: ' + '; '.join(
            f'{norm}: ' + ', '.join(f"{k} = {' '.join(v) or '-'}"
                                    for k, v in models.items())
            for norm, models in parts['resnet']['models'].items()), '']
    md += ['## User loop', '', LOOP_NOTE, '', md_table(
        ['what', 'value'], [[k, v] for k, v in loop.items()]), '']
    md += ['## How it was measured', '', NOTES]
    with open(osp.join(out, 'report.md'), 'w') as f:
        f.write('\n'.join(md))
    try:
        plot(osp.join(out, 'gpu_check.png'), title, parts['blocks'],
             parts['resnet'])
    except Exception as e:  # the tables matter more than the picture
        print(f'report: no plot ({type(e).__name__}: {e})')

    bad_parity = [r for r in parity_rows_ if not r['ok']]
    print(f'\n## {title}')
    print(f'preflight: {preflight}')
    print(md_table(['stage', 'seconds', 'status'],
                   [[s['stage'], f"{s['seconds']:.1f}", s['status']]
                    for s in stages]))
    print(f'\nparity: {len(bad_parity)} failing row(s) of '
          f'{len(parity_rows_)}')
    for g in lines:
        result = {True: 'PASS', False: 'FAIL', None: 'N/A '}[g['ok']]
        print(f"{result}  {g['target']:<36} {g['case']:<24} "
              f"{fmt(g['value'])}")
    for m in missing:
        print(f'did not run: {m}')
    print(f'user loop: {loop}')
    print(f'results: {out}/report.md, results.json, gpu_check.png, run.log')
    return 1 if missing or bad_parity else 0


SECTIONS = {'env': section_env, 'parity': section_parity,
            'blocks': section_blocks, 'head': section_head,
            'resnet': section_resnet}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('section', choices=list(SECTIONS) + ['report'])
    parser.add_argument('--json', help='write the section\'s results here')
    parser.add_argument('--work', help='report: the folder of the sections\' '
                        'JSON, stages.tsv and loop/')
    parser.add_argument('--out', help='report: the output folder')
    parser.add_argument('--dry-run', action='store_true',
                        help='on the CPU at toy sizes')
    args = parser.parse_args(argv)
    if args.section == 'report' and not (args.work and args.out):
        parser.error('report needs --work and --out')
    if args.section != 'report' and not args.json:
        parser.error(f'{args.section} needs --json PATH')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.section == 'report':
        return section_report(args)
    if GCNET_MM_ERROR:
        raise SystemExit(f'check.py {args.section}: gcnet_mm does not '
                         f'import: {GCNET_MM_ERROR}')
    if args.dry_run:
        # Tiny tensors: threads only wait for each other, and on a shared
        # machine for other jobs.
        torch.set_num_threads(1)
    start = time.perf_counter()
    res = Results(args.json)
    SECTIONS[args.section](args, res)
    res.data.update(complete=True, seconds=time.perf_counter() - start)
    res.save()
    print(f"{args.section}: {res.data['seconds']:.1f} s"
          + (f", {len(res.data['errors'])} case(s) failed"
             if res.data['errors'] else ''))
    return 1 if res.data['errors'] else 0


if __name__ == '__main__':
    sys.exit(main())
