"""tinylm: pretrain tiny language models from scratch on one GPU (or a laptop CPU)."""

__version__ = "0.1.0"
