"""train.doc_mask=true: the loaders' document ids against the shard index, every family keeping a
document to itself (a window spanning two documents gives each the logits it gets alone), every
objective passing the ids to every model call, and a doc-masked run resuming bit for bit."""

import numpy as np
import pytest
import torch
from helpers import full_and_resumed

from tinylm.config import CurriculumConfig, ModelConfig, ObjectiveConfig
from tinylm.data.loader import TokenLoader, dev_windows, document_ids, make_loader
from tinylm.data.shards import Shard
from tinylm.data.tokenizer import BOS_ID, EOS_ID
from tinylm.models import build_model
from tinylm.train.masking import N_SPECIAL
from tinylm.train.objectives import CLASSES

V = 300


def toy_shard(n_docs=60, seed=0) -> Shard:
    """Documents of 3..40 tokens laid out as the shards hold them: <bos> tokens... <eos>."""
    rng = np.random.default_rng(seed)
    docs, rows, start = [], [], 0
    for source in range(n_docs):
        n = int(rng.integers(1, 39))
        docs.append(np.concatenate([[BOS_ID], rng.integers(N_SPECIAL, V, n), [EOS_ID]]))
        rows.append((start, n, source % 3, n + 2))
        start += n + 2
    index = np.asarray(rows, dtype=np.int64)
    features = rng.random((n_docs, 2)).astype(np.float32)
    return Shard(np.concatenate(docs).astype(np.uint16), index, int(index[:, 1].sum()), features, ["a", "b", "c"])


def doc_of(shard: Shard, position: int) -> int:
    """The shard index row whose span [start, start + tokens) holds the position (brute force)."""
    hits = [d for d, (s, _, _, n) in enumerate(shard.docs) if s <= position < s + n]
    assert len(hits) == 1
    return hits[0]


def check_against_index(shard: Shard, batch) -> None:
    """Each run of equal ids in a window is a stretch of that document's tokens per the shard index
    (a run after the first starts at the document's <bos>, a run before the last ends at its <eos>):
    the windows of an ordered curriculum join documents that are not neighbours in the shard."""
    tokens = shard.tokens.astype(np.int64)
    for row, ids in zip(batch.input_ids.numpy(), batch.doc_ids.numpy()):
        cuts = [0, *(np.flatnonzero(np.diff(ids)) + 1).tolist(), len(row)]
        for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
            start, _, _, n = shard.docs[ids[a]]
            doc = tokens[start : start + n]
            offsets = [o for o in range(n - (b - a) + 1) if np.array_equal(doc[o : o + b - a], row[a:b])]
            assert offsets, f"tokens {row[a:b]} are not in document {ids[a]}"
            if k > 0:
                assert offsets[0] == 0 and row[a] == BOS_ID
            if k < len(cuts) - 2:
                assert offsets[-1] == n - (b - a) and row[b - 1] == EOS_ID


def test_document_ids_follow_the_index():
    shard = toy_shard()
    pos = np.arange(len(shard.tokens))
    assert document_ids(shard.docs[:, 0], pos).tolist() == [doc_of(shard, p) for p in pos]


def test_token_loader_ids_match_the_shard_and_do_not_change_the_tokens():
    shard = toy_shard()
    plain = TokenLoader(shard.tokens, 16, 4, seed=3, word_counts=np.ones(len(shard.tokens), np.uint8))
    masked = TokenLoader(shard.tokens, 16, 4, seed=3, word_counts=np.ones(len(shard.tokens), np.uint8),
                         doc_starts=shard.docs[:, 0])
    spans = 0
    for _ in range(6):
        a, b = plain.next_batch(), masked.next_batch()
        assert a.doc_ids is None and torch.equal(a.input_ids, b.input_ids) and torch.equal(a.targets, b.targets)
        assert b.doc_ids.shape == b.input_ids.shape and b.doc_ids.dtype == torch.int64
        check_against_index(shard, b)
        spans += int((b.doc_ids[:, 1:] != b.doc_ids[:, :-1]).any(dim=1).sum())
    assert spans > 0  # windows do span documents
    # resuming from the state gives the same ids (they follow from the positions served)
    again = TokenLoader(shard.tokens, 16, 4, seed=3, word_counts=np.ones(len(shard.tokens), np.uint8),
                         doc_starts=shard.docs[:, 0])
    again.load_state_dict(masked.state_dict())
    assert torch.equal(again.next_batch().doc_ids, masked.next_batch().doc_ids)


