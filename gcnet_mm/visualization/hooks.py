"""A training hook that keeps where a GC block looked before training, so
that the demo's picture can show what training changed."""
import json
import os.path as osp
from typing import Optional

import torch
from mmengine.dataset import pseudo_collate
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import DATASETS

from gcnet_mm.registry import HOOKS
from .attention import find_context_blocks, record_context_attention

__all__ = ['InitialAttentionHook', 'INITIAL_ATTENTION_FILE',
           'default_context_block']

#: The file, in the work dir, that :class:`InitialAttentionHook` writes.
INITIAL_ATTENTION_FILE = 'gc_attention_init.json'


def default_context_block(blocks) -> str:
    """The last GC block of c4 (``backbone.layer3``), else the last one, of
    ``(name, block)`` pairs."""
    if not blocks:
        raise ValueError('the model has no GC block with attention pooling')
    c4 = [name for name, _ in blocks if name.startswith('backbone.layer3.')]
    return (c4 or [name for name, _ in blocks])[-1]


@HOOKS.register_module()
class InitialAttentionHook(Hook):
    """Before the first iteration of a training run that starts afresh,
    write the attention map of one GC block on one image of the config's
    test set to ``WORK_DIR/gc_attention_init.json``: the map of the weights
    the run starts from, which :func:`~gcnet_mm.visualization.
    detection_figure` draws beside the map after training.

    The model runs once in eval mode on that image, without gradients, and
    goes back to training mode; nothing random is drawn.  A resumed run
    keeps the file of its start.

    Args:
        index: the image of the test set.
        block: the module name of the GC block; default the last one of c4.
    """

    priority = 'LOW'

    def __init__(self, index: int = 0, block: Optional[str] = None) -> None:
        self.index = index
        self.block = block

    @master_only
    def before_train(self, runner) -> None:
        if runner.iter != 0:  # resumed: the file holds the run's start
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        dataset = DATASETS.build(runner.cfg.test_dataloader.dataset)
        name = self.block or default_context_block(find_context_blocks(model))
        training = model.training
        model.eval()
        try:
            with record_context_attention(model, [name]) as maps, \
                    torch.no_grad():
                model.test_step(pseudo_collate([dataset[self.index]]))
        finally:
            model.train(training)
        info = dataset.get_data_info(self.index)
        with open(osp.join(runner.work_dir, INITIAL_ATTENTION_FILE),
                  'w') as f:
            json.dump(
                dict(block=name, index=self.index, img_path=info['img_path'],
                     iter=runner.iter,
                     attention=maps[name][-1][0].tolist()), f)
