"""The paper's figures, read from the configs' metafiles.

A model of a metafile (``configs/*/metafile.yml``, listed by
``model-index.yml``) may carry a ``Paper Rows`` list: the rows of the paper's
tables (or of the GCNet slides) that its config reproduces, each with what
the paper prints for that row::

    Paper Rows:
    - Source: Table 4(a)           # the table, as the paper names it
      Row: +1 NL                   # the row's label
      Parameters (M): ...          # millions, as printed
      FLOPs (G): ...               # GFLOPs (multiply-adds), as printed
      Metrics:                     # named as in OpenMMLab's Results
        Top 1 Accuracy: ...
      Remark: why a measured figure differs from the printed one (optional)

The figures are optional (the paper prints none we have for Table 2(b) to
2(f) and 4(b)).  OpenMMLab's own keys keep their meaning: ``Metadata``
``Parameters`` is the parameter count of the model the config builds and
``Results`` are the model zoo's results of the released ``Weights``.
``Paper Rows`` is a key of the model itself (as mmpretrain's ``Converted
From``), which ``mim`` does not read.

:data:`PAPER_TABLES` names the tables whose parameters and FLOPs
``tools/analysis/get_complexity.py --paper-tables`` measures; a table's rows
are the ``Paper Rows`` of its ``Source`` that print parameters, in the order
the metafiles list them.
"""
import functools
import os.path as osp
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

import yaml

from ..engine.config_checks import package_configs_dir

__all__ = [
    'PAPER_TABLES', 'PaperTable', 'PaperRow', 'model_index_root',
    'load_models', 'paper_rows', 'table_rows', 'get_table',
    'printed_decimals'
]


class PaperTable(NamedTuple):
    """A table of the paper whose complexity the tool measures."""
    source: str  # as the metafiles' ``Source`` names it
    title: str
    shape: Tuple[int, int]  # the input size (H, W) its FLOPs are measured at

    @property
    def heading(self) -> str:
        return f'{self.source}: {self.title}'


#: Table name (as ``--paper-tables`` takes it) -> :class:`PaperTable`.  The
#: input sizes are explained in docs/complexity.md.
PAPER_TABLES: Dict[str, PaperTable] = {
    '2a': PaperTable('Table 2(a)', 'block design, Mask R-CNN R50-FPN (COCO)',
                     (800, 1333)),
    '3': PaperTable('Table 3', 'stronger backbones, GC in c3-c5 (COCO)',
                    (800, 1333)),
    '4a': PaperTable('Table 4(a)', 'block design, ResNet-50 (ImageNet)',
                     (224, 224)),
    'cityscapes': PaperTable(
        'GCNet slides', 'decode heads on dilated ResNet-101 (Cityscapes val)',
        (769, 769)),
    '5': PaperTable(
        'Table 5',
        'slow-only ResNet-50 8x8 (Kinetics-400), one 8-frame clip',
        (224, 224)),
}


class PaperRow(NamedTuple):
    """One entry of a model's ``Paper Rows``."""
    config: str  # relative to configs/, e.g. 'detection/gcnet/x.py'
    source: str  # 'Table 3', 'GCNet slides', ...
    row: str  # the row's label
    params: Optional[float]  # millions, as printed
    flops: Optional[float]  # GFLOPs (multiply-adds), as printed
    metrics: Dict[str, float]  # e.g. {'box AP': 39.4, 'mask AP': 35.7}
    remark: Optional[str]  # why a measured figure differs, if known

    @property
    def task(self) -> str:
        """``detection``, ``segmentation``, ``classification`` or
        ``recognition``: the folder of ``configs/`` the config is in."""
        return self.config.split('/', 1)[0]


def model_index_root() -> str:
    """The folder of ``model-index.yml``: the checkout's root, or
    ``gcnet_mm/.mim`` as installed (the metafiles' ``Config`` paths are
    relative to it)."""
    return osp.dirname(osp.realpath(package_configs_dir()))


@functools.lru_cache(maxsize=None)
def _load_models(root: str) -> Tuple[Dict[str, Any], ...]:
    with open(osp.join(root, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    models = []
    for metafile in index['Import']:
        with open(osp.join(root, metafile)) as f:
            models += yaml.safe_load(f)['Models']
    return tuple(models)


def load_models() -> List[Dict[str, Any]]:
    """Every model of ``model-index.yml``'s metafiles, as a metafile gives
    it (``Name``, ``Config``, ``Metadata``, ``Results``, ``Paper Rows``...),
    in the order they list them."""
    return list(_load_models(model_index_root()))


def _config_key(model: Dict[str, Any]) -> str:
    config = model['Config']
    if not config.startswith('configs/'):
        raise ValueError(f"model {model.get('Name')!r}: Config should start "
                         f"with 'configs/', but got {config!r}")
    return config[len('configs/'):]


def _paper_row(model: Dict[str, Any], entry: Dict[str, Any]) -> PaperRow:
    if not isinstance(entry, dict) or not {'Source', 'Row'} <= set(entry):
        raise ValueError(f"model {model.get('Name')!r}: each of its Paper "
                         f'Rows needs a Source and a Row, but got {entry!r}')
    unknown = set(entry) - {'Source', 'Row', 'Parameters (M)', 'FLOPs (G)',
                            'Metrics', 'Remark'}
    if unknown:
        raise ValueError(f"model {model.get('Name')!r}: unknown keys "
                         f'{sorted(unknown)} in Paper Rows; expected Source, '
                         'Row, Parameters (M), FLOPs (G), Metrics, Remark')
    return PaperRow(_config_key(model), str(entry['Source']),
                    str(entry['Row']), entry.get('Parameters (M)'),
                    entry.get('FLOPs (G)'), dict(entry.get('Metrics') or {}),
                    entry.get('Remark'))


def paper_rows(config: Optional[str] = None) -> List[PaperRow]:
    """The ``Paper Rows`` of every model, or of the model whose config is
    ``config`` (relative to ``configs/``), in the metafiles' order."""
    return [
        _paper_row(model, entry) for model in load_models()
        if config is None or _config_key(model) == config
        for entry in model.get('Paper Rows') or []
    ]


def get_table(name: str) -> PaperTable:
    """:data:`PAPER_TABLES` ``[name]``.

    Raises:
        ValueError: for a name not in :data:`PAPER_TABLES`.
    """
    if name not in PAPER_TABLES:
        raise ValueError(f'unknown paper table {name!r}; expected one of '
                         f'{sorted(PAPER_TABLES)}')
    return PAPER_TABLES[name]


def table_rows(name: str) -> List[PaperRow]:
    """The rows of a table of :data:`PAPER_TABLES`: the ``Paper Rows`` of
    its source that print parameters, in the metafiles' order."""
    source = get_table(name).source
    return [
        row for row in paper_rows()
        if row.source == source and row.params is not None
    ]


def printed_decimals(values: Iterable[Optional[float]]) -> int:
    """How many decimals a column of printed figures has: 2 if any of them
    has two (``1.25``; a printed ``1.20`` reads back as ``1.2``), else 1."""
    return 2 if any(v is not None and v != round(v, 1)
                    for v in values) else 1