@pytest.mark.parametrize("overrides", [dict(name="difficulty", order="difficulty", score="length"),
                                       dict(name="buckets", buckets=True, bucket_min_len=4),
                                       dict(name="seq_len", seq_lens=[8, 16])])
def test_curriculum_loader_ids_match_the_shard(overrides):
    shard = toy_shard()
    loader = make_loader(shard, CurriculumConfig(**overrides), 16, 4, 5, np.ones(V, bool), steps=10, doc_mask=True)
    for _ in range(4):
        check_against_index(shard, loader.next_batch())


def test_dev_windows_carry_ids():
    shard = toy_shard()
    batches, ids = dev_windows(shard.tokens, 16, 2, 3, shard.docs[:, 0])
    assert len(batches) == len(ids) and all(b.shape[0] == i.shape[0] for b, i in zip(batches, ids))
    for rows, d in zip(batches, ids):
        for r, di in zip(rows.numpy(), d.numpy()):
            p = [q for q in range(0, len(shard.tokens), 16) if np.array_equal(shard.tokens[q : q + 17], r)][0]
            assert di.tolist() == [doc_of(shard, p + t) for t in range(16)]
    assert dev_windows(shard.tokens, 16, 2, 3)[1] is None


# --------------------------------------------------------------------------------------------------
# models: a window spanning two documents = each document run alone

FAMILIES = {
    "gpt": dict(family="gpt"),
    "bert_relative": dict(family="bert"),
    "bert_rotary": dict(family="bert", bert_positions="rotary"),
    "mlstm_chunkwise": dict(family="mlstm", mlstm_form="chunkwise", mlstm_chunk_size=8, mlstm_swa_every=2,
                            mlstm_swa_window=6),
    "mlstm_parallel": dict(family="mlstm", mlstm_form="parallel", mlstm_swa_every=2, mlstm_swa_window=6),
    "mlstm_recurrent": dict(family="mlstm", mlstm_form="recurrent", mlstm_swa_every=2, mlstm_swa_window=6),
}


