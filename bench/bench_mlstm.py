"""Time per token of the chunkwise mLSTM cell against causal attention, T = 512 ... 8192.

    python bench/bench_mlstm.py                                   # CUDA: 30m-sized token mixers, bf16
    python bench/bench_mlstm.py --lengths 512,2048,8192 --repeats 3 --threads 1   # a quick CPU run

What is timed is the token mixing of one layer, forward + backward (--forward-only: forward), on
random inputs: the chunkwise mLSTM cell (tinylm.models.mlstm_cell.mlstm_cell, gates included) against
causal attention (tinylm.ops.attention: Triton on CUDA, PyTorch SDPA on CPU), and, up to
--parallel-max tokens, the quadratic parallel mLSTM form. Chunkwise cost per token should stay
roughly flat in T; attention's grows linearly. Defaults on CUDA: mLSTM 4 heads x 256 (mlstm_30m's
cell: 2 x 512 inner width) vs attention 8 heads x 64 (gpt_30m), batch 4, bf16 autocast. On CPU
the default dims are small (2 heads x 32 for both, batch 1, fp32): a shape check of the scaling,
not a speed claim. A table goes to stdout and to bench/results/mlstm_<card>_<date>.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time

import torch

from report import save, text_table

from tinylm import ops
from tinylm.models.mlstm_cell import mlstm_cell


def timed(fn, device, repeats: int, warmup: int) -> float:
    """Fastest of `repeats` runs of fn() after `warmup`, in seconds (the least disturbed by other load)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="512,1024,2048,4096,8192")
    p.add_argument("--batch", type=int, default=4 if cuda else 1)
    p.add_argument("--mlstm-heads", type=int, default=4 if cuda else 2)
    p.add_argument("--mlstm-head-dim", type=int, default=256 if cuda else 32)
    p.add_argument("--attn-heads", type=int, default=8 if cuda else 2)
    p.add_argument("--attn-head-dim", type=int, default=64 if cuda else 32)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--parallel-max", type=int, default=2048, help="longest T for the parallel form (0: skip)")
    p.add_argument("--forward-only", action="store_true")
    p.add_argument("--repeats", type=int, default=10 if cuda else 5)
    p.add_argument("--warmup", type=int, default=3 if cuda else 1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default=None, help="results file (default: bench/results/mlstm_<card>_<date>.md)")
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if cuda else "cpu")
    card = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else (lambda: torch.autocast("cpu", enabled=False))
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device).requires_grad_(not args.forward_only)

    def run(fn, inputs):
        def step():
            with autocast():
                out = fn(*inputs)
            if not args.forward_only:
                out.float().square().mean().backward()
                for t in inputs:
                    t.grad = None
        return step

    B, Hm, Dm, Ha, Da = args.batch, args.mlstm_heads, args.mlstm_head_dim, args.attn_heads, args.attn_head_dim
    rows = []
    for T in (int(t) for t in args.lengths.split(",")):
        cell_in = [rand(B, Hm, T, Dm) for _ in range(3)] + [rand(B, Hm, T), (rand(B, Hm, T).detach() + 3).requires_grad_(not args.forward_only)]
        chunk = timed(run(lambda *x: mlstm_cell(*x, form="chunkwise", chunk_size=args.chunk)[0], cell_in), device, args.repeats, args.warmup)
        par = None
        if T <= args.parallel_max:
            par = timed(run(lambda *x: mlstm_cell(*x, form="parallel")[0], cell_in), device, args.repeats, args.warmup)
        attn_in = [rand(B, Ha, T, Da) for _ in range(3)]
        attn = timed(run(lambda q, k, v: ops.attention(q, k, v, causal=True), attn_in), device, args.repeats, args.warmup)
        del cell_in, attn_in
        us = lambda s: f"{s / (B * T) * 1e6:.3f}"  # noqa: E731  microseconds per token
        rows.append((str(T), us(chunk), us(par) if par is not None else "-", us(attn), f"{attn / chunk:.2f}x"))
        print("  ".join(rows[-1]), flush=True)

    header = ("T", "mLSTM chunkwise us/tok", "mLSTM parallel us/tok", "attention us/tok", "attention / chunkwise")
    table = text_table(header, rows, right=True)
    date = dt.date.today().isoformat()
    meta = (f"card: {card}\ndate: {date}\ntorch {torch.__version__}\ncommand: python {' '.join(sys.argv)}\n"
            f"{'forward' if args.forward_only else 'forward + backward'}; batch {B}; "
            f"mLSTM {Hm} heads x {Dm}, chunk {args.chunk}; attention {Ha} heads x {Da} (tinylm.ops.attention); "
            f"{'bf16 autocast' if cuda else 'fp32'}; best of {args.repeats} after {args.warmup} warm-up\n")
    if not cuda:
        meta += "note: CPU run with small dims: it shows how cost per token scales with T, not GPU speed\n"
    print("\n" + meta + "\n" + table)
    save("mlstm", card, cuda, "mLSTM (chunkwise) vs causal attention: time per token", meta + "\n" + table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
