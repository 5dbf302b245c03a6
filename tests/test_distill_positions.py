"""Distillation checks that each teacher predicts a token at the position the student's loss reads
it, from the teacher's recorded objective, and names the teacher that does not fit."""

import shutil

import pytest
import torch
from helpers import smoke_config

from tinylm.config import ModelConfig
from tinylm.errors import InputError
from tinylm.models import build_model
from tinylm.train.checkpoint import save_checkpoint
from tinylm.train.distill import position_mismatch

# (student objective, teacher objective) -> fits
FITS = {
    ("clm", "clm"): True, ("clm", "distill"): True, ("clm", "hybrid"): True, ("clm", "mlm"): False,
    ("distill", "hybrid"): True, ("distill", "mlm"): False,
    ("mlm", "mlm"): True, ("mlm", "clm"): False, ("mlm", "hybrid"): False, ("mlm", "distill"): False,
    ("hybrid", "hybrid"): True, ("hybrid", "mlm"): False, ("hybrid", "clm"): False, ("hybrid", "distill"): False,
}


@pytest.mark.parametrize("student,teacher", list(FITS))
def test_teacher_and_student_must_predict_at_the_same_positions(student, teacher):
    problem = position_mismatch(student, teacher, "bert")
    assert (problem == "") == FITS[(student, teacher)]
    if problem:
        assert f"objective={teacher}" in problem and "use teachers trained with" in problem


def test_an_mlm_teacher_for_a_hybrid_student_is_refused_naming_it(tmp_path, cache_dir):
    from tinylm.data.pipeline import prepare_data
    from tinylm.train.loop import pretrain

    cfg = smoke_config(tmp_path / "student", cache_dir, "model=bert_tiny", "objective=hybrid")
    data = prepare_data(cfg.data, cfg.tokenizer)
    teacher = tmp_path / "mlm_teacher"
    mc = ModelConfig(family="bert", vocab_size=data.tokenizer.vocab_size, n_layer=1, n_head=2, d_model=16, max_seq_len=64)
    save_checkpoint(teacher, 1, build_model(mc), torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]),
                    {"model_config": mc.__dict__}, keep=1)
    shutil.copy(data.tokenizer.model_file, teacher / "tokenizer.model")
    (teacher / "config.yaml").write_text("objective:\n  name: mlm\n")
    cfg = smoke_config(tmp_path / "student", cache_dir, "model=bert_tiny", "objective=hybrid",
                       f"objective.teachers=[{teacher}]")
    with pytest.raises(InputError) as e:
        pretrain(cfg)
    message = str(e.value)
    assert "\n" not in message and str(teacher) in message and "objective=mlm" in message and "MNTP" in message
    assert not (tmp_path / "student").exists()
