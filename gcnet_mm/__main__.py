"""Run an OpenMMLab tool with the ``gcnet_mm::`` config scope known.

    python -m gcnet_mm TOOL.py [ARGS ...]

for example mmdetection's own ``tools/train.py`` or ``tools/test.py`` with a
config that inherits from this package's (``_base_ = 'gcnet_mm::...'``).
mmengine resolves ``pkg::`` bases only for the packages it knows, while it
reads the file and before any ``custom_imports`` of the config run; this
imports gcnet_mm, which adds it, and then runs TOOL.py as ``python TOOL.py
ARGS`` would.  (``tools/train.py`` and ``tools/test.py`` of this package
need none of this.)
"""
import os.path as osp
import runpy
import sys

import gcnet_mm  # noqa: F401  (lets mmengine resolve gcnet_mm::)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(__doc__.strip())
        return 0 if argv else 2
    tool = argv[0]
    if not osp.isfile(tool):
        print(f'error: no such tool script: {tool!r}', file=sys.stderr)
        return 2
    sys.argv = argv
    sys.path.insert(0, osp.dirname(osp.abspath(tool)))
    runpy.run_path(tool, run_name='__main__')
    return 0


if __name__ == '__main__':
    sys.exit(main())
