"""Time and memory of the GC block: gcnet_mm against mmcv and timm.

Two parts, every ratio measured in one process on the same inputs, candidates
interleaved within each repeat (in an order rotated from repeat to repeat)
and summarised by the median:

* blocks: forward + backward of one GC r16 block (float32) at the c3/c4/c5
  shapes of an 800x1088 Mask R-CNN input, batch 2: gcnet_mm's fused path,
  its reference path (``gcnet_mm.ops.set_fused(False)``), mmcv's
  ContextBlock and timm's GlobalContext; on the CPU also the fused path on
  its PyTorch-ops kernels ('fused, torch ops');
* resnet: one train step (forward + backward, batch 2, 512x640) of the
  Mask R-CNN ResNet-50 backbone: plain (mmdet's
  ``mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py``), with mmcv's ContextBlock
  (mmdet's ``gcnet/mask-rcnn_r50-gcb-r16-c3-c5_fpn_1x_coco.py``) and with
  gcnet_mm's (this package's config of that name), on each of its paths;
  ``model.backbone`` of each, ``init_cfg=None``.  Time, and bytes of
  activations saved for backward (unique storages seen by
  ``saved_tensors_hooks``, parameters and buffers excluded).

The allocator: glibc's malloc hands large freed blocks back to the kernel,
so the next step writes fresh pages and pays a page fault per 4 KiB, as many
as the heap's layout (which the candidates sharing one process disturb)
decides.  ``--malloc steady`` (the default) sets glibc's mmap and trim
thresholds so that freed memory is reused, as the jemalloc or tcmalloc that
PyTorch's CPU performance guide recommends do, and the timings measure the
work; ``--malloc default`` keeps glibc's behaviour.  The step table shows
the faults per step either way.

    python tools/benchmark/benchmark_blocks.py --repeat 9 --threads 2
    python tools/benchmark/benchmark_blocks.py --plot benchmark.png
"""
import argparse
import os
import os.path as osp
import platform
import statistics
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from mmcv.cnn import ContextBlock as MMCVContextBlock
from torch import nn
from torch.profiler import ProfilerActivity, profile

from gcnet_mm.benchmark import (backbone, block_shapes, block_types, gc_path,
                                gcnet_block, gcnet_paths, progress,
                                saved_activation_bytes, steady_malloc,
                                time_interleaved, timm_block)
from gcnet_mm.ops.cpu_kernels import extension_isa

# An 800x1088 Mask R-CNN input (a 4:3 COCO image, padded), batch 2.
BLOCK_SHAPES = block_shapes(800, 1088, 2)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeat', type=int, default=9,
                        help='timed repeats per candidate (median reported)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default)')
    parser.add_argument('--parts', nargs='+', default=['blocks', 'resnet'],
                        choices=['blocks', 'resnet'])
    parser.add_argument('--resnet-repeat', type=int, default=None,
                        help='repeats of the ResNet step (default: --repeat)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--clock', default='wall', choices=['wall', 'cpu'],
                        help="'cpu': process CPU time, steadier than wall "
                        'time on a machine shared with other jobs')
    parser.add_argument('--bn', default='eval', choices=['eval', 'train'],
                        help="the ResNet's batch norms: 'eval' (the "
                        "configs' norm_eval=True) or 'train' (batch "
                        'statistics, as the SyncBN configs train them)')
    parser.add_argument('--profile-rounds', type=int, default=3,
                        help='rounds of torch.profiler over the ResNet '
                        "steps for the per-operator difference to the plain "
                        'step (0: none)')
    parser.add_argument('--plot', metavar='PNG',
                        help='also draw the ratios as a PNG')
    parser.add_argument('--malloc', default='steady',
                        choices=['steady', 'default'],
                        help="'steady': glibc reuses freed memory instead of "
                        "returning it to the kernel (see the module doc); "
                        "'default': glibc's own thresholds")
    return parser.parse_args(argv)


RESNET_CONFIGS = {
    'plain': 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'mmcv GC': 'mmdet::gcnet/mask-rcnn_r50-gcb-r16-c3-c5_fpn_1x_coco.py',
    'gcnet_mm GC': osp.join(
        osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
        'configs/detection/gcnet/mask-rcnn_r50-gcb-r16-c3-c5_fpn_1x_coco.py'),
}


