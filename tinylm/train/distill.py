"""Knowledge distillation from an ensemble of teachers (Baby Llama, Timiryasov & Tastet 2023).

`distillation_loss` is Hinton et al.'s temperature-scaled soft-target loss against the mean of the
teachers' distributions; `load_teachers` loads the teacher runs of `objective.teachers` (frozen, eval
mode) and checks that they share the student's vocabulary and tokenizer and predict at the positions
the student's loss reads them (from each teacher's recorded objective, `position_mismatch`). The
objectives (tinylm.train.objectives) run the teachers and mix the soft loss with the hard one
(`distill_alpha`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from tinylm.config import ObjectiveConfig
from tinylm.errors import InputError
from tinylm.train.positions import CAUSAL, MASKED, MASKED_NEXT, reads, run_dir_of, run_objective

# What the student's loss reads from the teachers: the causal rows need next-token predictions of a
# causally run teacher; mlm rows a teacher that predicts a masked token at its own position; the
# masked rows of hybrid (MNTP) one that predicts it at the position before.
NEEDS = {"clm": (CAUSAL,), "distill": (CAUSAL,), "mlm": (MASKED,), "hybrid": (CAUSAL, MASKED_NEXT)}
MEANING = {CAUSAL: "next-token predictions when run causally", MASKED: "a masked token predicted at its own position (MLM)",
           MASKED_NEXT: "a masked token predicted at the position before it (MNTP)"}


def distillation_loss(student_logits: torch.Tensor, teacher_logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target loss for an ensemble: T^2 * KL(p_teachers || p_student), where
    p_teachers is the mean of the teachers' softmax(z / T) (Baby Llama) and p_student softmax(s / T);
    summed over the vocabulary, averaged over positions. Logits (N, V)."""
    T = temperature
    p_teacher = torch.stack([F.softmax(t.float() / T, dim=-1) for t in teacher_logits]).mean(dim=0)
    log_p_student = F.log_softmax(student_logits.float() / T, dim=-1)
    kl = (torch.special.xlogy(p_teacher, p_teacher) - p_teacher * log_p_student).sum(dim=-1)
    return kl.mean() * T * T


def position_mismatch(student_objective: str, teacher_objective: str, teacher_family: str) -> str:
    """Why a teacher trained with `teacher_objective` cannot give the soft targets a student trained
    with `student_objective` reads ("" when it can): both must predict each token at the same position."""
    missing = [r for r in NEEDS[student_objective] if r not in reads(teacher_objective)]
    if not missing:
        return ""
    return (f"it is a {teacher_family} trained with objective={teacher_objective}, so it gives "
            f"{' and '.join(MEANING[r] for r in reads(teacher_objective))}, but the student reads "
            f"{' and '.join(MEANING[r] for r in missing)}; use teachers trained with "
            f"{' or '.join(o for o in NEEDS if all(r in reads(o) for r in NEEDS[student_objective]))}")


def load_teachers(cfg: ObjectiveConfig, vocab_size: int, tokenizer, device: torch.device) -> list:
    """The teacher models (eval mode, frozen) of objective.teachers, checked against the student."""
    from tinylm.train.checkpoint import load_trained

    teachers = []
    for path in cfg.teachers:
        if not Path(path).exists():
            raise InputError(f"objective.teachers: {path} does not exist; give tinylm run directories or checkpoint folders")
        model, teacher_tok, _ = load_trained(path, device)
        if model.cfg.vocab_size != vocab_size:
            raise InputError(f"objective.teachers: {path} has a vocabulary of {model.cfg.vocab_size} tokens, the student "
                             f"{vocab_size}; teachers must be trained with the student's tokenizer")
        if tokenizer is not None and any(
            teacher_tok.id_to_piece(i) != tokenizer.id_to_piece(i) for i in range(vocab_size)
        ):
            raise InputError(f"objective.teachers: {path} uses a different tokenizer (same size, other pieces); teachers "
                             "must be trained on the same corpus with the same tokenizer settings")
        problem = position_mismatch(cfg.name, run_objective(run_dir_of(Path(path)), model.cfg.family), model.cfg.family)
        if problem:
            raise InputError(f"objective.teachers: {path} does not fit objective={cfg.name}: {problem}")
        model.requires_grad_(False)
        teachers.append(model)
    return teachers
