import csv
import shutil

import yaml
from helpers import run_cli

from tinylm.train.checkpoint import checkpoint_dirs
from tinylm.train.sweep import append_row


def _rows(sweep_dir):
    with open(sweep_dir / "sweep_summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_multirun_writes_one_run_dir_per_job_and_a_csv_summary_that_a_rerun_resumes(tmp_path, cache_dir):
    sweep_dir = tmp_path / "sweep"
    args = ("tinylm.pretrain", "--multirun", "debug=cpu_smoke", "optim.lr=1e-3,2e-3,3e-3", "train.threads=1",
            f"hydra.sweep.dir={sweep_dir}", f"data.cache_dir={cache_dir}")
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    rows = _rows(sweep_dir)
    assert [r["job"] for r in rows] == ["0", "1", "2"]
    assert [r["optim.lr"] for r in rows] == ["0.001", "0.002", "0.003"]  # one column per overridden key
    assert {r["debug"] for r in rows} == {"cpu_smoke"}
    for i, row in enumerate(rows):
        assert row["status"] == "ok" and float(row["final_dev_loss"]) > 0 and float(row["tokens_per_s"]) > 0
        assert row["run_dir"] == str(sweep_dir / str(i))
    assert rows[0]["final_dev_loss"] != rows[2]["final_dev_loss"]  # the override reached the job
    finished = (sweep_dir / "0" / "metrics.jsonl").read_text()

    # Job 1 interrupted after its step-4 checkpoint, job 2 never started; re-run the same sweep.
    for ckpt in checkpoint_dirs(sweep_dir / "1")[1:]:
        shutil.rmtree(ckpt)
    (sweep_dir / "1" / "summary.json").unlink()
    shutil.rmtree(sweep_dir / "2")
    result = run_cli(*args, "train.resume=auto")
    assert result.returncode == 0, result.stderr
    assert "sweep job 0 finished earlier" in result.stdout
    assert f"resuming from {sweep_dir / '1' / 'checkpoints' / 'step_00000004'}" in result.stdout
    assert (sweep_dir / "0" / "metrics.jsonl").read_text() == finished  # the finished job was not touched
    again = _rows(sweep_dir)
    assert again[:3] == [r | {"train.resume": ""} for r in rows]  # append-only: the old rows stay
    assert [(r["job"], r["status"], r["train.resume"]) for r in again[3:]] == [("1", "ok", "auto"), ("2", "ok", "auto")]
    # Resumed and restarted jobs end exactly where the uninterrupted ones did.
    assert [r["final_dev_loss"] for r in again[3:]] == [rows[1]["final_dev_loss"], rows[2]["final_dev_loss"]]


def test_a_bad_job_is_recorded_and_the_sweep_goes_on(tmp_path, cache_dir):
    sweep_dir = tmp_path / "sweep"
    result = run_cli("tinylm.pretrain", "--multirun", "debug=cpu_smoke", "train.device=tpu,cpu",
                     f"hydra.sweep.dir={sweep_dir}", f"data.cache_dir={cache_dir}")
    assert result.returncode != 0  # the sweep as a whole reports the failure
    assert "error: train.device='tpu' is not a device" in result.stderr
    rows = _rows(sweep_dir)
    assert rows[0]["status"].startswith("failed: train.device='tpu' is not a device")
    assert rows[1]["status"] == "ok" and float(rows[1]["final_dev_loss"]) > 0
    assert not (sweep_dir / "0").exists()  # the rejected job left no empty run directory


def test_the_summary_gains_a_column_without_losing_rows(tmp_path):
    path = tmp_path / "sweep_summary.csv"
    append_row(path, {"job": 0, "status": "ok", "optim.lr": "0.001", "final_dev_loss": 1.5, "run_dir": "a"})
    append_row(path, {"job": 1, "status": "ok", "optim.lr": "0.002", "final_dev_loss": 1.25, "run_dir": "b"})
    append_row(path, {"job": 0, "status": "failed: x", "model": "gpt_10m", "run_dir": "c"})
    rows = _rows(tmp_path)
    assert list(rows[0]) == ["job", "status", "model", "optim.lr", "final_dev_loss", "unigram_dev_loss", "tokens_per_s",
                             "words_seen", "steps", "run_dir"]
    assert [(r["job"], r["optim.lr"], r["model"], r["final_dev_loss"]) for r in rows] == [
        ("0", "0.001", "", "1.5"), ("1", "0.002", "", "1.25"), ("0", "", "gpt_10m", "")]


def test_submitit_local_runs_the_jobs_in_parallel_processes(tmp_path, cache_dir):
    sweep_dir = tmp_path / "sweep"
    result = run_cli("tinylm.pretrain", "--multirun", "hydra/launcher=local_parallel", "debug=cpu_smoke",
                     "optim.lr=1e-3,3e-3", "train.threads=1", f"hydra.sweep.dir={sweep_dir}", f"data.cache_dir={cache_dir}")
    assert result.returncode == 0, result.stderr
    rows = sorted(_rows(sweep_dir), key=lambda r: r["job"])
    assert [(r["job"], r["optim.lr"], r["status"]) for r in rows] == [("0", "0.001", "ok"), ("1", "0.003", "ok")]
    assert all(float(r["final_dev_loss"]) > 0 and r["steps"] == "8" for r in rows)
    # Each job ran in its own submitit process, with its own log folder.
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 2


def test_optuna_search_records_every_trial_and_finds_the_best(tmp_path, cache_dir):
    sweep_dir = tmp_path / "sweep"
    result = run_cli("tinylm.pretrain", "--multirun", "hydra/sweeper=lr_search", "hydra.sweeper.n_trials=3",
                     "debug=cpu_smoke", "train.threads=1", f"hydra.sweep.dir={sweep_dir}", f"data.cache_dir={cache_dir}")
    assert result.returncode == 0, result.stderr
    rows = _rows(sweep_dir)
    assert [r["status"] for r in rows] == ["ok"] * 3
    losses = {float(r["optim.lr"]): float(r["final_dev_loss"]) for r in rows}
    assert len(losses) == 3 and all(1e-4 <= lr <= 1e-2 for lr in losses)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == min(losses.values())  # the objective Optuna saw is the final dev loss
    assert losses[best["best_params"]["optim.lr"]] == best["best_value"]


def test_a_failed_optuna_trial_is_recorded_as_failed(tmp_path, cache_dir):
    sweep_dir = tmp_path / "sweep"
    # One trial with an impossible device: it fails, Optuna is told so, and the summary lists it.
    result = run_cli("tinylm.pretrain", "--multirun", "hydra/sweeper=lr_search", "hydra.sweeper.n_trials=1",
                     "train.device=tpu", "debug=cpu_smoke",
                     f"hydra.sweep.dir={sweep_dir}", f"data.cache_dir={cache_dir}")
    assert "Failed experiment" in result.stdout + result.stderr
    rows = _rows(sweep_dir)
    assert len(rows) == 1 and rows[0]["status"].startswith("failed: train.device='tpu' is not a device")
