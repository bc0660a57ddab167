"""A hook that makes a resumed training run bit-identical to one that went
straight through."""
import random
from typing import Callable, Iterator

import numpy as np
import torch
from mmengine.hooks import Hook

from gcnet_mm.registry import HOOKS

__all__ = ['ReseedHook', 'position_seed']


def position_seed(seed: int, stream: str, position: int) -> int:
    """A 32-bit seed for ``position`` (an epoch or an iteration) of a run
    seeded with ``seed``: independent streams for every (seed, position), so
    run ``s`` at iteration ``n + 1`` does not replay run ``s + 1`` at ``n``
    (as ``seed + position`` would for ranks seeded ``seed + rank``)."""
    tag = {'epoch': 1, 'iter': 2}[stream]
    entropy = [int(seed) % 2**64, tag, int(position)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _reseed(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (torch's on every
    device: ``torch.manual_seed`` seeds CUDA's too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _ReseedEachBatch:
    """An iteration loop's data iterator that reseeds before every batch."""

    def __init__(self, iterator: Iterator, reseed: Callable[[], None]) -> None:
        self._iterator = iterator
        self._reseed = reseed

    def __iter__(self):
        return self

    def __next__(self):
        self._reseed()
        return next(self._iterator)

    def __getattr__(self, name: str):
        return getattr(self._iterator, name)


@HOOKS.register_module()
class ReseedHook(Hook):
    """Seed the global random generators from the run's seed and the training
    position, so that a resumed run draws what an uninterrupted one draws.

    Everything random in a training step (the data pipeline's augmentations
    in the main process, dropout, drop-path, the samplers of losses) draws
    from python's, numpy's and torch's global generators, whose state a
    checkpoint does not hold. This hook makes that state a function of where
    training is, never of what ran before:

    * epoch-based loops: the generators are seeded at the start of every
      epoch from ``(runner.seed, epoch)``;
    * iteration-based loops (mmengine's ``IterBasedTrainLoop`` and every loop
      with a ``dataloader_iterator``): they are seeded before every batch is
      fetched from ``(runner.seed, iteration)``. After a resume, mmengine
      fetches the batches already trained on again to advance the data
      iterator; the generators are seeded afresh before the first batch that
      is trained on, so those fetches change nothing.

    ``runner.seed`` is ``randomness.seed`` (plus the rank with
    ``diff_rank_seed=True``), or the random seed mmengine draws when there is
    none; a resumed run takes it from the checkpoint. Each process seeds its
    own generators, so this holds for multi-process runs as well, with no
    communication. What validation draws does not change what training
    draws.

    Data-loader workers seed themselves when they start (mmengine's
    ``worker_init_fn``: seed, rank and worker id): an iteration-based loop
    keeps one set of workers for the whole run and refetches the skipped
    batches through them, and an epoch-based loop without
    ``persistent_workers`` starts new ones every epoch, so both resume
    exactly. Workers kept across epochs (``persistent_workers=True`` with
    ``num_workers > 0``) carry their random state from epoch to epoch, which a
    resumed run cannot restore; the hook says so when such a run resumes.

    ``tools/train.py`` adds this hook; with another tool add
    ``custom_hooks = [dict(type='gcnet_mm.ReseedHook')]`` to the config.
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._per_batch = False

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        iterator = getattr(loop, 'dataloader_iterator', None)
        self._per_batch = iterator is not None
        if self._per_batch and not isinstance(iterator, _ReseedEachBatch):
            loop.dataloader_iterator = _ReseedEachBatch(
                iterator, lambda: _reseed(
                    position_seed(runner.seed, 'iter', loop.iter)))
        if not self._per_batch and (runner.iter or runner.epoch):
            self._check_epoch_resume(runner, loop)

    def before_train_epoch(self, runner) -> None:
        if not self._per_batch:
            _reseed(position_seed(runner.seed, 'epoch', runner.epoch))

    @staticmethod
    def _check_epoch_resume(runner, loop) -> None:
        """Say why a resumed epoch-based run cannot repeat the original."""
        loader = getattr(loop, 'dataloader', None)
        if loader is None:
            return
        if (getattr(loader, 'num_workers', 0) > 0
                and getattr(loader, 'persistent_workers', False)):
            runner.logger.warning(
                'ReseedHook: this epoch-based run resumes with data-loader '
                'workers kept across epochs (persistent_workers=True, '
                f'num_workers={loader.num_workers}); they restart their '
                'random streams now, so the data augmentation differs from '
                'an uninterrupted run. For a bit-identical resume, train with '
                'train_dataloader.persistent_workers=False.')
        try:
            per_epoch = len(loader)
        except TypeError:
            return
        if per_epoch and runner.iter != runner.epoch * per_epoch:
            runner.logger.warning(
                f'ReseedHook: resuming at iteration {runner.iter}, inside '
                f'epoch {runner.epoch + 1} ({per_epoch} iterations each): '
                "mmengine's epoch loop trains that epoch again from its "
                'start, so the run differs from an uninterrupted one.')
