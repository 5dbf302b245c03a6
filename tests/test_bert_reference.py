"""BERT (tinylm/models/bert.py) against LTG-BERT / ELC-BERT restated here in float64 from the papers and
ltgoslo's reference code (Samuel et al. 2023; Charpentier & Samuel 2023), not from tinylm's helpers:
relative buckets, attention scores, a block, the ELC weighting, the whole model and the init."""

import math

import pytest
import torch
import torch.nn.functional as F

from tinylm.config import ModelConfig
from tinylm.models import build_model

EPS = 1e-7


def ref_buckets(T, bucket_size, max_position):
    """make_log_bucket_position of the reference (float32, as it computes), shifted to start at 0."""
    rel = torch.arange(T)[:, None] - torch.arange(T)[None, :]  # query i - key j
    sign, mid = torch.sign(rel), bucket_size // 2
    abs_pos = torch.where((rel < mid) & (rel > -mid), mid - 1, rel.abs().clamp(max=max_position - 1))
    log_pos = torch.ceil(torch.log(abs_pos / mid) / math.log((max_position - 1) / mid) * (mid - 1)).int() + mid
    return torch.where(abs_pos <= mid, rel, log_pos * sign).long() + bucket_size - 1


def ln(x, w=None, b=None):
    return F.layer_norm(x, x.shape[-1:], w, b, EPS)


def ref_attention(sd, p, x, rel, buckets, masked, H):
    """LTG-BERT attention with the (T, T, H, D) position tensors of the reference's first version.
    masked (B, 1, T, T) bool: True = may NOT attend."""
    B, T, C = x.shape
    D = C // H
    h = ln(x)
    q, k = (h @ sd[p + "qk.weight"].T + sd[p + "qk.bias"]).chunk(2, dim=-1)
    v = h @ sd[p + "v.weight"].T + sd[p + "v.bias"]
    pos = (rel @ sd[p + "qk.weight"].T + sd[p + "qk.bias"])[buckets]  # (T, T, 2C)
    q_pos, k_pos = (t.reshape(T, T, H, D) for t in pos.chunk(2, dim=-1))
    q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in (q, k, v))
    scale = 1 / math.sqrt(3 * D)
    scores = (torch.einsum("bhqd,bhkd->bhqk", q, k) + torch.einsum("bhqd,qkhd->bhqk", q, k_pos)
              + torch.einsum("bhkd,qkhd->bhqk", k, q_pos)) * scale
    probs = torch.softmax(scores.masked_fill(masked, float("-inf")), -1).masked_fill(masked, 0.0)
    ctx = (probs @ v).transpose(1, 2).reshape(B, T, C)
    out = ln(ctx @ sd[p + "proj.weight"].T + sd[p + "proj.bias"], sd[p + "norm_out.weight"], sd[p + "norm_out.bias"])
    return out, probs


def ref_ffn(sd, p, x):
    u, g = (ln(x) @ sd[p + "fc.weight"].T).chunk(2, dim=-1)
    return ln(u * F.gelu(g, approximate="tanh")) @ sd[p + "proj.weight"].T


def ref_model(sd, cfg, ids, masked):
    """Logits of LTG-BERT (cfg.bert_elc False) or ELC-BERT (zero-init variant: softmax weights; a layer
    outputs attention + FFN without its input; the head reads the last layer's output)."""
    T = ids.shape[1]
    rel = ln(sd["rel_emb"], sd["rel_norm.weight"], sd["rel_norm.bias"])
    buckets = ref_buckets(T, cfg.bert_rel_buckets, cfg.max_seq_len)
    hidden = [ln(sd["tok_emb.weight"][ids])]
    x = hidden[0]
    for l in range(cfg.n_layer):
        if cfg.bert_elc:
            w = torch.softmax(sd[f"layer_weights.{l}"], 0)
            x = sum(w[i] * h for i, h in enumerate(hidden))
        a, _ = ref_attention(sd, f"blocks.{l}.attn.", x, rel, buckets, masked, cfg.n_head)
        out = a + ref_ffn(sd, f"blocks.{l}.mlp.", x + a)
        x = out if cfg.bert_elc else x + out
        hidden.append(x)
    h = ln(F.gelu(ln(x) @ sd["head_dense.weight"].T + sd["head_dense.bias"]))
    return h @ sd["tok_emb.weight"].T + sd["head.bias"]


