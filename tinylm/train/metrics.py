"""Where training metrics go: metrics.jsonl (always), wandb (when configured), a loss-curve PNG."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from tinylm.config import LoggerConfig
from tinylm.errors import InputError
from tinylm.utils import write_atomic


class MetricsLog:
    """Appends one JSON object per logged step to run_dir/metrics.jsonl and mirrors it to wandb."""

    def __init__(self, run_dir: Path, cfg: LoggerConfig, full_config: dict[str, Any], resume_step: int | None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None:
            truncate_metrics(self.path, resume_step)
        self.wandb_run = None
        if cfg.kind == "wandb":
            try:
                import wandb
            except ImportError:
                raise InputError("logger=wandb needs the wandb package: pip install wandb (or make install)") from None
            self.wandb_run = wandb.init(
                project=cfg.project, entity=cfg.entity, name=cfg.name or run_dir.name, mode=cfg.mode,
                tags=list(cfg.tags), config=full_config, dir=str(run_dir), resume="allow",
                id=_wandb_id(run_dir),
            )
        elif cfg.kind != "none":
            raise InputError(f"logger.kind={cfg.kind!r} is not a logger; use none or wandb")

    def log(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the rows logged after `step` (a resume or rollback produces them again), so the file
    reads like one uninterrupted run. A torn last line (a kill mid-write) is dropped too."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if line and json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    write_atomic(path, "".join(line + "\n" for line in kept))


def _wandb_id(run_dir: Path) -> str:
    """A stable wandb run id per run directory, so a resumed run continues the same wandb run."""
    id_file = run_dir / "wandb_id.txt"
    if not id_file.exists():
        write_atomic(id_file, secrets.token_hex(4))
    return id_file.read_text().strip()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def plot_loss_curve(run_dir: Path, baseline: float | None = None) -> Path:
    """loss_curve.png: training loss and dev loss against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["tokens_seen"], r["loss"]) for r in rows if "loss" in r]
    dev = [(r["tokens_seen"], r["dev_loss"]) for r in rows if "dev_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train loss", linewidth=1)
    if dev:
        ax.plot(*zip(*dev), "o-", label="dev loss")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", label=f"unigram baseline {baseline:.2f}")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = run_dir / "loss_curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
