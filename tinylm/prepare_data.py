"""`python -m tinylm.prepare_data [overrides]`: clean, budget, tokenize and shard a corpus.

    python -m tinylm.prepare_data data=babylm data.root=data/babylm/train_10M \
        data.budget_words=10000000 data.out_dir=data/babylm_10M tokenizer.vocab_size=16384
    python -m tinylm.prepare_data tokenizer_only=true ...     # only the tokenizer (make tokenizer)
    python -m tinylm.prepare_data --cfg job                   # print the composed config

Composes conf/prepare_data.yaml (the data and tokenizer groups, as in pretraining) and writes the
tokenizer, the shards and data_report.json into data.out_dir, or by default into
data.cache_dir/data/<content hash>: the folder `python -m tinylm.pretrain` with the same data and
tokenizer options reuses without rebuilding. Prints the data directory last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import hydra
from omegaconf import DictConfig, OmegaConf

from tinylm.cli import CONF_DIR, report_input_errors
from tinylm.config import DataConfig, TokenizerConfig


@dataclass
class PrepareDataConfig:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokenizer_only: bool = False  # stop after the tokenizer (make tokenizer)


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="prepare_data_schema", node=PrepareDataConfig)


register_configs()


def run(cfg: PrepareDataConfig) -> dict:
    from tinylm.data.pipeline import prepare_data

    data = prepare_data(cfg.data, cfg.tokenizer, tokenizer_only=cfg.tokenizer_only)
    r = data.report
    per_source = ", ".join(f"{name} {words['train']:,}" for name, words in r["words_per_source"].items())
    print(f"words: {r['words_train']:,} train + {r['words_dev']:,} dev ({per_source})")
    if r.get("stage") == "complete":
        print(f"tokens: {r['tokens_train']:,} train + {r['tokens_dev']:,} dev; vocabulary {r['vocab_size']}; "
              f"unigram dev loss {r['unigram_dev_loss']:.4f}")
    print(f"data directory: {data.shard_dir}")
    return r


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="prepare_data")
@report_input_errors
def main(cfg: DictConfig) -> dict:
    return run(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
