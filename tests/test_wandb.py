import json

import pytest
from helpers import smoke_config

from tinylm.train.loop import pretrain

wandb = pytest.importorskip("wandb")


def test_offline_wandb_run_mirrors_metrics(tmp_path, cache_dir, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    pretrain(smoke_config(run_dir, cache_dir, "logger=wandb", "logger.mode=offline"))
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((run_dir / "wandb").iterdir())
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert runs[0].name.endswith(run_id)
    # the offline record (synced later with `wandb sync`) holds the logged metric names and values
    record = (runs[0] / f"run-{run_id}.wandb").read_bytes()
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert b"grad_norm" in record and b"tokens_per_s" in record and b"dev_loss" in record
    assert repr(last["loss"]).encode() in record


def test_core_training_path_imports_no_optional_package():
    import subprocess
    import sys

    code = ("import sys, tinylm.train.loop, tinylm.pretrain; "
            "bad = [m for m in ('wandb', 'datasets', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
