"""train.device / train.precision (tinylm/train/devices.py): fp16 with loss scaling, checked on CPU
against fp32 references; device and precision errors; a CPU fp16 run through the loop."""

import json

import pytest
import torch
import torch.nn as nn
from helpers import smoke_config

from tinylm.errors import InputError
from tinylm.train.devices import Precision, autocast_dtype, check_kernels, resolve_device

CPU = torch.device("cpu")


def _tiny_loss_setup():
    torch.manual_seed(0)
    model = nn.Linear(16, 16, bias=False)
    x = torch.randn(8, 16)
    return model, x, lambda m: (m(x).float() ** 2).mean() * 1e-7  # gradients ~1e-9: below fp16's range



def step(precision, optimizer, model, grad_clip):
    """The loop's order: unscale and clip, then the (scaler-guarded) optimizer step."""
    norm = precision.unscale_and_clip(optimizer, model.parameters(), grad_clip)
    precision.step(optimizer)
    return norm

def test_fp16_loss_scaling_recovers_gradients_that_underflow_without_it():
    model, x, loss_fn = _tiny_loss_setup()
    ref = nn.Linear(16, 16, bias=False)
    ref.load_state_dict(model.state_dict())
    loss_fn(ref).backward()  # fp32 reference gradient
    plain = nn.Linear(16, 16, bias=False)
    plain.load_state_dict(model.state_dict())
    with torch.autocast("cpu", dtype=torch.float16):
        loss = loss_fn(plain)
    loss.backward()
    assert plain.weight.grad.abs().max() == 0  # fp16 autocast alone loses every gradient

    precision = Precision(CPU, "fp16")
    assert precision.scaler.is_enabled() and precision.name == "fp16 + loss scaling"
    opt = torch.optim.SGD(model.parameters(), lr=1e6)
    before = model.weight.detach().clone()
    with precision.autocast():
        loss = loss_fn(model)
    precision.backward(loss)
    norm = step(precision, opt, model, 0)
    # unscaled before the step and the norm: both match fp32 up to fp16 rounding
    torch.testing.assert_close(model.weight.grad, ref.weight.grad, rtol=2e-2, atol=1e-12)
    torch.testing.assert_close(norm, ref.weight.grad.norm(), rtol=2e-2, atol=0)
    torch.testing.assert_close(model.weight.detach(), before - 1e6 * model.weight.grad, rtol=1e-6, atol=1e-7)


def test_fp16_step_with_overflowed_gradients_is_skipped_and_the_scale_lowered():
    model, x, loss_fn = _tiny_loss_setup()
    precision = Precision(CPU, "fp16")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scale = precision.scaler.get_scale()
    before = model.weight.detach().clone()
    with precision.autocast():
        loss = loss_fn(model)
    precision.backward(loss)
    model.weight.grad[0, 0] = float("inf")
    step(precision, opt, model, 1.0)
    assert torch.equal(model.weight.detach(), before)
    assert precision.scaler.get_scale() == scale * 0.5
    state = precision.state_dict()
    again = Precision(CPU, "fp16")
    again.load_state_dict(state)
    assert again.scaler.get_scale() == scale * 0.5


def test_fp16_clipping_sees_unscaled_gradients():
    model, x, loss_fn = _tiny_loss_setup()
    precision = Precision(CPU, "fp16")
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with precision.autocast():
        loss = loss_fn(model) * 1e7  # gradients ~1e-2 now
    precision.backward(loss)
    norm = step(precision, opt, model, 1e-4)
    assert 1e-3 < norm < 10  # the true norm, not 65536 times it
    assert model.weight.grad.norm() == pytest.approx(1e-4, rel=1e-3)  # clipped after unscaling


def test_precision_and_device_choices():
    assert autocast_dtype(CPU, "auto") is None and autocast_dtype(CPU, "fp32") is None
    assert autocast_dtype(CPU, "bf16") == torch.bfloat16 and autocast_dtype(CPU, "fp16") == torch.float16
    assert not Precision(CPU, "bf16").scaler.is_enabled()
    with pytest.raises(InputError, match="train.precision='int8'"):
        autocast_dtype(CPU, "int8")
    with pytest.raises(InputError, match="train.device='tpu' is not a device"):
        resolve_device("tpu")
    if not torch.backends.mps.is_available():
        with pytest.raises(InputError, match="train.device=mps but MPS is not available"):
            resolve_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="device=cuda but no CUDA"):
            resolve_device("cuda", key="device")
    with pytest.raises(InputError, match="kernels=triton needs CUDA"):
        check_kernels(torch.device("mps"), "triton")


def test_fp16_run_on_cpu_trains_and_checkpoints_its_scale(tmp_path, cache_dir):
    from tinylm.train.loop import pretrain

    run = tmp_path / "run"
    summary = pretrain(smoke_config(run, cache_dir, "train.precision=fp16", "train.steps=4", "train.threads=1"))
    assert summary["final_dev_loss"] < 10
    state = json.loads((run / "checkpoints" / "step_00000004" / "state.json").read_text())
    assert state["grad_scaler"]["scale"] > 0 and state["grad_scaler"]["growth_interval"] == 2000  # the scaler's own state
