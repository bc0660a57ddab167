"""Memory of a step: peak CUDA memory, or the bytes saved for backward."""
from typing import Callable, Dict, Optional

import torch
from torch import Tensor, nn


def cuda_peak_bytes(fn: Callable[[], None],
                    before: Optional[Callable[[], None]] = None) -> int:
    """Peak bytes of CUDA tensors while ``fn`` runs, above those allocated
    when it starts (``torch.cuda.max_memory_allocated``); ``before`` runs
    first, outside the measurement (e.g. to drop earlier gradients)."""
    if before is not None:
        before()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def saved_activation_bytes(model: nn.Module, fn: Callable[[], None]) -> int:
    """Bytes of unique storages saved for backward while ``fn`` runs,
    ``model``'s parameters and buffers excluded."""
    exclude = {t.untyped_storage().data_ptr()
               for t in list(model.parameters()) + list(model.buffers())}
    storages: Dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in exclude:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def memory_measure(device: str) -> str:
    """What :func:`measure_memory` measures on ``device``."""
    return ('peak CUDA memory (max_memory_allocated)' if device == 'cuda'
            else 'bytes saved for backward (CPU: no allocator statistics)')


def measure_memory(device: str, fn: Callable[[], None], module: nn.Module,
                   before: Optional[Callable[[], None]] = None) -> int:
    """CUDA: peak bytes above those allocated before ``fn``; CPU: bytes of
    the activations ``fn`` saves for backward."""
    if device == 'cuda':
        return cuda_peak_bytes(fn, before)
    if before is not None:
        before()
    return saved_activation_bytes(module, fn)


def state_bytes(*tensors: Tensor) -> int:
    """Bytes of the tensors' elements."""
    return sum(t.numel() * t.element_size() for t in tensors)
