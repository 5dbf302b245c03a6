"""Export a trained tinylm run as a Hugging Face folder that loads offline with trust_remote_code.

    out/
      config.json               TinyLMConfig: the checkpoint's ModelConfig + objective + special ids + auto_map
      configuration_tinylm.py   copied from this package; imports only transformers
      modeling_tinylm.py        copied from this package; imports only torch and transformers, and
      modeling_tinylm_*.py      its siblings (layers, gpt, bert, mlstm) relatively
      model.safetensors         the weights (tied head stored once)
      generation_config.json    bos / eos / pad ids
      tokenizer.json, tokenizer_config.json, special_tokens_map.json
                                a fast tokenizer whose ids equal the sentencepiece ids
      sentencepiece.model       the run's original tokenizer, for reference (not for tokenizer=bytes,
                                whose fast tokenizer is built by tinylm/export/tokenizer_bytes.py)
      tinylm_export.json        where it came from: checkpoint, step, tokens and words seen, objective,
                                how to score it (scorer, babylm_backend), checks

Weights are stored in `dtype` (float32 by default); config.json's dtype is float32 whatever the
storage, so the folder loads and runs in float32 under transformers 4 and 5 alike, and the check
loads it the way the BabyLM pipeline does (no dtype argument).

The fast tokenizer is built from the sentencepiece model itself (not through a slow tokenizer
class): sentencepiece's precompiled normalisation rules, its whitespace handling (strip, collapse
runs of spaces, "▁" for spaces, a dummy "▁" at the start), the BPE merges ranked by piece score (or
the unigram scores) with byte fallback, and the user-defined symbols (<mask>, <cls>, <sep>) isolated
as sentencepiece emits them. Special tokens in the text are not parsed (`split_special_tokens`), as
sentencepiece does not parse them either. Every export checks id parity on sample texts and logits
parity against the native model before it is moved into place.

Every family exports (`auto_map`, by family and by the run's objective from RUN_DIR/config.yaml):
    gpt, mlstm                      AutoModel, AutoModelForCausalLM
    bert trained with mlm           AutoModel (bidirectional), AutoModelForMaskedLM
    bert trained with hybrid        AutoModel (bidirectional), AutoModelForMaskedLM (bidirectional,
                                    MNTP), AutoModelForCausalLM (causal): GPT-BERT
    bert trained with clm/distill   AutoModel (causal), AutoModelForCausalLM
The tokenizer adds <s> in front for the causal ones and <s> ... </s> around the text when the
model is a masked one (mlm, hybrid), as tinylm lays documents out in its shards.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tinylm.errors import InputError
from tinylm.export.outdir import check_out_folder
from tinylm.train.positions import BABYLM_BACKEND, default_scorer, run_dir_of, run_objective
from tinylm.utils import atomic_dir

TEMPLATE_DIR = Path(__file__).resolve().parent
TEMPLATES = ("configuration_tinylm.py", "modeling_tinylm.py", "modeling_tinylm_layers.py", "modeling_tinylm_gpt.py",
             "modeling_tinylm_bert.py", "modeling_tinylm_mlstm.py")
FAMILIES = ("gpt", "bert", "mlstm")
OBJECTIVES = ("clm", "mlm", "hybrid", "distill", "bootstrap")
HEAD_CLASS = {"causal": "TinyLMForCausalLM", "masked": "TinyLMForMaskedLM"}
CAUSAL_LM = "modeling_tinylm.TinyLMForCausalLM"
MASKED_LM = "modeling_tinylm.TinyLMForMaskedLM"


def heads_of(family: str, objective: str) -> list[str]:
    """The head classes an export offers: causal LM and/or masked LM (see the module docstring)."""
    if family != "bert":
        return ["causal"]
    if objective == "hybrid":
        return ["causal", "masked"]
    return ["masked"] if objective in ("mlm", "bootstrap") else ["causal"]


def auto_map(family: str, objective: str) -> dict[str, str]:
    out = {"AutoConfig": "configuration_tinylm.TinyLMConfig", "AutoModel": "modeling_tinylm.TinyLMModel"}
    heads = heads_of(family, objective)
    if "causal" in heads:
        out["AutoModelForCausalLM"] = CAUSAL_LM
    if "masked" in heads:
        out["AutoModelForMaskedLM"] = MASKED_LM
    return out


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Texts every export checks for id parity (whitespace runs, newlines, tabs, digits, accents,
# ligatures, emoji, special-token look-alikes).
PARITY_TEXTS = [
    "Once upon a time, there was a little dog named Max.",
    "  Leading and   repeated spaces  ",
    "David: Should you quit?\nSarah: No, I shouldn't.",
    "tabs\tand\nnewlines\n\nhere",
    "Numbers 1, 22 and 333; café, naïve, ﬁne, Ⅻ, ①.",
    "emoji 😀 and 中文 and العربية",
    "a <mask> token, <s> and </s> as text, x<mask>y",
    "",
]


@dataclass
class SpecialTokens:
    pad: str
    unk: str
    bos: str
    eos: str
    mask: str
    cls: str
    sep: str


def _load_proto(model_file: Path):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    return proto


def build_backend_tokenizer(model_file: str | Path):
    """A `tokenizers.Tokenizer` that encodes exactly like the sentencepiece model (ids and pieces)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE, Unigram

    proto = _load_proto(model_file)
    spec = proto.normalizer_spec
    byte_fallback = proto.trainer_spec.byte_fallback
    pieces = list(proto.pieces)
    user_defined = [p.piece for p in pieces if p.type == 4]  # USER_DEFINED
    unk_piece = pieces[proto.trainer_spec.unk_id].piece
    if proto.trainer_spec.model_type == 2:  # BPE: merges ranked by the score of the merged piece
        vocab = {p.piece: i for i, p in enumerate(pieces)}
        normal = {p.piece: (p.score, i) for i, p in enumerate(pieces) if p.type == 1}
        ranked = []
        for piece, (score, i) in normal.items():
            for cut in range(1, len(piece)):
                left, right = piece[:cut], piece[cut:]
                if left in normal and right in normal:
                    ranked.append((-score, i, left, right))
        merges = [(left, right) for _, _, left, right in sorted(ranked)]
        # ignore_merges: a chunk that is a whole vocabulary entry is emitted as is (how the isolated
        # user-defined pieces come out). The one known difference from sentencepiece follows from it:
        # text that is exactly a control piece between two user-defined ones ("<mask><s><mask>").
        model = BPE(vocab=vocab, merges=merges, unk_token=unk_piece, fuse_unk=True, byte_fallback=byte_fallback,
                    ignore_merges=bool(user_defined))
    elif proto.trainer_spec.model_type == 1:  # UNIGRAM
        # sentencepiece's Viterbi uses normal and user-defined pieces only: "<s>" or "<0x41>" in a text
        # is characters, never the control or byte piece. Here they get scores no path would choose
        # (and characters no normal piece contains are cut off by the pre-tokenizer below).
        floor = min(p.score for p in pieces) - 1e4
        vocab = [(p.piece, floor if p.type in (2, 3, 6) else p.score) for p in pieces]  # UNKNOWN, CONTROL, BYTE
        model = Unigram(vocab, unk_id=proto.trainer_spec.unk_id, byte_fallback=byte_fallback)
    else:
        raise InputError(f"{model_file}: sentencepiece model type {proto.trainer_spec.model_type} cannot be exported; "
                         "use bpe or unigram")
    tok = Tokenizer(model)
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if spec.add_dummy_prefix:
        # In the normalizer (not a Metaspace pre-tokenizer): it must apply after the leading spaces
        # are stripped, once per text.
        steps.append(normalizers.Prepend("▁"))
    tok.normalizer = normalizers.Sequence(steps)
    # sentencepiece emits user-defined pieces whole and never merges across them: isolate them.
    isolate = [re.escape(p) for p in sorted(user_defined, key=len, reverse=True)]
    if proto.trainer_spec.model_type == 1:
        # A character no normal piece contains is always a token of its own in sentencepiece
        # (unknown -> bytes): cut it off, so no control or byte piece can cover it here.
        known = sorted({c for p in pieces if p.type == 1 for c in p.piece} | {"▁"})
        isolate.append("[^" + "".join(re.escape(c) for c in known) + "]")
    if isolate:
        tok.pre_tokenizer = pre_tokenizers.Split(Regex("|".join(isolate)), behavior="isolated")
    # Decoding keeps the space every "▁" stands for, the dummy prefix's too (no Strip): a word's pieces
    # decoded one at a time join back into the text and re-encode to the same ids, which the BabyLM
    # reading task relies on (it decodes pieces one by one). A whole text therefore decodes with one
    # leading space where sentencepiece's decode has none.
    dec = [decoders.Replace("▁", " ")]
    if byte_fallback:
        dec.append(decoders.ByteFallback())
    dec.append(decoders.Fuse())
    tok.decoder = decoders.Sequence(dec)
    return tok


