"""gcnet_mm: GCNet (Global Context Networks) for the OpenMMLab ecosystem."""
import os
import os.path as osp
import sys

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_version():
    ns = {}
    with open(osp.join(HERE, 'gcnet_mm', 'version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


def readme():
    with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
        return f.read()


def ext_modules():
    """The fused CPU kernels of the GC block (``gcnet_mm._ext``).

    ``GCNET_MM_WITH_EXT=0`` skips them, ``=1`` makes a failed build an error;
    by default a build that fails (no C++ compiler, no torch at build time)
    only warns, and the package runs its plain PyTorch path instead.
    """
    mode = os.environ.get('GCNET_MM_WITH_EXT', '')
    if mode == '0':
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError as e:
        if mode == '1':
            raise
        print(f'gcnet_mm: building without gcnet_mm._ext ({e}); install '
              'torch first and use --no-build-isolation to build it',
              file=sys.stderr)
        return [], {}

    class OptionalBuildExtension(BuildExtension):

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as e:  # a compiler error, a missing compiler
                if mode == '1':
                    raise
                print(f'gcnet_mm: building {ext.name} failed ({e}); the '
                      'package uses its plain PyTorch path',
                      file=sys.stderr)

    # -fopenmp: at::parallel_for is OpenMP in torch's builds, and runs on one
    # thread in code compiled without it (libgomp is torch's own, loaded).
    compile_args, link_args = [], []
    if sys.platform.startswith('linux'):
        compile_args = ['-O3', '-fopenmp', '-Wno-psabi']
        link_args = ['-fopenmp']
    ext = CppExtension(
        'gcnet_mm._ext', ['gcnet_mm/csrc/attention_pool.cpp'],
        depends=['gcnet_mm/csrc/attention_pool_kernels.h'],
        extra_compile_args={'cxx': compile_args},
        extra_link_args=link_args)
    return [ext], {'build_ext': OptionalBuildExtension}


EXT_MODULES, CMDCLASS = ext_modules()

setup(
    name='gcnet_mm',
    version=read_version(),
    description='GCNet (Global Context Networks) blocks, heads and configs '
    'for mmdetection, mmsegmentation, mmpretrain and mmaction2',
    long_description=readme(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['gcnet_mm', 'gcnet_mm.*']),
    # The configs ship inside the package (gcnet_mm/.mim/configs) so a user's
    # config can inherit from them with `_base_ = 'gcnet_mm::...'`.
    include_package_data=True,
    package_data={'gcnet_mm': ['.mim/model-index.yml', '.mim/configs/**/*.py',
                               '.mim/configs/**/*.yml',
                               '.mim/configs/**/*.md']},
    install_requires=[
        # torch.amp.is_autocast_available and the weights-only loader's
        # allowlist (torch.serialization.add_safe_globals) arrived in 2.4.
        'torch>=2.4',
        'mmengine>=0.10.0,<1.0.0',
        'mmcv>=2.0.0rc4,<2.2.0',
        # mmengine 0.10 reads a config with an mmdet:: (any pkg::) base
        # through pkg_resources, which setuptools 81 removed.
        'setuptools<81',
    ],
    extras_require={
        'det': ['mmdet>=3.0.0,<3.4.0'],
        'seg': ['mmsegmentation>=1.0.0,<1.3.0', 'ftfy', 'regex'],
        'cls': ['mmpretrain>=1.0.0,<1.3.0'],
        # mmaction2's dependencies; mmaction2 itself goes in with
        # `pip install --no-deps mmaction2==1.2.0` (it declares a second
        # OpenCV) and `python -m gcnet_mm.utils.mmaction_compat` (its PyPI
        # wheel lacks a subpackage): docs/mmaction2.md.
        'video': ['decord>=0.6.0', 'einops', 'scipy'],
        'all': [
            'mmdet>=3.0.0,<3.4.0', 'mmsegmentation>=1.0.0,<1.3.0', 'ftfy',
            'regex', 'mmpretrain>=1.0.0,<1.3.0', 'pycocotools', 'matplotlib',
            'decord>=0.6.0', 'einops', 'scipy'
        ],
        'tests': ['pytest', 'timm', 'onnx', 'onnxruntime'],
    },
    ext_modules=EXT_MODULES,
    cmdclass=CMDCLASS,
    zip_safe=False,
)
