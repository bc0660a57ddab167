"""Model analysis: the FLOP-counting harness (:mod:`.flops`), the paper's
complexity tables (:mod:`.paper_tables`) and query independence."""
from .flops import (COUNTING_CONVENTION, DEFAULT_SHAPES, Complexity,
                    build_model, check_shape, count_flops, count_params,
                    dump_json, get_complexity, resolve_config)
from .paper_tables import (PAPER_TABLES, PaperRow, fit_paper_convention,
                           format_fit, format_results, format_table,
                           paper_table)

__all__ = [
    'COUNTING_CONVENTION', 'DEFAULT_SHAPES', 'PAPER_TABLES', 'Complexity',
    'PaperRow', 'build_model', 'check_shape', 'count_flops', 'count_params',
    'dump_json', 'fit_paper_convention', 'format_fit', 'format_results',
    'format_table', 'get_complexity',
    'paper_table', 'resolve_config'
]
from . import query_independence  # noqa: F401,E402  (Table 1 / Figure 1)
