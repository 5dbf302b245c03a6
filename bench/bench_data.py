"""Data pipeline throughput and memory on the BabyLM-like corpus (CPU).

    python bench/bench_data.py                       # ../shared/corpora/babylm_like: 8M and 10 x (80M) words
    python bench/bench_data.py --scale 10 13         # also 13 x (105M words)
    python bench/bench_data.py --scale 0             # skip the replicated corpus
    python bench/bench_data.py --root DIR --vocab 16384

Measures, each build in a fresh subprocess (so its peak RSS is its own):
  1. the corpus as it is (~8M words, data=babylm defaults: cleaning + near-dedup): seconds for
     clean (read, hash, cut, clean, dedup, split), tokenizer training (separately), tokenize+shard,
     and the peak RSS;
  2. the corpus replicated --scale times into a temporary folder (10 x: 81M words, 13 x: 105M;
     data.dedup=none, or every copy would be dropped as a duplicate): the same figures, peak RSS above all;
  3. the training loader (TokenLoader) on the shard of 1: batches/s x tokens per batch.
Prints a table and writes it to bench/results/data_cpu_<date>.md with the machine, date and command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO.parent / "shared" / "corpora" / "babylm_like"


def build(root: str, out_dir: str, vocab: int, extra: dict) -> dict:
    """One prepare_data build in this process (the child side)."""
    from tinylm.config import DataConfig, TokenizerConfig
    from tinylm.data.pipeline import prepare_data

    timings: dict = {}
    t0 = time.perf_counter()
    data = prepare_data(DataConfig(kind="babylm", root=root, out_dir=out_dir, **extra),
                        TokenizerConfig(vocab_size=vocab), log=None, timings=timings)
    total = time.perf_counter() - t0
    r = data.report
    stages = {k: v for k, v in timings.items() if not k.endswith("_mb")}
    return {"total_s": total, **{f"{k}_s": v for k, v in stages.items()},
            **{k: v for k, v in timings.items() if k.endswith("_mb")},
            "hash_s": total - sum(stages.values()),
            "words_total": r["words_total"], "words_train": r["words_train"], "tokens_train": r["tokens_train"],
            "tokens_dev": r["tokens_dev"], "documents": r["documents"], "duplicates": r["duplicates_removed"],
            "input_bytes": sum(f["bytes"] for f in r["input_files"].values()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(root: Path, out_dir: Path, vocab: int, extra: dict) -> dict:
    code = ("import json, sys; sys.path.insert(0, %r); from bench_data import build; "
            "print('RESULT ' + json.dumps(build(%r, %r, %d, %s)))") % (
        str(Path(__file__).parent), str(root), str(out_dir), vocab, repr(extra))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"build failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def replicate(root: Path, dest: Path, times: int) -> None:
    """Each <domain>.train concatenated `times` times (dev files copied once)."""
    (dest / "dev").mkdir(parents=True)
    for f in sorted(root.glob("*.train")):
        with open(dest / f.name, "wb") as out:
            for _ in range(times):
                with open(f, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
    for f in sorted((root / "dev").glob("*.dev")):
        shutil.copyfile(f, dest / "dev" / f.name)


def loader_speed(shard_dir: Path, shapes, seconds: float = 3.0) -> list[dict]:
    from tinylm.data.loader import TokenLoader, word_counts_of
    from tinylm.data.shards import open_shard
    from tinylm.data.tokenizer import Tokenizer

    shard = open_shard(shard_dir, "train")
    word_counts = word_counts_of(shard, Tokenizer(shard_dir / "tokenizer.model").word_start_table())
    rows = []
    for batch, seq in shapes:
        loader = TokenLoader(shard.tokens, seq, batch, 0, word_counts)
        for _ in range(50):  # warm up (page cache, allocator)
            loader.next_batch()
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            for _ in range(100):
                loader.next_batch()
            n += 100
        rows.append({"batch": batch, "seq_len": seq, "batches_per_s": n / elapsed,
                     "tokens_per_s": n / elapsed * batch * seq})
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(x for x in open("/proc/meminfo") if x.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return f"CPU: {cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--scale", type=int, nargs="+", default=[10], help="replication factors of the large runs (0: none)")
    ap.add_argument("--tmp", type=Path, default=None, help="where the replicated corpus and outputs go")
    args = ap.parse_args(argv)
    if not args.root.is_dir():
        raise SystemExit(f"{args.root} does not exist; pass --root")
    import numpy
    import sentencepiece

    results = {}
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench-data-") as tmp:
        tmp = Path(tmp)
        print(f"building {args.root} ...", flush=True)
        results["corpus"] = run_child(args.root, tmp / "d1", args.vocab, {})
        print(json.dumps(results["corpus"]), flush=True)
        loader = loader_speed(tmp / "d1", [(32, 128), (64, 256), (16, 1024)])
        for scale in (s for s in args.scale if s > 1):
            big = tmp / "big"
            replicate(args.root, big, scale)
            print(f"building {scale} x replicated corpus ...", flush=True)
            results[scale] = run_child(big, tmp / f"d{scale}", args.vocab, {"dedup": "none"})
            print(json.dumps(results[scale]), flush=True)
            shutil.rmtree(big)
            shutil.rmtree(tmp / f"d{scale}")

    date = dt.date.today().isoformat()
    cmd = "python bench/bench_data.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# Data pipeline: clean / tokenize / shard throughput, peak memory, loader speed", "",
        "```", machine(), f"date: {date}",
        f"python {platform.python_version()}, numpy {numpy.__version__}, sentencepiece {sentencepiece.__version__}",
        f"command: {cmd.strip()}",
        f"corpus: {args.root} (data=babylm defaults: cleaning, near-dedup per domain); tokenizer: sentencepiece BPE {args.vocab}",
        "each build runs in a fresh process; peak RSS = its ru_maxrss", "",
        "hash: sha256 of every input byte (cache key); clean: read, cut, clean, dedup, split, budget; "
        "tokenizer: sentencepiece training (timed apart); tokenize+shard: encode, write .bin/.npy, features, baseline",
        "",
        "corpus                        | words       | input MB | hash s | clean s | tokenize+shard s | hash+clean+shard s | tokenizer s | peak RSS MB",
        "------------------------------+-------------+----------+--------+---------+------------------+--------------------+-------------+------------",
    ]
    labels = {"corpus": "babylm_like", **{s: f"babylm_like x {s} (dedup=none)" for s in args.scale}}
    for key, r in results.items():
        main_s = r["hash_s"] + r["corpus_s"] + r["shards_s"]
        lines.append(f"{labels[key]:<29} | {r['words_total']:>11,} | {r['input_bytes'] / 1e6:>8.1f} | {r['hash_s']:>6.1f} | "
                     f"{r['corpus_s']:>7.1f} | {r['shards_s']:>16.1f} | {main_s:>18.1f} | {r['tokenizer_s']:>11.1f} | "
                     f"{r['peak_rss_mb']:>11.0f}")
    lines += ["", "peak RSS (MB) after each stage: " + "; ".join(
        f"{labels[k]}: clean {r['corpus_peak_rss_mb']:.0f}, tokenizer {r['tokenizer_peak_rss_mb']:.0f}, "
        f"shards {r['shards_peak_rss_mb']:.0f}" for k, r in results.items())]
    first = results["corpus"]
    lines += ["", f"babylm_like: {first['tokens_train']:,} train + {first['tokens_dev']:,} dev tokens, "
              f"{first['documents']['train']:,} + {first['documents']['dev']:,} documents, duplicates removed "
              f"{first['duplicates']}", "",
              "loader (TokenLoader.next_batch on the babylm_like train shard, memmap, uint16 -> int64 + words count)", "",
              "batch x seq_len | batches/s | tokens/s",
              "----------------+-----------+-----------"]
    for row in loader:
        lines.append(f"{row['batch']:>5} x {row['seq_len']:<8} | {row['batches_per_s']:>9,.0f} | {row['tokens_per_s'] / 1e6:>6.1f}M")
    limits = [f"limits: clean+tokenize+shard of ~8M words <= 60 s: {first['hash_s'] + first['corpus_s'] + first['shards_s']:.1f} s; "
              f"peak RSS <= 2048 MB: {max(r['peak_rss_mb'] for r in results.values()):.0f} MB; "
              f"loader >= 50M tokens/s: {min(r['tokens_per_s'] for r in loader) / 1e6:.0f}M"]
    lines += ["", *limits, "```", ""]
    text = "\n".join(lines)
    print(text)
    out = REPO / "bench" / "results" / f"data_cpu_{date}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