def small(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(family="bert", vocab_size=61, n_layer=3, n_head=2, d_model=16, d_ff=24, max_seq_len=20,
                      bert_rel_buckets=8, norm_eps=EPS, **kw)
    model = build_model(cfg).double().eval()
    with torch.no_grad():  # away from the trivial init values (zero biases, unit gains, zero ELC logits)
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.5 if "layer_weights" in name else 0.1))
    return cfg, model


def masks(B, T):
    """A padding + document + causal mix: (key_padding_mask, doc_ids, causal, masked for the reference)."""
    real = torch.ones(B, T, dtype=torch.bool)
    real[1, T - 4:] = False
    doc = torch.zeros(B, T, dtype=torch.long)
    doc[0, 7:] = 1
    return real, doc


def test_buckets_match_the_reference_and_hand_values():
    from tinylm.models.bert_positions import log_buckets

    for nb, mp in [(32, 512), (32, 256), (8, 20), (16, 100)]:
        assert torch.equal(log_buckets(mp, nb, mp), ref_buckets(mp, nb, mp)), (nb, mp)
    b = log_buckets(512, 32, 512) - 31  # signed bucket of i - j
    # |i - j| < 16 exact; 17 -> 16 + ceil(log(17/16) / log(511/16) * 15) = 17; 100 -> 24; 511 -> 31
    assert [int(b[d, 0]) for d in (0, 1, 15, 16, 17, 100, 511)] == [0, 1, 15, 16, 17, 24, 31]
    assert int(b[0, 100]) == -24 and int(b[0, 511]) == -31 and b.shape == (512, 512)


@pytest.mark.parametrize("case", ["plain", "padding+docs", "causal"])
def test_attention_probabilities_and_output_match_the_reference(case):
    from tinylm import ops

    cfg, model = small()
    B, T, C, H = 2, 13, 16, 2
    x = torch.randn(B, T, C, dtype=torch.float64)
    real, doc = masks(B, T)
    kw = {"plain": {}, "padding+docs": dict(key_padding_mask=real, doc_ids=doc), "causal": dict(causal=True)}[case]
    allowed = ops.attention_mask(T, kw.get("causal", False), kw.get("key_padding_mask"), kw.get("doc_ids"))
    masked = torch.zeros(1, 1, T, T, dtype=torch.bool) if allowed is None else ~allowed
    positions = model._positions(T, "cpu")
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    want, want_probs = ref_attention(sd, "blocks.1.attn.", x, positions["rel"].detach(), ref_buckets(T, 8, 20), masked, H)
    with torch.no_grad():
        got = model.blocks[1].attn(x, positions, **kw)
        # the probabilities themselves: attention of an identity "value" gives the probability rows
        attn = model.blocks[1].attn
        h = F.layer_norm(x, (C,), None, None, EPS)
        q, k = (h @ sd["blocks.1.attn.qk.weight"].T + sd["blocks.1.attn.qk.bias"]).chunk(2, -1)
        qp, kp = attn.qk(positions["rel"]).chunk(2, -1)
        q, k = (t.view(B, T, H, 8).transpose(1, 2) for t in (q, k))
        qp, kp = (t.view(-1, H, 8).transpose(0, 1) for t in (qp, kp))
        eye = torch.eye(T, dtype=torch.float64).expand(B, H, T, T)
        probs = ops.disentangled_attention(q, k, eye, q @ kp.transpose(-1, -2), k @ qp.transpose(-1, -2),
                                           positions["buckets"], 1 / math.sqrt(3 * 8), **kw)
    torch.testing.assert_close(probs, want_probs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_block_matches_the_reference():
    cfg, model = small()
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    positions = model._positions(11, "cpu")
    with torch.no_grad():
        got = model.blocks[2](x, positions)
    a, _ = ref_attention(sd, "blocks.2.attn.", x, positions["rel"], ref_buckets(11, 8, 20),
                         torch.zeros(1, 1, 11, 11, dtype=torch.bool), 2)
    torch.testing.assert_close(got, a + ref_ffn(sd, "blocks.2.mlp.", x + a), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("elc", [True, False], ids=["elc", "ltg"])
def test_model_logits_match_the_reference(elc):
    cfg, model = small(bert_elc=elc)
    ids = torch.randint(5, 61, (2, 17))
    real, doc = masks(2, 17)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    from tinylm import ops

    for kw in ({}, dict(key_padding_mask=real, doc_ids=doc), dict(causal=True, key_padding_mask=real)):
        allowed = ops.attention_mask(17, kw.get("causal", False), kw.get("key_padding_mask"), kw.get("doc_ids"))
        masked = torch.zeros(1, 1, 17, 17, dtype=torch.bool) if allowed is None else ~allowed
        with torch.no_grad():
            got = model(ids, **kw)
        torch.testing.assert_close(got, ref_model(sd, cfg, ids, masked), rtol=1e-9, atol=1e-9)


def test_elc_weights_start_uniform_and_are_learned():
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="bert", vocab_size=61, n_layer=3, n_head=2, d_model=16, d_ff=24, max_seq_len=20,
                                    bert_rel_buckets=8))
    assert [w.tolist() for w in model.layer_weights] == [[0.0], [0.0, 0.0], [0.0, 0.0, 0.0]]  # softmax: uniform
    ids = torch.randint(5, 61, (2, 12))
    model(ids).logsumexp(-1).mean().backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in model.layer_weights[1:])
    assert model.rel_emb.grad is not None and model.rel_emb.grad.abs().sum() > 0  # positions are learned
    assert model.rel_norm.weight.grad.abs().sum() > 0


