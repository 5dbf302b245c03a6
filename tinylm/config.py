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


@dataclass
class DataConfig:
    name: str = "default"
    # default: the embedded generated corpus (tinylm.data.default_corpus);
    # text: UTF-8 files or folders of them, one document per non-empty line.
    kind: str = "default"
    paths: list[str] = field(default_factory=list)  # kind=text: files or folders
    dev_paths: list[str] = field(default_factory=list)  # kind=text: explicit dev files (else split)
    default_words: int = 250_000  # kind=default: words to generate
    default_seed: int = 0
    dev_fraction: float = 0.05  # documents held out for dev loss when no dev_paths are given
    cache_dir: str = ".cache/tinylm"  # tokenizers and shards, keyed by content hashes


@dataclass
class TokenizerConfig:
    model_type: str = "bpe"  # bpe | unigram (sentencepiece)
    vocab_size: int = 2048
    byte_fallback: bool = True
    character_coverage: float = 1.0
    max_sentences: int = 2_000_000  # sentences sampled for training on large corpora


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


@dataclass
class TrainConfig:
    seed: int = 1337
    steps: int = 600  # optimizer steps
    batch_size: int = 32  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    seq_len: int = 128
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False  # torch.compile the model
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 20  # dev batches per evaluation (fixed, deterministic windows)
    ckpt_every: int = 200
    keep_checkpoints: int = 2  # newest full checkpoints kept in the run directory
    resume: str = "never"  # never | auto (newest checkpoint in the run dir) | a checkpoint path
    sample_every: int = 0  # 0: samples only at the end
    sample_tokens: int = 64
    sample_prompts: list[str] = field(
        default_factory=lambda: ["Once upon a time", "The little dog", "Where is the ball?"]
    )
    progress: bool = True  # tqdm progress bar


@dataclass
class LoggerConfig:
    kind: str = "none"  # none | wandb
    project: str = "tinylm"
    entity: Optional[str] = None
    name: Optional[str] = None
    mode: str = "offline"  # wandb mode: offline | online | disabled
    tags: list[str] = field(default_factory=list)


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    kernels: str = "auto"  # auto | triton | torch (see tinylm.ops)
    run_dir: str = MISSING  # set from hydra.run.dir / the sweep job dir in conf/pretrain.yaml


def register_configs() -> None:
    """Register the schemas so conf/pretrain.yaml can name `pretrain_schema` first in its defaults."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="pretrain_schema", node=PretrainConfig)


def to_dataclass(cls: type, values: dict[str, Any]):
    """Build a dataclass from a plain dict (checkpoints), rejecting unknown keys with a clear error."""
    known = {f for f in cls.__dataclass_fields__}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}")
    return cls(**values)
