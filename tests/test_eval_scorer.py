"""scorer=auto follows the objective a run trained with, for every family x objective; on a model
whose right and wrong readings differ, the chosen scorer gets every item right and the wrong one
none; dev perplexity for every model that runs causally; the eval window is the training window."""

import json
import shutil

import pytest
import torch
import torch.nn as nn

from tinylm.config import DataConfig, ModelConfig, TokenizerConfig
from tinylm.data.tokenizer import MASK_ID
from tinylm.eval.config import EvalConfig
from tinylm.eval.run import choose_scorer, evaluate
from tinylm.models import build_model
from tinylm.train.positions import run_objective

COMBOS = [("gpt", "clm", "causal"), ("gpt", "distill", "causal"), ("mlstm", "clm", "causal"),
          ("mlstm", "distill", "causal"), ("bert", "clm", "causal"), ("bert", "distill", "causal"),
          ("bert", "mlm", "pll"), ("bert", "hybrid", "mntp")]


def write_config(run_dir, objective, **train):
    train = {"seq_len": 32, "steps": 8, **train}
    lines = ["objective:", f"  name: {objective}", "train:"] + [f"  {k}: {v}" for k, v in train.items()]
    lines += ["curriculum:", "  name: none"]
    (run_dir / "config.yaml").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("family,objective,scorer", COMBOS)
def test_auto_picks_the_scorer_of_the_training_objective(family, objective, scorer, tmp_path):
    model = build_model(ModelConfig(family=family, vocab_size=64, n_layer=1, n_head=2, d_model=16, max_seq_len=32))
    write_config(tmp_path, objective)
    assert run_objective(tmp_path, family) == objective
    assert choose_scorer("auto", model, run_objective(tmp_path, family)) == scorer


def test_without_a_config_the_family_default_is_used(tmp_path):
    assert run_objective(tmp_path, "bert") == "mlm" and run_objective(tmp_path, "gpt") == "clm"


# --------------------------------------------------------------------------------------------------
# a constructed GPT-BERT: the logits at position i depend on the token at i only


class PositionBigram(nn.Module):
    """logits[b, i] = table[input_ids[b, i]], whatever the mask or direction. Read at position k - 1
    (MNTP, causal) it is the bigram model `table`; read at a masked position k (PLL) it sees only
    <mask> and gives table[<mask>], the same row for every token: the wrong reading."""

    causal = False

    def __init__(self, table: torch.Tensor, max_seq_len: int = 64):
        super().__init__()
        self.table = nn.Parameter(table.clone())
        self.cfg = ModelConfig(family="bert", vocab_size=table.shape[0], max_seq_len=max_seq_len)

    def forward(self, input_ids, key_padding_mask=None, causal=None):
        return self.table[input_ids]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, cache_dir):
    from tinylm.data.pipeline import prepare_data

    return prepare_data(DataConfig(default_words=20000, cache_dir=str(cache_dir)), TokenizerConfig(vocab_size=512))


def single_piece_words(tok, n):
    """n words that sentencepiece encodes as one piece each ("▁word")."""
    words = []
    for i in range(tok.vocab_size):
        piece = tok.sp.id_to_piece(i)
        if piece.startswith("\u2581") and piece[1:].isalpha() and tok.encode([piece[1:]])[0] == [i]:
            words.append((piece[1:], i))
    assert len(words) >= n, words
    return words[:n]


def constructed_run(tmp_path, prepared, objective, n_items=5):
    """A run directory (tokenizer, data report, config with `objective`), a PositionBigram whose
    bigram (k - 1) reading prefers "a b" over "a c" and whose <mask> reading prefers "a c", and a
    BLiMP file of those pairs."""
    tok = prepared.tokenizer
    words = single_piece_words(tok, 3 * n_items)
    V = tok.vocab_size
    g = torch.Generator().manual_seed(0)
    table = 0.1 * torch.randn(V, V, generator=g)
    lines = []
    for i in range(n_items):
        (a, ia), (b, ib), (c, ic) = words[3 * i : 3 * i + 3]
        table[ia, ib] += 5.0  # after "a", "b" is likely ...
        table[MASK_ID, ic] += 5.0  # ... but a lone <mask> says "c"
        table[ia, ic] -= 5.0
        table[MASK_ID, ib] -= 5.0
        lines.append(json.dumps({"sentence_good": f"{a} {b}", "sentence_bad": f"{a} {c}", "field": "syntax",
                                 "linguistics_term": "made_up", "UID": "bigram_pairs", "pairID": str(i)}))
        assert tok.encode([f"{a} {b}"])[0] == [ia, ib]
    table = table.log_softmax(-1)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(tok.model_file, run / "tokenizer.model")
    (run / "data_report.json").write_text(json.dumps({"shards": str(prepared.shard_dir)}))
    write_config(run, objective, seq_len=32)
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return run, PositionBigram(table)


def run_eval(monkeypatch, run, model, tok, tmp_path, tasks=None, **options):
    import tinylm.train.checkpoint as checkpoint

    state = {"step": 8, "tokens_seen": 0, "words_seen": 0, "model_config": {"family": "bert", "max_seq_len": 64}}
    monkeypatch.setattr(checkpoint, "load_trained", lambda path, device: (model, tok, state))
    cfg = EvalConfig(ckpt=str(run), tasks=str(tasks or tmp_path / "pairs.jsonl"), out=str(tmp_path / "out"), device="cpu",
                     samples=False, **options)
    return evaluate(cfg)