def op_times(fns: Dict[str, Callable[[], None]], rounds: int,
             label: str = 'profile') -> Dict[str, List[Dict[str, float]]]:
    """Self time of one call of each function, by operator, in ms, from
    ``torch.profiler``, per round (CPU time; on CUDA device time too, under
    ``'<op> (device)'``): the functions in turn within a round, in rotated
    order, as in :func:`time_interleaved`."""
    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if cuda else [])
    per_round: Dict[str, List[Dict[str, float]]] = {k: [] for k in fns}
    names = list(fns)
    for i in range(rounds):
        progress(f'{label}: round {i + 1}/{rounds}')
        for name in names[i % len(names):] + names[:i % len(names)]:
            with profile(activities=activities) as prof:
                fns[name]()
                if cuda:
                    torch.cuda.synchronize()
            ops: Dict[str, float] = {}
            for e in prof.key_averages():
                ops[e.key] = e.self_cpu_time_total / 1e3
                device = getattr(e, 'self_device_time_total', 0)
                if device:
                    ops[f'{e.key} (device)'] = device / 1e3
            per_round[name].append(ops)
    progress('')
    return per_round


def op_differences(ops: Dict[str, List[Dict[str, float]]], name: str,
                   base: str) -> Dict[str, float]:
    """Per operator, the median over rounds of ``name``'s self time less
    ``base``'s in the same round (ms), and under ``'total'`` that of the
    summed self CPU time."""
    def paired(get):
        return statistics.median(
            get(a) - get(b) for a, b in zip(ops[name], ops[base]))

    keys = set().union(*ops[name], *ops[base])
    diff = {k: paired(lambda r, k=k: r.get(k, 0.)) for k in keys}
    diff['total'] = paired(lambda r: sum(
        v for k, v in r.items() if not k.endswith('(device)')))
    return diff


def print_op_differences(ops: Dict[str, List[Dict[str, float]]], base: str,
                         top: int = 8) -> None:
    """For each function but ``base``: its self time over ``base``'s and the
    operators that differ most (paired medians, ms per call)."""
    for name in ops:
        if name == base:
            continue
        diff = op_differences(ops, name, base)
        total = diff.pop('total')
        worst = sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]
        print(f'{name} - {base}: {total:+.1f} ms self CPU time; ' +
              ', '.join(f'{k} {v:+.1f}' for k, v in worst))


def bench_blocks(args) -> Dict[str, Dict[str, float]]:
    """Print the block table; return each shape's median seconds by name."""
    paths = gcnet_paths(args.device)
    print('## GC block forward + backward (float32, ratio 1/16), ms; '
          "ratios to mmcv's")
    print(f"{'shape':>22} " + ' '.join(f'{p:>16}' for p in paths) +
          f" {'mmcv':>8} {'timm':>8} {'fused/mmcv':>10} {'fused/timm':>10}"
          f" {'max|dy|':>9} {'max|dx|':>9}")
    results: Dict[str, Dict[str, float]] = {}
    for shape in BLOCK_SHAPES:
        torch.manual_seed(0)
        c = shape[1]
        ref = MMCVContextBlock(c, ratio=1 / 16).to(args.device)
        for p in ref.parameters():  # non-zero everywhere, as after training
            nn.init.normal_(p, std=0.05)
        ours = gcnet_block(ref)
        tim = timm_block(c).to(args.device)
        x = torch.randn(shape, device=args.device, requires_grad=True)
        gy = torch.randn(shape, device=args.device)

        def step(block, path='fused'):
            def run():
                x.grad = None
                with gc_path(path):
                    block(x).backward(gy)
            return run

        y_ref, (dx_ref, ) = ref(x), torch.autograd.grad(ref(x), [x], gy)
        y_new, (dx_new, ) = ours(x), torch.autograd.grad(ours(x), [x], gy)
        dy = (y_ref - y_new).abs().max().item()
        ddx = (dx_ref - dx_new).abs().max().item()
        fns = {p: step(ours, p) for p in paths}
        fns.update(mmcv=step(ref), timm=step(tim))
        t = time_interleaved(fns, args.repeat, f'block {shape}', args.clock)
        results[f'C={c}, {shape[2]}x{shape[3]}'] = t
        print(f'{str(shape):>22} ' +
              ' '.join(f'{t[p] * 1e3:16.1f}' for p in paths) +
              f" {t['mmcv'] * 1e3:8.1f} {t['timm'] * 1e3:8.1f} "
              f"{t['fused'] / t['mmcv']:10.3f} "
              f"{t['fused'] / t['timm']:10.3f} {dy:9.1e} {ddx:9.1e}",
              flush=True)
    return results