def two_documents(T=24, cut=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(N_SPECIAL, V, (1, T), generator=g)
    ids[0, cut - 1], ids[0, cut] = EOS_ID, BOS_ID
    doc = torch.zeros(1, T, dtype=torch.long)
    doc[0, cut:] = 7  # any distinct id: the loader's are shard indices
    return ids, doc, cut


@pytest.mark.parametrize("name,causal", [(n, True) for n in FAMILIES] + [(n, False) for n in FAMILIES if "bert" in n])
def test_each_document_gets_its_own_logits(name, causal):
    cfg = ModelConfig(vocab_size=V, n_layer=4, n_head=2, d_model=32, max_seq_len=64, **FAMILIES[name])
    torch.manual_seed(0)
    model = build_model(cfg).double().eval()
    kw = {} if model.causal else {"causal": causal}
    ids, doc, cut = two_documents()
    with torch.no_grad():
        both = model(ids, doc_ids=doc, **kw)
        first, second = model(ids[:, :cut], **kw), model(ids[:, cut:], **kw)
        unmasked = model(ids, **kw)
    # float64 throughout, except rotary tables built in float32 (~1e-8 apart at other offsets)
    torch.testing.assert_close(both[:, cut:], second, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(both[:, :cut], first, rtol=1e-6, atol=1e-6)
    # and without the ids the second document does see the first (the test can fail)
    assert (unmasked[:, cut:] - second).abs().max() > 1e-4


# --------------------------------------------------------------------------------------------------
# objectives pass the ids to every call


class Recorder(torch.nn.Module):
    """A model that records the doc_ids of each call (and returns logits that depend on the input)."""

    def __init__(self, causal):
        super().__init__()
        self.causal = causal
        self.emb = torch.nn.Embedding(V, V)
        self.calls = []

    def forward(self, input_ids, key_padding_mask=None, doc_ids=None, causal=False):
        self.calls.append(None if doc_ids is None else doc_ids.clone())
        return self.emb(input_ids)


@pytest.mark.parametrize("name,causal_student", [("clm", True), ("mlm", False), ("hybrid", False), ("distill", True)])
def test_objectives_pass_doc_ids_to_student_and_teachers(name, causal_student):
    student, teacher = Recorder(causal_student), Recorder(causal_student)
    cfg = ObjectiveConfig(name=name, teachers=["t"] if name == "distill" else [])
    obj = CLASSES[name](cfg, student, V, 10, 0, torch.device("cpu"), teachers=[teacher])
    ids, _, _ = two_documents()
    ids = ids.repeat(4, 1)
    doc = torch.arange(4)[:, None] * 100 + torch.arange(24)[None, :] // 10  # distinct per row and segment
    obj.train_loss(student, ids, torch.roll(ids, -1, 1), step=0, doc_ids=doc)
    obj.evaluate(student, [torch.cat([ids, ids[:, :1]], 1)], torch.no_grad, doc_ids=[doc])
    assert student.calls and teacher.calls
    for calls in (student.calls, teacher.calls):
        assert all(c is not None for c in calls)
        # each call got the ids of exactly the rows it ran (hybrid splits the batch by rows)
        assert all(any(torch.equal(c, doc[i : i + len(c)]) for i in range(4)) for c in calls)
    rows = sorted(len(c) for c in student.calls)
    assert sum(rows[:2]) == 4 if name == "hybrid" else rows[0] == 4


# --------------------------------------------------------------------------------------------------
# end to end: a doc-masked run resumes bit for bit


def test_doc_masked_run_resumes_bit_exact(tmp_path, cache_dir, monkeypatch):
    overrides = ("train.doc_mask=true", "train.steps=8", "train.ckpt_every=4", "train.log_every=2",
                 "train.eval_every=4", "train.milestones=false", "objective=hybrid", "model=bert_tiny")
    full, resumed, a, b = full_and_resumed(tmp_path, cache_dir, monkeypatch, overrides, at_step=4)
    assert resumed["final_dev_loss"] == full["final_dev_loss"]
    assert a == b and any("dev_mntp_loss" in r for r in a)


@pytest.mark.parametrize("name,objective,head", [("gpt", "clm", "causal"), ("mlstm_chunkwise", "clm", "causal"),
                                                 ("bert_relative", "hybrid", "causal"), ("bert_rotary", "mlm", "masked")])
def test_the_export_accepts_doc_ids_like_the_native_model(name, objective, head):
    from dataclasses import asdict

    from tinylm.export.hf import to_hf_model

    cfg = ModelConfig(vocab_size=V, n_layer=2, n_head=2, d_model=32, max_seq_len=64, **FAMILIES[name])
    torch.manual_seed(0)
    native = build_model(cfg).eval()
    hf = to_hf_model(native, asdict(cfg), objective, head)
    ids, doc, _ = two_documents()
    ids, doc = torch.cat([ids, ids.flip(1)]), torch.cat([doc, torch.tensor([[1] * 5 + [2] * 19])])
    kw = {"causal": True} if head == "causal" and cfg.family == "bert" else {}
    with torch.no_grad():
        want = native(ids, doc_ids=doc, **kw)
        got = hf(input_ids=ids, doc_ids=doc, output_hidden_states=True)
    torch.testing.assert_close(got.logits, want, rtol=1e-4, atol=1e-4)
    assert got.hidden_states[-1].shape == (2, 24, 32)
