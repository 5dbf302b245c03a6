"""Where a launch starts from, and the checks that keep a run directory telling one history.

- `train.resume=never` refuses a directory holding any run file (a run killed before its first
  checkpoint included); `auto` takes the newest *intact* checkpoint (tinylm.train.checkpoint.verify_checkpoint),
  saying in one line which damaged ones it skipped; a path must be an intact checkpoint.
- A resume must see the data the checkpoint was trained on (data key and tokenizer sha256) and the
  same train.seq_len; `train.resume_data=changed` allows other data deliberately (continued
  pretraining), and that is recorded in every later checkpoint (`data_changes`) and the compliance report.
- Resuming from an older checkpoint moves the newer ones aside into abandoned/after_step_N/ (never
  deleted) and the metrics log is cut to the resume step (MetricsLog), so `auto` never returns to
  the abandoned branch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tinylm.errors import InputError
from tinylm.train.checkpoint import newest_intact, read_state, step_dirs, step_of, verify_checkpoint
from tinylm.utils import sha256_file

# What a launch writes into its run directory: any of these means a run was started there.
RUN_FILES = ("config.yaml", "metrics.jsonl", "data_report.json", "tokenizer.model", "summary.json", "samples.txt",
             "checkpoints", "milestones")

log = logging.getLogger(__name__)


def run_files(run_dir: Path) -> list[str]:
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name in RUN_FILES or p.name.startswith("config.resumed_at_"))


def find_resume_checkpoint(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, or None for a new run; refuses to start over an existing run."""
    if resume == "never":
        found = run_files(run_dir)
        if found:
            raise InputError(
                f"run directory {run_dir} already holds a run ({', '.join(found)}); pass train.resume=auto to continue "
                "it, or set hydra.run.dir to a new folder to start over")
        return None
    if resume == "auto":
        ckpt = newest_intact(run_dir)
        if ckpt is None:
            what = "only damaged checkpoints" if step_dirs(run_dir) else "no checkpoint"
            hint = ("it was stopped before its first checkpoint: set hydra.run.dir to a new folder to start over"
                    if run_files(run_dir) else "drop train.resume to start a new run, or set hydra.run.dir to the run you want to continue")
            raise InputError(f"train.resume=auto: {what} in {run_dir / 'checkpoints'}; {hint}")
        return ckpt
    path = Path(resume)
    if not (path / "state.json").exists():
        raise InputError(f"train.resume={resume}: not a checkpoint folder (no state.json); use auto or a checkpoints/step_* path")
    problem = verify_checkpoint(path)
    if problem is not None:
        raise InputError(f"train.resume={resume}: the checkpoint is damaged ({problem}); use train.resume=auto for the newest intact one")
    return path


def check_resume_inputs(ckpt: Path, run_dir: Path, report: dict, seq_len: int, resume_data: str) -> list[dict]:
    """Refuse a resume on other data or another train.seq_len; returns the run's data-change record
    (previous changes, plus this one when resume_data=changed allows it)."""
    if resume_data not in ("same", "changed"):
        raise InputError(f"train.resume_data={resume_data!r} is not an option; use same (default) or changed")
    state = read_state(ckpt)
    saved_seq = state.get("train_seq_len", (state.get("loader") or {}).get("seq_len"))
    if saved_seq is not None and saved_seq != seq_len:
        raise InputError(f"train.seq_len={seq_len} but checkpoint {ckpt} was trained with train.seq_len={saved_seq}; "
                         f"pass train.seq_len={saved_seq} to continue it, or start a new run with hydra.run.dir")
    saved = state.get("data") or {}
    old_tok = saved.get("tokenizer_sha256")
    if old_tok is None and (run_dir / "tokenizer.model").exists():  # checkpoints from before the record
        old_tok = sha256_file(run_dir / "tokenizer.model")
    diffs = []
    if saved.get("data_key") not in (None, report.get("data_key")):
        diffs.append(f"data key {saved['data_key']} -> {report.get('data_key')}")
    elif saved.get("data_key") is None and saved.get("corpus_hash") not in (None, report.get("corpus_hash")):
        diffs.append(f"corpus {str(saved['corpus_hash'])[:16]} -> {str(report.get('corpus_hash'))[:16]}")
    if old_tok is not None and old_tok != report.get("tokenizer_sha256"):
        diffs.append(f"tokenizer sha256 {old_tok[:16]} -> {str(report.get('tokenizer_sha256'))[:16]}")
    changes = list(state.get("data_changes") or [])
    if diffs and resume_data != "changed":
        raise InputError(f"checkpoint {ckpt} was trained on other data ({'; '.join(diffs)}); pass the run's data options, "
                         "or train.resume_data=changed to continue on this data deliberately (recorded in the run)")
    if diffs:
        changes.append({"at_step": state["step"], "changed": diffs, "data_key": report.get("data_key"),
                        "tokenizer_sha256": report.get("tokenizer_sha256")})
        log.warning(f"warning: continuing on changed data from step {state['step']} ({'; '.join(diffs)}); recorded in the checkpoints")
    return changes


def run_identity(report: dict, seq_len: int, data_changes: list[dict]) -> dict[str, Any]:
    """What every checkpoint records about the data and shape it was trained on (checked at resume)."""
    data = {k: report.get(k) for k in ("corpus_hash", "tokenizer", "shards", "data_key", "tokenizer_sha256")}
    return {"data": data, "train_seq_len": seq_len, "data_changes": data_changes}


def set_aside_newer(run_dir: Path, ckpt: Path) -> Path | None:
    """Move the checkpoints newer than `ckpt` (an abandoned branch, or damaged ones) into
    run_dir/abandoned/after_step_N[-k]/; returns that folder (None when there were none)."""
    step = step_of(ckpt)
    newer = [p for p in step_dirs(run_dir) if step_of(p) > step]
    if not newer:
        return None
    base = run_dir / "abandoned" / f"after_step_{step}"
    dest, k = base, 1
    while dest.exists():
        k += 1
        dest = base.with_name(f"{base.name}-{k}")
    dest.mkdir(parents=True)
    for p in newer:
        os.rename(p, dest / p.name)
    log.warning(f"resuming from step {step}: moved the newer checkpoint(s) {', '.join(p.name for p in newer)} aside to {dest}")
    return dest
