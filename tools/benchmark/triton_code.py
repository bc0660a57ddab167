"""What the GC block's Triton kernels compile to, without a GPU.

Triton compiles for any NVIDIA target on a machine without one.  This tool
runs the fused path's host code for each case (shape, dtype, layout, which
gradients are needed), records the launches instead of making them,
compiles every kernel variant they name ahead of time for each target, and
reads from the generated code the properties that decide speed there:

* the widths of the global loads and stores in the PTX, against the widest
  the tile's alignment allows (``VEC`` elements, at most 16 bytes);
* the reductions of 2-D tiles in the Triton GPU IR: over which axis
  (channels, positions, chunks) and whether inside a loop.

How long the kernels take only a GPU can say (``tools/gpu_check``).

    python tools/benchmark/triton_code.py                 # sm_80 and sm_90
    python tools/benchmark/triton_code.py --arch 90 --cases blocks --json O

Run without ``TRITON_INTERPRET=1`` (the interpreter compiles nothing).
"""
import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from typing import Dict, List

import torch

from gcnet_mm.benchmark import LAYOUTS, block_shapes, layout_of
from gcnet_mm.ops import triton_kernels as tk
from gcnet_mm.ops.attention_pool import as_matrix

# The GPU check's input (tools/gpu_check/check.py) and Mask R-CNN's
# 800x1333 padded to a multiple of 32.
IMAGES = ((800, 1216), (800, 1344))
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16,
          'bf16': torch.bfloat16}
# (need_x, need_w, g given): a training step; frozen weights; an input that
# needs no gradient; a transform that ignores the context (no g).
GRADS = {'train': (True, True, True), 'frozen weight': (True, False, True),
         'frozen input': (False, True, False),
         'no g': (True, True, False), 'no g, frozen weight': (True, False,
                                                              False)}
# The tile axes of each kernel: (dim 0, dim 1).
TILES = {
    '_pool_forward_kernel': ('channels', 'positions'),
    '_pool_backward_da_kernel': ('channels', 'positions'),
    '_pool_backward_kernel': ('channels', 'positions'),
    '_pool_merge_kernel': ('chunks', 'channels'),
}


def cases(which: str = 'all') -> List[dict]:
    """The cases compiled: the c3/c4/c5 shapes in every dtype and layout
    for a training step ('blocks': batch 2 of the check's input, float32
    and bfloat16 only), and for 'all' also batch 8, Mask R-CNN's input,
    the other gradient cases, a shape with tails everywhere, a block of 32
    positions and tensors of mixed layouts."""
    out = []
    batches = (2, ) if which == 'blocks' else (2, 8)
    images = IMAGES[:1] if which == 'blocks' else IMAGES
    dtypes = ('fp32', 'bf16') if which == 'blocks' else tuple(DTYPES)
    for image in images:
        for batch in batches:
            for stage, shape in zip(('c3', 'c4', 'c5'),
                                    block_shapes(*image, batch)):
                for dtype in dtypes:
                    for layout in LAYOUTS:
                        out.append(dict(name=f'{stage} {image[0]}x{image[1]}'
                                        f' b{batch}', shape=shape,
                                        dtype=dtype, layout=layout,
                                        grads='train'))
    if which == 'blocks':
        return out
    c4 = block_shapes(*IMAGES[0], 2)[1]
    for dtype in DTYPES:
        for layout in LAYOUTS:
            for grads in GRADS:
                if grads != 'train':
                    out.append(dict(name='c4 800x1216 b2', shape=c4,
                                    dtype=dtype, layout=layout, grads=grads))
            out.append(dict(name='tails', shape=(2, 70, 9, 11), dtype=dtype,
                            layout=layout, grads='train'))
            out.append(dict(name='32 positions', shape=(4, *c4[1:]),
                            dtype=dtype, layout=layout, grads='train'))
            out.append(dict(name='mixed layouts', shape=(2, 64, 12, 10),
                            dtype=dtype, layout=layout, grads='train',
                            g_layout=LAYOUTS[layout == 'contiguous']))
    return out


def _empty(shape, dtype, layout):
    return torch.empty(shape, dtype=dtype).contiguous(
        memory_format=layout_of(layout))


class _Recorder:
    """Stands in for a Triton kernel: ``kernel[grid](*args, **kw)`` records
    the launch."""

    def __init__(self, kernel, launches: list) -> None:
        self.kernel, self.launches, self.fn = kernel, launches, kernel.fn

    def __getitem__(self, grid):
        return lambda *args, **constexprs: self.launches.append(
            (self.kernel, grid, args, constexprs))


