"""Hooks that make training resumable with identical results."""
import random

import numpy as np
import torch
from mmengine.hooks import Hook

from gcnet_mm.registry import HOOKS

__all__ = ['EpochReseedHook']


@HOOKS.register_module()
class EpochReseedHook(Hook):
    """Reseed python, numpy and torch at the start of every training epoch.

    With a fixed ``randomness.seed``, epoch ``e`` then draws the same random
    numbers (augmentations, dropout, the dataloader's base seed) whether the
    run went straight through or was resumed from the checkpoint of epoch
    ``e - 1``; without it, a resumed run restarts the global generators from
    the run's seed and validation passes consume them, so the two diverge.
    Does nothing when the run has no seed.  ``tools/train.py`` adds it.

    Args:
        seed_offset: added to ``seed + epoch`` (default 0).
    """

    priority = 'VERY_HIGH'

    def __init__(self, seed_offset: int = 0) -> None:
        self.seed_offset = seed_offset

    def before_train_epoch(self, runner) -> None:
        base = runner.seed
        if base is None:
            return
        seed = (int(base) + self.seed_offset + runner.epoch) % (2**32)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