def bench_resnet(args) -> Tuple[Dict[str, float], Dict[str, int]]:
    """Print the step table; return median seconds and saved bytes by
    model."""
    from mmdet.utils import register_all_modules  # mmdet: optional
    register_all_modules()
    models = {k: backbone(c, args.device, args.bn == 'eval')
              for k, c in RESNET_CONFIGS.items()}
    gc_types = {k: block_types(model) for k, model in models.items()}
    # Same weights everywhere (the GC ones random, not the zero init).
    for p in models['mmcv GC'].parameters():
        if p.dim() > 0:
            nn.init.normal_(p, std=0.02)
    state = models['mmcv GC'].state_dict()
    models['gcnet_mm GC'].load_state_dict(state)
    models['plain'].load_state_dict(state, strict=False)

    torch.manual_seed(1)
    img = torch.randn(2, 3, 512, 640, device=args.device)
    with torch.no_grad():
        grads = [torch.randn_like(o) for o in models['plain'](img)]

    def step(model, path='fused'):
        def run():
            model.zero_grad(set_to_none=True)
            # frozen_stages=1: c2's output (layer1) has no gradient.
            with gc_path(path):
                outs, gs = zip(*[(o, g) for o, g in zip(model(img), grads)
                                 if o.requires_grad])
                torch.autograd.backward(outs, gs)
        return run

    outs = {k: [o.detach() for o in m(img)] for k, m in models.items()}
    diff = max((a - b).abs().max().item()
               for a, b in zip(outs['mmcv GC'], outs['gcnet_mm GC']))
    ours = models.pop('gcnet_mm GC')
    runs = {k: (m, step(m)) for k, m in models.items()}
    for path in gcnet_paths(args.device):
        runs[f'gcnet_mm GC, {path}'] = (ours, step(ours, path))
    # The blocks find the batch norms before them during the first steps
    # (gcnet_mm/ops/norm_source.py); measure after that, as in training.
    for _ in range(2):
        runs['gcnet_mm GC, fused'][1]()
    mem = {k: saved_activation_bytes(m, run) for k, (m, run) in runs.items()}
    steps = {k: run for k, (_, run) in runs.items()}
    rounds: Dict[str, Dict[str, List]] = {}
    t = time_interleaved(steps, args.resnet_repeat or args.repeat,
                         'resnet step', args.clock, record=rounds)
    plain = rounds['plain']['times']
    print('\n## Mask R-CNN ResNet-50 backbone train step (frozen_stages=1, '
          f"norm_eval={args.bn == 'eval'}, batch 2, 512x640), GC r16 after "
          'conv3 in c3-c5')
    print(f"{'model':>30} {'step s':>8} {'time x':>7} {'paired x':>9} "
          f"{'saved MiB':>10} {'memory x':>9} {'faults/step':>12}")
    for k in t:
        paired = statistics.median(
            a / b for a, b in zip(rounds[k]['times'], plain))
        faults = statistics.median(rounds[k]['faults'])
        print(f"{k:>30} {t[k]:8.3f} {t[k] / t['plain']:7.3f} {paired:9.3f} "
              f"{mem[k] / 2**20:10.1f} {mem[k] / mem['plain']:9.3f} "
              f"{faults:12.0f}")
    print("time x: median step time over the plain one's; paired x: median "
          "over rounds of the step time over the plain step's in the same "
          'round; faults/step: median minor page faults per step')
    print(f'max |output difference| gcnet_mm vs mmcv: {diff:.1e}')
    for k, types in gc_types.items():
        print(f"{k}: {RESNET_CONFIGS[k].replace(os.getcwd() + os.sep, '')}"
              f"{' (' + ', '.join(types) + ')' if types else ''}")
    if args.profile_rounds:
        ops = op_times(steps, args.profile_rounds, 'resnet step profile')
        print('\n## Where the time goes: self time per step over the plain '
              "step's, by operator (torch.profiler, ms, median over "
              f'{args.profile_rounds} rounds of the difference in a round)')
        print_op_differences(ops, 'plain')
    return t, mem


