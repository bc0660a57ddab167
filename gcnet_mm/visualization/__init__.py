"""Pictures of what a GC model does: GC attention maps, predictions and
training curves (matplotlib)."""
from .attention import (context_attention, find_context_blocks,
                        record_context_attention)
from .demo import detection_figure, read_initial_attention, read_metrics
from .figure import (draw_attention, draw_detections, draw_losses,
                     read_train_losses)
from .hooks import InitialAttentionHook, default_context_block

__all__ = [
    'context_attention', 'find_context_blocks', 'record_context_attention',
    'detection_figure', 'default_context_block', 'read_metrics',
    'read_initial_attention', 'InitialAttentionHook', 'draw_attention',
    'draw_detections', 'draw_losses', 'read_train_losses'
]
