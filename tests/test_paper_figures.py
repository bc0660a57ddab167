"""The paper's figures have one home, the configs' metafiles, and the READMEs
quote them: gcnet_mm.analysis.paper_figures reads the metafiles' ``Paper
Rows``; README.md's parameter table is the one it writes; every results
table of configs/*/README.md quotes the metafiles (the paper's figures, the
built models' parameter counts, the model zoo's results and checkpoints);
and what mim reads of the metafiles is OpenMMLab's usual shape, with no paper
figure in it.
"""
import re
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
import yaml

from gcnet_mm.analysis import paper_figures as figures
from gcnet_mm.analysis.complexity_reports import (SUMMARY_TABLES,
                                                  format_params_summary)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
TASK_READMES = sorted(CONFIGS.glob('*/README.md'))
MODELS = {
    model['Config'][len('configs/'):]: model
    for model in figures.load_models()
}

# --- the metafiles ---------------------------------------------------------


def test_paper_rows_are_the_metafiles():
    """paper_rows() is every Paper Rows entry of model-index.yml's
    metafiles, read here with nothing but yaml."""
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    expected = []
    for metafile in index['Import']:
        for model in yaml.safe_load((ROOT / metafile).read_text())['Models']:
            for entry in model.get('Paper Rows') or []:
                expected.append(
                    (model['Config'][len('configs/'):], entry['Source'],
                     entry['Row'], entry.get('Parameters (M)'),
                     entry.get('FLOPs (G)'), entry.get('Metrics') or {},
                     entry.get('Remark')))
    assert [tuple(row) for row in figures.paper_rows()] == expected
    assert len(expected) > 40
    assert figures.model_index_root() == str(ROOT)


def test_every_row_with_figures_is_in_a_measured_table():
    """The complexity tool measures every row the paper prints parameters
    for; a table's rows exist and print FLOPs too."""
    sources = {table.source for table in figures.PAPER_TABLES.values()}
    for row in figures.paper_rows():
        if row.params is not None:
            assert row.source in sources, row
            assert (CONFIGS / row.config).is_file(), row
    for name in figures.PAPER_TABLES:
        rows = figures.table_rows(name)
        assert rows and all(row.flops for row in rows), name
        assert len({row.row for row in rows}) == len(rows), name


@pytest.mark.parametrize('entry,message', [
    ({'Row': 'x'}, 'needs a Source and a Row'),
    ({'Source': 'Table 3', 'Row': 'x', 'Params': 1.0},
     r"unknown keys \['Params'\]"),
])
def test_a_bad_paper_row_says_what_is_wrong(monkeypatch, entry, message):
    model = dict(Name='m', Config='configs/detection/gcnet/m.py',
                 Metadata=dict(Parameters=1), **{'Paper Rows': [entry]})
    monkeypatch.setattr(figures, 'load_models', lambda: [model])
    with pytest.raises(ValueError, match=f"model 'm': .*{message}"):
        figures.paper_rows()


def test_unknown_table():
    with pytest.raises(ValueError, match="unknown paper table '9z'.*'2a'"):
        figures.table_rows('9z')


def test_mim_reads_openmmlab_fields_without_paper_figures():
    """mim's search and download flatten each model's Metadata (numbers,
    strings, lists of strings) into columns, the collection's Paper being
    the 'paper' one, and its Results into '<dataset>/<metric>' columns: none
    of them holds a paper figure.  The paper's rows are a key of the model
    itself, which mim does not read."""
    modelindex = pytest.importorskip('modelindex')
    index = modelindex.load(str(ROOT / 'model-index.yml'))
    assert len(index.models) == len(MODELS)
    for model in index.models:
        for key, value in model.metadata.data.items():
            assert key.lower() != 'paper', model.name
            assert isinstance(value, (int, float, str)) or (
                isinstance(value, list)
                and all(isinstance(v, str) for v in value)), (model.name, key)
        for result in model.results or []:
            assert set(result.data) == {'Task', 'Dataset', 'Metrics'}
        assert set(model.data) <= {
            'Name', 'In Collection', 'Config', 'Metadata', 'Results',
            'Weights', 'Training log', 'Paper Rows'
        }, model.name


