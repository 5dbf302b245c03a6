# tinylm: `make pretrain` trains the default GPT; `make test` runs the test suite.
# Both create the virtual environment in .venv/ on first use (make install).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
# torch pinned to the release whose CPU wheel this project is developed against; triton beside it
# on Linux (the Triton kernels; CPU machines run them only under TRITON_INTERPRET=1 in tests).
TORCH  := torch==2.13.0
TRITON := $(if $(filter Linux,$(shell uname -s)),triton==3.7.1,)

.DEFAULT_GOAL := help
.PHONY: help install pretrain sweep eval export package test test-gpu bench bench-kernels clean data tokenizer

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with torch, triton and tinylm (idempotent)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH) $(TRITON)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

pretrain: $(STAMP)  ## train (default: tiny GPT on the embedded corpus); ARGS="model.n_layer=4 optim.lr=1e-3"
	$(PY) -m tinylm.pretrain $(ARGS)

data: $(STAMP)  ## clean, budget, tokenize, shard; ARGS="data=babylm data.root=DIR data.budget_words=N data.out_dir=DIR"
	$(PY) -m tinylm.prepare_data $(ARGS)

tokenizer: $(STAMP)  ## train only the tokenizer of a corpus (same ARGS as make data)
	$(PY) -m tinylm.prepare_data tokenizer_only=true $(ARGS)

sweep: $(STAMP)  ## Hydra multirun, jobs one after another; ARGS="optim.lr=1e-3,3e-3"
	$(PY) -m tinylm.pretrain --multirun $(ARGS)

eval: $(STAMP)  ## zero-shot minimal pairs + dev perplexity; ARGS="ckpt=RUN_DIR tasks=FOLDER"
	$(PY) -m tinylm.eval $(ARGS)

export: $(STAMP)  ## Hugging Face folder (trust_remote_code); ARGS="ckpt=RUN_DIR out=DIR"
	$(PY) -m tinylm.export $(ARGS)

package: $(STAMP)  ## BabyLM submission (final model + milestone revisions, card, compliance); ARGS="run=RUN_DIR out=DIR"
	$(PY) -m tinylm.package $(ARGS)

test: $(STAMP)  ## the whole pytest suite (CPU; Triton kernels under the interpreter)
	$(PY) -m pytest -q $(ARGS)

test-gpu: $(STAMP)  ## only the tests marked gpu (bf16, real autotuning); needs CUDA
	$(PY) -m pytest -q -m gpu $(ARGS)

bench: $(STAMP)  ## training tokens/s (and MFU on CUDA) vs plain PyTorch models of the same shape; bench/results/
	$(PY) bench/bench_train.py $(ARGS)

bench-kernels: $(STAMP)  ## Triton kernels against PyTorch (GPU only); bench/results/
	$(PY) bench/bench_kernels.py $(ARGS)

clean:  ## remove caches and run directories (keeps .venv)
	rm -rf .cache runs .pytest_cache
