"""Where training runs and in which precision: `train.device` and `train.precision`.

    device     auto (CUDA when visible, else CPU) | cpu | cuda | mps (Apple silicon; never picked by
               auto). On MPS, as on CPU, tinylm.ops runs its PyTorch path: the Triton kernels need CUDA.
    precision  auto: bf16 autocast on CUDA with native bf16, fp16 + loss scaling on older CUDA GPUs
                     (T4, V100), bf16 on MPS where this Mac and torch support it, fp32 on CPU
               fp32 | bf16 | fp16 (fp16 always with a torch.amp.GradScaler: the loss is scaled before
               backward and the gradients unscaled before clipping; a step whose gradients overflowed
               is skipped and the scale lowered)

`Precision` wraps the three places of a training step that depend on it (the autocast context, the
backward pass, the optimizer step); its scaler state goes into the checkpoint, so a resumed fp16 run
continues with the scale it had.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch

from tinylm.errors import InputError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """`name` as a torch device; `key` names the option in the error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in DEVICES:
        raise InputError(f"{key}={name!r} is not a device; use {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{key}=cuda but no CUDA device is visible; use {key}=auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{key}=mps but MPS is not available (it needs Apple silicon and a torch build with MPS); "
                         f"use {key}=auto or cpu")
    return torch.device(name)


def check_kernels(device: torch.device, kernels: str) -> None:
    if kernels == "triton" and device.type == "mps":
        raise InputError("kernels=triton needs CUDA (or the CPU interpreter); on train.device=mps use kernels=auto or torch")


@functools.cache
def mps_supports_bf16() -> bool:
    """bf16 on MPS needs macOS 14 and a recent torch: try it."""
    try:
        (torch.ones(2, dtype=torch.bfloat16, device="mps") * 2).cpu()
    except (RuntimeError, TypeError):
        return False
    return True


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`; None = plain fp32."""
    if precision not in PRECISIONS:
        raise InputError(f"train.precision={precision!r} is not supported; use {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
        if device.type == "mps":
            return torch.bfloat16 if mps_supports_bf16() else None
        return None
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise InputError(f"train.precision=bf16: {torch.cuda.get_device_name(device)} has no native bf16; "
                             "use train.precision=fp16 (with loss scaling) or auto")
        if device.type == "mps" and not mps_supports_bf16():
            raise InputError("train.precision=bf16 is not supported by this Mac's MPS (macOS 14 or newer); use fp16 or fp32")
    return DTYPES[precision]


class Precision:
    """Autocast, backward and optimizer step for one run's device and precision."""

    def __init__(self, device: torch.device, precision: str):
        self.device = device
        self.dtype = autocast_dtype(device, precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16 + loss scaling"}[self.dtype]

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale_and_clip(self, optimizer: torch.optim.Optimizer, params, grad_clip: float) -> torch.Tensor:
        """Unscale the gradients and clip them (grad_clip <= 0: only measure); returns the global
        grad norm. Then either step() or skip()."""
        self.scaler.unscale_(optimizer)
        return torch.nn.utils.clip_grad_norm_(list(params), grad_clip if grad_clip > 0 else math.inf)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step (skipped by the scaler when the gradients are not finite) and the
        scale update."""
        self.scaler.step(optimizer)
        self.scaler.update()

    def skip(self) -> None:
        """A step the loop decided not to apply: the scaler still closes it (and lowers its scale
        when it saw non-finite gradients)."""
        if self.scaler.is_enabled():
            self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict()  # {} when no scaler is in use

    def load_state_dict(self, state: dict | None) -> None:
        if state and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)
