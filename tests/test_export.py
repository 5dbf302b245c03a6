"""HF export: the folder loads offline through the Auto classes with trust_remote_code, its logits
equal the native model's, its tokenizer's ids equal sentencepiece's, and padding side does not
change a sentence's score; for every family (GPT, BERT, GPT-BERT, mLSTM) and architecture option."""

import ast
import json

import pytest
import torch
from helpers import ROOT, run_cli, smoke_config

from tinylm.errors import InputError

transformers = pytest.importorskip("transformers")
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor, AutoTokenizer  # noqa: E402

SHARED = ROOT.parent / "shared"
CORPORA = SHARED / "corpora"
SAMPLES = SHARED / "eval_samples"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache_dir):
    from tinylm.train.loop import pretrain

    run = tmp_path_factory.mktemp("export-run") / "run"
    pretrain(smoke_config(run, cache_dir, "train.steps=8", "train.threads=1"))
    return run


@pytest.fixture(scope="module")
def exported(run_dir):
    from tinylm.export.hf import export_hf

    return export_hf(run_dir, run_dir / "hf", check=False)


@pytest.fixture(scope="module")
def native(run_dir):
    from tinylm.train.checkpoint import load_trained

    return load_trained(run_dir)


def test_folder_layout_and_self_contained_code(exported):
    from tinylm.export.hf import TEMPLATES

    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", *TEMPLATES} <= names
    modules = {name[:-3] for name in TEMPLATES}
    imports = {}
    for name in TEMPLATES:
        tree = ast.parse((exported / name).read_text())
        absolute = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        absolute |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
        assert absolute <= {"torch", "transformers", "math"}, (name, absolute)
        imports[name[:-3]] = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0}
        assert imports[name[:-3]] <= modules - {name[:-3]}, (name, imports[name[:-3]])
    # From a local folder transformers 4.x (4.51.3, the official BabyLM pipeline's pin) copies only the
    # files the entry module imports itself, not theirs (5.x recurses): the entry module names every template.
    assert {"modeling_tinylm"} | imports["modeling_tinylm"] == modules
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "tinylm" and config["family"] == "gpt"
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}


def test_auto_classes_load_and_logits_match_the_native_model(exported, native):
    model, tok, state = native
    cfg = AutoConfig.from_pretrained(exported, trust_remote_code=True)
    assert cfg.hidden_size == state["model_config"]["d_model"] and cfg.num_hidden_layers == state["model_config"]["n_layer"]
    lm = AutoModelForCausalLM.from_pretrained(exported, trust_remote_code=True).eval()
    body = AutoModel.from_pretrained(exported, trust_remote_code=True).eval()
    ids = torch.randint(0, tok.vocab_size, (3, cfg.max_position_embeddings))
    with torch.no_grad():
        want = model(ids)
        got = lm(input_ids=ids).logits
        hidden = body(input_ids=ids).last_hidden_state
    assert (want - got).abs().max().item() < 1e-4
    assert hidden.shape == (3, ids.shape[1], cfg.hidden_size)
    torch.testing.assert_close(lm.lm_head(hidden), got, atol=1e-5, rtol=0)


def _sentence_scores(lm, tok, sentences, side):
    tok.padding_side = side
    batch = tok(sentences, return_tensors="pt", padding=True)
    with torch.no_grad():
        lp = lm(**batch).logits.log_softmax(-1)
    ids, real = batch["input_ids"], batch["attention_mask"]
    token_lp = lp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (token_lp * real[:, 1:] * real[:, :-1]).sum(1)