# --- README.md's parameter table -------------------------------------------


def test_readme_parameter_table_is_the_metafiles():
    expected = format_params_summary(SUMMARY_TABLES)
    readme = (ROOT / 'README.md').read_text()
    assert expected in readme, (
        "README.md's parameter table differs from the metafiles'; it should "
        f'read:\n{expected}')


# --- the results tables of configs/*/README.md -----------------------------

# Columns that quote the paper: header -> what of a Paper Rows entry
PAPER_COLUMNS = {
    'paper #params': ('Parameters (M)', ),
    'slides #params': ('Parameters (M)', ),
    'paper FLOPs': ('FLOPs (G)', ),
    'slides FLOPs': ('FLOPs (G)', ),
    'paper box / mask AP': ('box AP', 'mask AP'),
    'paper top-1 / top-5': ('Top 1 Accuracy', 'Top 5 Accuracy'),
    'slides mIoU': ('mIoU', ),
}
# Columns that quote the model zoo: header -> metrics of the Results
ZOO_COLUMNS = {
    'zoo box / mask AP': ('box AP', 'mask AP'),
    'mIoU': ('mIoU', ),
    'mIoU (ms+flip)': ('mIoU(ms+flip)', ),
    'zoo mIoU (80k)': ('mIoU', ),
}
# Columns that hold no figure of a metafile
LABEL_COLUMNS = {
    'Model', 'Backbone', 'Norm', 'Context', 'config', 'Table', 'Row',
    'Dataset', 'Crop', 'Iters', 'Head', "Head (slides' network)",
    'Table 5 row',
    'FLOPs',  # measured by tools/analysis/get_complexity.py
}
LINK = re.compile(r'\[[^\]]*\]\(([^)]+)\)')


def _tables(readme: Path) -> Iterator[List[Dict[str, str]]]:
    """The markdown tables of a README: lists of {header: cell}."""
    lines = readme.read_text().splitlines()
    i = 0
    while i < len(lines):
        if (lines[i].startswith('|') and i + 1 < len(lines)
                and re.fullmatch(r'\|( *:?-+:? *\|)+', lines[i + 1])):
            header = [c.strip() for c in lines[i].strip('|').split('|')]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith('|'):
                cells = [c.strip() for c in lines[i].strip('|').split('|')]
                assert len(cells) == len(header), (readme, lines[i])
                rows.append(dict(zip(header, cells)))
                i += 1
            yield rows
        else:
            i += 1


def _config_of(readme: Path, row: Dict[str, str]) -> str:
    """The config a results row links to, relative to configs/."""
    links = [
        m.group(1) for cell in row.values() for m in LINK.finditer(cell)
        if m.group(1).endswith('.py')
    ]
    assert len(links) == 1, (readme, row)
    path = (readme.parent / links[0]).resolve()
    return path.relative_to(CONFIGS).as_posix()


def _numbers(cell: str) -> Tuple[float, ...]:
    return tuple(float(v.strip().rstrip('MG')) for v in cell.split('/'))


def _paper_values(config: str, keys: Tuple[str, ...]) -> List[Tuple]:
    """What each Paper Rows entry of a config prints for ``keys``."""
    values = []
    for row in figures.paper_rows(config):
        known = {'Parameters (M)': row.params, 'FLOPs (G)': row.flops,
                 **row.metrics}
        values.append(tuple(known.get(key) for key in keys))
    return values


def _zoo_metrics(model: Dict) -> Dict[str, float]:
    results = model.get('Results') or []
    if isinstance(results, dict):  # mmseg writes one result as a dict
        results = [results]
    return {k: v for result in results for k, v in result['Metrics'].items()}


def _results_rows() -> Iterator[Tuple[Path, str, Dict[str, str], str]]:
    """(README, config, row, its table's first config) of every results
    table of configs/*/README.md."""
    for readme in TASK_READMES:
        for table in _tables(readme):
            configs = [_config_of(readme, row) for row in table]
            for config, row in zip(configs, table):
                yield readme, config, row, configs[0]


