"""python -m tinylm.generate: samples from a run, a checkpoint or a milestone, for every family that
can continue text; a masked-only BERT is refused with one error line."""

import shutil
from dataclasses import asdict

import pytest
import torch
from helpers import run_cli, smoke_config

from tinylm.config import ModelConfig
from tinylm.data.tokenizer import BOS_ID, EOS_ID
from tinylm.errors import InputError
from tinylm.generate import GenerateConfig, generate
from tinylm.models import build_model
from tinylm.train.checkpoint import load_trained, save_checkpoint


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory, cache_dir):
    from tinylm.train.loop import pretrain

    run = tmp_path_factory.mktemp("generate") / "gpt"
    pretrain(smoke_config(run, cache_dir, "train.steps=4", "train.threads=1", "train.milestone_unit_words=100"))
    return run


def _reference(run, prompt, max_new, **kw):
    """What the native model's generate gives for one prompt, decoded as generate() decodes."""
    model, tok, _ = load_trained(run)
    ids = [BOS_ID, *tok.encode([prompt])[0]]
    out = model.generate(torch.tensor([ids]), max_new, eos_id=EOS_ID, **kw)[0, len(ids):].tolist()
    out = out[: out.index(EOS_ID)] if EOS_ID in out else out
    return tok.decode(ids[1:] + out)


def test_samples_from_a_run_a_checkpoint_and_a_milestone(gpt_run):
    cfg = GenerateConfig(ckpt=str(gpt_run), prompt="Once upon a time", n=3, temperature=0.8, top_k=20,
                         max_new_tokens=6, seed=1)
    texts = generate(cfg)
    assert len(texts) == 3 and all(t.startswith("Once upon a time") for t in texts)
    assert generate(cfg) == texts  # the seed fixes the samples
    greedy = generate(GenerateConfig(ckpt=str(gpt_run), prompt="The little dog", n=2, temperature=0, max_new_tokens=6))
    assert greedy == [_reference(gpt_run, "The little dog", 6, temperature=0)] * 2
    milestones = sorted((gpt_run / "milestones").iterdir())
    step = sorted((gpt_run / "checkpoints").iterdir())[0]
    for ckpt in (milestones[0], step):
        texts = generate(GenerateConfig(ckpt=str(ckpt), prompt="The little dog", temperature=0, max_new_tokens=6))
        assert texts == [_reference(ckpt, "The little dog", 6, temperature=0)]
    with pytest.raises(InputError, match="temperature=-1.0 must be >= 0"):
        generate(GenerateConfig(ckpt=str(gpt_run), temperature=-1.0))


def _hand_made_run(tmp_path, gpt_run, name, model_cfg, objective):
    """A run directory holding a randomly initialised model of another family, with the GPT run's
    tokenizer and a config.yaml naming the objective it 'trained' with."""
    run = tmp_path / name
    run.mkdir()
    shutil.copy(gpt_run / "tokenizer.model", run / "tokenizer.model")
    (run / "config.yaml").write_text(f"objective:\n  name: {objective}\n")
    torch.manual_seed(0)
    model = build_model(model_cfg)
    save_checkpoint(run, 1, model, torch.optim.SGD(model.parameters(), lr=0.1), {"model_config": asdict(model_cfg)}, keep=1)
    return run


@pytest.mark.parametrize("family,objective", [("mlstm", "clm"), ("bert", "hybrid")])
def test_mlstm_and_gpt_bert_generate(tmp_path, gpt_run, family, objective):
    vocab = load_trained(gpt_run)[1].vocab_size
    cfg = ModelConfig(family=family, vocab_size=vocab, n_layer=2, n_head=2, d_model=32, d_ff=64, max_seq_len=32,
                      init_std=0.2)
    run = _hand_made_run(tmp_path, gpt_run, family, cfg, objective)
    texts = generate(GenerateConfig(ckpt=str(run), prompt="The dog", temperature=0, max_new_tokens=5))
    assert texts == [_reference(run, "The dog", 5, temperature=0)]


def test_a_masked_only_bert_is_refused_on_the_command_line(tmp_path, gpt_run):
    vocab = load_trained(gpt_run)[1].vocab_size
    cfg = ModelConfig(family="bert", vocab_size=vocab, n_layer=1, n_head=2, d_model=32, d_ff=64, max_seq_len=32)
    run = _hand_made_run(tmp_path, gpt_run, "bert_mlm", cfg, "mlm")
    result = run_cli("tinylm.generate", f"ckpt={run}", "prompt=The dog")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ckpt=")
    assert "objective=mlm" in result.stderr and "objective=hybrid" in result.stderr
    # a comma needs Hydra's quotes (on a shell: prompt="'Once upon a time, there'")
    ok = run_cli("tinylm.generate", f"ckpt={gpt_run}", "prompt='Once upon a time, there'", "n=2", "max_new_tokens=4")
    assert ok.returncode == 0, ok.stderr
    lines = [line for line in ok.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 2 and all(line.split("] ", 1)[1].startswith("Once upon a time, there") for line in lines)
