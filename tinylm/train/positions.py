"""Where a trained model puts its prediction of a token, read from the objective it trained with.

The objective, not the architecture, decides how a model must be read. A BERT body can run both
ways, but it only predicts well the way it was trained:

| objective            | run     | token k is predicted at | eval scorer (auto) | BabyLM backend |
|----------------------|---------|-------------------------|--------------------|----------------|
| clm, distill         | causal  | position k - 1          | causal             | causal         |
| mlm, bootstrap       | masked  | position k (masked)     | pll                | mlm            |
| hybrid (GPT-BERT)    | both    | position k - 1 (masked or causal) | mntp (causal beside it) | mntp |

Evaluation (scorer=auto, dev perplexity), export (heads), the model card and distillation (teacher
and student must predict at the same positions) all ask this module.
"""

from __future__ import annotations

import re
from pathlib import Path

CAUSAL = "causal"  # run causally, token k read at position k - 1
MASKED = "masked"  # run bidirectionally with token k masked, read at position k (MLM)
MASKED_NEXT = "masked_next"  # run bidirectionally with token k masked, read at position k - 1 (MNTP)

READS = {"clm": (CAUSAL,), "distill": (CAUSAL,), "mlm": (MASKED,), "hybrid": (MASKED_NEXT, CAUSAL),
         "bootstrap": (MASKED,)}  # bootstrap: its MLM head is trained on the masked tokens, as mlm's
SCORER = {CAUSAL: "causal", MASKED: "pll", MASKED_NEXT: "mntp"}
# tinylm.eval's scorers under the names of the BabyLM 2025 pipeline's --backend
BABYLM_BACKEND = {"causal": "causal", "pll": "mlm", "pll_word": "mlm", "mntp": "mntp"}


def run_dir_of(ckpt: Path) -> Path:
    """The run directory of a run directory, a checkpoints/step_* or a milestones/chck_*M folder."""
    ckpt = Path(ckpt)
    return ckpt.parent.parent if (ckpt / "state.json").exists() else ckpt


def run_objective(run_dir: Path, family: str) -> str:
    """The objective a run trained with: objective.name of its newest resolved config (config.yaml,
    or the config.resumed_at_N.yaml of its latest resume); clm (mlm for bert) when none is there."""
    run_dir = Path(run_dir)
    configs = sorted(run_dir.glob("config.resumed_at_*.yaml"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    configs = configs[-1:] or [run_dir / "config.yaml"]
    if configs[0].exists():
        from tinylm.config import load_stored_config  # unresolved: a run directory is untrusted input

        name = (load_stored_config(configs[0]).get("objective") or {}).get("name")
        if name:
            return str(name)
    return "mlm" if family == "bert" else "clm"


def reads(objective: str) -> tuple[str, ...]:
    """How a model trained with `objective` can be read (READS); the first is its main reading."""
    if objective not in READS:
        raise ValueError(f"objective {objective!r} is not a tinylm objective; use one of {', '.join(READS)}")
    return READS[objective]


def default_scorer(objective: str) -> str:
    """scorer=auto: causal after clm / distill, pll after mlm, mntp after hybrid."""
    return SCORER[reads(objective)[0]]


def runs_causally(objective: str) -> bool:
    """Whether next-token (causal) log-probs of this model mean anything (dev perplexity, samples)."""
    return CAUSAL in reads(objective)
