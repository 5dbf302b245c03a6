"""Typed configuration schemas: one source of truth for every option.

Hydra composes conf/pretrain.yaml on top of `PretrainConfig`, so a misspelt key
(`model.n_layr=4`) or a wrong type (`model.n_layer=abc`) fails at launch. The same `ModelConfig`
is stored in every checkpoint and written by the HF export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class ModelConfig:
    family: str = "gpt"  # gpt (more families plug into tinylm.models.build_model)
    vocab_size: int = 0  # 0: taken from the tokenizer at launch
    max_seq_len: int = 256  # positions the model can see
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    d_ff: int = 0  # MLP hidden size; 0 means 4 * d_model
    dropout: float = 0.0
    bias: bool = False  # biases in linear layers and norms
    norm_eps: float = 1e-5
    tie_embeddings: bool = True  # output head shares the token embedding matrix
    init_std: float = 0.02
    # mLSTM (model.family=mlstm)
    mlstm_form: str = "chunkwise"  # training forward: chunkwise | parallel | recurrent (same function)
    mlstm_chunk_size: int = 64  # chunkwise form: tokens per chunk
    mlstm_proj_factor: float = 2.0  # block up-projection: inner width = factor * d_model
    mlstm_conv_kernel: int = 4  # causal depthwise conv feeding q and k
    mlstm_qkv_blocksize: int = 4  # block-diagonal q/k/v projections (xLSTM); 0 = dense
    mlstm_forget_gate: str = "sigmoid"  # sigmoid | exp
    mlstm_swa_every: int = 0  # every k-th block (k >= 2) is sliding-window attention; 0 = none
    mlstm_swa_window: int = 128  # keys a sliding-window attention query sees (itself included)
    # BERT (model.family=bert)
    bert_norm: str = "pre"  # pre | post: LayerNorm before each sublayer (pre-LN) or after the residual add
    bert_positions: str = "relative"  # relative (ltg: disentangled; simple: T5-bucketed per-head bias) | rotary
    bert_rel_buckets: int = 32  # relative: buckets over signed distances (half each direction)
    bert_rel_max_distance: int = 128  # relative: distances beyond this share the outermost bucket
    bert_rope_base: float = 10000.0  # rotary: frequency base
    bert_elc: bool = True  # ELC-BERT: each layer reads a learned mix of all earlier layers' outputs
    # ltg: LTG-BERT / ELC-BERT as their reference code (disentangled relative attention with
    # log buckets up to max_seq_len, LayerNorms inside each sublayer, reference init; bias and
    # bert_norm / bert_rel_max_distance do not apply); simple: the earlier sketch, for ablations
    bert_arch: str = "ltg"


@dataclass
class DataConfig:
    name: str = "default"
    # default: the embedded generated corpus (tinylm.data.default_corpus); text: UTF-8 files or
    # folders, one document per non-empty line; babylm: a folder of <domain>.train (+ .dev) files;
    # tinystories: <|endoftext|>-separated stories; jsonl: a text field per record; hf: any
    # `datasets` dataset; childes_age: CSVs of utterances with the child's age, one document per
    # transcript (ages for curriculum.order=age). See tinylm/data/sources.py and conf/data/*.yaml.
    kind: str = "default"
    root: str = ""  # babylm / tinystories: the corpus folder
    paths: list[str] = field(default_factory=list)  # text / jsonl / tinystories / childes_age: files or folders
    dev_paths: list[str] = field(default_factory=list)  # explicit dev files (else split by document)
    domains: list[str] = field(default_factory=list)  # babylm: domains to read (empty: every <domain>.train)
    text_field: str = "text"  # jsonl / hf: the field holding the text
    hf_name: str = ""  # hf: a hub dataset name or a builder (text, json, parquet, csv)
    hf_config: str = ""  # hf: configuration name
    hf_data_files: list[str] = field(default_factory=list)  # hf: data_files for load_dataset
    hf_split: str = "train"
    hf_dev_split: str = ""  # hf: dev split name ("": split by document)
    default_words: int = 250_000  # kind=default: words to generate
    default_seed: int = 0
    dev_fraction: float = 0.05  # documents held out for dev loss when a source has no dev files
    doc_words: int = 500  # babylm / long records: documents of about this many words (cut at line / sentence ends)
    on_invalid_utf8: str = "auto"  # error | replace (counted) | auto: error for text, replace otherwise
    # cleaning (not applied to text / default); see tinylm/data/clean.py
    normalize_whitespace: bool = True
    childes_speakers: str = "keep"  # keep | strip  (*CHI:, *MOT:, ...)
    childes_annotations: str = "keep"  # keep | strip  ([laughs], [: word], ...)
    switchboard_speakers: str = "keep"  # keep | strip  (A: / B:)
    wiki_headers: str = "keep"  # keep | strip | title  (= = = Title = = =)
    gutenberg_boilerplate: str = "strip"  # keep | strip  (PG markers, licence, end lines, notes)
    gutenberg_italics: str = "strip"  # keep | strip  (_italics_ -> italics)
    dedup: str = "auto"  # auto (near for babylm/tinystories/jsonl/hf, none for text/default) | none | exact | near
    near_dup_ngram: int = 8  # word n-gram shingles
    near_dup_threshold: float = 0.5  # share of a document's sampled shingles already seen that makes it a duplicate
    near_dup_sample: int = 4  # keep 1 in N shingles (by hash)
    budget_words: int = 0  # train words to keep, exactly (0: all); a deterministic subset
    budget_weights: dict[str, float] = field(default_factory=dict)  # {source: weight}; empty: proportional
    budget_seed: int = 0
    allow_smaller_corpus: bool = False  # a budget above the corpus size takes the whole corpus instead of failing
    keep_text: bool = False  # also write the final train.txt / dev.txt (one document per line) to the data dir
    out_dir: str = ""  # the data directory (tokenizer, shards, data_report.json); "": cache_dir/data/<content hash>
    cache_dir: str = ".cache/tinylm"  # data directories keyed by content hashes


@dataclass
class TokenizerConfig:
    model_type: str = "bpe"  # bpe | unigram (sentencepiece) | bytes (UTF-8 bytes, 263 ids: tinylm.data.bytes)
    vocab_size: int = 2048  # ignored with bytes
    byte_fallback: bool = True
    character_coverage: float = 1.0
    max_sentences: int = 2_000_000  # sentences sentencepiece keeps (seeded sampling beyond that)
    max_train_chars: int = 100_000_000  # train-split text (UTF-8 bytes) the tokenizer sees; beyond it a stable 1-in-k document sample


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 0.1  # applied to matrices only (not norms, biases, embeddings)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    schedule: str = "cosine"  # cosine | wsd | constant
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # final lr as a fraction of lr
    decay_fraction: float = 0.2  # wsd: share of steps spent decaying at the end
    # Muon (optim.name=muon): orthogonalised momentum for the hidden matrices, AdamW for the rest
    muon_lr: float = 0.02  # peak lr of the Muon matrices (follows the schedule in proportion to lr)
    muon_momentum: float = 0.95
    muon_nesterov: bool = True
    muon_ns_steps: int = 5  # Newton-Schulz iterations


@dataclass
class TrainConfig:
    seed: int = 1337
    steps: int = 600  # optimizer steps (replaced by the derived count when epochs > 0)
    epochs: float = 0.0  # >0: steps = epochs x the train split's windows / rows per step (BabyLM: at most 10)
    batch_size: int = 32  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    seq_len: int = 128
    device: str = "auto"  # auto (cuda if visible, else cpu) | cpu | cuda | mps (tinylm/train/devices.py)
    precision: str = "auto"  # auto (bf16 on CUDA, fp16 + GradScaler on GPUs without bf16, fp32 on CPU) | fp32 | bf16 | fp16
    compile: bool = False  # torch.compile the model
    threads: int = 0  # torch CPU threads; 0: auto (tinylm/train/threads.py: free physical cores, 1 under contention)
    strategy: str = "ddp"  # under torchrun: ddp (replicated model) | fsdp (FSDP2-sharded); tinylm/train/distributed.py
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 20  # dev batches per evaluation (fixed, deterministic windows)
    ckpt_every: int = 200
    keep_checkpoints: int = 2  # newest full checkpoints kept in the run directory
    resume: str = "never"  # never | auto (newest intact checkpoint in the run dir) | a checkpoint path
    resume_data: str = "same"  # same: a resume on other data / tokenizer is refused | changed: allowed, recorded
    max_bad_steps: int = 3  # non-finite steps in a row (skipped, not applied) before on_divergence acts
    on_divergence: str = "stop"  # stop (one error line) | rollback (reload the last good checkpoint, lr x rollback_lr_factor)
    rollback_lr_factor: float = 0.5
    sample_every: int = 0  # 0: samples only at the end
    sample_tokens: int = 64
    sample_prompts: list[str] = field(
        default_factory=lambda: ["Once upon a time", "The little dog", "Where is the ball?"]
    )
    progress: bool = True  # tqdm progress bar
    milestones: bool = True  # light checkpoints at 1M..10M, 20M..100M, 200M..1B words seen (RUN_DIR/milestones/)
    milestone_unit_words: int = 1_000_000  # words per "M" of the milestones (tests scale it down)
    doc_mask: bool = False  # attention (and mLSTM memory) kept inside documents (tinylm/data/loader.py)
    eval_tasks: Optional[str] = None  # minimal-pair folder scored at each milestone and at the end (eval_curve.png)
    eval_tasks_max_items: int = 0  # eval_tasks: items scored per file (0: all); small keeps tracking cheap


@dataclass
class ObjectiveConfig:
    name: str = "clm"  # clm | mlm | hybrid (GPT-BERT: causal + masked next-token) | distill (clm on teachers) | bootstrap
    # masking (mlm, and the masked rows of hybrid); the rate moves linearly from start to end over training
    mask_rate_start: float = 0.15
    mask_rate_end: float = 0.15
    masking: str = "token"  # token | span (geometric span lengths, whole spans masked)
    span_mean: float = 3.0  # span: mean of the geometric length distribution before clipping
    span_max: int = 10  # span: longest span
    mask_token_prob: float = 0.8  # a chosen token becomes <mask> (80/10/10: 0.8 / 0.1 / rest kept)
    random_token_prob: float = 0.1  # ... or a random non-special token; else it is kept as is
    adaptive: bool = False  # token masking: sample positions in proportion to a per-id loss EMA
    adaptive_decay: float = 0.99  # adaptive: EMA decay per update of an id's loss
    # hybrid
    causal_share: float = 0.5  # share of rows (or steps) trained causally; the rest masked (MNTP)
    hybrid_mode: str = "rows"  # rows: split every batch | steps: whole steps alternate
    # distillation (distill, or any objective with teachers): Baby Llama's ensemble soft targets
    teachers: list[str] = field(default_factory=list)  # run directories or checkpoint folders
    distill_temperature: float = 2.0
    distill_alpha: float = 0.5  # weight of the hard-label loss; 1 - alpha on the soft targets
    # multi-token prediction (clm, distill, the causal rows of hybrid): tinylm/train/mtp.py
    mtp_heads: int = 1  # n: heads predicting tokens t+1..t+n (1: off); the extra heads are dropped at export
    mtp_weight: float = 1.0  # weight of each extra head's loss: (CE_1 + w * sum CE_k) / n
    # loss-based row reweighting (every objective): tinylm/train/reweight.py
    reweight: str = "none"  # none | softmax (of row loss / T) | rank (softmax of the row's loss quantile / T)
    reweight_temperature: float = 1.0
    reweight_clip: float = 4.0  # no row weighs more than clip x the mean (then renormalised to mean 1)
    # latent bootstrapping (objective=bootstrap, Boot-BERT): tinylm/train/bootstrap.py
    ema_decay: float = 0.996  # EMA teacher decay at step 0 ...
    ema_decay_end: float = 1.0  # ... moving linearly to this at the last step (Samuel 2023: 0.996 -> 1)
    bootstrap_layers: list[int] = field(default_factory=lambda: [-1])  # teacher layers averaged into the target
    bootstrap_loss: str = "smooth_l1"  # smooth_l1 | mse, on layer-normalised teacher states
    bootstrap_mlm_weight: float = 0.1  # + this x the MLM loss on the same masked tokens (0: latent target only)


@dataclass
class LoggerConfig:
    kind: str = "none"  # none | csv | tensorboard | wandb (tinylm/train/loggers.py)
    project: str = "tinylm"
    entity: Optional[str] = None
    name: Optional[str] = None
    mode: str = "offline"  # wandb mode: offline | online | disabled
    tags: list[str] = field(default_factory=list)


@dataclass
class CurriculumConfig:
    """The order and shape of the training batches (tinylm/data/curriculum.py; conf/curriculum/*.yaml).
    The parts compose: an order (source | age | difficulty) with pacing, a sequence-length schedule
    or document-length buckets, and a vocabulary curriculum. name=none: the plain shuffled windows."""

    name: str = "none"  # none | custom (any other name turns the curriculum below on)
    order: str = "none"  # none | source | age | difficulty: documents sorted, windows drawn from the paced prefix
    sources: list[str] = field(default_factory=lambda: [
        "childes", "bnc_spoken", "switchboard", "open_subtitles", "simple_wiki", "gutenberg"])  # order=source: earliest first; others last
    score: str = "surprisal"  # order=difficulty: length | surprisal | readability (easiest first)
    pacing: str = "linear"  # linear | root | step: fraction of the sorted data available at progress p
    start_fraction: float = 0.2  # available at p=0
    end_progress: float = 0.8  # progress (share of train.steps) at which all data is available
    pacing_steps: int = 4  # pacing=step: increments
    mix: float = 0.0  # share of the rows drawn from the whole data (random mixing)
    seq_lens: list[int] = field(default_factory=list)  # sequence-length stages (GrowLength); the last must be train.seq_len
    seq_len_fractions: list[float] = field(default_factory=list)  # ... or as fractions of train.seq_len
    seq_len_by: str = "step"  # step | words: what seq_len_boundaries count
    seq_len_boundaries: list[int] = field(default_factory=list)  # where stages 2.. start; empty (by step): equal shares
    seq_len_trigger: str = "schedule"  # schedule | loss: also move on when the train loss plateaus (tinylm/data/growlength.py)
    seq_len_plateau_window: int = 50  # loss: steps over which the EMA must improve by tol (relative)
    seq_len_plateau_tol: float = 0.01
    seq_len_plateau_min_steps: int = 100  # loss: fewest steps per stage
    seq_len_plateau_ema: float = 0.9  # loss: decay of the train-loss EMA
    buckets: bool = False  # Dataset Decomposition: sequences inside one document, power-of-two lengths
    bucket_min_len: int = 8  # shortest bucket (tokens); shorter document remainders are dropped
    vocab_start: int = 0  # vocabulary curriculum: the k most frequent ids kept at p=0 (0: off); the rest -> <unk>
    vocab_pacing: str = "linear"  # linear | root | step: k grows to the whole vocabulary
    vocab_end_progress: float = 0.8
    vocab_targets: bool = True  # map the targets too (else only the inputs)


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    kernels: str = "auto"  # auto | triton | torch (see tinylm.ops)
    # Set from hydra.run.dir / the sweep job dir in conf/pretrain.yaml. Optional only because Hydra has
    # no output dir yet under `--cfg job --resolve` (it prints null there); a run always has one.
    run_dir: Optional[str] = MISSING


def register_configs() -> None:
    """Register the schemas so conf/pretrain.yaml can name `pretrain_schema` first in its defaults."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="pretrain_schema", node=PretrainConfig)


def validate_pretrain(cfg: PretrainConfig) -> None:
    """Reject values no run can use, before anything is written (one InputError naming the key)."""
    from tinylm.errors import InputError

    tc = cfg.train
    for key in ("steps", "batch_size", "grad_accum", "seq_len", "log_every", "eval_every", "ckpt_every", "max_bad_steps"):
        if getattr(tc, key) <= 0:
            raise InputError(f"train.{key}={getattr(tc, key)} must be a positive integer")
    if tc.threads < 0:
        raise InputError(f"train.threads={tc.threads} must be >= 0 (0: choose automatically)")
    if not 0 < tc.rollback_lr_factor <= 1:
        raise InputError(f"train.rollback_lr_factor={tc.rollback_lr_factor} must be in (0, 1]")
    if cfg.optim.lr < 0:
        raise InputError(f"optim.lr={cfg.optim.lr} is negative; use a learning rate >= 0")
    from tinylm.data.tokenizer import EXTRA_SPECIALS

    n_special = 4 + len(EXTRA_SPECIALS)  # pad, unk, bos, eos + the user-defined ones
    if cfg.tokenizer.model_type != "bytes" and cfg.tokenizer.vocab_size <= n_special:
        raise InputError(f"tokenizer.vocab_size={cfg.tokenizer.vocab_size} leaves no room beside the {n_special} special "
                         "tokens; use a few hundred or more")


def load_stored_config(path) -> dict[str, Any]:
    """A run's stored config.yaml as plain data, with interpolations left unresolved: a run directory
    may come from anyone, and `${oc.env:...}` in it must not read this machine's environment."""
    from omegaconf import OmegaConf

    stored = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return stored if isinstance(stored, dict) else {}


def to_dataclass(cls: type, values: dict[str, Any]):
    """Build a dataclass from a plain dict (checkpoints), rejecting unknown keys with a clear error."""
    known = {f for f in cls.__dataclass_fields__}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}")
    return cls(**values)
