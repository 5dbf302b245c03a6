# tinylm: `make pretrain` trains the default GPT; `make test` runs the test suite.
# Both create the virtual environment in .venv/ on first use (make install).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
# Hydra overrides in ARGS go through the shell once: a value with a comma or a space needs Hydra's
# own quotes inside shell quotes, e.g. ARGS="'train.sample_prompts=[\"Hello, world\"]'" (or run
# `tinylm pretrain 'train.sample_prompts=["Hello, world"]'`, one shell level, after make install).
# make bench / bench-kernels write their results here, outside the tracked tree; use
# BENCH_OUT=bench/results for a figure that goes into the repository.
BENCH_OUT ?= runs/bench
# torch pinned to the release whose CPU wheel this project is developed against; triton beside it
# on Linux (the Triton kernels; CPU machines run them only under TRITON_INTERPRET=1 in tests).
TORCH  := torch==2.13.0
TRITON := $(if $(filter Linux,$(shell uname -s)),triton==3.7.1,)
# A torch build for another CUDA version: make install TORCH_INDEX=https://download.pytorch.org/whl/cu126
TORCH_INDEX ?=

.DEFAULT_GOAL := help
.PHONY: help install pretrain sweep eval export package babylm generate test test-gpu bench bench-kernels clean clean-data clean-runs data tokenizer

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv with torch, triton and tinylm (idempotent)

$(STAMP): pyproject.toml Makefile
	@test ! -f $(STAMP) || echo "make: pyproject.toml or the Makefile changed since .venv was set up: updating .venv (make install)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH) $(TRITON) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

pretrain: $(STAMP)  ## train (default: tiny GPT on the embedded corpus); ARGS="model.n_layer=4 optim.lr=1e-3"; NPROC=N: torchrun DDP
	$(if $(NPROC),$(PY) -m torch.distributed.run --standalone --nproc_per_node=$(NPROC),$(PY)) -m tinylm.pretrain $(ARGS)

data: $(STAMP)  ## clean, budget, tokenize, shard; ARGS="data=babylm data.root=DIR data.budget_words=N data.out_dir=DIR"
	$(PY) -m tinylm.prepare_data $(ARGS)

tokenizer: $(STAMP)  ## train only the tokenizer of a corpus (same ARGS as make data)
	$(PY) -m tinylm.prepare_data tokenizer_only=true $(ARGS)

sweep: $(STAMP)  ## Hydra multirun; ARGS="optim.lr=1e-3,3e-3" (hydra/launcher=local_parallel|slurm_gpu, hydra/sweeper=lr_search)
	$(PY) -m tinylm.pretrain --multirun $(ARGS)

eval: $(STAMP)  ## zero-shot minimal pairs + dev perplexity; ARGS="ckpt=RUN_DIR tasks=FOLDER"
	$(PY) -m tinylm.eval $(ARGS)

export: $(STAMP)  ## Hugging Face folder (trust_remote_code); ARGS="ckpt=RUN_DIR out=DIR"
	$(PY) -m tinylm.export $(ARGS)

generate: $(STAMP)  ## sample from a run; ARGS="ckpt=RUN_DIR prompt='Once upon a time' n=5"
	$(PY) -m tinylm.generate $(ARGS)

package: $(STAMP)  ## BabyLM submission (final model + milestone revisions, card, compliance); ARGS="run=RUN_DIR out=DIR"
	$(PY) -m tinylm.package $(ARGS)

babylm: $(STAMP)  ## corpus -> data -> pretrain -> eval -> submission; ARGS="experiment=E data.root=DIR tasks=EVAL_DIR"
	$(PY) -m tinylm.babylm $(ARGS)

test: $(STAMP)  ## the whole pytest suite (CPU; Triton kernels under the interpreter)
	$(PY) -m pytest -q $(ARGS)

test-aot: $(STAMP)  ## every Triton kernel specialisation compiles for sm_80/sm_90 without spills (no GPU needed; long)
	TINYLM_AOT=all $(PY) -m pytest -q -s tests/kernels/test_aot.py $(ARGS)

test-gpu: $(STAMP)  ## only the tests marked gpu (bf16, real autotuning); fails without CUDA
	@$(PY) -c "import sys, torch; torch.cuda.is_available() or sys.exit('error: make test-gpu needs a CUDA device and a CUDA build of torch (this is torch ' + torch.__version__ + ', CUDA ' + str(torch.version.cuda) + '); see README.md, GPU setup')"
	$(PY) -m pytest -q -m gpu $(ARGS)

bench: $(STAMP)  ## training tokens/s (and MFU on CUDA) vs plain PyTorch models of the same shape; to runs/bench/ (BENCH_OUT=DIR)
	TINYLM_BENCH_RESULTS=$(BENCH_OUT) $(PY) bench/bench_train.py $(ARGS)

bench-kernels: $(STAMP)  ## Triton kernels against PyTorch (GPU only); to runs/bench/ (BENCH_OUT=DIR)
	TINYLM_BENCH_RESULTS=$(BENCH_OUT) $(PY) bench/bench_kernels.py $(ARGS)

clean:  ## remove test and build leftovers (keeps .venv, the data cache and every run)
	rm -rf .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

clean-data:  ## remove the data cache .cache/ (rebuilt on the next run)
	rm -rf .cache

RUN_FOLDERS := runs outputs multiruns
clean-runs:  ## remove every run (runs/, outputs/, multiruns/): lists them and asks; FORCE=1 skips the question
	@found=$$(ls -d $(RUN_FOLDERS) 2>/dev/null); \
	if [ -z "$$found" ]; then echo "no run folders ($(RUN_FOLDERS))"; exit 0; fi; \
	for d in $$found; do echo "$$d/: $$(find $$d -name config.yaml | wc -l) run(s), $$(du -sh $$d | cut -f1)"; \
	  find $$d -name config.yaml -exec dirname {} \; | sort | sed 's/^/  /'; done; \
	if [ "$(FORCE)" != 1 ]; then \
	  if [ ! -t 0 ]; then echo "error: not a terminal; pass FORCE=1 to remove these" >&2; exit 2; fi; \
	  printf "remove all of the above? [y/N] "; read answer; \
	  case "$$answer" in y|Y|yes) ;; *) echo "kept"; exit 0;; esac; \
	fi; \
	rm -rf $$found; echo "removed $$found"