def test_left_and_right_padding_give_the_same_sentence_scores(exported, native):
    from tinylm.data.tokenizer import BOS_ID, PAD_ID
    from tinylm.eval.scoring import causal_scores

    model, sp_tok, _ = native
    lm = AutoModelForCausalLM.from_pretrained(exported, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(exported, trust_remote_code=True)
    sentences = ["The dog ran.", "Where is the little ball that the cat found yesterday?", "Hi!"]
    right = _sentence_scores(lm, tok, sentences, "right")
    left = _sentence_scores(lm, tok, sentences, "left")
    alone = torch.cat([_sentence_scores(lm, tok, [s], "right") for s in sentences])
    torch.testing.assert_close(left, right, atol=1e-4, rtol=0)
    torch.testing.assert_close(alone, right, atol=1e-4, rtol=0)
    # ... and equal to tinylm's own causal scorer on the native model (BOS first, every token scored)
    ids = sp_tok.encode(sentences)
    native_scores = causal_scores(model, [(i, [True] * len(i)) for i in ids], BOS_ID, PAD_ID)
    torch.testing.assert_close(torch.tensor(native_scores, dtype=torch.float32), right, atol=1e-4, rtol=0)


def test_exported_gpt_kv_cache_matches_the_full_forward_and_native_generation(exported, native):
    """The export's key/value cache: prompt then one token at a time gives the full forward's
    logits (1e-5, with left padding too); greedy generate() with and without the cache gives the
    tokens of the native model's generate, also past max_seq_len (the window then slides)."""
    model, tok, _ = native
    lm = AutoModelForCausalLM.from_pretrained(exported, trust_remote_code=True).eval()
    ctx = lm.config.max_position_embeddings
    ids = torch.randint(5, tok.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # row 1 left-padded
    with torch.no_grad():
        full = lm(input_ids=ids, attention_mask=mask).logits
        out = lm(input_ids=ids[:, :12], attention_mask=mask[:, :12], use_cache=True)
        steps = [out.logits]
        key = "cache" if "cache" in type(out).__dataclass_fields__ else "past_key_values"  # transformers 5 / 4
        cache = out[key]
        assert cache.get_seq_length() == 12
        for t in range(12, 20):
            steps.append(lm(input_ids=ids[:, t : t + 1], attention_mask=mask[:, : t + 1], **{key: cache}).logits)
    got = torch.cat(steps, dim=1)
    real = mask.bool()
    torch.testing.assert_close(got[real], full[real], atol=1e-5, rtol=0)
    prompt = ids[:1, :10]
    new = ctx + 6 - prompt.shape[1]  # ends 6 tokens past the position table
    want = model.generate(prompt, new, temperature=0)  # eos_id=None: never stops early
    forward, lengths = lm.forward, []
    lm.forward = lambda input_ids=None, **kw: lengths.append(input_ids.shape[1]) or forward(input_ids=input_ids, **kw)
    for use_cache in (True, False):
        lengths.clear()
        got = lm.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, do_sample=False,
                          use_cache=use_cache, eos_token_id=None, pad_token_id=0)
        assert torch.equal(got, want), use_cache
        # with the cache: the prompt, then one token per step until the window is full, then the window
        expected = [10] + [1] * (ctx - 10) + [ctx] * (new - 1 - (ctx - 10)) if use_cache else [min(n, ctx) for n in range(10, 10 + new)]
        assert lengths == expected, use_cache


def test_tokenizer_ids_equal_sentencepiece(exported, native):
    from tinylm.export.hf import PARITY_TEXTS, id_parity

    _, sp_tok, _ = native
    tok = AutoTokenizer.from_pretrained(exported, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(exported, trust_remote_code=True)
    texts = PARITY_TEXTS + ["Box 0 contains the beer and the map, Box 1 contains ", "A: Did you?\nB: Yes, I did."]
    if SAMPLES.is_dir():
        lines = (SAMPLES / "babylm2025/full_eval/supplement_filtered/turn_taking.jsonl").read_text().splitlines()[:50]
        texts += [json.loads(line)["sentence_good"] for line in lines]
    assert id_parity(sp_tok, tok, texts) == []
    assert id_parity(sp_tok, processor, texts) == []
    first = tok("The dog.")["input_ids"]
    assert first[0] == tok.bos_token_id == 2 and first[1:] == sp_tok.encode(["The dog."])[0]
    assert (tok.pad_token_id, tok.eos_token_id, tok.mask_token_id) == (0, 3, 4)


def test_pieces_decoded_one_at_a_time_re_encode_to_the_same_ids(exported, native):
    """The BabyLM reading task decodes word pieces one at a time and re-encodes the text: pieces
    decoded singly must join into text that encodes back to the same ids, as sentencepiece's whole
    text round trip does (no piece may lose the space its "▁" stands for: "wound up ta" != "upta")."""
    _, sp_tok, _ = native
    tok = AutoTokenizer.from_pretrained(str(exported), trust_remote_code=True)
    words = sorted({w for line in (ROOT / "tinylm" / "data" / "default_corpus.py").read_text().split("\n")
                    for w in line.replace('"', " ").split() if w.isalpha()})[:400]
    words += ["uptake", "wound", "She", "naïve", "Zebras", "xylophones"]
    checked = 0
    for text in words + [" ".join(words[i : i + 7]) for i in range(0, len(words), 7)]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == sp_tok.encode([text])[0]
        pieces = [tok.decode([i]) for i in ids]
        if any("\ufffd" in p for p in pieces):  # a lone byte-fallback piece is not text on its own
            continue
        joined = "".join(pieces)
        assert tok(joined, add_special_tokens=False)["input_ids"] == ids, (text, pieces)
        assert joined == " " + sp_tok.decode(ids)  # sentencepiece's text, with the dummy prefix's space
        assert all(p.startswith(" ") == tok.convert_ids_to_tokens(i).startswith("\u2581") for p, i in zip(pieces, ids))
        checked += 1
    assert checked > 400


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_backend_tokenizer_matches_sentencepiece_for_both_model_types(model_type, tmp_path):
    from tinylm.config import TokenizerConfig
    from tinylm.data.default_corpus import generate_documents
    from tinylm.data.tokenizer import train_tokenizer
    from tinylm.export.hf import PARITY_TEXTS, build_backend_tokenizer

    docs = generate_documents(8000, seed=1)
    sp_tok = train_tokenizer(docs, TokenizerConfig(model_type=model_type, vocab_size=600), tmp_path, model_type)
    backend = build_backend_tokenizer(sp_tok.model_file)
    texts = PARITY_TEXTS + docs[-20:] + ["  Two  spaces,\ttabs\nand <mask> here <sep>.  "]
    assert [backend.encode(t).ids for t in texts] == sp_tok.encode(texts)


@pytest.mark.skipif(not CORPORA.is_dir(), reason="../shared/corpora is absent")
def test_tokenizer_ids_equal_sentencepiece_on_the_research_corpora(exported, native):
    from tinylm.export.hf import id_parity

    _, sp_tok, _ = native
    tok = AutoTokenizer.from_pretrained(exported, trust_remote_code=True)
    texts = []
    for path in sorted(CORPORA.glob("*/*.train")) + sorted(CORPORA.glob("tinystories/valid.txt")):
        with open(path, encoding="utf-8", errors="replace") as f:
            blob = f.read(40_000)
        texts += [blob[i : i + 2000] for i in range(0, len(blob), 2000)]
    assert len(texts) > 50
    assert id_parity(sp_tok, tok, texts) == []


def test_bfloat16_export_passes_its_own_check(run_dir, tmp_path):
    from tinylm.export.hf import export_hf

    out = export_hf(run_dir, tmp_path / "bf16", dtype="bfloat16", check=True)
    report = json.loads((out / "tinylm_export.json").read_text())
    assert report["dtype"] == "bfloat16" and report["checks"]["max_abs_logit_diff"] < 1e-4
    # stored in bf16, but loaded (as the BabyLM pipeline loads it: no dtype) and run in float32
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert report["checks"]["load_dtype"] == "float32"
    assert next(AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=True).parameters()).dtype == torch.float32
    with pytest.raises(InputError, match="already exists and is not empty"):
        export_hf(run_dir, out)


def test_python_m_tinylm_export(run_dir, tmp_path):
    out = tmp_path / "cli"
    result = run_cli("tinylm.export", f"ckpt={run_dir}", f"out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"exported {run_dir} to {out}" in result.stdout
    report = json.loads((out / "tinylm_export.json").read_text())
    assert report["step"] == 8 and report["checks"]["max_abs_logit_diff"] < 1e-4


def _hf_text_score(lm, ids):
    """Sum of log p(token | tokens before it) over ids[1:] (ids[0] is <s>), from one forward pass."""
    with torch.no_grad():
        logits = lm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.double()
    return float(logits[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None]).sum())


def test_a_text_longer_than_the_training_window_is_scored_like_tinylm_eval(exported, native):
    """Entity-tracking inputs run past a 256-position GPT: the export scores them in the sliding
    windows tinylm.eval uses, so both give the same log-probability (and nothing crashes)."""
    from tinylm.eval.scoring import causal_scores

    model, sp_tok, _ = native
    tok = AutoTokenizer.from_pretrained(str(exported), trust_remote_code=True)
    lm = AutoModelForCausalLM.from_pretrained(str(exported), trust_remote_code=True).eval()
    text = " ".join(["Box 1 contains the hat and the book, Box 2 contains nothing."] * 12)
    ids = tok(text, return_tensors="pt")["input_ids"]
    window = model.cfg.max_seq_len
    assert ids.shape[1] > 2 * window  # at least three windows
    want = causal_scores(model, [(ids[0, 1:].tolist(), [True] * (ids.shape[1] - 1))], 2, 0, max_len=window)[0]
    assert _hf_text_score(lm, ids) == pytest.approx(want, abs=1e-3)
    short = ids[:, :window]  # within the window: one plain forward, as before
    assert _hf_text_score(lm, short) == pytest.approx(
        causal_scores(model, [(short[0, 1:].tolist(), [True] * (window - 1))], 2, 0)[0], abs=1e-3)


# --------------------------------------------------------------------------------------------------
# every family: BERT (mlm), GPT-BERT (bert + hybrid), mLSTM

FAMILY_RUNS = {
    "bert_mlm": (("model=bert_tiny", "objective=mlm"), {"AutoModelForMaskedLM"}),
    "bert_hybrid": (("model=bert_tiny", "objective=hybrid"), {"AutoModelForMaskedLM", "AutoModelForCausalLM"}),
    "mlstm": (("model=mlstm_tiny",), {"AutoModelForCausalLM"}),
}


@pytest.fixture(scope="module", params=list(FAMILY_RUNS))
def family_export(request, tmp_path_factory, cache_dir):
    from tinylm.export.hf import export_hf
    from tinylm.train.checkpoint import load_trained
    from tinylm.train.loop import pretrain

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp(f"export-{request.param}") / "run"
    pretrain(smoke_config(run, cache_dir, "train.steps=2", "train.threads=1", "train.milestones=false",
                          *FAMILY_RUNS[request.param][0]))
    out = export_hf(run, run / "hf", check=True)  # the export's own check: every head vs the native model
    return request.param, out, load_trained(run)


def _padded_logits(model, tok, sentences, side):
    tok.padding_side = side
    batch = tok(sentences, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    real = batch["attention_mask"].bool()
    return [logits[i][real[i]] for i in range(len(sentences))]


def test_every_family_exports_loads_and_matches_the_native_model(family_export):
    from transformers import AutoModelForMaskedLM

    name, out, (native, sp_tok, state) = family_export
    config = json.loads((out / "config.json").read_text())
    heads = FAMILY_RUNS[name][1]
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel"} | heads
    assert json.loads((out / "tinylm_export.json").read_text())["checks"]["max_abs_logit_diff"] < 1e-4
    cfg = AutoConfig.from_pretrained(out, trust_remote_code=True)
    assert cfg.hidden_size == state["model_config"]["d_model"] and cfg.family == state["model_config"]["family"]
    ids = torch.randint(7, sp_tok.vocab_size, (2, 40))
    body = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    with torch.no_grad():
        assert body(input_ids=ids).last_hidden_state.shape == (2, 40, cfg.hidden_size)
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    encoded = tok("The dog.")["input_ids"]
    masked = "AutoModelForMaskedLM" in heads
    assert encoded == [2, *sp_tok.encode(["The dog."])[0], *([3] if masked else [])]
    sentences = ["The dog ran.", "Where is the little ball that the cat found yesterday?", "Hi!"]
    for head, auto in (("AutoModelForCausalLM", AutoModelForCausalLM), ("AutoModelForMaskedLM", AutoModelForMaskedLM)):
        if head not in heads:
            continue
        model = auto.from_pretrained(out, trust_remote_code=True).eval()
        kwargs = {"causal": True} if head == "AutoModelForCausalLM" and not native.causal else {}
        with torch.no_grad():
            want, got = native(ids, **kwargs), model(input_ids=ids).logits
        assert (want - got).abs().max().item() < 1e-4, head
        # attention_mask honoured: a sentence's logits do not depend on padding side or batch mates
        alone = [_padded_logits(model, tok, [s], "right")[0] for s in sentences]
        for side in ("right", "left"):
            for a, b in zip(alone, _padded_logits(model, tok, sentences, side)):
                torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
        with torch.no_grad():  # ... and equal the native model on the unpadded ids
            first = tok(sentences[1], return_tensors="pt")["input_ids"]
            torch.testing.assert_close(alone[1], native(first, **kwargs)[0], atol=1e-4, rtol=0)
    if name != "gpt":  # no position table (mLSTM; BERT's relative positions): 3x the window runs as it is
        long = torch.randint(7, sp_tok.vocab_size, (1, 3 * state["model_config"]["max_seq_len"]))
        for head in sorted(heads):
            lm = {"AutoModelForCausalLM": AutoModelForCausalLM, "AutoModelForMaskedLM": AutoModelForMaskedLM}[head]
            lm = lm.from_pretrained(out, trust_remote_code=True).eval()
            kwargs = {"causal": True} if head == "AutoModelForCausalLM" and not native.causal else {}
            with torch.no_grad():
                torch.testing.assert_close(lm(input_ids=long).logits, native(long, **kwargs), atol=1e-4, rtol=0)
        if head == "AutoModelForCausalLM":  # generate() works without a cache
            assert model.generate(first, max_new_tokens=3, do_sample=False).shape == (1, first.shape[1] + 3)


def test_hf_config_takes_every_model_config_field():
    import inspect
    from dataclasses import fields

    from tinylm.config import ModelConfig
    from tinylm.export.configuration_tinylm import TinyLMConfig

    params = inspect.signature(TinyLMConfig.__init__).parameters
    assert {f.name for f in fields(ModelConfig)} <= set(params)
    assert all(params[f.name].default == f.default for f in fields(ModelConfig) if f.name != "vocab_size")


VARIANTS = {  # architecture options the trained runs above do not cover, native vs HF on random weights
    "bert_ltg_noelc_untied_hybrid": (dict(family="bert", bert_elc=False, tie_embeddings=False, bert_rel_buckets=8), "hybrid"),
    "bert_elc_rotary_mlm": (dict(family="bert", bert_positions="rotary"), "mlm"),
    "bert_elc_clm": (dict(family="bert", n_layer=3), "clm"),
    "bert_simple_rotary_post_noelc_bias": (dict(family="bert", bert_arch="simple", bert_positions="rotary", bert_norm="post",
                                                bert_elc=False, bias=True), "hybrid"),
    "bert_simple_relative_clm": (dict(family="bert", bert_arch="simple", tie_embeddings=False), "clm"),
    "mlstm_swa_exp_dense": (dict(family="mlstm", n_layer=4, mlstm_swa_every=2, mlstm_swa_window=5, mlstm_forget_gate="exp",
                                 mlstm_qkv_blocksize=0, mlstm_chunk_size=8), "clm"),
    "gpt_bias_untied": (dict(family="gpt", bias=True, tie_embeddings=False, d_ff=48), "clm"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_family_variants_match_the_native_model_with_padding(variant):
    from dataclasses import asdict

    from tinylm.config import ModelConfig
    from tinylm.export.hf import heads_of, to_hf_model
    from tinylm.models import build_model

    kw, objective = VARIANTS[variant]
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, max_seq_len=40, n_head=2, d_model=32, **{"n_layer": 2, **kw})
    native = build_model(cfg).eval()
    with torch.no_grad():
        for p in native.parameters():  # away from the initialisation (zero biases, unit ELC weights)
            p.add_(torch.randn_like(p) * 0.05)
    ids = torch.randint(7, 97, (3, 23))
    mask = torch.ones(3, 27, dtype=torch.long)
    left, right = mask.clone(), mask.clone()
    left[:, :4], right[:, -4:] = 0, 0
    for head in heads_of(cfg.family, objective):
        hf = to_hf_model(native, asdict(cfg), objective, head)
        kwargs = {"causal": True} if head == "causal" and cfg.family == "bert" else {}
        with torch.no_grad():
            want = native(ids, **kwargs)
            torch.testing.assert_close(hf(input_ids=ids).logits, want, atol=1e-4, rtol=0)
            padded = torch.cat([torch.zeros(3, 4, dtype=torch.long), ids], 1)
            torch.testing.assert_close(hf(input_ids=padded, attention_mask=left).logits[:, 4:], want, atol=1e-4, rtol=0)
            padded = torch.cat([ids, torch.zeros(3, 4, dtype=torch.long)], 1)
            torch.testing.assert_close(hf(input_ids=padded, attention_mask=right).logits[:, :23], want, atol=1e-4, rtol=0)
            hidden = hf.model(input_ids=ids).last_hidden_state
        assert hidden.shape == (3, 23, 32)