def build_fast_tokenizer(model_file: str | Path, max_len: int, family: str = "gpt", masked: bool | None = None):
    """The transformers fast tokenizer of a tinylm sentencepiece model: BOS in front for a causal
    model; BOS ... EOS for a masked one (masked=None: a bert is masked)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from tinylm.data.bytes import SPECIAL_PIECES, is_byte_tokenizer_file
    from tinylm.data.tokenizer import BOS_ID, CLS_ID, EOS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID

    if is_byte_tokenizer_file(model_file):  # tokenizer=bytes: byte b -> b + 7
        from tinylm.export.tokenizer_bytes import build_byte_backend_tokenizer

        backend, piece = build_byte_backend_tokenizer(), list(SPECIAL_PIECES)
    else:
        backend = build_backend_tokenizer(model_file)
        piece = [p.piece for p in _load_proto(model_file).pieces]
    special = SpecialTokens(piece[PAD_ID], piece[UNK_ID], piece[BOS_ID], piece[EOS_ID], piece[MASK_ID], piece[CLS_ID], piece[SEP_ID])
    if not (family == "bert" if masked is None else masked):
        backend.post_processor = processors.TemplateProcessing(
            single=f"{special.bos} $A", pair=f"{special.bos} $A $B", special_tokens=[(special.bos, BOS_ID)])
    else:  # masked models: BOS ... EOS, as tinylm's shards lay documents out
        backend.post_processor = processors.TemplateProcessing(
            single=f"{special.bos} $A {special.eos}", pair=f"{special.bos} $A {special.eos} $B {special.eos}",
            special_tokens=[(special.bos, BOS_ID), (special.eos, EOS_ID)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=special.bos, eos_token=special.eos, unk_token=special.unk,
        pad_token=special.pad, mask_token=special.mask, cls_token=special.cls, sep_token=special.sep,
        split_special_tokens=True, model_max_length=max_len, padding_side="right", clean_up_tokenization_spaces=False,
    )


def native_to_hf_state_dict(native: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """tinylm names -> TinyLMFor*LM names: the body under `model.`, `head` -> `lm_head`, and BERT's
    head transform (`head_dense`, `head_ln`) at the top, as it is."""
    out = {}
    for k, v in native.items():
        if k.startswith("head."):
            out["lm_head." + k[len("head."):]] = v
        elif k.startswith(("head_dense.", "head_ln.")):
            out[k] = v
        else:
            out[f"model.{k}"] = v
    return out


def to_hf_model(native, model_config: dict[str, Any], objective: str, head: str | None = None):
    """The transformers model (TinyLMForCausalLM or TinyLMForMaskedLM, eval mode) holding a native
    model's weights. head: "causal" | "masked" | None (the export's first head)."""
    from tinylm.data.tokenizer import BOS_ID, EOS_ID, MASK_ID, PAD_ID
    from tinylm.export.configuration_tinylm import TinyLMConfig
    from tinylm.export.modeling_tinylm import TinyLMForCausalLM, TinyLMForMaskedLM

    heads = heads_of(model_config.get("family", "gpt"), objective)
    head = head or heads[0]
    config = TinyLMConfig(**model_config, objective=objective, pad_token_id=PAD_ID, bos_token_id=BOS_ID,
                          eos_token_id=EOS_ID, mask_token_id=MASK_ID, architectures=[HEAD_CLASS[h] for h in heads])
    hf_model = (TinyLMForCausalLM if head == "causal" else TinyLMForMaskedLM)(config).eval()
    missing, unexpected = hf_model.load_state_dict(native_to_hf_state_dict(native.state_dict()), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model_config.get("tie_embeddings", True))]
    if missing or unexpected:
        raise RuntimeError(f"weights do not map onto the HF model: missing {missing}, unexpected {unexpected}")
    if model_config.get("tie_embeddings", True):
        hf_model.tie_weights()
    return hf_model


def id_parity(sp_tokenizer, hf_tokenizer, texts: list[str]) -> list[str]:
    """Texts whose sentencepiece ids differ from the fast tokenizer's (without special tokens)."""
    return [t for t in texts if sp_tokenizer.encode([t])[0] != hf_tokenizer(t, add_special_tokens=False)["input_ids"]]


