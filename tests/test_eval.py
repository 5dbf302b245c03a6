"""Zero-shot evaluation: scorers on hand-built models with known answers, batched scoring against
unbatched loops, every format reader on the shared samples, and `python -m tinylm.eval` end to end."""

import json
import math

import pytest
import torch
import torch.nn as nn
from helpers import ROOT, run_cli, smoke_config

from tinylm.errors import InputError
from tinylm.eval.formats import read_task_file, read_tasks
from tinylm.eval.report import spearman
from tinylm.eval.scoring import causal_scores, encode_scored, judge, masked_scores

SHARED = ROOT.parent / "shared"
SAMPLES = SHARED / "eval_samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/eval_samples is absent")
BOS, PAD, MASK = 2, 0, 4


# --------------------------------------------------------------------------------------------------
# stand-in models


class Bigram(nn.Module):
    """A causal model whose log-probs are a table: logits[b, t] = table[input_ids[b, t]]."""

    causal = True

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table.clone())

    def forward(self, input_ids):
        return self.table[input_ids]


def bigram_table(V=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(V, V, generator=g).log_softmax(-1)


class TinyBidirectional(nn.Module):
    """A masked stand-in: every position sees the (padding-masked) mean of the whole row."""

    causal = False

    def __init__(self, V=20, d=12, T=64):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.pos = nn.Embedding(V, d), nn.Embedding(T, d)
        self.mix, self.head = nn.Linear(d, d), nn.Linear(d, V)

    def forward(self, input_ids, key_padding_mask=None):
        B, T = input_ids.shape
        x = self.emb(input_ids) + self.pos(torch.arange(T))
        keep = (key_padding_mask if key_padding_mask is not None else torch.ones(B, T, dtype=torch.bool)).float()
        ctx = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
        return self.head(torch.tanh(x + self.mix(ctx)[:, None]))


# --------------------------------------------------------------------------------------------------
# causal scoring and verdicts


def test_causal_score_is_the_sum_of_scored_log_probs_with_bos_first():
    table = bigram_table()
    model = Bigram(table)
    ids, scored = [5, 6, 7], [False, True, True]  # a one-token context, then a two-token candidate
    got = causal_scores(model, [(ids, scored), (ids, [True] * 3)], BOS, PAD)
    assert got[0] == pytest.approx(float(table[5, 6] + table[6, 7]), abs=1e-6)
    assert got[1] == pytest.approx(float(table[BOS, 5] + table[5, 6] + table[6, 7]), abs=1e-6)  # first word scored


def test_known_answers_tie_and_nan():
    table = torch.full((8, 8), math.log(1 / 8))
    table[BOS, 5], table[BOS, 6], table[BOS, 7] = math.log(0.5), math.log(0.1), math.log(0.1)
    table = table.log_softmax(-1)
    model = Bigram(table)
    good, bad, twin = ([5], [True]), ([6], [True]), ([7], [True])
    s = causal_scores(model, [good, bad, twin], BOS, PAD)
    assert s[0] > s[1] == s[2]
    assert judge([s[0], s[1]], 0).outcome == "correct" and judge([s[0], s[1]], 0).credit == 1.0
    assert judge([s[0], s[1]], 1).outcome == "wrong" and judge([s[0], s[1]], 1).credit == 0.0
    tie = judge([s[1], s[2]], 0)
    assert (tie.outcome, tie.credit, tie.predicted) == ("tie", 0.0, 1)  # a tie never picks the correct one
    assert judge([s[1], s[2]], 0, tie_credit=0.5).credit == 0.5
    # a NaN anywhere makes the item wrong, even when argmax would have found the correct one
    nan_table = table.clone()
    nan_table[BOS, 6] = float("nan")
    s_nan = causal_scores(Bigram(nan_table), [good, bad], BOS, PAD)
    assert math.isnan(s_nan[1])
    verdict = judge(s_nan, 0)
    assert (verdict.outcome, verdict.credit, verdict.predicted) == ("nonfinite", 0.0, 1)
    assert judge([float("-inf"), -3.0], 1).outcome == "nonfinite"


def _random_texts(n, V, lo, hi, seed=0):
    g = torch.Generator().manual_seed(seed)
    texts = []
    for _ in range(n):
        length = int(torch.randint(lo, hi, (1,), generator=g))
        ids = torch.randint(7, V, (length,), generator=g).tolist()
        scored = [bool(b) for b in torch.rand(length, generator=g) > 0.3]
        scored[-1] = True
        texts.append((ids, scored))
    return texts


def test_causal_batching_and_padding_change_nothing():
    from tinylm.config import ModelConfig
    from tinylm.models import build_model

    torch.manual_seed(0)
    gpt = build_model(ModelConfig(vocab_size=30, n_layer=1, n_head=2, d_model=16, max_seq_len=32)).eval()
    texts = _random_texts(9, 30, 1, 20)
    batched = causal_scores(gpt, texts, BOS, PAD, batch_size=4)
    naive = []
    for ids, scored in texts:  # one text at a time, no padding
        with torch.no_grad():
            lp = gpt(torch.tensor([[BOS, *ids[:-1]]])).log_softmax(-1)[0]
        naive.append(sum(float(lp[j, t]) for j, (t, s) in enumerate(zip(ids, scored)) if s))
    assert batched == pytest.approx(naive, abs=1e-4)


def test_long_texts_are_scored_in_windows_without_losing_tokens():
    table = bigram_table(V=30)
    texts = _random_texts(5, 30, 15, 40, seed=1)
    full = causal_scores(Bigram(table), texts, BOS, PAD)  # no window: the stand-in has no limit
    windowed = causal_scores(Bigram(table), texts, BOS, PAD, max_len=6, batch_size=3)
    assert windowed == pytest.approx(full, abs=1e-5)  # a bigram needs one token of context: exact


# --------------------------------------------------------------------------------------------------
# masked scoring (PLL, PLL-word, MNTP) against unbatched loops


def naive_masked(model, ids, scored, mode, word_starts, prefix=(BOS,), suffix=(3,)):
    full = [*prefix, *ids, *suffix]
    first, stop = len(prefix), len(prefix) + len(ids)
    total = 0.0
    for c, s in enumerate(scored):
        if not s:
            continue
        k = first + c
        row = list(full)
        row[k] = MASK
        if mode == "pll_word":
            j = k + 1
            while j < stop and not word_starts[full[j]]:
                row[j] = MASK
                j += 1
        with torch.no_grad():
            lp = model(torch.tensor([row])).log_softmax(-1)[0]
        total += float(lp[k - 1 if mode == "mntp" else k, full[k]])
    return total


@pytest.mark.parametrize("mode", ["pll", "pll_word", "mntp"])
def test_batched_masked_scores_equal_a_naive_loop(mode):
    model = TinyBidirectional().eval()
    word_starts = [i % 3 == 0 for i in range(20)]  # ids 9, 12, 15, 18 start words; others continue them
    texts = _random_texts(7, 20, 2, 12, seed=2)
    got = masked_scores(model, texts, mode, MASK, PAD, prefix=(BOS,), suffix=(3,), word_starts=word_starts, batch_size=5)
    want = [naive_masked(model, ids, scored, mode, word_starts) for ids, scored in texts]
    assert got == pytest.approx(want, abs=1e-4)


def test_pll_word_masks_the_rest_of_the_word():
    model = TinyBidirectional().eval()
    word_starts = [i in (9, 12) for i in range(20)]
    text = ([9, 10, 11, 12], [True] * 4)  # "▁ab c" "▁d": the first word has three pieces
    pll = masked_scores(model, [text], "pll", MASK, PAD, prefix=(BOS,), suffix=(3,))
    word = masked_scores(model, [text], "pll_word", MASK, PAD, prefix=(BOS,), suffix=(3,), word_starts=word_starts)
    assert pll != pytest.approx(word)
    assert word[0] == pytest.approx(naive_masked(model, *text, "pll_word", word_starts), abs=1e-5)


# --------------------------------------------------------------------------------------------------
# format readers on the shared samples


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@needs_samples
def test_blimp_original_and_filtered():
    for rel, n, id_key in [("blimp/data/anaphor_gender_agreement.jsonl", 1000, "pairID"),
                           ("babylm2025/full_eval/blimp_filtered/anaphor_gender_agreement.jsonl", 971, "pair_id")]:
        tf = read_task_file(SAMPLES / rel, SAMPLES)
        raw = _jsonl(SAMPLES / rel)
        assert tf.task == ("blimp" if id_key == "pairID" else "blimp_filtered") and len(tf.items) == n
        item = tf.items[5]
        assert item.candidates == (raw[5]["sentence_good"], raw[5]["sentence_bad"]) and item.correct == 0
        assert item.context == "" and item.uid == "anaphor_gender_agreement" and item.phenomenon == "anaphor_agreement"
        assert item.item_id == str(raw[5][id_key])


@needs_samples
def test_supplement_keeps_newlines_inside_sentences():
    tf = read_task_file(SAMPLES / "babylm2025/full_eval/supplement_filtered/turn_taking.jsonl", SAMPLES)
    assert tf.task == "supplement" and len(tf.items) == 280
    assert sum("\n" in item.candidates[0] for item in tf.items) == 244
    assert {item.uid for item in tf.items} == {"turn_taking"}


@needs_samples
def test_ewok_rows_come_in_swapped_pairs():
    path = SAMPLES / "babylm2025/full_eval/ewok_filtered/physical-dynamics.jsonl"
    tf, raw = read_task_file(path, SAMPLES), _jsonl(path)
    assert tf.task == "ewok" and len(tf.items) == 120 and {i.uid for i in tf.items} == {"physical-dynamics"}
    a, b = tf.items[0], tf.items[1]
    assert a.context == raw[0]["Context1"] and a.candidates == (" " + raw[0]["Target1"], " " + raw[0]["Target2"])
    assert a.correct == b.correct == 0
    # the second row is the first with contexts and targets swapped: what is right given one
    # context is wrong given the other
    assert b.context == raw[0]["Context2"] and b.candidates == (a.candidates[1], a.candidates[0])


@needs_samples
def test_entity_tracking_and_wug():
    tf = read_task_file(SAMPLES / "babylm2025/full_eval/entity_tracking/regular.jsonl", SAMPLES)
    assert tf.task == "entity_tracking" and len(tf.items) == 300 and len(tf.items[0].candidates) == 5
    assert [i.uid for i in tf.items[::50]] == [f"regular_{n}_ops" for n in range(6)]
    assert tf.items[0].context.endswith("contains ") and tf.items[0].correct == 0
    wug = read_task_file(SAMPLES / "babylm2025/full_eval/wug_adj_nominalization/wug_adj_nominalization.jsonl", SAMPLES)
    assert wug.task == "wug" and len(wug.items) == 200 and wug.items[0].correct is None
    assert wug.items[0].candidates[0].endswith("actignability") and 0 <= wug.items[0].ratio <= 1


@needs_samples
def test_zorro_pairs_are_bad_line_then_good_line():
    path = SAMPLES / "zorro/sentences_babyberta/irregular-verb.txt"
    lines = path.read_text().splitlines()
    tf = read_task_file(path, SAMPLES)
    assert tf.task == "zorro" and len(tf.items) == len(lines) // 2 == 2000
    assert tf.items[0].candidates == (lines[1].strip(), lines[0].strip()) and tf.items[0].correct == 0
    assert tf.items[0].phenomenon == "irregular"


@needs_samples
def test_the_whole_sample_folder_reads_and_non_data_files_are_ignored():
    files, ignored = read_tasks(SAMPLES, max_items=3)
    assert {f.task for f in files} == {"blimp", "blimp_filtered", "supplement", "ewok", "entity_tracking", "wug", "zorro"}
    assert sorted(ignored) == ["README.md", "SHA256SUMS"]
    assert all(len(f.items) == 3 for f in files)
    zorro = [f for f in files if f.task == "zorro"]
    assert len(zorro) == 23 and {"island-effects", "filler-gap"} <= {f.items[0].phenomenon for f in zorro}


def test_unknown_formats_are_rejected_naming_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mystery.jsonl").write_text('{"question": "?", "answer": "!"}\n')
    with pytest.raises(InputError, match=r"mystery\.jsonl is in an unknown format .*keys \['answer', 'question'\]"):
        read_tasks(tmp_path)
    (tmp_path / "sub" / "mystery.jsonl").unlink()
    (tmp_path / "notes.txt").write_text("one line\nanother completely different line\nthird\n")
    with pytest.raises(InputError, match=r"notes\.txt is in an unknown format"):
        read_tasks(tmp_path)


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # scipy.stats.spearmanr


# --------------------------------------------------------------------------------------------------
# a small trained run: the scored span, and `python -m tinylm.eval` end to end


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache_dir):
    from tinylm.train.loop import pretrain

    run = tmp_path_factory.mktemp("eval-run") / "run"
    pretrain(smoke_config(run, cache_dir, "train.steps=8", "train.threads=1"))
    return run


