"""Sweeps: the sweep_summary.csv callback, and what a job of a re-run sweep does.

`SweepSummary` (a Hydra callback, conf/pretrain.yaml) appends one row per finished or failed job to
`sweep_summary.csv` in the sweep directory: job number, status, one column per overridden key, the
run's results. The file is append-only (a re-run sweep never loses rows; a new overridden key
rewrites it once with the extra column, every old row kept) and locked while written, so parallel
jobs (hydra/launcher=submitit_local or submitit_slurm) can share it. The results are read from the
job's own summary.json, so the job may return anything (a float for hydra/sweeper=optuna).

`resume_job` makes a sweep resumable: re-run the same command with `train.resume=auto` and the same
`hydra.sweep.dir`, and a finished job is skipped, an unfinished one continues from its newest
checkpoint, and one that never started starts.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tinylm.utils import write_atomic

FIRST = ("job", "status")
RESULTS = ("final_dev_loss", "unigram_dev_loss", "tokens_per_s", "words_seen", "steps", "run_dir")


def override_columns(overrides: list[str]) -> dict[str, str]:
    """`optim.lr=0.001` -> {"optim.lr": "0.001"}; a group choice `model=gpt_10m` -> {"model": "gpt_10m"}."""
    out = {}
    for item in overrides:
        key, _, value = item.partition("=")
        out[key.lstrip("+~")] = value
    return out


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append `row` to the CSV at `path`; columns it adds are added to the header (old rows kept, empty there)."""
    with _locked(path):
        rows, header = [], []
        if path.exists() and path.stat().st_size:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                header, rows = list(reader.fieldnames or []), list(reader)
        new = [k for k in row if k not in header]
        if header and not new:
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=header).writerow(row)
                f.flush()
                os.fsync(f.fileno())
            return
        # Overrides first (after job/status), results last, whatever order they arrived in.
        keys = header + new
        columns = [*FIRST, *sorted(k for k in keys if k not in FIRST and k not in RESULTS), *RESULTS]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows([*rows, row])
        write_atomic(path, out.getvalue())


def finished_rows(path: Path) -> set[str]:
    if not path.exists():
        return set()
    with open(path, newline="") as f:
        return {r["run_dir"] for r in csv.DictReader(f) if r.get("status") == "ok"}


class SweepSummary(Callback):
    def __init__(self) -> None:
        self.job_started = 0.0

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.job_started = time.time()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode is None or str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        if os.environ.get("RANK", "0") != "0":  # a multi-task (torchrun-style) SLURM job: rank 0 reports
            return
        path = Path(config.hydra.sweep.dir) / "sweep_summary.csv"
        run_dir = Path(config.run_dir)
        summary_file = run_dir / "summary.json"
        ok = job_return.status == JobStatus.COMPLETED and summary_file.exists()
        summary = json.loads(summary_file.read_text()) if ok else {}
        if ok and summary_file.stat().st_mtime < self.job_started and str(run_dir) in finished_rows(path):
            return  # a re-run sweep skipped this job, finished earlier: its row is already there
        row = {
            "job": config.hydra.job.num,
            # A failed job's exception is kept in JobReturn._return_value (reading .return_value re-raises it).
            "status": "ok" if ok else f"failed: {getattr(job_return, '_return_value', '')}",
            **override_columns(list(job_return.overrides or [])),
            **{k: summary.get(k, "") for k in RESULTS},
            "run_dir": str(run_dir),
        }
        append_row(path, row)
        print(f"sweep summary: {path}")


def resume_job(run_dir: Path, resume: str, steps: int) -> tuple[str, dict | None]:
    """For a sweep job with train.resume=auto: (the resume setting to use, the finished run's summary
    or None). Finished (summary.json for the same train.steps): skip; checkpoints: resume; else start."""
    from tinylm.train.checkpoint import checkpoint_dirs

    if resume != "auto":
        return resume, None
    summary_file = run_dir / "summary.json"
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
        if summary.get("steps") == steps:
            return resume, summary
    return ("auto" if checkpoint_dirs(run_dir) else "never"), None
