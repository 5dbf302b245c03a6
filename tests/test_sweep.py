import csv

from helpers import run_cli


def test_multirun_writes_one_run_dir_per_job_and_a_csv_summary(tmp_path, cache_dir):
    sweep_dir = tmp_path / "sweep"
    result = run_cli("tinylm.pretrain", "--multirun", "debug=cpu_smoke", "optim.lr=1e-3,3e-3",
                     f"hydra.sweep.dir={sweep_dir}", f"data.cache_dir={cache_dir}")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(sweep_dir / "sweep_summary.csv")))
    assert [r["job"] for r in rows] == ["0", "1"]
    assert "optim.lr=0.001" in rows[0]["overrides"] and "optim.lr=0.003" in rows[1]["overrides"]
    for i, row in enumerate(rows):
        assert row["status"] == "ok" and float(row["final_dev_loss"]) > 0 and float(row["tokens_per_s"]) > 0
        assert row["run_dir"] == str(sweep_dir / str(i))
        assert (sweep_dir / str(i) / "checkpoints").is_dir()
    assert rows[0]["final_dev_loss"] != rows[1]["final_dev_loss"]  # the override reached the job


def test_a_bad_job_is_recorded_and_the_sweep_goes_on(tmp_path, cache_dir):
    sweep_dir = tmp_path / "sweep"
    result = run_cli("tinylm.pretrain", "--multirun", "debug=cpu_smoke", "train.device=tpu,cpu",
                     f"hydra.sweep.dir={sweep_dir}", f"data.cache_dir={cache_dir}")
    assert result.returncode != 0  # the sweep as a whole reports the failure
    assert "error: train.device='tpu' is not a device" in result.stderr
    rows = list(csv.DictReader(open(sweep_dir / "sweep_summary.csv")))
    assert rows[0]["status"].startswith("failed: train.device='tpu' is not a device")
    assert rows[1]["status"] == "ok" and float(rows[1]["final_dev_loss"]) > 0
    assert not (sweep_dir / "0").exists()  # the rejected job left no empty run directory
