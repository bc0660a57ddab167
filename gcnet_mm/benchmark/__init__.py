"""What the benchmark (``tools/benchmark``), the GPU check
(``tools/gpu_check``) and the tests share to measure GC blocks: the cases
(shapes, layouts), the models and their random weights, interleaved timing
and memory.

* :mod:`.cases`: the c3/c4/c5 block shapes of an input, the memory layouts;
* :mod:`.models`: random non-zero weights, mmcv's, timm's and gcnet_mm's
  blocks, gcnet_mm's paths, a detection config's backbone;
* :mod:`.timing`: candidates timed in turn, in rotated order; page faults;
  glibc's allocator kept from trimming;
* :mod:`.memory`: peak CUDA memory, bytes saved for backward.
"""
from .cases import LAYOUTS, block_shapes, layout_of
from .memory import (cuda_peak_bytes, measure_memory, memory_measure,
                     saved_activation_bytes, state_bytes)
from .models import (GCNET_PATHS, backbone, block_types, config_backbone,
                     gc_path, gcnet_block, gcnet_paths, randomize_, timm_block)
from .timing import minor_faults, progress, steady_malloc, time_interleaved

__all__ = [
    'LAYOUTS', 'block_shapes', 'layout_of', 'cuda_peak_bytes',
    'measure_memory', 'memory_measure', 'saved_activation_bytes',
    'state_bytes', 'GCNET_PATHS', 'backbone', 'block_types',
    'config_backbone', 'gc_path', 'gcnet_block', 'gcnet_paths', 'randomize_',
    'timm_block', 'minor_faults', 'progress', 'steady_malloc',
    'time_interleaved'
]
