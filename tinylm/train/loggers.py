"""Where logged metrics go besides RUN_DIR/metrics.jsonl (the record every sink is rebuilt from):
`logger.kind` = none | csv | tensorboard | wandb (conf/logger/*.yaml).

    csv          RUN_DIR/metrics.csv: one row per logged step, one column per metric (a metric seen
                 for the first time widens the header: the file is rewritten from metrics.jsonl)
    tensorboard  RUN_DIR/tensorboard/: torch.utils.tensorboard.SummaryWriter scalars, one per
                 metric, against the step (`tensorboard --logdir RUN_DIR/tensorboard`)
    wandb        Weights & Biases, one run per run directory (offline by default)

Each sink is told the step a resumed run restarts from, so what it holds reads like one
uninterrupted run (the rows after that step are logged again, identically).
"""

from __future__ import annotations

import csv
import json
import secrets
from pathlib import Path
from typing import Any

from tinylm.config import LoggerConfig
from tinylm.errors import InputError
from tinylm.utils import write_atomic

KINDS = ("none", "csv", "tensorboard", "wandb")


class CsvSink:
    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.csv"
        self.jsonl = run_dir / "metrics.jsonl"
        self.columns: list[str] = []
        self._rewrite()  # a resumed run: the rows metrics.jsonl kept

    def _rewrite(self) -> None:
        rows = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line] if self.jsonl.exists() else []
        for row in rows:
            self.columns += [k for k in row if k not in self.columns]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)

    def log(self, row: dict[str, Any]) -> None:
        """Called after the row is in metrics.jsonl."""
        if any(k not in self.columns for k in row):
            self._rewrite()
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow(row)

    def close(self) -> None:
        pass


class TensorBoardSink:
    def __init__(self, run_dir: Path, resume_step: int | None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise InputError("logger=tensorboard needs the tensorboard package: pip install tensorboard "
                             "(or pip install 'tinylm[tensorboard]')") from None
        # purge_step: events a crashed run logged after the checkpoint we resume from are dropped
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"),
                                    purge_step=resume_step + 1 if resume_step is not None else None)

    def log(self, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, global_step=row["step"])

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, cfg: LoggerConfig, full_config: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise InputError("logger=wandb needs the wandb package: pip install wandb (or make install)") from None
        self.run = wandb.init(
            project=cfg.project, entity=cfg.entity, name=cfg.name or run_dir.name, mode=cfg.mode,
            tags=list(cfg.tags), config=full_config, dir=str(run_dir), resume="allow", id=_wandb_id(run_dir),
        )

    def log(self, row: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def close(self) -> None:
        self.run.finish()


def _wandb_id(run_dir: Path) -> str:
    """A stable wandb run id per run directory, so a resumed run continues the same wandb run."""
    id_file = run_dir / "wandb_id.txt"
    if not id_file.exists():
        write_atomic(id_file, secrets.token_hex(4))
    return id_file.read_text().strip()


def make_sink(run_dir: Path, cfg: LoggerConfig, full_config: dict[str, Any], resume_step: int | None):
    """The sink `cfg.kind` names, or None for none."""
    if cfg.kind not in KINDS:
        raise InputError(f"logger.kind={cfg.kind!r} is not a logger; use one of {', '.join(KINDS)}")
    if cfg.kind == "csv":
        return CsvSink(run_dir)
    if cfg.kind == "tensorboard":
        return TensorBoardSink(run_dir, resume_step)
    if cfg.kind == "wandb":
        return WandbSink(run_dir, cfg, full_config)
    return None
