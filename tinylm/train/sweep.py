"""Hydra callback that writes sweep_summary.csv in a multirun's sweep directory, one row per job,
updated as each job finishes (so a sweep cut short still has the rows of its finished jobs)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tinylm.utils import write_atomic

COLUMNS = ("job", "overrides", "status", "final_dev_loss", "unigram_dev_loss", "tokens_per_s", "words_seen", "run_dir")


class SweepSummary(Callback):
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode is None or str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        ok = job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, dict)
        summary = job_return.return_value if ok else {}
        self.rows.append({
            "job": config.hydra.job.num,
            "overrides": " ".join(job_return.overrides or []),
            # A failed job's exception is kept in JobReturn._return_value (reading .return_value re-raises it).
            "status": "ok" if ok else f"failed: {getattr(job_return, '_return_value', '')}",
            **{k: summary.get(k, "") for k in COLUMNS[3:]},
        })
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows)
        path = Path(config.hydra.sweep.dir) / "sweep_summary.csv"
        write_atomic(path, out.getvalue())
        print(f"sweep summary: {path}")