def test_init_statistics_follow_the_reference():
    torch.manual_seed(0)
    C, L = 256, 4
    model = build_model(ModelConfig(family="bert", vocab_size=4000, n_layer=L, n_head=4, d_model=C, d_ff=512, max_seq_len=64))
    std = math.sqrt(2 / (5 * C))
    # N(0, std) cut at +-2 std has std * sqrt(1 - 4 phi(2) / (2 Phi(2) - 1))
    phi2 = math.exp(-2) / math.sqrt(2 * math.pi)
    trunc = std * math.sqrt(1 - 4 * phi2 / math.erf(2 / math.sqrt(2)))

    def check(w, want):
        w = w.detach().double()
        assert abs(w.std().item() / want - 1) < 0.03, (w.std().item(), want)
        assert w.abs().max().item() <= 2 * want / trunc * std + 1e-7 and abs(w.mean().item()) < 0.05 * want

    check(model.tok_emb.weight, trunc)
    check(model.rel_emb, trunc)
    check(model.head_dense.weight, trunc)
    assert model.head.weight is model.tok_emb.weight and not model.head.bias.any()
    for l, block in enumerate(model.blocks):
        for w in (block.attn.qk.weight, block.attn.v.weight, block.attn.proj.weight):
            check(w, trunc)
        for w in (block.mlp.fc.weight, block.mlp.proj.weight):  # depth scaling of the FFN: sqrt(1 / (2 (l + 1)))
            check(w, trunc * math.sqrt(1 / (2 * (l + 1))))
        assert not block.attn.qk.bias.any() and not block.attn.proj.bias.any() and block.mlp.fc.bias is None
        assert block.attn.norm_out.weight.eq(1).all() and not block.attn.norm_out.bias.any()
    # LayerNorms without affine where the reference has none: only the attention output norms, the
    # relative embedding norm and the decoder bias besides the matrices carry parameters
    vectors = {n for n, p in model.named_parameters() if p.dim() == 1 and "layer_weights" not in n}
    assert vectors == {"rel_norm.weight", "rel_norm.bias", "head_dense.bias", "head.bias"} | {
        f"blocks.{l}.attn.{m}" for l in range(L) for m in ("qk.bias", "v.bias", "proj.bias", "norm_out.weight", "norm_out.bias")}
