"""BERT (tinylm/models/bert.py): padding and document masks, causal mode, positions, the simple sketch's
ELC weighting, API. The reference equations are checked in test_bert_reference.py."""

import math

import pytest
import torch

from tinylm.config import ModelConfig
from tinylm.models import build_model
from tinylm.models.bert import BERT
from tinylm.models.bert_positions import t5_buckets

SIMPLE = dict(bert_arch="simple")
VARIANTS = [
    dict(),  # ELC-BERT, disentangled relative attention
    dict(bert_elc=False),  # LTG-BERT
    dict(bert_positions="rotary"),
    dict(SIMPLE, bert_positions="relative", bert_norm="pre"),
    dict(SIMPLE, bert_positions="relative", bert_norm="post"),
    dict(SIMPLE, bert_positions="rotary", bert_norm="pre"),
    dict(SIMPLE, bert_positions="rotary", bert_norm="post", bert_elc=False),
]
IDS = ["elc", "ltg", "elc-rotary", "simple-relative-pre", "simple-relative-post", "simple-rotary-pre",
       "simple-rotary-post-noelc"]


def tiny_bert(**kw) -> BERT:
    torch.manual_seed(0)
    cfg = ModelConfig(family="bert", vocab_size=97, n_layer=2, n_head=2, d_model=32, d_ff=48, max_seq_len=16,
                      **{"bert_rel_buckets": 8, "bert_rel_max_distance": 16, **kw})
    return build_model(cfg)


