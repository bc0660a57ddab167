"""Small CPU operations on the calling thread only.

The GC block's fused path runs a few operations on tensors of (B, C) or
(64, C) elements: the transform of the pooled context, the batch norm slope's
sample.  Split over threads, each costs more in waking the other threads and
waiting for them than in arithmetic, by far the most on a machine whose cores
are busy with other work; :func:`one_thread` runs them on the calling thread.
"""
import contextlib
from typing import Iterator

import torch

__all__ = ['one_thread']


@contextlib.contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """Run the CPU operations inside the ``with`` block on the calling thread
    only (``torch.set_num_threads(1)``, restored on leaving); nothing changes
    for another ``device``.

    OpenMP and MKL take the count per thread, so other threads keep theirs.
    """
    threads = torch.get_num_threads()
    if device.type != 'cpu' or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
