"""Model analysis: the FLOP-counting harness (:mod:`.flops`), the paper's
figures as the metafiles give them (:mod:`.paper_figures`), the paper's
complexity tables measured (:mod:`.paper_tables`, :mod:`.quiet_measurer`,
:mod:`.complexity_reports`), how the paper counted its detection FLOPs
(:mod:`.paper_flops_fit`) and query independence."""
from . import query_independence  # noqa: F401  (Table 1 / Figure 1)
from .complexity_reports import (format_params_summary, format_results,
                                 format_table)
from .flops import (COUNTING_CONVENTION, DEFAULT_SHAPES, Complexity,
                    build_model, check_shape, count_flops, count_params,
                    dump_json, get_complexity, resolve_config)
from .paper_figures import PAPER_TABLES, PaperRow, PaperTable, paper_rows
from .paper_flops_fit import fit_paper_convention, format_fit
from .paper_tables import paper_table

__all__ = [
    'COUNTING_CONVENTION', 'DEFAULT_SHAPES', 'PAPER_TABLES', 'Complexity',
    'PaperRow', 'PaperTable', 'build_model', 'check_shape', 'count_flops',
    'count_params', 'dump_json', 'fit_paper_convention', 'format_fit',
    'format_params_summary', 'format_results', 'format_table',
    'get_complexity', 'paper_rows', 'paper_table', 'resolve_config'
]