def perturb(model: BERT) -> BERT:
    """Non-trivial ELC weights, norm gains and relative biases (they start at trivial values)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1 or getattr(model, "rel_bias", None) is not None and p is model.rel_bias.weight:
                p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("kw", VARIANTS, ids=IDS)
def test_padding_does_not_change_unpadded_positions(kw):
    model = perturb(tiny_bert(**kw)).eval()
    ids = torch.randint(7, 97, (2, 10))
    padded = torch.cat([ids, torch.zeros(2, 5, dtype=torch.long)], dim=1)  # right padding with <pad> = 0
    real = torch.cat([torch.ones(2, 10, dtype=torch.bool), torch.zeros(2, 5, dtype=torch.bool)], dim=1)
    padded[1, 7:] = 0  # the second row is shorter still
    real[1, 7:] = False
    with torch.no_grad():
        a = model(padded, key_padding_mask=real)
        b0 = model(ids[:1])
        b1 = model(ids[1:, :7])
    torch.testing.assert_close(a[0, :10], b0[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[1, :7], b1[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kw", VARIANTS, ids=IDS)
def test_causal_mode_is_causal_and_default_is_bidirectional(kw):
    model = perturb(tiny_bert(**kw)).eval()
    ids = torch.randint(7, 97, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = torch.randint(7, 97, (2, 5))
    with torch.no_grad():
        a, b = model(ids, causal=True), model(changed, causal=True)
        c, d = model(ids), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])
    assert not torch.allclose(c[:, :7], d[:, :7])  # bidirectional: earlier positions see later tokens


@pytest.mark.parametrize("kw", VARIANTS, ids=IDS)
def test_documents_attend_only_inside_themselves(kw):
    """doc_ids: two documents packed in one row give each document's logits alone (relative and
    rotary positions alike: the second document's rotary positions differ, so rotary is compared by
    changing the other document only)."""
    model = perturb(tiny_bert(**kw)).eval()
    ids = torch.randint(7, 97, (1, 14))
    doc = torch.tensor([[0] * 6 + [1] * 8])
    other = ids.clone()
    other[0, 6:] = torch.randint(7, 97, (8,))
    with torch.no_grad():
        a, b = model(ids, doc_ids=doc), model(other, doc_ids=doc)
        torch.testing.assert_close(a[0, :6], b[0, :6], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a[0, :6], model(ids[:, :6])[0], rtol=1e-5, atol=1e-5)
        if kw.get("bert_positions", "relative") == "relative":  # depends on i - j only
            torch.testing.assert_close(a[0, 6:], model(ids[:, 6:])[0], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model(ids)[0, :6], a[0, :6])


def test_simple_elc_weights_receive_gradients_and_start_as_plain_residual():
    elc, plain = tiny_bert(bert_elc=True, **SIMPLE), tiny_bert(bert_elc=False, **SIMPLE)
    # same seed, same draws: every other weight is identical, and weights of 1 are the plain stack
    ids = torch.randint(7, 97, (2, 12))
    torch.testing.assert_close(elc(ids), plain(ids), rtol=1e-5, atol=1e-5)
    assert len(elc.layer_weights) == elc.cfg.n_layer + 1
    assert [w.numel() for w in elc.layer_weights] == [1, 2, 3]
    elc(ids).logsumexp(-1).mean().backward()
    for w in elc.layer_weights:
        assert w.grad is not None and w.grad.abs().sum() > 0
    # and a changed mix changes the output
    with torch.no_grad():
        elc.layer_weights[1][0] = 0.0
    assert not torch.allclose(elc(ids), plain(ids))


def test_relative_buckets_are_exact_near_and_log_spaced_far():
    b = t5_buckets(200, 32, 128)
    assert b[0, 0] == 0 and b[5, 5] == 0
    assert b[10, 11] != b[11, 10]  # separate buckets per direction
    assert [int(b[100, 100 - d]) for d in range(8)] == list(range(8))  # exact for small distances
    assert int(b[100, 0]) == int(b[199, 0]) == 15 and int(b[0, 199]) == 31  # far distances share the last bucket
    assert torch.equal(b[3:10, 3:10], b[:7, :7])  # depends only on j - i
    assert b.min() >= 0 and b.max() < 32


@pytest.mark.parametrize("arch", ["ltg", "simple"])
def test_relative_positions_are_used(arch):
    model = tiny_bert(bert_positions="relative", bert_arch=arch).eval()
    table = model.rel_emb if arch == "ltg" else model.rel_bias.weight
    ids = torch.randint(7, 97, (1, 10))
    with torch.no_grad():
        before = model(ids)
        table.normal_()
        after = model(ids)
    assert not torch.allclose(before, after)


def test_tied_head_groups_flops_and_generate():
    model = tiny_bert()
    assert model.head.weight is model.tok_emb.weight and model.head.bias is not None
    assert model.causal is False
    decay, no_decay = model.optimizer_groups(0.1)
    n_groups = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n_groups == sum(p.numel() for p in model.parameters()) == model.num_params()
    decayed = {id(p) for p in decay["params"]}
    assert all(p.dim() >= 2 for p in decay["params"]) and id(model.tok_emb.weight) not in decayed
    assert id(model.rel_emb) not in decayed and id(model.blocks[0].attn.qk.weight) in decayed  # no embedding decays
    assert model.flops_per_token(16) == 6 * model.num_params() + 12 * 2 * 2 * 16 * 16
    out = model.eval().generate(torch.tensor([[2, 9, 10]]), 4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 7)
    with torch.no_grad():
        greedy = model.generate(torch.tensor([[2, 9, 10]]), 1, temperature=0)
        assert greedy[0, 3] == model(torch.tensor([[2, 9, 10]]), causal=True)[0, -1].argmax()


def test_loss_at_init_is_near_uniform_and_bad_configs_fail():
    model = tiny_bert()
    logits = model(torch.randint(7, 97, (4, 16)))
    loss = torch.nn.functional.cross_entropy(logits.view(-1, 97), torch.randint(0, 97, (64,)))
    assert abs(loss.item() - math.log(97)) < 0.3
    with pytest.raises(ValueError, match="bert_norm"):
        tiny_bert(bert_norm="middle", **SIMPLE)
    with pytest.raises(ValueError, match="bert_arch"):
        tiny_bert(bert_arch="deberta")
    with pytest.raises(ValueError, match="bert_rel_buckets"):
        tiny_bert(bert_rel_buckets=2)
    with pytest.raises(ValueError, match="bert_positions"):
        tiny_bert(bert_positions="absolute")
    # no length limit: relative positions clamp far distances, so a longer text still runs
    assert model(torch.zeros(1, 40, dtype=torch.long)).shape[:2] == (1, 40)


@pytest.mark.parametrize("positions,arch", [("relative", "ltg"), ("rotary", "ltg"), ("relative", "simple")])
def test_bf16_autocast_forward(positions, arch):
    """The mixed-precision path (CUDA runs under bf16 autocast): the float relative bias and rotary
    tables meet bf16 queries; here on the CPU's autocast."""
    model = perturb(tiny_bert(bert_positions=positions, bert_arch=arch)).eval()
    ids = torch.randint(7, 97, (2, 12))
    real = torch.ones(2, 12, dtype=torch.bool)
    real[1, 9:] = False
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(ids, key_padding_mask=real)
    with torch.no_grad():
        full = model(ids, key_padding_mask=real)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), full, rtol=0.05, atol=0.1)


def test_checkpoints_from_before_bert_arch_load_as_the_simple_sketch(tmp_path):
    import json

    from tinylm.train.checkpoint import read_state

    (tmp_path / "state.json").write_text(json.dumps({"step": 1, "model_config": {"family": "bert", "n_layer": 2}}))
    assert read_state(tmp_path)["model_config"]["bert_arch"] == "simple"
    (tmp_path / "state.json").write_text(json.dumps({"step": 1, "model_config": {"family": "bert", "bert_arch": "ltg"}}))
    assert read_state(tmp_path)["model_config"]["bert_arch"] == "ltg"
    (tmp_path / "state.json").write_text(json.dumps({"step": 1, "model_config": {"family": "gpt"}}))
    assert "bert_arch" not in read_state(tmp_path)["model_config"]
