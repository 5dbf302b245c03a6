"""GrowLength-style sequence-length stages switched by a loss plateau (`curriculum=seq_len
curriculum.seq_len_trigger=loss`; the default `schedule` switches by step or words seen).

The rule, evaluated after every optimizer step with that step's train loss L (the mean over its
micro-batches, and over the ranks under torchrun, so every rank decides alike):

    n   = steps trained in the current stage (this one included)
    ema = L at the stage's first step, else d * ema + (1 - d) * L        d = seq_len_plateau_ema
    the stage ends after this step when it is not the last stage and either
      (plateau)   n >= max(seq_len_plateau_min_steps, W + 1)  and
                  ema[n - W] - ema[n] < seq_len_plateau_tol * |ema[n - W]|
                  i.e. the EMA improved by less than tol (relative) over the last W steps,
                  W = seq_len_plateau_window
      (schedule)  the schedule (seq_len_by, seq_len_boundaries or equal shares of train.steps) has
                  the next step in a later stage: the schedule is the latest a stage may last,
                  so the run always reaches train.seq_len (where the dev loss is measured).
    A new stage restarts n, the EMA and its history: a longer window has a lower loss level.

Tokens per step stay constant (the loader's batch size is train.batch_size x train.seq_len / seq_len).
The whole state (stage, n, the last W + 1 EMA values) is part of the loader's state_dict, so it is
checkpointed and a resumed run switches at the same steps. Floats round-trip exactly through JSON.
"""

from __future__ import annotations

TRIGGERS = ("schedule", "loss")


class LossPlateau:
    """The stage index of a sequence-length curriculum, moved on by `observe` (module docstring)."""

    def __init__(self, n_stages: int, window: int, tol: float, min_steps: int, ema: float):
        if window < 1 or min_steps < 1:
            raise ValueError(f"curriculum.seq_len_plateau_window={window} and seq_len_plateau_min_steps={min_steps} "
                             "must be at least 1")
        if tol < 0 or not 0 <= ema < 1:
            raise ValueError(f"curriculum.seq_len_plateau_tol={tol} must be >= 0 and seq_len_plateau_ema={ema} in [0, 1)")
        self.last = n_stages - 1
        self.window, self.tol, self.min_steps, self.decay = window, tol, min_steps, ema
        self.stage, self.steps, self.ema = 0, 0, 0.0
        self.history: list[float] = []  # the stage's last window + 1 EMA values, oldest first

    def observe(self, loss: float, scheduled_stage: int) -> str | None:
        """Take one step's train loss; returns why the stage just changed ("plateau" | "schedule"),
        or None. scheduled_stage: the stage the schedule gives the next step."""
        if self.stage >= self.last:
            return None
        self.steps += 1
        self.ema = loss if self.steps == 1 else self.decay * self.ema + (1.0 - self.decay) * loss
        self.history = (self.history + [self.ema])[-(self.window + 1):]
        reason = None
        if scheduled_stage > self.stage:
            reason, self.stage = "schedule", min(scheduled_stage, self.last)
        elif self.steps >= max(self.min_steps, self.window + 1):
            before, now = self.history[0], self.history[-1]
            if before - now < self.tol * abs(before):
                reason, self.stage = "plateau", self.stage + 1
        if reason:
            self.steps, self.ema, self.history = 0, 0.0, []
        return reason

    def state_dict(self) -> dict:
        return {"stage": self.stage, "steps": self.steps, "ema": self.ema, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.stage, self.steps, self.ema = int(state["stage"]), int(state["steps"]), float(state["ema"])
        self.history = [float(x) for x in state["history"]]
