"""Helpers the tests share: composing the real configs and running the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tinylm.cli import CONF_DIR
from tinylm.config import PretrainConfig, register_configs

ROOT = Path(__file__).resolve().parent.parent

register_configs()


def compose_pretrain(*overrides: str) -> PretrainConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("pretrain", overrides=list(overrides))
    return OmegaConf.to_object(cfg)


# debug=cpu_smoke keeps the chosen model; the tests shrink it further, explicitly, to stay fast.
SMOKE_MODEL = ("model.n_layer=2", "model.n_head=2", "model.d_model=64", "model.max_seq_len=64")


def smoke_config(run_dir: Path, cache_dir: Path, *overrides: str) -> PretrainConfig:
    """The debug=cpu_smoke config with a 2 x 64 model, writing into run_dir with a shared cache."""
    return compose_pretrain("debug=cpu_smoke", *SMOKE_MODEL, f"run_dir={run_dir}", f"data.cache_dir={cache_dir}", *overrides)


def run_cli(module: str, *args: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def interrupt_after_checkpoint(monkeypatch, at_step: int, error: type[BaseException] = KeyboardInterrupt) -> None:
    """Make training raise `error` right after it has written the checkpoint of step `at_step`, as a
    Ctrl-C there would (use it inside `monkeypatch.context()` and `pytest.raises(error)`)."""
    import tinylm.train.loop as loop_module

    real = loop_module.save_checkpoint

    def save_then_stop(run_dir, step, *args, **kwargs):
        out = real(run_dir, step, *args, **kwargs)
        if step == at_step:
            raise error
        return out

    monkeypatch.setattr(loop_module, "save_checkpoint", save_then_stop)


def full_and_resumed(tmp_path: Path, cache_dir: Path, monkeypatch, overrides: tuple[str, ...], at_step: int,
                     error: type[BaseException] = KeyboardInterrupt):
    """Train the smoke config with `overrides` straight through (tmp_path/"full") and again stopped by
    `error` right after the checkpoint of `at_step`, then resumed with train.resume=auto
    (tmp_path/"parts"). Returns (full summary, resumed summary, full rows, resumed rows): the
    metrics.jsonl rows without the wall-clock tokens_per_s, which a bit-exact resume makes equal."""
    import pytest

    from tinylm.train.loop import pretrain
    from tinylm.train.metrics import read_metrics

    full, parts = tmp_path / "full", tmp_path / "parts"
    full_summary = pretrain(smoke_config(full, cache_dir, *overrides))
    with monkeypatch.context() as m:
        interrupt_after_checkpoint(m, at_step, error)
        with pytest.raises(error):
            pretrain(smoke_config(parts, cache_dir, *overrides))
    resumed_summary = pretrain(smoke_config(parts, cache_dir, *overrides, "train.resume=auto"))
    rows = ([{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(run)] for run in (full, parts))
    return full_summary, resumed_summary, *rows
