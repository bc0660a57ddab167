"""Shared pytest configuration.

``slow`` marks the end-to-end runs of the tools (subprocesses training and
testing on generated data, minutes on 2 cores); skip them locally with
``pytest -m 'not slow'``.  CI runs everything.

Without a GPU the Triton kernels run in Triton's interpreter (on CPU
tensors), so their arithmetic is tested everywhere.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'slow: end-to-end runs of the tools (minutes); deselect '
        "with -m 'not slow'")