def plot_results(path: str, title: str,
                 blocks: Optional[Dict[str, Dict[str, float]]] = None,
                 resnet: Optional[Tuple[Dict[str, float],
                                        Dict[str, int]]] = None) -> None:
    """Bar charts of the ratios: block time over mmcv's, and the step's time
    and saved activations over the plain backbone's."""
    import matplotlib  # optional: the picture only
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = [p for p in (blocks, resnet) if p]
    if not panels:
        raise ValueError('nothing to plot: no part of the benchmark ran')
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2),
                             squeeze=False)
    axes = list(axes[0])
    if blocks:
        ax = axes.pop(0)
        names = [n for n in ('fused', 'fused, torch ops', 'reference',
                             'timm')
                 if all(n in t for t in blocks.values())]
        labels = {'fused': 'gcnet_mm fused', 'reference':
                  'gcnet_mm reference', 'fused, torch ops':
                  'gcnet_mm fused, PyTorch-ops kernels',
                  'timm': 'timm GlobalContext'}
        xs = np.arange(len(blocks))
        width = 0.8 / len(names)
        for i, n in enumerate(names):
            ratios = [t[n] / t['mmcv'] for t in blocks.values()]
            bars = ax.bar(xs + (i - (len(names) - 1) / 2) * width, ratios,
                          width, label=labels[n])
            ax.bar_label(bars, fmt='%.2f', fontsize=7)
        ax.axhline(1.0, color='k', lw=0.8)
        ax.set_xticks(xs, list(blocks))
        ax.set_ylim(0, 1.3 * max(t[n] / t['mmcv'] for t in blocks.values()
                                 for n in names))
        ax.set_ylabel("forward + backward time / mmcv's")
        ax.set_title('GC r16 block, float32, batch 2')
        ax.legend(fontsize=7, ncol=2, loc='upper left')
    if resnet:
        ax = axes.pop(0)
        t, mem = resnet
        models = list(t)
        xs = np.arange(len(models))
        for i, (what, values) in enumerate(
                (('time', t), ('saved activations', mem))):
            ratios = [values[k] / values['plain'] for k in models]
            bars = ax.bar(xs + (i - 0.5) * 0.4, ratios, 0.4, label=what)
            ax.bar_label(bars, fmt='%.3f', fontsize=7)
        ax.axhline(1.0, color='k', lw=0.8)
        ax.set_xticks(xs, [m.replace(', ', '\n') for m in models],
                      fontsize=7)
        ax.set_ylim(0.9, max(1.35, max(
            v[k] / v['plain'] for v in (t, mem) for k in models) + 0.05))
        ax.set_ylabel("ratio to the plain backbone's")
        ax.set_title('ResNet-50 backbone train step, batch 2, 512x640')
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_average() -> str:
    try:
        return ' '.join(f'{v:.2f}' for v in os.getloadavg())
    except OSError:
        return 'n/a'


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    args = parse_args()
    malloc = steady_malloc() if args.malloc == 'steady' else 'default'
    if args.threads:
        torch.set_num_threads(args.threads)
    header = (f'{cpu_name()}, '
              f'{torch.get_num_threads()} threads, torch {torch.__version__}, '
              f'device {args.device}, {args.clock} clock, median of '
              f'{args.repeat} (ResNet {args.resnet_repeat or args.repeat}), '
              f'fused CPU loops: {extension_isa() or "off"}, '
              f'malloc {malloc}, load average {load_average()}')
    print(f'# {header}')
    blocks = bench_blocks(args) if 'blocks' in args.parts else None
    resnet = bench_resnet(args) if 'resnet' in args.parts else None
    print(f'# load average at the end: {load_average()}')
    if args.plot:
        plot_results(args.plot, header, blocks, resnet)
        print(f'# plot: {args.plot}')


if __name__ == '__main__':
    main()
