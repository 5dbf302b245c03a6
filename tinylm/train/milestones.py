"""Milestone checkpoints: light snapshots at fixed numbers of words seen (the BabyLM 2025 rules).

BabyLM 2025 asks for the model after 1M, 2M, ... 10M words seen, then every 10M up to 100M, then
every 100M up to 1B (`MILESTONES`, in millions of words). The training loop calls
`MilestoneWriter.update` after every optimizer step; each milestone that step crossed is written to

    RUN_DIR/milestones/chck_{N}M/
        model.safetensors   the weights (tied weights stored once)
        state.json          milestone, step, tokens and (actual) words seen, the model config, a
                            reference to the run's tokenizer (RUN_DIR/tokenizer.model and its sha256)

No optimizer state: a milestone is for evaluation and export, not for resuming. The folder is built
under a temporary name and renamed into place (tinylm.utils.atomic_dir). Because state.json holds
the model config, `load_trained(RUN_DIR/milestones/chck_5M)` and the HF export read a milestone like
any checkpoint.

One step can cross several milestones (large batches, or the scaled units tests use): each is
written, all with the same weights and the same actual words seen. A milestone is crossed when the
words seen go from below it to at or above it (`crossed`), so a resumed run (which restarts from the
words seen its checkpoint stored) writes every later milestone exactly once and none twice; one
crossed again while replaying the steps after that checkpoint is rewritten in place, with the
weights of the same step.

`train.milestone_unit_words` (default 1,000,000) is the size of one "M"; tests set it small.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tinylm.errors import InputError
from tinylm.utils import atomic_dir

# Milestones in units of train.milestone_unit_words (millions of words for BabyLM).
MILESTONES: tuple[int, ...] = (*range(1, 11), *range(20, 101, 10), *range(200, 1001, 100))
UNIT_WORDS = 1_000_000


def crossed(words_before: int, words_after: int, unit: int = UNIT_WORDS) -> list[int]:
    """The milestones N (in units) with words_before < N * unit <= words_after, ascending."""
    return [n for n in MILESTONES if words_before < n * unit <= words_after]


def milestone_name(n: int) -> str:
    return f"chck_{n}M"


def milestone_dir(run_dir: str | Path, n: int) -> Path:
    return Path(run_dir) / "milestones" / milestone_name(n)


def expected_milestones(words_seen: int, unit: int = UNIT_WORDS) -> list[int]:
    """Every milestone a run that has seen `words_seen` words must have written."""
    return crossed(0, words_seen, unit)


def existing_milestones(run_dir: str | Path) -> dict[int, Path]:
    """Complete milestone folders of a run (temporary folders of torn writes are ignored)."""
    root = Path(run_dir) / "milestones"
    found = {}
    if root.is_dir():
        for n in MILESTONES:
            p = root / milestone_name(n)
            if (p / "state.json").exists() and (p / "model.safetensors").exists():
                found[n] = p
    return found


def save_milestone(run_dir: str | Path, n: int, model, state: dict[str, Any]) -> Path:
    """Write RUN_DIR/milestones/chck_{n}M atomically (replacing an earlier write of it)."""
    from safetensors.torch import save_model

    final = milestone_dir(run_dir, n)
    with atomic_dir(final) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    return final


class MilestoneWriter:
    """Writes the milestones each optimizer step crosses. Built before the first step (after a
    resume: with the words seen the checkpoint stored); `update` after every step."""

    def __init__(self, run_dir: str | Path, model, model_cfg, enabled: bool, unit: int, words_seen: int,
                 data_report: dict[str, Any], tokenizer_file: str | Path | None = None):
        if enabled and unit < 1:
            raise InputError(f"train.milestone_unit_words={unit} must be >= 1 (1000000 for BabyLM's milestones)")
        self.run_dir, self.model, self.enabled, self.unit = Path(run_dir), model, enabled, unit
        self.model_config = asdict(model_cfg) if not isinstance(model_cfg, dict) else dict(model_cfg)
        self.words = words_seen
        self.data = {k: data_report[k] for k in ("corpus_hash", "tokenizer", "shards") if k in data_report}
        self.tokenizer_file = Path(tokenizer_file) if tokenizer_file else None
        self._tokenizer_sha256: str | None = None

    def _tokenizer_ref(self) -> dict[str, Any]:
        if self._tokenizer_sha256 is None and self.tokenizer_file is not None and self.tokenizer_file.exists():
            self._tokenizer_sha256 = hashlib.sha256(self.tokenizer_file.read_bytes()).hexdigest()
        return {"file": "../../tokenizer.model", "sha256": self._tokenizer_sha256}

    def update(self, step: int, tokens_seen: int, words_seen: int) -> list[Path]:
        """Save every milestone crossed since the last call; returns the folders written."""
        before, self.words = self.words, words_seen
        if not self.enabled:
            return []
        written = []
        for n in crossed(before, words_seen, self.unit):
            state = {
                "milestone": milestone_name(n), "milestone_words": n * self.unit, "unit_words": self.unit,
                "step": step, "tokens_seen": tokens_seen, "words_seen": words_seen,
                "model_config": self.model_config, "tokenizer": self._tokenizer_ref(), "data": self.data,
            }
            written.append(save_milestone(self.run_dir, n, self.model, state))
        return written
