"""Run upstream's own unit tests against gcnet_mm's drop-in classes.

    python tools/misc/upstream_tests.py --mmcv SRC --mmdet SRC [--mmseg SRC]
    python tools/misc/upstream_tests.py --mmcv SRC --upstream  # the control

The tests:

- mmcv: ``tests/test_cnn/test_context_block.py`` and ``test_non_local.py``,
  with ``mmcv.cnn(.bricks).ContextBlock`` / ``NonLocal2d`` bound to
  ``gcnet_mm.ContextBlock`` / ``NonLocalBlock``;
- mmseg: ``tests/test_models/test_heads/test_gc_head.py`` and
  ``test_nl_head.py``, with ``mmseg.models.decode_heads.GCHead`` / ``NLHead``
  bound to ``gcnet_mm.GCHead`` / ``NonLocalHead``;
- mmdet: ``tests/test_models/test_backbones/test_resnet.py`` and
  ``test_renext.py``, whose ``ContextBlock`` and ``NonLocal2d`` plugins then
  build gcnet_mm's blocks.

Each ``--HOST`` is a source checkout (or unpacked source distribution) of that
host, at the version installed (``git clone --branch v2.1.0
https://github.com/open-mmlab/mmcv``). mmsegmentation's source distribution on
PyPI holds its tests, so without ``--mmseg`` they are taken from it (``pip
download``, cached in ``$GCNET_MM_CACHE``); mmcv's and mmdet's do not, and a
host whose source is not given is skipped, and said so.

The test files are copied into a temporary folder with a ``conftest.py``
(``tools/misc/upstream_tests_conftest.py``) that binds those names before any
test module imports them and checks that the binding holds; ``--upstream``
runs the same files against upstream's classes. Arguments after ``--`` go to
pytest. The exit status is pytest's.
"""
import argparse
import glob
import importlib.metadata
import os
import os.path as osp
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import Dict, List, Optional

HERE = osp.dirname(osp.abspath(__file__))

#: host -> (its distribution on PyPI, the test files, relative to its source)
UPSTREAM_TESTS: Dict[str, tuple] = {
    'mmcv': ('mmcv', [
        'tests/test_cnn/test_context_block.py',
        'tests/test_cnn/test_non_local.py',
    ]),
    'mmseg': ('mmsegmentation', [
        'tests/test_models/test_heads/test_gc_head.py',
        'tests/test_models/test_heads/test_nl_head.py',
        'tests/test_models/test_heads/utils.py',
    ]),
    'mmdet': ('mmdet', [
        'tests/test_models/test_backbones/test_resnet.py',
        'tests/test_models/test_backbones/test_renext.py',
        'tests/test_models/test_backbones/utils.py',
    ]),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run upstream's unit tests against gcnet_mm's drop-in "
        'classes', epilog='Arguments after -- go to pytest.')
    for host, (dist, _) in UPSTREAM_TESTS.items():
        parser.add_argument(
            f'--{host}', metavar='SRC',
            help=f'{dist} source checkout at the installed version' +
            (" (default: PyPI's source distribution)"
             if host == 'mmseg' else ''))
    parser.add_argument(
        '--upstream', action='store_true',
        help="run the tests against upstream's classes (the control)")
    parser.add_argument(
        '--keep', metavar='DIR',
        help='assemble the tests in DIR and keep it (default: a temporary '
        'folder, removed afterwards)')
    argv = sys.argv[1:] if argv is None else list(argv)
    pytest_args: List[str] = []
    if '--' in argv:
        at = argv.index('--')
        argv, pytest_args = argv[:at], argv[at + 1:]
    args = parser.parse_args(argv)
    args.pytest_args = pytest_args
    return args


def _cache_dir() -> str:
    root = os.environ.get('GCNET_MM_CACHE') or osp.join(
        osp.expanduser('~'), '.cache', 'gcnet_mm')
    return osp.join(root, 'upstream_tests')


