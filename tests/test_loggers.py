"""logger=csv and logger=tensorboard (tinylm/train/loggers.py) through MetricsLog, the class the
training loop logs with: the files hold exactly metrics.jsonl's rows, also after a resume."""

import csv

import pytest

from tinylm.config import LoggerConfig
from tinylm.errors import InputError
from tinylm.train.metrics import MetricsLog, read_metrics

ROWS = [
    {"step": 1, "loss": 5.25, "lr": 1e-3},
    {"step": 2, "loss": 4.5, "lr": 2e-3, "dev_loss": 4.75},  # a new column: the csv header widens
    {"step": 3, "loss": 4.125, "lr": 3e-3},
    {"step": 4, "loss": 3.875, "lr": 3e-3, "dev_loss": 4.0, "mfu": 0.25},
]
RESUMED = [{"step": 3, "loss": 4.0, "lr": 3e-3}, {"step": 4, "loss": 3.5, "lr": 3e-3, "dev_loss": 3.75}]


def _log(run_dir, kind, rows, resume_step=None):
    log = MetricsLog(run_dir, LoggerConfig(kind=kind), {}, resume_step=resume_step)
    for row in rows:
        log.log(row)
    log.close()


def _csv_rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def test_csv_has_one_column_per_metric_and_survives_a_resume(tmp_path):
    _log(tmp_path, "csv", ROWS)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header == "step,loss,lr,dev_loss,mfu"
    assert _csv_rows(tmp_path) == [{k: float(v) for k, v in r.items()} for r in ROWS]
    _log(tmp_path, "csv", RESUMED, resume_step=2)  # a crash after step 4, resumed from step 2's checkpoint
    expected = ROWS[:2] + RESUMED
    assert read_metrics(tmp_path) == expected
    assert _csv_rows(tmp_path) == [{k: float(v) for k, v in r.items()} for r in expected]


def test_tensorboard_scalars_equal_the_logged_rows_and_a_resume_replaces_later_steps(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _log(tmp_path, "tensorboard", ROWS)
    _log(tmp_path, "tensorboard", RESUMED, resume_step=2)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss", "lr", "dev_loss", "mfu"}
    expected = ROWS[:2] + RESUMED
    for tag in ("loss", "dev_loss"):
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert got == [(r["step"], pytest.approx(r[tag])) for r in expected if tag in r], tag
    assert events.Scalars("mfu") == []  # logged at step 4 before the crash only: purged


def test_unknown_logger_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="logger.kind='mlflow' is not a logger; use one of none, csv, tensorboard, wandb"):
        MetricsLog(tmp_path, LoggerConfig(kind="mlflow"), {}, resume_step=None)
