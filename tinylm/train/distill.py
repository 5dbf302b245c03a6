"""Knowledge distillation from an ensemble of teachers (Baby Llama, Timiryasov & Tastet 2023).

`distillation_loss` is Hinton et al.'s temperature-scaled soft-target loss against the mean of the
teachers' distributions; `load_teachers` loads the teacher runs of `objective.teachers` (frozen, eval
mode) and checks that they share the student's vocabulary and tokenizer and suit the objective (bert
teachers for mlm and hybrid). The objectives (tinylm.train.objectives) run the teachers and mix the
soft loss with the hard one (`distill_alpha`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from tinylm.config import ObjectiveConfig
from tinylm.errors import InputError


def distillation_loss(student_logits: torch.Tensor, teacher_logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target loss for an ensemble: T^2 * KL(p_teachers || p_student), where
    p_teachers is the mean of the teachers' softmax(z / T) (Baby Llama) and p_student softmax(s / T);
    summed over the vocabulary, averaged over positions. Logits (N, V)."""
    T = temperature
    p_teacher = torch.stack([F.softmax(t.float() / T, dim=-1) for t in teacher_logits]).mean(dim=0)
    log_p_student = F.log_softmax(student_logits.float() / T, dim=-1)
    kl = (torch.special.xlogy(p_teacher, p_teacher) - p_teacher * log_p_student).sum(dim=-1)
    return kl.mean() * T * T


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
            teacher_tok.sp.id_to_piece(i) != tokenizer.sp.id_to_piece(i) for i in range(vocab_size)
        ):
            raise InputError(f"objective.teachers: {path} uses a different tokenizer (same size, other pieces); teachers "
                             "must be trained on the same corpus with the same tokenizer settings")
        if cfg.name == "mlm" and model.causal:
            raise InputError(f"objective.teachers: {path} is a causal model ({model.cfg.family}); objective=mlm needs "
                             "bidirectional (bert) teachers")
        if cfg.name == "hybrid" and model.causal:
            raise InputError(f"objective.teachers: {path} is a causal model ({model.cfg.family}); objective=hybrid "
                             "needs bert teachers (they are run both ways)")
        model.requires_grad_(False)
        teachers.append(model)
    return teachers
