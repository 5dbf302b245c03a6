"""kernels=triton without a CUDA device: one `error:` line and exit status 2, not a raw
`RuntimeError: 0 active drivers` from deep inside a kernel launch."""

import os
import subprocess
import sys

import pytest
import torch

from tinylm import ops
from tinylm.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    yield
    ops.set_default_backend("auto")


def test_forced_triton_on_cpu_is_an_input_error(no_interpreter):
    with pytest.raises(InputError, match="kernels=triton needs a CUDA device.*kernels=auto or kernels=torch"):
        ops.set_default_backend("triton", torch.device("cpu"))
    x = torch.randn(2, 3, 8)
    with pytest.raises(InputError, match="kernels=triton needs a CUDA device"):
        ops.layer_norm(x, None, None, backend="triton")
    with pytest.raises(InputError, match="not a backend"):
        ops.set_default_backend("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine")
def test_pretrain_with_kernels_triton_on_cpu_says_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "tinylm.pretrain", "debug=cpu_smoke", "kernels=triton",
                             f"hydra.run.dir={run_dir}", f"data.cache_dir={tmp_path / 'cache'}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: kernels=triton needs a CUDA device, but this runs on cpu (no CUDA device visible); "
        "use kernels=auto or kernels=torch"]
    assert not (run_dir / "checkpoints").exists()