def test_scored_span_follows_the_candidate(run_dir):
    from tinylm.data.tokenizer import Tokenizer

    tok = Tokenizer(run_dir / "tokenizer.model")
    (ids, scored), = encode_scored(tok.sp, "Box 1 contains ", ["the hat."])
    assert tok.decode([i for i, s in zip(ids, scored) if s]) == "the hat."  # "▁the" crosses the boundary
    assert tok.decode([i for i, s in zip(ids, scored) if not s]) == "Box 1 contains"
    (ids, scored), = encode_scored(tok.sp, "", ["A: Hi?\nB: No, I didn't."])
    assert all(scored) and ids == tok.encode(["A: Hi?\nB: No, I didn't."])[0]
    (ids, scored), = encode_scored(tok.sp, "It fell.", [" The ball is down."])
    assert tok.decode([i for i, s in zip(ids, scored) if s]) == "The ball is down."
    (ids, scored), = encode_scored(tok.sp, "a ", ["\u00fc\u00fc"])  # byte-fallback pieces of zero width
    assert tok.decode([i for i, s in zip(ids, scored) if s]) == "\u00fc\u00fc" and not scored[0]


BLIMP_FILES = {  # relative path -> (UID, phenomenon, pair id key)
    "blimp/data/adjunct_island.jsonl": ("adjunct_island", "island_effects", "pairID"),
    "blimp/data/anaphor_gender_agreement.jsonl": ("anaphor_gender_agreement", "anaphor_agreement", "pairID"),
    "blimp/data/determiner_noun_agreement_1.jsonl": ("determiner_noun_agreement_1", "determiner_noun_agreement", "pairID"),
    "babylm2025/full_eval/blimp_filtered/determiner_noun_agreement_1.jsonl":
        ("determiner_noun_agreement_1", "determiner_noun_agreement", "pair_id"),
}