def test_hybrid_is_scored_with_mntp_and_causal_beside_and_gets_dev_perplexity(tmp_path, prepared, monkeypatch):
    run, model = constructed_run(tmp_path, prepared, "hybrid")
    results = run_eval(monkeypatch, run, model, prepared.tokenizer, tmp_path)
    assert results["objective"] == "hybrid" and results["scorer"] == "mntp" and results["babylm_backend"] == "mntp"
    assert results["tasks"]["blimp"]["macro"] == 1.0  # the right reading
    assert results["causal_beside"]["summary"]["blimp"] == 1.0  # position k - 1 read causally: the same bigram
    assert results["dev"]["perplexity"] > 1  # a hybrid runs causally: dev perplexity is computed
    assert results["window"] == {"tokens": 32, "source": "the run's training seq_len (longest stage reached)"}
    wrong = run_eval(monkeypatch, run, model, prepared.tokenizer, tmp_path, scorer="pll")
    assert wrong["tasks"]["blimp"]["macro"] == 0.0  # the wrong reading gets every pair wrong


def test_mlm_run_is_scored_with_pll_and_no_dev_perplexity(tmp_path, prepared, monkeypatch):
    run, model = constructed_run(tmp_path, prepared, "mlm")
    results = run_eval(monkeypatch, run, model, prepared.tokenizer, tmp_path)
    assert results["scorer"] == "pll" and results["babylm_backend"] == "mlm" and "causal_beside" not in results
    assert results["tasks"]["blimp"]["macro"] == 0.0  # the same weights, read as an MLM (here: wrongly)
    assert "skipped" in results["dev"] and "objective mlm" in results["dev"]["skipped"]


def test_eval_window_follows_the_longest_seq_len_stage_reached(tmp_path, prepared, monkeypatch):
    from tinylm.eval.run import training_window

    run = tmp_path
    (run / "config.yaml").write_text("train:\n  seq_len: 32\n  steps: 9\ncurriculum:\n  name: custom\n"
                                     "  seq_lens: [8, 16, 32]\n  seq_len_by: step\n")
    assert training_window(run, {"step": 3}) == 8  # steps 0-2 trained at 8
    assert training_window(run, {"step": 4}) == 16
    assert training_window(run, {"step": 9}) == 32
    assert training_window(tmp_path / "absent", {"step": 9}) == 0


def test_eval_from_another_directory_finds_the_runs_relative_data(tmp_path, prepared, monkeypatch):
    """data.cache_dir is relative by default: the data report records .cache/... relative to where
    training ran. Evaluated from elsewhere, the shards are found from the run directory upwards."""
    project = tmp_path / "project"
    (project / ".cache").mkdir(parents=True)
    (project / ".cache" / "data").symlink_to(prepared.shard_dir)
    run, model = constructed_run(tmp_path, prepared, "hybrid")
    moved = project / "runs" / "a"
    moved.parent.mkdir()
    shutil.move(str(run), moved)
    (moved / "data_report.json").write_text(json.dumps({"shards": ".cache/data"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    results = run_eval(monkeypatch, moved, model, prepared.tokenizer, tmp_path)
    assert results["dev"]["perplexity"] > 1 and results["dev"]["shards"] == str(project / ".cache" / "data")
    (moved / "data_report.json").write_text(json.dumps({"shards": ".cache/gone"}))
    results = run_eval(monkeypatch, moved, model, prepared.tokenizer, tmp_path)
    assert "not found from here or from" in results["dev"]["skipped"]


def test_predictions_and_summary_use_the_babylm_pipeline_names_for_wug(tmp_path, prepared, monkeypatch):
    """collate_preds.py of babylm/evaluation-pipeline-2025 reads wug_adj/wug_adj_nominalization into
    "wug_adj" (and wug_past_tense into "wug_past"), each holding its file's UID, with id, pred and prob."""
    from tinylm.eval.report import spearman

    run, model = constructed_run(tmp_path, prepared, "hybrid")
    words = [w for w, _ in single_piece_words(prepared.tokenizer, 12)]
    tasks = tmp_path / "tasks"
    for stem in ("wug_adj_nominalization", "wug_past_tense"):
        (tasks / stem).mkdir(parents=True)
        rows = [json.dumps({"sentences": f"{words[i]} {words[i + 1]}\t{words[i]} {words[i + 2]}", "ratio": i / 10})
                for i in range(8)]
        (tasks / stem / f"{stem}.jsonl").write_text("\n".join(rows) + "\n")
    results = run_eval(monkeypatch, run, model, prepared.tokenizer, tmp_path, tasks=tasks)
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert set(predictions) == {"wug_adj", "wug_past"}
    assert set(predictions["wug_adj"]) == {"wug_adj_nominalization"} and set(predictions["wug_past"]) == {"wug_past_tense"}
    rows = predictions["wug_adj"]["wug_adj_nominalization"]["predictions"]
    assert [r["id"] for r in rows] == [f"wug_adj_nominalization_{i}" for i in range(8)] and set(rows[0]) == {"id", "pred", "prob"}
    assert set(results["summary"]) == {"wug_adj", "wug_past"}
    # the pipeline's score: Spearman's rho of the predictions' prob with the human ratio
    assert results["summary"]["wug_adj"] == pytest.approx(spearman([r["prob"] for r in rows], [i / 10 for i in range(8)]))