def mmseg_sdist_source() -> str:
    """The installed mmsegmentation's source distribution from PyPI,
    unpacked into the cache (once); its folder."""
    version = importlib.metadata.version('mmsegmentation')
    root = osp.join(_cache_dir(), f'mmsegmentation-{version}')
    if osp.isdir(osp.join(root, 'tests')):
        return root
    os.makedirs(_cache_dir(), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=_cache_dir()) as tmp:
        cmd = [
            sys.executable, '-m', 'pip', 'download', '--no-deps',
            '--no-binary', ':all:', '--no-build-isolation', '-q', '-d', tmp,
            f'mmsegmentation=={version}'
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archives = glob.glob(osp.join(tmp, '*.tar.gz'))
        if proc.returncode != 0 or not archives:
            raise RuntimeError(
                f'could not download mmsegmentation {version} from PyPI '
                f'({" ".join(cmd)}):\n{proc.stderr.strip()[-2000:]}\n'
                'pass a checkout with --mmseg instead')
        with tarfile.open(archives[0]) as tar:
            try:
                tar.extractall(tmp, filter='data')
            except TypeError:  # Python without extraction filters
                tar.extractall(tmp)
        shutil.move(osp.join(tmp, f'mmsegmentation-{version}'), root)
    return root


def assemble(sources: Dict[str, str], out: str) -> List[str]:
    """Copy each host's test files into ``out/up_HOST/`` (a package, as the
    tests import their ``utils`` relatively), and the conftest; the folders
    written."""
    missing = [
        osp.join(src, rel) for host, src in sources.items()
        for rel in UPSTREAM_TESTS[host][1]
        if not osp.isfile(osp.join(src, rel))
    ]
    if missing:
        raise FileNotFoundError(
            'not in the given sources (a checkout of the installed version '
            'is expected): ' + ', '.join(missing))
    folders = []
    for host, src in sources.items():
        folder = osp.join(out, f'up_{host}')
        os.makedirs(folder, exist_ok=True)
        open(osp.join(folder, '__init__.py'), 'w').close()
        for rel in UPSTREAM_TESTS[host][1]:
            shutil.copy(osp.join(src, rel), folder)
        folders.append(folder)
    shutil.copy(
        osp.join(HERE, 'upstream_tests_conftest.py'),
        osp.join(out, 'conftest.py'))
    with open(osp.join(out, 'pytest.ini'), 'w') as f:
        f.write('[pytest]\n')  # not the project's settings
    return folders


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return _run(args)
    except (FileNotFoundError, RuntimeError) as e:
        print(f'[upstream_tests] {e}', file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    sources: Dict[str, str] = {}
    for host in UPSTREAM_TESTS:
        src: Optional[str] = getattr(args, host)
        if src is None and host == 'mmseg':
            src = mmseg_sdist_source()
        if src is None:
            print(f'[upstream_tests] {host}: skipped (no --{host} source)')
            continue
        sources[host] = osp.abspath(osp.expanduser(src))
    if not sources:
        print('[upstream_tests] nothing to run', file=sys.stderr)
        return 2
    out = args.keep or tempfile.mkdtemp(prefix='gcnet_mm-upstream-tests-')
    try:
        folders = assemble(sources, out)
        env = dict(os.environ, GCNET_MM_UPSTREAM_SHIM='0' if args.upstream
                   else '1')
        # gcnet_mm importable from a checkout that is not installed
        repo = osp.dirname(osp.dirname(HERE))
        env['PYTHONPATH'] = os.pathsep.join(
            p for p in (repo, env.get('PYTHONPATH')) if p)
        against = 'upstream classes' if args.upstream else 'gcnet_mm classes'
        print(f'[upstream_tests] {", ".join(sources)} tests against '
              f'{against}, in {out}', flush=True)
        return subprocess.call([
            sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider',
            '--rootdir', out, *folders, *args.pytest_args
        ], cwd=out, env=env)
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