def record(case: dict) -> list:
    """The launches of one forward and backward of ``case``:
    ``(kernel, grid, args, constexprs)``; nothing runs (the tensors are
    allocated, never written)."""
    dtype = DTYPES[case['dtype']]
    b, c, h, w = case['shape']
    x = _empty(case['shape'], dtype, case['layout'])
    x_mat, channels_last = as_matrix(x)
    need_x, need_w, has_g = GRADS[case['grads']]
    g = None
    if has_g:
        g = _empty(case['shape'], dtype, case.get('g_layout',
                                                  case['layout']))
    launches = []
    kernels = {name: k for name, k in vars(tk).items()
               if name.endswith('_kernel') and hasattr(k, 'warmup')}
    for name, kernel in kernels.items():
        setattr(tk, name, _Recorder(kernel, launches))
    try:
        tk.KERNELS.forward(x_mat, torch.empty(1, c, 1, 1))
        tk.KERNELS.backward(x_mat, torch.empty(b, h * w),
                            torch.empty(b, c, dtype=dtype),
                            torch.empty(b, c, dtype=dtype), torch.empty(c),
                            g, need_x, need_w, channels_last)
    finally:
        for name, kernel in kernels.items():
            setattr(tk, name, kernel)
    return launches


class _Target:
    """Triton's driver interface as far as compiling needs it: the target,
    a device name per target (the key of Triton's in-memory cache) and no
    stream."""

    def __init__(self, arch: int) -> None:
        from triton.backends.compiler import GPUTarget
        self.target = GPUTarget('cuda', arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return f'sm_{self.target.arch}'

    def get_current_stream(self, device=None):
        return 0


def compile_launch(launch, arch: int):
    """Triton's compiled kernel for one recorded launch on ``sm_<arch>``:
    the launch's own specialisation, through ``JITFunction.warmup``."""
    from triton.runtime import driver
    kernel, grid, args, constexprs = launch
    driver.set_active(_Target(arch))
    return kernel.warmup(*args, grid=grid, **constexprs)


_ACCESS = re.compile(r'\b(ld|st)\.global((?:\.[\w:]+)+)')


def accesses(ptx: str) -> Dict[str, Dict[int, int]]:
    """{'ld' | 'st': {bytes per instruction: instructions}} of a PTX text's
    global loads and stores."""
    out = {'ld': Counter(), 'st': Counter()}
    for op, suffixes in _ACCESS.findall(ptx):
        parts = suffixes.split('.')
        vec = [int(p[1:]) for p in parts if re.fullmatch(r'v\d+', p)]
        bits = [int(p[1:]) for p in parts if re.fullmatch(r'[bfsu]\d+', p)]
        if bits:
            out[op][(vec or [1])[0] * bits[-1] // 8] += 1
    return {k: dict(v) for k, v in out.items()}


def reductions(ttgir: str, tile: tuple) -> List[dict]:
    """The reductions of 2-D tiles in a Triton GPU IR text: the tile axis
    summed over (``tile`` names dims 0 and 1) and whether inside a loop."""
    out = []
    regions = []  # (indent, is a loop) of the regions open at this line
    pending = []  # reductions whose closing line (their type) is ahead
    for line in ttgir.splitlines():
        text = line.strip()
        indent = len(line) - len(line.lstrip())
        if text.startswith('}'):
            while regions and regions[-1][0] >= indent:
                regions.pop()
            if pending and text.startswith('})') and \
                    pending[-1][0] == indent:
                _, axis, in_loop = pending.pop()
                dims = re.match(r'\}\) : \(tensor<([\dx]+)x[a-z]', text)
                if dims and dims.group(1).count('x') == 1:
                    out.append(dict(over=tile[axis], in_loop=in_loop))
        m = re.search(r'"tt\.reduce"\(.*axis = (\d+)', text)
        if m:
            pending.append((indent, int(m.group(1)),
                            any(loop for _, loop in regions)))
        if text.endswith('{'):
            regions.append((indent, bool(re.search(r'\bscf\.(for|while)\b',
                                                   text))))
    return out


_BYTES = {'f32': 4, 'f16': 2, 'bf16': 2, 'f64': 8}


def tile_accesses(ttgir: str) -> Dict[str, List[int]]:
    """{'ld' | 'st': [bytes per thread and access, per site]} of the 2-D
    tiles' loads and stores in a Triton GPU IR text: the elements each
    thread holds contiguously along the tile's fast axis (its layout's
    ``sizePerThread`` by ``order``), the width of the vectors the tile's
    accesses are lowered to."""
    layouts = {}
    for name, per_thread, order in re.findall(
            r'^(#\w+) = #ttg\.blocked<\{sizePerThread = \[([\d, ]+)\].*'
            r'order = \[([\d, ]+)\]', ttgir, re.M):
        per_thread = [int(v) for v in per_thread.split(',')]
        layouts[name] = per_thread[int(order.split(',')[0])]
    out = {'ld': [], 'st': []}
    for op, dtype, layout in re.findall(
            r'\btt\.(load|store) [^:]*: tensor<\d+x\d+x!tt\.ptr<(\w+)>, '
            r'(#\w+)>', ttgir):
        out['ld' if op == 'load' else 'st'].append(layouts[layout] *
                                                   _BYTES[dtype])
    return out


def sample_offsets(ttgir: str) -> Dict[str, str]:
    """{feature-map pointer: integer type of the sample's offset added to
    it} in a Triton GPU IR text (``i64``: no 32-bit overflow for a batch of
    2**31 elements or more)."""
    return dict(re.findall(r'tt\.addptr %(x_ptr|s_ptr|g_ptr|dx_ptr), %\S+ : '
                           r'!tt\.ptr<\w+>, (i\d+)', ttgir))


def analyse(which: str = 'all', archs=(80, 90)) -> List[dict]:
    """One record per (case, launch, target): the widths the tile's
    alignment allows (``allowed_bytes``) and those of the generated code,
    the reductions of 2-D tiles."""
    rows = []
    for case in cases(which):
        for launch in record(case):
            kernel, _, args, constexprs = launch
            name = kernel.fn.__name__
            elem = args[0].element_size() if name != '_pool_merge_kernel' \
                else 4
            vec = constexprs.get('VEC', constexprs.get('VEC_C', 1))
            for arch in archs:
                compiled = compile_launch(launch, arch)
                acc = accesses(compiled.asm['ptx'])
                tiles = tile_accesses(compiled.asm['ttgir'])
                rows.append(dict(
                    case=case['name'], shape=list(case['shape']),
                    dtype=case['dtype'], layout=case['layout'],
                    grads=case['grads'], g_layout=case.get('g_layout'),
                    kernel=name, arch=f'sm_{arch}',
                    constexprs={k: v for k, v in constexprs.items()},
                    allowed_bytes=min(16, vec * elem),
                    tile_loads=tiles['ld'], tile_stores=tiles['st'],
                    ptx_loads=acc['ld'], ptx_stores=acc['st'],
                    sample_offsets=sample_offsets(compiled.asm['ttgir']),
                    reductions=reductions(
                        compiled.asm['ttgir'],
                        TILES.get(name, ('channels', 'positions')))))
    return rows


def _widths(values: List[int]) -> str:
    return '/'.join(map(str, sorted(set(values)))) or '-'


def markdown(rows: List[dict]) -> str:
    """Per shape, dtype and layout of a training step: the bytes per
    thread and access of the feature map's tiles (forward; da; dx, dw) and
    the reductions over the channels in the forward and da kernels."""
    table = {}
    for r in rows:
        if r['grads'] != 'train' or r['kernel'] == '_pool_merge_kernel':
            continue
        key = (r['case'], 'x'.join(map(str, r['shape'])), r['dtype'],
               r['layout'], r['arch'])
        cell = table.setdefault(key, {})
        over_c = [x for x in r['reductions'] if x['over'] == 'channels']
        cell[r['kernel']] = r
        cell.setdefault('over_c', []).extend(over_c)
    lines = ['| case | shape | dtype | layout | target | forward loads B | '
             'da loads B | dx, dw loads / stores B | channel reductions per '
             'program, forward + da (in loops) |', '|' + '---|' * 9]
    for key, cell in table.items():
        none = dict(tile_loads=[], tile_stores=[])
        f = cell.get('_pool_forward_kernel', none)
        d = cell.get('_pool_backward_da_kernel', none)
        x = cell.get('_pool_backward_kernel', none)
        over_c = cell['over_c']
        lines.append(
            '| ' + ' | '.join(map(str, key)) +
            f" | {_widths(f['tile_loads'])} | {_widths(d['tile_loads'])} | "
            f"{_widths(x['tile_loads'])} / {_widths(x['tile_stores'])} | "
            f"{len(over_c)} ({sum(r['in_loop'] for r in over_c)}) |")
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', type=int, nargs='+', default=[80, 90],
                        help='compute capabilities, e.g. 80 90')
    parser.add_argument('--cases', default='all', choices=['all', 'blocks'])
    parser.add_argument('--json', help='write every record here')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.environ.get('TRITON_INTERPRET') == '1':
        raise SystemExit('triton_code.py: unset TRITON_INTERPRET (the '
                         'interpreter compiles nothing)')
    import triton
    start = time.perf_counter()
    rows = analyse(args.cases, tuple(args.arch))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(triton=triton.__version__, torch=torch.__version__,
                           rows=rows), f, indent=1)
    print(f'# Triton {triton.__version__}: {len(rows)} compiled launches in '
          f'{time.perf_counter() - start:.0f} s\n')
    print(markdown(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
