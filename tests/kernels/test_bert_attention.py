"""The relative-position attention kernel (kernels/bert_attention.py) against a float64 reference
written here: output and the gradients of q, k, v, c2p, p2c, and through the models (BERT with
kernels=triton vs kernels=torch, down to the relative position embeddings).

On CPU the kernels run under TRITON_INTERPRET=1 with small unequal blocks (see
_autotuned), so every shape here crosses block boundaries; shapes stay small (the interpreter runs
one program at a time).
"""

import math
import sys
from pathlib import Path

import pytest
import torch

from tinylm import ops
from tinylm.config import ModelConfig
from tinylm.kernels import bert_attention as rel_mod
from tinylm.kernels.bert_attention import bucket_tables, relative_flash_attention
from tinylm.models import build_model
from tinylm.models.bert_positions import log_bucket_table, log_buckets, t5_bucket_table, t5_buckets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_attention import make_masks  # noqa: E402

TOL = {torch.float32: (2e-5, 2e-5), torch.float16: (5e-3, 5e-3)}
NAMES = ("out", "dq", "dk", "dv", "dc2p", "dp2c")


def reference(q, k, v, c2p, p2c, table, scale, causal, kpm, doc, go):
    """float64, dense: scores = (q k^T + c2p[i, r] + p2c[j, r]) * scale, masked softmax, rows with
    no visible key -> 0; returns the output and the gradients of every tensor input."""
    ins = [t.detach().double().requires_grad_() for t in (q, k, v, c2p) + ((p2c,) if p2c is not None else ())]
    q_, k_, v_, c_ = ins[:4]
    B, H, T, D = q.shape
    R = c2p.shape[-1]
    i = torch.arange(T)
    r = table[(i[:, None] - i[None, :]) + T - 1]  # (T, T) bucket of (query i, key j)
    onehot = torch.nn.functional.one_hot(r, R).double()  # (T, T, R)
    s = q_ @ k_.transpose(-1, -2) + torch.einsum("bhir,ijr->bhij", c_.expand(B, H, T, R), onehot)
    if p2c is not None:
        s = s + torch.einsum("bhjr,ijr->bhij", ins[4], onehot)
    s = s * scale
    visible = torch.ones(B, 1, T, T, dtype=torch.bool)
    if causal:
        visible = visible & (i[:, None] >= i[None, :])
    if kpm is not None:
        visible = visible & kpm.cpu()[:, None, None, :]
    if doc is not None:
        d = doc.cpu()
        visible = visible & (d[:, None, :, None] == d[:, None, None, :])
    s = s.masked_fill(~visible, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)  # all -inf rows: 0
    o = p @ v_
    return (o, *torch.autograd.grad(o, ins, go.double()))


def run(q, k, v, c2p, p2c, table, scale, causal, kpm, doc, go, fn=relative_flash_attention):
    ins = [t.detach().clone().requires_grad_() for t in (q, k, v, c2p) + ((p2c,) if p2c is not None else ())]
    o = fn(ins[0], ins[1], ins[2], ins[3], ins[4] if p2c is not None else None, table, scale, causal, kpm, doc)
    return (o, *torch.autograd.grad(o, ins, go))


def assert_close(got, ref, dtype, names=NAMES):
    atol, rtol = TOL[dtype]
    for name, a, r in zip(names, got, ref):
        assert a.shape == r.shape, name
        a, r = a.double(), r.double()
        assert torch.isfinite(a).all(), f"{name}: non-finite values"
        err = (a - r).abs().max().item()
        assert ((a - r).abs() <= atol + rtol * r.abs()).all(), f"{name}: max abs err {err:.3g} beyond ({atol}, {rtol})"


def make_inputs(B, H, T, D, R, dtype, seed=0, p2c=True):
    g = torch.Generator().manual_seed(seed)
    q, k, v, go = (torch.randn(B, H, T, D, generator=g).to(dtype) for _ in range(4))
    c2p = torch.randn(B, H, T, R, generator=g).to(dtype)
    p2c = torch.randn(B, H, T, R, generator=g).to(dtype) if p2c else None
    return q, k, v, c2p, p2c, go


