"""Run logging (tinylm/logs.py): a line per log_every steps on the console and in RUN/train.log,
no progress bar off a TTY, and run files created with the umask's modes."""

from __future__ import annotations

import logging
import os
import stat

from helpers import smoke_config
from tinylm.logs import format_duration, step_line
from tinylm.train.loop import pretrain
from tinylm.train.metrics import read_metrics


def test_step_line_format():
    row = {"step": 20, "loss": 3.14159, "lr": 1e-3, "tokens_per_s": 12345.6, "dev_loss": 3.5}
    # 10 steps in 50 s -> 5 s a step -> 80 remaining steps take 400 s.
    assert step_line(row, 100, 50.0, 10) == "step 20/100 | loss 3.1416 | dev loss 3.5000 | lr 0.001 | 12,346 tok/s | ETA 6m40s"
    assert step_line({"step": 100, "dev_loss": 2.0}, 100, 9.0, 0) == "step 100/100 | dev loss 2.0000"
    assert [format_duration(s) for s in (7, 61, 3725)] == ["7s", "1m01s", "1h02m05s"]


def test_train_log_and_console_lines(tmp_path, cache_dir, capsys):
    run_dir = tmp_path / "run"
    old_umask = os.umask(0o027)
    try:
        # progress=true, but pytest's stderr is no terminal: no bar, log lines instead.
        summary = pretrain(smoke_config(run_dir, cache_dir, "train.progress=true", "train.steps=6", "train.log_every=2",
                                        "train.eval_every=3", "train.ckpt_every=6", "train.threads=1"))
    finally:
        os.umask(old_umask)
    out = capsys.readouterr()
    assert "\r" not in out.out + out.err and "pretrain:" not in out.err  # no tqdm bar
    log_lines = (run_dir / "train.log").read_text().splitlines()
    rows = read_metrics(run_dir)
    # One line per metrics row (steps 2, 3 (dev only), 4, 6), each saying what that row holds.
    step_lines = [line.split(": ", 1)[1] for line in log_lines if ": step " in line]
    assert [line.split(" |")[0] for line in step_lines] == [f"step {r['step']}/6" for r in rows] == \
        ["step 2/6", "step 3/6", "step 4/6", "step 6/6"]
    for line, row in zip(step_lines, rows):
        assert (f"| loss {row['loss']:.4f} |" in line) if "loss" in row else ("| loss" not in line)
        assert (f"| dev loss {row['dev_loss']:.4f}" in line) if "dev_loss" in row else ("dev loss" not in line)
        assert (f"| {row['tokens_per_s']:,.0f} tok/s" in line) if "tokens_per_s" in row else ("tok/s" not in line)
    assert f"dev loss {summary['final_dev_loss']:.4f} nats/token" in log_lines[-2]
    assert log_lines[-1].endswith(f"run directory: {run_dir}")
    # The console printed the same messages, bare.
    for line in step_lines:
        assert line in out.out.splitlines()
    # The logger is handed back: nothing more goes into train.log after the run.
    logger = logging.getLogger("tinylm")
    assert logger.handlers == [] and logger.propagate
    logging.getLogger("tinylm.train.loop").warning("after the run")
    assert "after the run" not in (run_dir / "train.log").read_text()
    # Run files and folders get the umask's modes (0o027: rw-r----- and rwxr-x---), not mkstemp's 0600.
    for name in ("config.yaml", "summary.json", "metrics.jsonl", "train.log", "tokenizer.model"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o640, name
    ckpt = next((run_dir / "checkpoints").iterdir())
    assert stat.S_IMODE(ckpt.stat().st_mode) == 0o750
