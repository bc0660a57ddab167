"""gcnet_mm: GCNet (Global Context Networks) for the OpenMMLab ecosystem."""
import os.path as osp

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


setup(
    name='gcnet_mm',
    version=read_version(),
    description='GCNet (Global Context Networks) blocks, heads and configs '
    'for mmdetection, mmsegmentation and mmpretrain',
    long_description=readme(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.8',
    packages=find_packages(include=['gcnet_mm', 'gcnet_mm.*']),
    # The configs ship inside the package (gcnet_mm/.mim/configs) so a user's
    # config can inherit from them with `_base_ = 'gcnet_mm::...'`.
    include_package_data=True,
    package_data={'gcnet_mm': ['.mim/model-index.yml', '.mim/configs/**/*.py',
                              '.mim/configs/**/*.yml', '.mim/configs/**/*.md']},
    install_requires=[
        'torch>=1.13',
        'mmengine>=0.10.0,<1.0.0',
        'mmcv>=2.0.0rc4,<2.2.0',
    ],
    extras_require={
        'det': ['mmdet>=3.0.0,<3.4.0'],
        'seg': ['mmsegmentation>=1.0.0,<1.3.0', 'ftfy', 'regex'],
        'cls': ['mmpretrain>=1.0.0,<1.3.0'],
        'all': [
            'mmdet>=3.0.0,<3.4.0', 'mmsegmentation>=1.0.0,<1.3.0', 'ftfy',
            'regex', 'mmpretrain>=1.0.0,<1.3.0', 'pycocotools', 'matplotlib'
        ],
        'tests': ['pytest', 'timm', 'onnx', 'onnxruntime'],
    },
    zip_safe=False,
)