# (B, H, T, D, n_buckets, causal, masks): T = 1, T past one block and not a multiple of any block,
# head dims that are not powers of two, R = 7 (most distances share log buckets) and R = 63 (the
# shipped configs: every distance < 16 has its own), every mask kind (left padding long enough
# that the first causal rows see no key; documents with boundaries inside rows; ids in random order).
CASES = [
    (1, 1, 1, 16, 4, True, "none"),
    (2, 1, 37, 16, 4, False, "none"),
    (1, 2, 45, 24, 32, True, "none"),
    (2, 1, 50, 16, 32, False, "pad+doc"),
    (2, 1, 50, 16, 8, True, "pad+doc"),
    (2, 1, 40, 32, 32, True, "pad+mixdoc"),
]


def _id(c):
    B, H, T, D, nb, causal, kind = c
    return f"B{B}H{H}T{T}D{D}R{2 * nb - 1}-{'causal' if causal else 'bidir'}-{kind}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matches_float64_reference(case):
    B, H, T, D, nb, causal, kind = case
    R = 2 * nb - 1
    q, k, v, c2p, p2c, go = make_inputs(B, H, T, D, R, torch.float32)
    kpm, doc = make_masks(kind, B, T, "cpu")
    table = log_bucket_table(T, nb, max(2 * nb, T // 2))  # a short max_position: far distances clamp
    scale = 1 / math.sqrt(3 * D)
    got = run(q, k, v, c2p, p2c, table, scale, causal, kpm, doc, go)
    assert_close(got, reference(q, k, v, c2p, p2c, table, scale, causal, kpm, doc, go), torch.float32)


# (fwd, dkdv, dq) (BLOCK_M, BLOCK_N): the smallest tiles, GPU-like ones, and the interpreter's
# unequal shapes the other way round; the segment sums see rows that start mid-bucket and buckets
# that span several tiles.
BLOCKS = [((16, 16), (16, 16), (16, 16)), ((64, 64), (64, 64), (64, 32)), ((16, 32), (32, 16), (16, 32))]


@pytest.mark.parametrize("blocks", BLOCKS, ids=["16", "gpu-like", "swapped"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_block_sizes_do_not_matter(blocks, causal, monkeypatch):
    import triton

    raw = (rel_mod._rel_fwd_kernel, rel_mod._rel_bwd_dkdv_kernel, rel_mod._rel_bwd_dq_kernel)
    for name, kernel, (bm, bn) in zip(("_fwd_kernel", "_dkdv_kernel", "_dq_kernel"), raw, blocks):
        config = triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=4, num_stages=1)
        monkeypatch.setattr(rel_mod, name, triton.autotune([config], key=rel_mod._REL_KEY)(kernel))
    B, H, T, D, nb = 2, 1, 70, 16, 8
    q, k, v, c2p, p2c, go = make_inputs(B, H, T, D, 2 * nb - 1, torch.float32, seed=6)
    kpm, doc = make_masks("pad+doc", B, T, "cpu", seed=6)
    table = log_bucket_table(T, nb, 40)
    got = run(q, k, v, c2p, p2c, table, 0.3, causal, kpm, doc, go)
    assert_close(got, reference(q, k, v, c2p, p2c, table, 0.3, causal, kpm, doc, go), torch.float32)


def test_invisible_blocks_are_never_read():
    """Block skipping as in attention.py: keys 64.. are padding filled with NaN (k, v and their
    position rows p2c); every key block there holds no real key, so it must never be loaded."""
    B, H, T, D, nb = 1, 1, 128, 16, 8
    q, k, v, c2p, p2c, go = make_inputs(B, H, T, D, 2 * nb - 1, torch.float32, seed=7)
    kpm = torch.ones(B, T, dtype=torch.bool)
    kpm[:, 64:] = False
    doc = (torch.arange(T) >= 64).long()[None]
    table = log_bucket_table(T, nb, 64)
    ref = reference(q, k, v, c2p, p2c, table, 0.3, False, kpm, doc, go)
    k_bad, v_bad, p2c_bad = k.clone(), v.clone(), p2c.clone()
    for t in (k_bad, v_bad, p2c_bad):
        t[..., 64:, :] = float("nan")
    got = run(q, k_bad, v_bad, c2p, p2c_bad, table, 0.3, False, kpm, doc, go)
    assert_close(got, ref, torch.float32)


def test_fp16_inputs():
    B, H, T, D, nb = 1, 2, 33, 16, 8
    q, k, v, c2p, p2c, go = make_inputs(B, H, T, D, 2 * nb - 1, torch.float16, seed=1)
    kpm, doc = make_masks("pad", B, T, "cpu")
    table = log_bucket_table(T, nb, 64)
    got = run(q, k, v, c2p, p2c, table, 0.2, True, kpm, doc, go)
    for t in got:
        assert t.dtype == torch.float16
    assert_close(got, reference(q, k, v, c2p, p2c, table, 0.2, True, kpm, doc, go), torch.float16)


def test_per_head_bucket_bias_without_p2c():
    """bert_arch=simple's form: c2p = bias / scale broadcast (1, H, 1, R), no p2c, T5 buckets; the
    gradient comes back summed into the bias's own shape."""
    B, H, T, D, nb = 2, 2, 41, 16, 8
    q, k, v, _, _, go = make_inputs(B, H, T, D, nb, torch.float32, seed=2)
    bias = torch.randn(1, H, 1, nb, generator=torch.Generator().manual_seed(3))
    kpm, doc = make_masks("doc", B, T, "cpu", seed=2)
    table = t5_bucket_table(T, nb, 16)
    got = run(q, k, v, bias, None, table, 0.25, False, kpm, doc, go)
    ref = reference(q, k, v, bias, None, table, 0.25, False, kpm, doc, go)
    assert got[4].shape == bias.shape
    assert_close(got, ref, torch.float32, names=NAMES[:5])


def test_rows_with_no_visible_key_give_zeros():
    """A batch row with no real token and left-padded causal rows: output 0 and zero gradients,
    whatever their position terms (large ones included)."""
    B, H, T, D, nb = 2, 1, 24, 16, 4
    q, k, v, c2p, p2c, go = make_inputs(B, H, T, D, 2 * nb - 1, torch.float32, seed=4)
    c2p, p2c = c2p * 30, p2c * 30
    kpm = torch.ones(B, T, dtype=torch.bool)
    kpm[0] = False
    kpm[1, :7] = False
    table = log_bucket_table(T, nb, 16)
    got = run(q, k, v, c2p, p2c, table, 0.3, True, kpm, None, go)
    for t in got:
        assert torch.equal(t[0], torch.zeros_like(t[0]))
    for t in (got[0], got[1], got[4]):  # out, dq, dc2p of the unseeing query rows
        assert torch.equal(t[1, :, :7], torch.zeros_like(t[1, :, :7]))
    for t in (got[2], got[3], got[5]):  # dk, dv, dp2c of the padding keys
        assert torch.equal(t[1, :, :7], torch.zeros_like(t[1, :, :7]))
    assert_close(got, reference(q, k, v, c2p, p2c, table, 0.3, True, kpm, None, go), torch.float32)


def test_dispatch():
    """ops.disentangled_attention: backend="triton" is the kernel (bitwise); "auto" on CPU and
    dropout_p > 0 (which the kernel lacks) take the PyTorch reference."""
    B, H, T, D, nb = 1, 2, 30, 16, 4
    q, k, v, c2p, p2c, go = make_inputs(B, H, T, D, 2 * nb - 1, torch.float32, seed=5)
    table = log_bucket_table(T, nb, 16)
    direct = run(q, k, v, c2p, p2c, table, 0.3, True, None, None, go)
    via = run(q, k, v, c2p, p2c, table, 0.3, True, None, None, go,
              fn=lambda *a: ops.disentangled_attention(*a, backend="triton"))
    for a, b in zip(direct, via):
        assert torch.equal(a, b)
    ref = ops.disentangled_attention_reference(q, k, v, c2p, p2c, table, 0.3, True)
    assert torch.equal(ops.disentangled_attention(q, k, v, c2p, p2c, table, 0.3, True), ref)
    torch.manual_seed(0)
    dropped = ops.disentangled_attention(q, k, v, c2p, p2c, table, 0.3, True, dropout_p=0.5, backend="triton")
    torch.manual_seed(0)
    assert torch.equal(dropped, ops.disentangled_attention_reference(q, k, v, c2p, p2c, table, 0.3, True, dropout_p=0.5))


def test_bucket_tables_match_the_matrices_and_are_intervals():
    """The (2T - 1,) tables list the (T, T) matrices' buckets by distance, and every bucket covers
    one interval of distances (what the backward's segment sums need), for the shipped and
    awkward settings; a table that breaks the interval rule is refused."""
    for T in (1, 2, 17, 130, 512):
        for nb, mp in ((32, 512), (32, 256), (4, 20), (8, 16)):
            table = log_bucket_table(T, nb, mp)
            assert torch.equal(ops.relative_index(table, T), log_buckets(T, nb, mp))
            padded, dlo, dhi = bucket_tables(table, 2 * nb - 1)
            d = torch.arange(-(T - 1), T)
            for r in table.unique().tolist():
                assert torch.equal(d[table == r], torch.arange(int(dlo[r]), int(dhi[r]) + 1))
            assert torch.equal(padded[rel_mod.BKT_PAD:-rel_mod.BKT_PAD], table.int())
        for nb, md in ((32, 128), (8, 16)):
            table = t5_bucket_table(T, nb, md)
            assert torch.equal(ops.relative_index(table, T), t5_buckets(T, nb, md))
            bucket_tables(table, nb)
    with pytest.raises(RuntimeError, match="one interval"):
        bucket_tables(torch.tensor([0, 1, 0]), 2)
    with pytest.raises(RuntimeError, match=r"\[0, R\)"):
        bucket_tables(torch.tensor([0, 1, 2]), 2)


# ---- the models through the kernel ----


@pytest.fixture
def backend_restored():
    yield
    ops.set_default_backend("auto")


@pytest.mark.parametrize("arch", ["ltg", "simple"])
def test_bert_logits_and_every_grad_match_torch_backend(arch, backend_restored):
    """BERT (relative positions) forward + backward with kernels=triton equals kernels=torch:
    logits and the gradient of every parameter, the relative position embeddings / bias included
    (they are reached only through c2p and p2c), with padding, documents and causal rows."""
    torch.manual_seed(0)
    cfg = ModelConfig(family="bert", vocab_size=50, n_layer=1, n_head=2, d_model=32, d_ff=64, max_seq_len=64,
                      bert_arch=arch, bert_positions="relative", bert_rel_buckets=8, bert_rel_max_distance=16)
    model = build_model(cfg)
    if arch == "simple":  # zero at init: make the bias matter
        torch.nn.init.normal_(model.rel_bias.weight, std=0.5)
    B, T = 2, 29
    ids = torch.randint(0, 50, (B, T))
    kpm = torch.ones(B, T, dtype=torch.bool)
    kpm[1, 20:] = False
    doc = torch.zeros(B, T, dtype=torch.long)
    doc[0, 12:] = 1
    out = {}
    for backend in ("torch", "triton"):
        ops.set_default_backend(backend)
        model.zero_grad()
        logits = model(ids, key_padding_mask=kpm, doc_ids=doc, causal=(arch == "ltg"))
        torch.nn.functional.cross_entropy(logits.view(-1, 50), ids.view(-1)).backward()
        out[backend] = (logits.detach().clone(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(out["triton"][0], out["torch"][0], rtol=1e-4, atol=1e-5)
    pos = "rel_emb" if arch == "ltg" else "rel_bias.weight"
    assert out["torch"][1][pos].abs().max() > 0
    for name, grad in out["torch"][1].items():
        torch.testing.assert_close(out["triton"][1][name], grad, rtol=1e-3, atol=1e-5, msg=name)