def write_blimp_folder(tasks, n=40):
    """The first n pairs of BLiMP sample files (original and filtered), or made-up pairs in the same
    format when ../shared is absent."""
    for rel, (uid, term, id_key) in BLIMP_FILES.items():
        (tasks / rel).parent.mkdir(parents=True, exist_ok=True)
        if SAMPLES.is_dir():
            lines = (SAMPLES / rel).read_text().splitlines()[:n]
        else:
            lines = [json.dumps({"sentence_good": f"The dog saw {i} cats.", "sentence_bad": f"The dog seen {i} cats.",
                                 "field": "morphology", "linguistics_term": term, "UID": uid,
                                 id_key: str(i) if id_key == "pairID" else i}) for i in range(n)]
        (tasks / rel).write_text("\n".join(lines) + "\n")


def test_python_m_tinylm_eval_end_to_end(run_dir, tmp_path):
    tasks = tmp_path / "tasks"
    write_blimp_folder(tasks)
    (tasks / "README.md").write_text("not data\n")
    out = tmp_path / "out"
    result = run_cli("tinylm.eval", f"ckpt={run_dir}", f"tasks={tasks}", f"out={out}", "threads=1", "batch_size=32")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MACRO" in result.stdout and "island_effects" in result.stdout and "determiner_noun_agreement_1" in result.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["scorer"] == "causal" and results["step"] == 8 and results["ignored_files"] == ["README.md"]
    assert len(results["files"]) == 4 and all(f["items"] == 40 for f in results["files"].values())
    blimp = results["tasks"]["blimp"]
    assert set(blimp["uids"]) == {"adjunct_island", "anaphor_gender_agreement", "determiner_noun_agreement_1"}
    assert blimp["macro"] == pytest.approx(sum(u["accuracy"] for u in blimp["uids"].values()) / 3)
    assert 0.0 <= blimp["macro"] <= 1.0 and blimp["items"] == 120 and "ties" in blimp
    assert results["tasks"]["blimp_filtered"]["items"] == 40
    assert results["dev"]["perplexity"] > 1 and results["dev"]["bits_per_byte"] > 0
    assert len(results["samples"]) == 3
    predictions = json.loads((out / "predictions.json").read_text())
    preds = predictions["blimp"]["determiner_noun_agreement_1"]["predictions"]
    assert len(preds) == 40 and preds[0]["id"] == "determiner_noun_agreement_1_0"
    assert set(predictions) == {"blimp", "blimp_original"}
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "phenomena.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # bad input: one `error:` line naming the file
    (tasks / "odd.jsonl").write_text('{"prompt": "x"}\n')
    bad = run_cli("tinylm.eval", f"ckpt={run_dir}", f"tasks={tasks}", f"out={out}")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert bad.stderr.startswith("error: tasks: ") and "odd.jsonl is in an unknown format" in bad.stderr


