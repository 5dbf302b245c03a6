"""Where training metrics go: metrics.jsonl (always), a logger (csv, tensorboard or wandb) when
configured, a loss-curve PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinylm.config import LoggerConfig
from tinylm.train.loggers import make_sink
from tinylm.utils import write_atomic


class MetricsLog:
    """Appends one JSON object per logged step to run_dir/metrics.jsonl and mirrors it to the
    configured logger (tinylm/train/loggers.py: csv, tensorboard, wandb)."""

    def __init__(self, run_dir: Path, cfg: LoggerConfig, full_config: dict[str, Any], resume_step: int | None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None:
            truncate_metrics(self.path, resume_step)
        self.sink = make_sink(run_dir, cfg, full_config, resume_step)

    def log(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.sink is not None:
            self.sink.log(row)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


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
