"""Makefile housekeeping: `make clean` keeps runs and the data cache; `make clean-runs` removes runs
only when told to (FORCE=1 or a yes at the terminal)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from helpers import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make(cwd, *args):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_clean_keeps_runs_and_clean_runs_asks(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    run = tmp_path / "runs" / "2026-01-01" / "10-00-00"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("run_dir: x\n")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".pytest_cache").mkdir()

    assert _make(tmp_path, "clean").returncode == 0
    assert run.is_dir() and (tmp_path / ".cache").is_dir() and not (tmp_path / ".pytest_cache").exists()

    refused = _make(tmp_path, "clean-runs")  # no terminal to ask at, no FORCE=1
    assert refused.returncode != 0 and "FORCE=1" in refused.stderr
    assert "runs/2026-01-01/10-00-00" in refused.stdout and run.is_dir()

    removed = _make(tmp_path, "clean-runs", "FORCE=1")
    assert removed.returncode == 0 and not (tmp_path / "runs").exists() and (tmp_path / ".cache").is_dir()