def _check_export(folder: Path, native, sp_tokenizer, max_len: int, dtype: torch.dtype, heads: list[str]) -> dict[str, Any]:
    """Load the folder back through transformers (trust_remote_code) and compare each head with the
    native model run the same way (causally or bidirectionally)."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
    bad = id_parity(sp_tokenizer, tok, PARITY_TEXTS)
    if bad:
        raise RuntimeError(f"exported tokenizer ids differ from sentencepiece on {bad[:3]!r}")
    reference = copy.deepcopy(native).float()
    with torch.no_grad():
        for p in reference.parameters():  # a bf16/fp16 export is compared with the rounded weights
            p.copy_(p.to(dtype).float())
    ids = tok([t for t in PARITY_TEXTS if t], return_tensors="pt", padding=True, truncation=True, max_length=max_len)
    diffs = {}
    for head in heads:
        auto = AutoModelForCausalLM if head == "causal" else AutoModelForMaskedLM
        # loaded as the BabyLM pipeline loads it (no dtype argument), so the check runs in the dtype
        # the folder will be scored in
        hf = auto.from_pretrained(str(folder), trust_remote_code=True).eval()
        load_dtype = next(hf.parameters()).dtype
        if load_dtype != torch.float32:
            raise RuntimeError(f"the exported folder loads in {load_dtype} ({auto.__name__}, no dtype given), not "
                               "float32: minimal pairs would be scored in low precision (ties)")
        kwargs = {"causal": True} if head == "causal" and not getattr(reference, "causal", True) else {}
        with torch.no_grad():
            want = reference(ids["input_ids"], **kwargs)
            got = hf(input_ids=ids["input_ids"]).logits
        diffs[head] = (want - got).abs().max().item()
        if diffs[head] > 1e-4:
            raise RuntimeError(f"exported model logits ({auto.__name__}) differ from the native model by "
                               f"{diffs[head]:.2e} (> 1e-4)")
    return {"tokenizer_id_parity_texts": len(PARITY_TEXTS), "max_abs_logit_diff": max(diffs.values()),
            "max_abs_logit_diff_per_head": diffs, "load_dtype": "float32"}


def export_hf(ckpt: str | Path, out: str | Path | None = None, dtype: str = "float32", check: bool = True,
              overwrite: bool = False, objective: str | None = None) -> Path:
    """Write the HF folder for a run directory (newest checkpoint), a checkpoints/step_* folder or a
    milestones/chck_*M folder. objective: None = the run's (RUN_DIR/config.yaml)."""
    from tinylm.train.checkpoint import load_trained

    if dtype not in DTYPES:
        raise InputError(f"dtype={dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    ckpt = Path(ckpt).expanduser()
    run_dir = run_dir_of(ckpt)
    out = Path(out).expanduser() if out else run_dir / "hf"
    check_out_folder(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError(f"out={out} already exists and is not empty; pass overwrite=true or choose another folder")
    native, sp_tokenizer, state = load_trained(ckpt, "cpu")
    model_config = dict(state["model_config"])
    family = model_config.get("family", "gpt")
    if family not in FAMILIES:
        raise InputError(f"export of model family {family!r} is not implemented (implemented: {', '.join(FAMILIES)})")
    objective = objective or run_objective(run_dir, family)
    if objective not in OBJECTIVES:
        raise InputError(f"objective {objective!r} is not a tinylm objective; use one of {', '.join(OBJECTIVES)}")
    heads = heads_of(family, objective)
    hf_model = to_hf_model(native, model_config, objective).to(DTYPES[dtype])
    tokenizer = build_fast_tokenizer(sp_tokenizer.model_file, model_config["max_seq_len"], family,
                                     masked="masked" in heads)

    with atomic_dir(out) as tmp:
        hf_model.save_pretrained(str(tmp))
        config_path = tmp / "config.json"
        saved = json.loads(config_path.read_text())
        saved["auto_map"] = auto_map(family, objective)
        # The compute dtype: transformers >= 5 loads a folder in config.dtype when no dtype is given (else
        # in the stored one), 4.x in float32. A bf16/fp16 export stores rounded weights and still runs in
        # float32, so minimal pairs are not scored in low precision (bf16 logits tie often).
        saved["dtype"] = saved["torch_dtype"] = "float32"
        config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
        for name in TEMPLATES:
            shutil.copyfile(TEMPLATE_DIR / name, tmp / name)
        tokenizer.save_pretrained(str(tmp))
        _pin_tokenizer_class(tmp / "tokenizer_config.json")
        if getattr(sp_tokenizer, "kind", "") != "bytes":
            shutil.copyfile(sp_tokenizer.model_file, tmp / "sentencepiece.model")
        report: dict[str, Any] = {
            "source_checkpoint": str(ckpt), "step": state.get("step"), "tokens_seen": state.get("tokens_seen"),
            "words_seen": state.get("words_seen"), "model_config": model_config, "objective": objective,
            "dtype": dtype, "heads": heads,
            # how to score it (tinylm.eval scorer=auto, the BabyLM pipeline's --backend): from the objective
            "scorer": default_scorer(objective), "babylm_backend": BABYLM_BACKEND[default_scorer(objective)],
        }
        if "milestone" in state:
            report["milestone"] = state["milestone"]
        if check:
            report["checks"] = _check_export(tmp, native, sp_tokenizer, model_config["max_seq_len"], DTYPES[dtype], heads)
        (tmp / "tinylm_export.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o755)  # a folder to share or upload (temporary folders are created private)
        for f in tmp.iterdir():
            f.chmod(0o644)
    return out


def _pin_tokenizer_class(path: Path) -> None:
    """Name the tokenizer class every transformers release knows (v5 writes its new backend name)."""
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
