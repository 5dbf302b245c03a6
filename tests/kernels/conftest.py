"""Kernel test fixtures. TRITON_INTERPRET (CPU runs) and the `gpu` marker's skip are set up in
tests/conftest.py, which pytest loads before this file and before any kernel module is imported."""

import pytest
import torch


@pytest.fixture(scope="session")
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