def test_masked_scorer_on_a_causal_model_is_refused(run_dir, tmp_path):
    from tinylm.eval.config import EvalConfig
    from tinylm.eval.run import evaluate

    (tmp_path / "t.jsonl").write_text(json.dumps({"sentence_good": "a b", "sentence_bad": "b a", "field": "syntax",
                                                  "UID": "u", "linguistics_term": "p", "pairID": "0"}) + "\n")
    cfg = EvalConfig(ckpt=str(run_dir), tasks=str(tmp_path / "t.jsonl"), out=str(tmp_path / "o"), scorer="pll")
    with pytest.raises(InputError, match="scorer=pll needs a masked model"):
        evaluate(cfg)


class _Chars:
    """A tokenizer whose every token decodes to `width` characters."""

    def __init__(self, width: int):
        self.width = width

    def decode(self, ids):
        return "x" * (self.width * len(ids))


def _dev_shard(monkeypatch, lengths: list[int]) -> tuple[list[int], list[tuple]]:
    """A dev shard of documents with these token counts, as tinylm.data.shards lays them out
    (`<bos> tokens <eos>`); open_shard returns it. (token stream, document rows)"""
    import numpy as np

    from tinylm.data import shards
    from tinylm.data.tokenizer import BOS_ID, EOS_ID

    rows, stream = [], []
    for n in lengths:
        rows.append((len(stream), n, 0, n + 2))
        stream += [BOS_ID, *range(10, 10 + n), EOS_ID]
    shard = shards.Shard(np.asarray(stream, dtype=np.uint16), np.asarray(rows, dtype=np.int64), sum(lengths))
    monkeypatch.setattr(shards, "open_shard", lambda folder, split: shard)
    return stream, rows


