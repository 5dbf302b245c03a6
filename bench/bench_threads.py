"""Training-step time of a small GPT on the CPU with 1 thread and with torch's default, in one
process, on the machine as it is now, and what the automatic choice (train.threads=0,
tinylm/train/threads.py) would pick there (the load is printed: the point is how threads behave
when other work shares the cores).

    python bench/bench_threads.py [--steps 20] [--rounds 3] [--d-model 128] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import report
import torch

from tinylm.config import ModelConfig
from tinylm.models import build_model
from tinylm.train.threads import auto_threads


def step_seconds(threads: int, steps: int, d_model: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=512, max_seq_len=64, n_layer=2, n_head=2, d_model=d_model))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 512, (8, 64))
    times = []
    for _ in range(steps + 3):
        t = time.perf_counter()
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, 512), x.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    times = sorted(times[3:])
    return times[len(times) // 2]  # median: robust to a neighbour's burst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    default = torch.get_num_threads()
    auto, why = auto_threads()
    load = os.getloadavg()
    configs = {"1 thread": 1, f"torch default ({default})": default}
    # Rounds interleave the settings, so a neighbour's burst hits all of them alike; the median round counts.
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, n in configs.items():
            seconds[name].append(step_seconds(n, args.steps, args.d_model))
    med = {name: sorted(v)[len(v) // 2] for name, v in seconds.items()}
    rows = [(name, f"{med[name] * 1e3:.1f}", f"{med[name] / med['1 thread']:.2f}x",
             " ".join(f"{x * 1e3:.0f}" for x in seconds[name])) for name in configs]
    card = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"
    body = "\n".join([
        f"card: {card}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; auto: {why}",
        f"command: python bench/bench_threads.py --steps {args.steps} --d-model {args.d_model} --rounds {args.rounds}",
        f"GPT 2 layers d_model={args.d_model}, batch 8 x 64 tokens; median step time of {args.steps} steps per round,",
        f"median of {args.rounds} interleaved rounds; train.threads=0 (auto) would choose {auto} thread(s) now",
        "", report.text_table(("threads", "ms/step", "vs 1 thread", "per round (ms)"), rows)])
    print(body)
    report.save("threads", card, False, "CPU threads per training step on a shared machine", body, args.out)


if __name__ == "__main__":
    main()
