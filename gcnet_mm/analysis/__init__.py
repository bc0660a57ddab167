"""Model analysis: parameter and FLOP counts beside the paper's."""
from .complexity import (COUNTING_CONVENTION, DEFAULT_SHAPES, PAPER_TABLES,
                         Complexity, PaperRow, build_model, check_shape,
                         count_flops, count_params, dump_json,
                         fit_paper_convention, format_fit, format_results,
                         format_table, get_complexity, paper_table,
                         resolve_config)

__all__ = [
    'COUNTING_CONVENTION', 'DEFAULT_SHAPES', 'PAPER_TABLES', 'Complexity',
    'PaperRow', 'build_model', 'check_shape', 'count_flops', 'count_params',
    'dump_json', 'fit_paper_convention', 'format_fit', 'format_results',
    'format_table', 'get_complexity',
    'paper_table', 'resolve_config'
]
from . import query_independence  # noqa: F401,E402  (Table 1 / Figure 1)
