#!/usr/bin/env bash
# Every GPU check in one go, for a single call on a lent H100/H200 (or any CUDA box):
#   1. the tests marked `gpu` (bf16, real autotuning) for the Triton kernels;
#   2. bench/bench_kernels.py: attention, BERT's relative attention (vs SDPA with the dense bias and
#      FlexAttention), LayerNorm and fused linear cross-entropy (time and peak memory) against
#      PyTorch (eager and compiled), ratios in the same run; then, as its own call,
#      the chunkwise mLSTM kernel vs the native chunkwise form, vs causal SDPA and vs the
#      mlstm_kernels package's Triton backends (only if importable: carry its wheel and its
#      dependencies in .whl/ too, e.g. pip download mlstm-kernels==2.0.6 into .whl);
#   3. bench/bench_train.py: GPT training tokens/s and MFU, tinylm (Triton) against a plain
#      compiled PyTorch GPT and against tinylm with kernels=torch, at 124M and ~30M shapes; then
#      mlstm_30m's own shape (the mLSTM kernel end to end, kernels=triton vs kernels=torch).
# Results land in $OUT (the device tool's output folder) or bench/results/. The step timeouts add up
# to 540 s, so the whole script fits one 10-minute device call with time to spare for its start;
# a step cut by its timeout still leaves what it printed in its log.
#
# The lent machine has torch and triton but not hydra-core/omegaconf: carry their wheels in .whl/
# (see ../shared/ENV.md), e.g. run(command="bash bench/gpu_checks.sh", carry=[".whl"]).
set -uo pipefail
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
# Without an editable install, make kernels/ importable as tinylm.kernels (setuptools maps it so
# on install); the device machine works on a throwaway copy of the tree.
$PY -c "import tinylm.kernels" 2>/dev/null || ln -sfn ../kernels tinylm/kernels
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu_info.txt"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu_info.txt"
timeout 110 $PY -m pytest -q -m gpu tests/kernels 2>&1 | tee "$OUT/gpu_tests.txt"
timeout 130 $PY bench/bench_kernels.py --only attention doc bert layernorm ce --out "$OUT/kernels_gpu.md" 2>&1 | tee "$OUT/bench_kernels.log"
timeout 80 $PY bench/bench_kernels.py --only mlstm --rep 50 --out "$OUT/kernels_mlstm_gpu.md" 2>&1 | tee "$OUT/bench_kernels_mlstm.log"
timeout 110 $PY bench/bench_train.py --out "$OUT/train_gpu.md" 2>&1 | tee "$OUT/bench_train.log"
timeout 60 $PY bench/bench_train.py --families mlstm --shapes mlstm_30m --out "$OUT/train_mlstm_gpu.md" 2>&1 | tee "$OUT/bench_train_mlstm.log"
timeout 50 $PY bench/bench_eval.py --out "$OUT/eval_gpu.md" 2>&1 | tee "$OUT/bench_eval.log"
