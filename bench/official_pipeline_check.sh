#!/usr/bin/env bash
# Does the official BabyLM 2025 zero-shot pipeline score a tinylm model as `tinylm.eval` does?
# Exports RUN_DIR with tinylm.export, runs the pipeline's own sentence_zero_shot/run.py on BLiMP fast
# (unmodified, from a checkout you provide), scores the same run with tinylm.eval and the same scorer,
# and compares per item (accuracy per paradigm, differing verdicts, ties, max |delta log-prob|).
#
# Usage: bench/official_pipeline_check.sh PIPELINE_DIR RUN_DIR [BACKEND]
#   PIPELINE_DIR  a checkout of github.com/babylm/evaluation-pipeline-2025 (its requirements installed
#                 in PIPE_PY's environment; only the zero-shot part is needed: torch, transformers,
#                 datasets, aiohttp, scipy, tqdm)
#   BACKEND       causal | mntp | mlm (default causal); tinylm's scorer: causal | mntp | pll
# Env: PIPE_PY (default PIPELINE_DIR/.venv/bin/python), PY (tinylm's python, default .venv/bin/python),
#      DATA (default ../shared/eval_dev/babylm2025/fast_eval/blimp_fast), OUT (default
#      /tmp/official_check/<run name>), THREADS (default 1).
# Nothing of the pipeline is copied into tinylm: bench/official_pipeline_compare.py imports it from
# PIPELINE_DIR at run time and only wraps one function to record the scores it ranks.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,17p "$0"; exit 2; }
pipeline=$(cd "$1" && pwd); run=$(cd "$2" && pwd); backend=${3:-causal}
name=$(basename "$run")
PY=${PY:-.venv/bin/python}
PIPE_PY=${PIPE_PY:-$pipeline/.venv/bin/python}
DATA=$(cd "${DATA:-../shared/eval_dev/babylm2025/fast_eval/blimp_fast}" && pwd)
OUT=${OUT:-/tmp/official_check/$name}
export OMP_NUM_THREADS=${THREADS:-1}
case $backend in causal) scorer=causal ;; mntp) scorer=mntp ;; mlm) scorer=pll ;;
  *) echo "error: BACKEND must be causal, mntp or mlm, not $backend" >&2; exit 2 ;; esac
mkdir -p "$OUT"
compare=$(pwd)/bench/official_pipeline_compare.py

# 1. export (float32, parity-checked by tinylm.export itself)
[ -f "$OUT/export/$name/config.json" ] || $PY -m tinylm.export ckpt="$run" out="$OUT/export/$name"

# 2. the official pipeline, as eval_zero_shot_fast.sh calls it (run from its checkout)
(cd "$pipeline" && "$PIPE_PY" "$compare" pipeline "$pipeline" "$OUT/pipeline_$backend.json" -- \
   --model_path_or_name "$OUT/export/$name" --backend "$backend" --task blimp --data_path "$DATA" \
   --save_predictions --output_dir "$OUT/results")

# 3. tinylm.eval with the same scorer on the same run (the native checkpoint, not the export)
$PY "$compare" tinylm "$OUT/tinylm_$scorer.json" -- ckpt="$run" tasks="$DATA" out="$OUT/tinylm_eval_$scorer" \
   scorer=$scorer threads=${THREADS:-1} dev=false samples=false

# 4. per-item comparison
$PY "$compare" compare "$OUT/pipeline_$backend.json" "$OUT/tinylm_$scorer.json" --md | tee "$OUT/compare_$backend.md"
