#!/usr/bin/env bash
# Train one recipe on ../shared/corpora/babylm_like, then score it on ../shared/eval_dev (BLiMP fast,
# 24 paradigms) and Zorro; prints one JSON line. Usage: bench/quality_run.sh NAME [pretrain overrides...]
# Env: THREADS (torch threads, default 1), SCORER (default: the run's auto choice), ZORRO_MAX (items per
# Zorro paradigm, default all 2000; PLL/MNTP scoring of all 46k pairs takes ~10+ CPU minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1; shift
out=runs/quality/$name
PY=${PY:-.venv/bin/python}
start=$(date +%s)
$PY -m tinylm.pretrain data=babylm data.root=../shared/corpora/babylm_like train.progress=false \
  train.sample_every=0 train.milestones=false train.threads=${THREADS:-1} hydra.run.dir=$out "$@" > $out.train.log 2>&1
mid=$(date +%s)
$PY -m tinylm.eval ckpt=$out tasks=../shared/eval_dev out=$out/eval_dev threads=${THREADS:-1} samples=false ${SCORER:+scorer=$SCORER} > $out.evaldev.log 2>&1
$PY -m tinylm.eval ckpt=$out tasks=../shared/eval_samples/zorro out=$out/eval_zorro threads=${THREADS:-1} dev=false samples=false ${SCORER:+scorer=$SCORER} ${ZORRO_MAX:+max_items=$ZORRO_MAX} > $out.zorro.log 2>&1
end=$(date +%s)
$PY - "$out" "$name" $((mid-start)) $((end-mid)) "$*" <<'PY'
import json, sys
out, name, train_s, eval_s, args = sys.argv[1:]
dev = json.load(open(f"{out}/eval_dev/results.json")); zo = json.load(open(f"{out}/eval_zorro/results.json"))
summ = json.load(open(f"{out}/summary.json"))
print(json.dumps({"name": name, "args": args, "train_s": int(train_s), "eval_s": int(eval_s),
                  "dev_loss": summ["final_dev_loss"], "tokens_seen": summ["tokens_seen"], "words_seen": summ["words_seen"],
                  "tokens_per_s": round(summ["tokens_per_s"]), "eval_dev": dev["summary"], "zorro": zo["summary"],
                  "scorer": dev.get("scorer"), "dev_ppl": dev.get("dev")}))
PY