def test_readmes_have_results_tables():
    counted = {}
    for readme, *_ in _results_rows():
        counted[readme.parent.name] = counted.get(readme.parent.name, 0) + 1
    assert counted == {'classification': 11, 'detection': 42,
                       'recognition': 5, 'segmentation': 24}


@pytest.mark.parametrize(
    'readme', TASK_READMES, ids=lambda p: p.parent.name)
def test_readme_results_tables_quote_the_metafiles(readme):
    """Every figure of a results table is the metafile's: the paper's
    (any of the config's Paper Rows), the built model's parameter count,
    the zoo's results, memory and checkpoint.  A column this test does not
    know fails it, so a new column is checked or declared a label."""
    for where, config, row, first in _results_rows():
        if where != readme:
            continue
        model = MODELS[config]
        meta = model['Metadata']
        for header, cell in row.items():
            what = f'{readme.parent.name}/README.md, {config}, {header!r}'
            if header in PAPER_COLUMNS:
                if cell not in ('-', 'see paper'):
                    assert _numbers(cell) in _paper_values(
                        config, PAPER_COLUMNS[header]), what
            elif header in ZOO_COLUMNS:
                metrics = _zoo_metrics(model)
                expected = tuple(metrics.get(k) for k in ZOO_COLUMNS[header])
                if cell == '-':
                    assert expected == (None, ) * len(expected), what
                else:
                    assert _numbers(cell) == expected, what
            elif header == '#params':
                assert cell == f'{meta["Parameters"] / 1e6:.2f}M', what
            elif header == '+params vs baseline':
                added = meta['Parameters'] - MODELS[first]['Metadata'][
                    'Parameters']
                assert cell == f'{added / 1e6:+.2f}M', what
            elif header == 'Mem (GB)':
                memory = meta.get('Training Memory (GB)',
                                  meta.get('Memory (GB)'))
                assert (cell == '-' and memory is None) or (
                    float(cell) == memory), what
            elif header in ('checkpoint', 'log'):
                key = 'Weights' if header == 'checkpoint' else 'Training log'
                links = LINK.findall(cell)
                assert links == ([model[key]] if key in model else []), what
            else:
                assert header in LABEL_COLUMNS, f'unknown column: {what}'


def test_every_paper_parameter_count_is_quoted():
    """Each config the paper prints a parameter count for has it in a
    results table of its task's README."""
    quoted = set()
    for _, config, row, _ in _results_rows():
        for header in ('paper #params', 'slides #params'):
            if row.get(header, '-') != '-':
                quoted.add((config, _numbers(row[header])[0]))
    printed = {(row.config, row.params)
               for row in figures.paper_rows() if row.params is not None}
    assert printed - quoted == set()


def _is_part_of(excerpt, whole) -> bool:
    if isinstance(excerpt, dict):
        return isinstance(whole, dict) and all(
            key in whole and _is_part_of(value, whole[key])
            for key, value in excerpt.items())
    if isinstance(excerpt, list):
        return isinstance(whole, list) and all(
            any(_is_part_of(item, candidate) for candidate in whole)
            for item in excerpt)
    return excerpt == whole


@pytest.mark.parametrize(
    'readme', TASK_READMES, ids=lambda p: p.parent.name)
def test_readme_says_where_the_figures_live(readme):
    """Each task README explains the metafile's Paper Rows with an excerpt
    of its metafile, which is the metafile's."""
    text = readme.read_text()
    assert '## Where the figures live' in text
    assert '`Paper Rows`' in text and '(metafile.yml)' in text
    excerpts = re.findall(r'```yaml\n(.*?)```', text, flags=re.S)
    assert excerpts, readme
    for excerpt in excerpts:
        for model in yaml.safe_load(excerpt):
            config = model['Config'][len('configs/'):]
            assert _is_part_of(model, MODELS[config]), (readme, model)
            assert model['Paper Rows'], model
