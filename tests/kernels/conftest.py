"""Kernel test setup, independent of tests/conftest.py.

TRITON_INTERPRET must be in the environment before tinylm.kernels.* is imported (Triton reads it
when @triton.jit decorates a function), so it is set here, at conftest import, when no GPU exists.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="session")
def device() -> str:
    return "cuda" if HAS_CUDA else "cpu"


def pytest_collection_modifyitems(config, items):
    # @pytest.mark.gpu tests need real hardware (bf16 arithmetic, autotuning, larger shapes).
    # (pytest hands this hook every collected item, so only gpu-marked ones are touched.)
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
