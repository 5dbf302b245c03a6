"""Run logging: every message of the `tinylm` loggers goes to the console and to RUN_DIR/train.log.

Code logs with `logging.getLogger(__name__)`; the training loop calls `attach_run_log(run_dir)` once
the run directory exists and `detach_run_log()` at the end. While a run is attached the `tinylm`
logger has its own two handlers and does not propagate, so each line is printed once whether or not
the caller (Hydra's job_logging, a notebook, a test) configured logging:
- the console handler prints the bare message through `tqdm.write`, so a progress bar on a TTY
  stays at the bottom instead of being torn by log lines;
- the file handler appends timestamped lines to train.log (no progress bar, no carriage returns).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

LOGGER = "tinylm"
_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _ConsoleHandler(logging.Handler):
    """Writes through tqdm.write to the current sys.stdout (looked up per line: pytest's capture,
    redirections made after the run started)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:
            self.handleError(record)


_attached: dict[str, Any] = {}


def attach_run_log(run_dir: Path) -> None:
    """Send the `tinylm` loggers' INFO and above to the console and to run_dir/train.log (appended:
    a resumed run continues the same file). Replaces the handlers of a previous run, if any."""
    detach_run_log()
    logger = logging.getLogger(LOGGER)
    console = _ConsoleHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    file = logging.FileHandler(Path(run_dir) / "train.log", encoding="utf-8")
    file.setFormatter(logging.Formatter(_FILE_FORMAT))
    _attached.update(handlers=[console, file], level=logger.level, propagate=logger.propagate)
    for h in _attached["handlers"]:
        logger.addHandler(h)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def detach_run_log() -> None:
    """Close train.log and give the `tinylm` logger back to the caller's logging setup."""
    if not _attached:
        return
    logger = logging.getLogger(LOGGER)
    for h in _attached.pop("handlers"):
        logger.removeHandler(h)
        h.close()
    logger.setLevel(_attached.pop("level"))
    logger.propagate = _attached.pop("propagate")


def progress_bar_wanted(enabled: bool) -> bool:
    """The tqdm bar only when asked for and stderr (where tqdm draws) is a terminal: piped or
    redirected output gets the periodic log lines instead of carriage returns."""
    return enabled and sys.stderr.isatty()


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def step_line(row: dict[str, Any], total_steps: int, elapsed_s: float, steps_done: int) -> str:
    """One periodic log line from a metrics row: step, loss, lr, tokens/s, ETA, dev loss when present.
    ETA: the remaining steps at this session's average seconds per step so far."""
    step = row["step"]
    parts = [f"step {step}/{total_steps}"]
    if "loss" in row:
        parts.append(f"loss {row['loss']:.4f}")
    if "dev_loss" in row:
        parts.append(f"dev loss {row['dev_loss']:.4f}")
    if "lr" in row:
        parts.append(f"lr {row['lr']:.3g}")
    if "tokens_per_s" in row:
        parts.append(f"{row['tokens_per_s']:,.0f} tok/s")
    if steps_done > 0 and step < total_steps:
        parts.append(f"ETA {format_duration(elapsed_s / steps_done * (total_steps - step))}")
    return " | ".join(parts)
