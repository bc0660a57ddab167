"""Pictures of what a GC model does: GC attention maps, predictions and
training curves (matplotlib)."""
from .attention import (context_attention, find_context_blocks,
                        record_context_attention)
from .demo import default_context_block, detection_figure, read_metrics
from .figure import (draw_attention, draw_detections, draw_losses,
                     read_train_losses)

__all__ = [
    'context_attention', 'find_context_blocks', 'record_context_attention',
    'detection_figure', 'default_context_block', 'read_metrics',
    'draw_attention', 'draw_detections', 'draw_losses', 'read_train_losses'
]
