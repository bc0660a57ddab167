"""Make mmaction2 1.2.0 from PyPI importable:
``python -m gcnet_mm.utils.mmaction_compat``.

mmaction2 1.2.0's wheel and sdist on PyPI lack the package
``mmaction/models/localizers/drn/`` (its folder has no ``__init__.py``, so
setuptools left it out), while ``mmaction/models/localizers/__init__.py``
imports ``from .drn.drn import DRN``; every ``import mmaction.models`` then
fails with "No module named 'mmaction.models.localizers.drn'"
(https://github.com/open-mmlab/mmaction2/issues/2714, open).  DRN is a
temporal-grounding localizer that nothing here uses.  This writes a two-file
stand-in in its place whose ``DRN`` raises a clear error when built, so the
rest of mmaction imports.  It does nothing where the real package is present
(an install from the source repository), and the same again when the stand-in
is there.  ``tools/setup_env.sh`` runs it after installing mmaction2; see
docs/mmaction2.md.
"""
import importlib.util
import os
import os.path as osp
import sys
from typing import Optional

__all__ = ['drn_dir', 'needs_drn_standin', 'write_drn_standin']

#: Marks the stand-in's files (and tells them from the real package's).
MARKER = 'gcnet_mm stand-in for mmaction2 issue #2714'

_INIT = f'# {MARKER}: see gcnet_mm/utils/mmaction_compat.py\n'

_DRN = f'''# {MARKER}: see gcnet_mm/utils/mmaction_compat.py
"""The mmaction2 1.2.0 published on PyPI has no DRN code (mmaction2 issue
#2714); this stand-in lets the rest of mmaction import."""
from mmaction.registry import MODELS


@MODELS.register_module()
class DRN:
    """Not available: building it raises ImportError."""

    def __init__(self, *args, **kwargs):
        raise ImportError(
            'DRN is not part of the mmaction2 1.2.0 published on PyPI (its '
            'wheel lacks mmaction/models/localizers/drn, mmaction2 issue '
            '#2714); install mmaction2 from its source repository to use it')
'''


def drn_dir() -> Optional[str]:
    """``mmaction/models/localizers/drn`` of the installed mmaction, or
    ``None`` when mmaction is not installed (nothing is imported)."""
    spec = importlib.util.find_spec('mmaction')
    if spec is None or not spec.submodule_search_locations:
        return None
    root = list(spec.submodule_search_locations)[0]
    return osp.join(root, 'models', 'localizers', 'drn')


def needs_drn_standin() -> bool:
    """Whether mmaction is installed, imports ``.drn.drn`` and lacks it."""
    folder = drn_dir()
    if folder is None:
        return False
    init = osp.join(osp.dirname(folder), '__init__.py')
    try:
        with open(init) as f:
            imports_drn = 'from .drn.drn import' in f.read()
    except OSError:
        return False
    return imports_drn and not osp.isfile(osp.join(folder, 'drn.py'))


def write_drn_standin() -> Optional[str]:
    """Write the stand-in if :func:`needs_drn_standin`; returns its folder,
    or ``None`` when nothing had to be written."""
    if not needs_drn_standin():
        return None
    folder = drn_dir()
    os.makedirs(folder, exist_ok=True)
    for name, text in (('__init__.py', _INIT), ('drn.py', _DRN)):
        with open(osp.join(folder, name), 'w') as f:
            f.write(text)
    return folder


def main() -> int:
    folder = drn_dir()
    if folder is None:
        print('[mmaction_compat] mmaction2 is not installed; nothing to do')
        return 0
    try:
        written = write_drn_standin()
    except OSError as e:
        print(f'[mmaction_compat] cannot write the DRN stand-in to {folder}: '
              f'{e}', file=sys.stderr)
        return 1
    if written:
        print(f'[mmaction_compat] wrote the DRN stand-in to {written} '
              '(mmaction2 issue #2714)')
    else:
        print('[mmaction_compat] mmaction.models.localizers.drn is present; '
              'nothing to do')
    return 0


if __name__ == '__main__':
    sys.exit(main())
