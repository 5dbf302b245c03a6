"""Fault injection with real processes: kill -9 at random moments, a double signal, SIGTERM, each
followed by a resume that must end bit-identical to an uninterrupted run (tiny debug=cpu_smoke
runs with a checkpoint after every step). Every launch costs a Python start with torch, so the
scenarios share launches: the run lock is tested in process (tests/test_reliability.py)."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT, SMOKE_MODEL, run_cli, smoke_config
from safetensors.torch import load_file

from tinylm.train.checkpoint import newest_intact, verify_checkpoint
from tinylm.train.loop import pretrain
from tinylm.train.metrics import read_metrics

STEPS = 16
COMMON = (f"train.steps={STEPS}", "train.ckpt_every=1", "train.keep_checkpoints=2", "train.log_every=1",
          "train.eval_every=8", "train.sample_tokens=2")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """The uninterrupted run every interrupted one must reproduce exactly."""
    run = tmp_path_factory.mktemp("reference") / "run"
    pretrain(smoke_config(run, cache_dir, *COMMON))
    return run


def launch(run, cache_dir, *extra):
    logs = run.parent / f"launch-{time.monotonic_ns()}"
    out, err = open(f"{logs}.out", "w"), open(f"{logs}.err", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tinylm.pretrain", "debug=cpu_smoke", *SMOKE_MODEL,
                             f"hydra.run.dir={run}", f"data.cache_dir={cache_dir}", *COMMON, *extra], cwd=ROOT, stdout=out, stderr=err,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.logs = (f"{logs}.out", f"{logs}.err")
    return proc


def logged_steps(run):
    try:
        return len([r for r in read_metrics(run) if "loss" in r])
    except ValueError:  # a row being written right now
        return 0


def wait_for_rows(proc, run, rows, timeout=240):
    start = time.monotonic()
    while logged_steps(run) < rows and proc.poll() is None:
        assert time.monotonic() - start < timeout, "the run made no progress"
        time.sleep(0.02)


def finish(proc, timeout=300):
    proc.wait(timeout=timeout)
    return proc.returncode, open(proc.logs[0]).read(), open(proc.logs[1]).read()


def assert_same_as(run, reference):
    final = newest_intact(run)
    assert final.name == f"step_{STEPS:08d}" and verify_checkpoint(final) is None
    got, want = load_file(final / "model.safetensors"), load_file(reference / f"checkpoints/step_{STEPS:08d}/model.safetensors")
    assert got.keys() == want.keys()
    for key in want:
        assert (got[key] == want[key]).all(), key
    strip = lambda rows: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]
    assert strip(read_metrics(run)) == strip(read_metrics(reference))  # one history, every step once


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_bit_exactly(reference, tmp_path, cache_dir):
    run = tmp_path / "run"
    rng = random.Random(13)
    for attempt in range(2):
        proc = launch(run, cache_dir, *(["train.resume=auto"] if attempt else []))
        wait_for_rows(proc, run, logged_steps(run) + rng.randint(2, 5))
        time.sleep(rng.uniform(0, 0.2))  # anywhere in a step, an evaluation or a checkpoint write
        if attempt == 0:
            proc.kill()  # SIGKILL
        else:  # a second signal exits at once, like a kill
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGINT)
        rc, _, err = finish(proc)
        assert rc != 0, err
        if attempt == 1:
            assert "again: exiting at once" in err, err
    rc, out, err = finish(launch(run, cache_dir, "train.resume=auto"))
    assert rc == 0, err
    assert_same_as(run, reference)


@pytest.mark.slow
def test_sigterm_checkpoints_exits_non_zero_in_one_line_and_resumes_exactly(reference, tmp_path, cache_dir):
    run = tmp_path / "run"
    proc = launch(run, cache_dir)
    wait_for_rows(proc, run, 3)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    rc, out, err = finish(proc)
    assert rc == 128 + signal.SIGTERM
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stopped by SIGTERM after step "), err
    step = int(lines[0].split("after step ")[1].split(";")[0])
    assert step < STEPS and newest_intact(run).name == f"step_{step:08d}"
    assert "continue with train.resume=auto" in lines[0]
    rc, out, err = finish(launch(run, cache_dir, "train.resume=auto"))
    assert rc == 0, err
    assert f"(step {step})" in out and "threads: 1 (train.threads)" in out
    assert_same_as(run, reference)


def test_run_dir_naming_a_file_is_one_line_and_exit_2(tmp_path, cache_dir):
    (tmp_path / "a_file").write_text("not a folder")
    result = run_cli("tinylm.pretrain", "debug=cpu_smoke", f"data.cache_dir={cache_dir}", f"hydra.run.dir={tmp_path / 'a_file'}")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: hydra.run.dir={tmp_path / 'a_file'} is a file; set hydra.run.dir to a folder"], result.stderr
    assert (tmp_path / "a_file").read_text() == "not a folder"
