"""Guards around the optimizer step: non-finite steps, divergence, and stop signals.

- `StepGuard.ok(loss, grad_norm)`: a step whose loss or gradient norm is NaN/inf is skipped (the
  caller zeroes the gradients instead of stepping) and counted. After `train.max_bad_steps` bad
  steps in a row the run stops with one `error:` line naming the step and the last good checkpoint
  (on_divergence=stop), or reloads that checkpoint and lowers the learning rate by
  `train.rollback_lr_factor` (on_divergence=rollback, logged).
- `StopSignals`: the first SIGINT / SIGTERM / SIGUSR1 (SLURM pre-emption with --signal) asks the
  loop to finish the current step, write a checkpoint and exit non-zero; a second one exits at once.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys

from tinylm.errors import InputError

STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None)

log = logging.getLogger(__name__)


class RunStopped(Exception):
    """A stop signal ended the run after a checkpoint; the entry point exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StepGuard:
    def __init__(self, max_bad_steps: int, on_divergence: str, lr_factor: float):
        if on_divergence not in ("stop", "rollback"):
            raise InputError(f"train.on_divergence={on_divergence!r} is not an option; use stop or rollback")
        self.max_bad_steps, self.on_divergence, self.lr_factor = max_bad_steps, on_divergence, lr_factor
        self.bad_in_row = 0
        self.bad_total = 0
        self.lr_scale = 1.0  # multiplies the scheduled lr after rollbacks

    def ok(self, loss: float, grad_norm: float) -> bool:
        """True when the step may be applied; False (counted) when it must be skipped."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.bad_in_row = 0
            return True
        self.bad_in_row += 1
        self.bad_total += 1
        return False

    def skipped(self, step: int, loss: float, grad_norm: float, last_good: str | None) -> str:
        """After a skipped step: 'continue' or 'rollback', or raises InputError once the limit is reached."""
        log.warning(f"warning: step {step}: loss={loss} grad_norm={grad_norm} is not finite; step skipped "
                    f"({self.bad_in_row} in a row, {self.bad_total} in all)")
        if self.bad_in_row < self.max_bad_steps:
            return "continue"
        if self.on_divergence == "rollback" and last_good is not None:
            self.bad_in_row = 0
            self.lr_scale *= self.lr_factor
            return "rollback"
        raise InputError(f"training diverged: {self.bad_in_row} non-finite steps in a row up to step {step} "
                         f"(loss={loss}, grad_norm={grad_norm}); nothing non-finite was saved; last good checkpoint: "
                         f"{last_good or 'none'}; lower optim.lr or raise optim.warmup_steps and resume from it, "
                         "or set train.on_divergence=rollback")


class StopSignals:
    """Install with `with StopSignals() as stop:`; `stop.requested` names the first signal received."""

    def __init__(self, install: bool = True):
        self.requested: str | None = None
        self._previous: dict[int, object] = {}
        self.install = install

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            print(f"{name} again: exiting at once without a checkpoint", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.requested = name  # the loop finishes the step, checkpoints and says so in one line

    def __enter__(self) -> "StopSignals":
        if not self.install:
            return self
        try:
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous.clear()
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def exit_code(self) -> int:
        return 128 + signal.Signals[self.requested].value if self.requested else 0
