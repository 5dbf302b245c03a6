"""Where export, package and eval may write: never over a run.

An `out=` folder may not be a file, may not be a run directory or hold one anywhere below it
(overwrite=true would delete it), and may not sit inside a run's checkpoints/, milestones/ or
abandoned/ folders or be one of its run files. The defaults (RUN_DIR/hf, RUN_DIR/babylm_submission,
RUN_DIR/eval) are plain sub-folders of a run and allowed.
"""

from __future__ import annotations

import os
from pathlib import Path

from tinylm.errors import InputError

PROTECTED = ("checkpoints", "milestones", "abandoned")


def is_run_dir(path: Path) -> bool:
    from tinylm.train.resume import run_files

    return path.is_dir() and bool(run_files(path)) and ((path / "checkpoints").is_dir() or (path / "config.yaml").exists())


def _holds_run(folder: Path) -> Path | None:
    for root, dirs, _files in os.walk(folder):
        if "checkpoints" in dirs and is_run_dir(Path(root)):
            return Path(root)
        dirs[:] = [d for d in dirs if d not in PROTECTED]
    return None


def check_out_folder(out: Path, key: str = "out") -> None:
    """Raise InputError when writing (or overwriting) `out` could damage a run."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"{key}={out} is a file; choose a folder")
    if is_run_dir(out):
        raise InputError(f"{key}={out} is a run directory; choose a folder outside it (e.g. {out / 'hf'})")
    for parent in out.parents:
        if parent.name in PROTECTED and is_run_dir(parent.parent):
            raise InputError(f"{key}={out} is inside the run's {parent.name}/ folder of {parent.parent}; choose another folder")
    from tinylm.train.resume import RUN_FILES

    if out.name in RUN_FILES and is_run_dir(out.parent):
        raise InputError(f"{key}={out} is a file of the run {out.parent}; choose another folder")
    if out.is_dir():
        run = _holds_run(out)
        if run is not None:
            raise InputError(f"{key}={out} holds the run directory {run}; choose a folder that holds no run")
