"""Test setup. TRITON_INTERPRET must be set before any kernel module is imported: Triton reads it
when @triton.jit decorates a function. Without a GPU, kernels run on CPU tensors in the interpreter."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Nothing in the tests may reach a hub or a wandb server.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One torch thread for the whole suite: the tests run tiny models, whose many small ops are
    no faster on two threads, and many times slower when another process shares the two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One tokenizer/shard cache for the whole session: identical inputs are prepared once."""
    return tmp_path_factory.mktemp("tinylm-cache")