def test_dev_perplexity_of_a_doc_masked_run_scores_each_document_alone(monkeypatch):
    """With doc_mask, every (window, document) piece is scored as the model run on that piece alone;
    without, the windows run across the document boundaries."""
    import numpy as np

    from tinylm.config import ModelConfig
    from tinylm.data.tokenizer import BOS_ID
    from tinylm.eval.perplexity import dev_perplexity
    from tinylm.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(family="gpt", vocab_size=40, n_layer=2, n_head=2, d_model=16, max_seq_len=16)).eval()
    lengths = [5, 9, 1, 12]
    stream, rows = _dev_shard(monkeypatch, lengths)
    window = 8
    nll = 0.0
    with torch.no_grad():
        for w in range(0, len(stream) - 1, window):
            inputs, targets = stream[w : w + window], stream[w + 1 : w + window + 1]
            doc = np.searchsorted([r[0] for r in rows], np.arange(w, w + len(inputs)), side="right")
            for d in sorted(set(doc)):  # each document's piece of the window, alone
                piece = np.flatnonzero(doc == d)
                logits = model(torch.tensor([[inputs[i] for i in piece]]))[0]
                for j, i in enumerate(piece):
                    if i < len(targets) and targets[i] != BOS_ID:
                        nll -= torch.log_softmax(logits[j].double(), -1)[targets[i]].item()
    n_targets = sum(1 for t in stream[1:] if t != BOS_ID)
    got = dev_perplexity(model, _Chars(1), "unused", window, batch_size=2, doc_mask=True)
    assert got["doc_mask"] and got["tokens"] == n_targets and got["documents"] == len(lengths)
    assert got["loss"] == pytest.approx(nll / n_targets, rel=1e-5)
    across = dev_perplexity(model, _Chars(1), "unused", window, batch_size=2)
    assert not across["doc_mask"] and abs(across["loss"] - got["loss"]) > 1e-3


def test_dev_perplexity_takes_the_same_documents_whatever_the_tokenizer(monkeypatch):
    """The cap is on bytes of text, not tokens: the same four documents (5, 9, 3, 13 bytes with the
    line break each EOS stands for) as 1-byte or 2-byte tokens give the same documents and bytes."""
    from tinylm.config import ModelConfig
    from tinylm.eval.perplexity import dev_perplexity
    from tinylm.models import build_model

    model = build_model(ModelConfig(family="gpt", vocab_size=40, n_layer=1, n_head=1, d_model=8, max_seq_len=16)).eval()
    for lengths, width in (([4, 8, 2, 12], 1), ([2, 4, 1, 6], 2)):
        _dev_shard(monkeypatch, lengths)
        got = [dev_perplexity(model, _Chars(width), "unused", 8, max_bytes=cap) for cap in (17, 16, 1, 10**6)]
        assert [(g["documents"], g["bytes"]) for g in got] == [(3, 17), (2, 14), (1, 5), (4, 30)]
        assert got[0]["tokens"] == sum(lengths[:3]) + 3  # content tokens and EOSes; BOS targets are not counted
