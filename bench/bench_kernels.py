#!/usr/bin/env python
"""Benchmark the Triton kernels (tinylm.kernels) against PyTorch on one GPU.

Every figure is a median from triton.testing.do_bench, and every kernel timing is reported as a
speedup over a PyTorch baseline measured in the same run (speedup = baseline time / our time):

- attention, bf16, fwd and fwd+bwd vs F.scaled_dot_product_attention (TFLOP/s, causal counted as
  half of the dense work; padding-masked rows count the dense work, as SDPA does it);
- document-masked causal attention vs FlexAttention (compiled, document+causal block mask) and vs
  SDPA with a dense boolean mask (TFLOP/s of useful in-document causal work only);
- LTG-BERT's disentangled relative attention, bf16, fwd and fwd+bwd vs SDPA with the dense
  (B, H, T, T) position bias (BERT's path before the kernel) and vs FlexAttention with a score_mod
  (bench/bench_kernels_bert.py);
- LayerNorm, bf16, fwd and fwd+bwd vs eager nn.LayerNorm and torch.compile'd F.layer_norm (GB/s,
  next to the card's copy bandwidth measured here);
- fused linear cross-entropy, bf16 fwd+bwd vs eager and compiled head + F.cross_entropy (time and
  peak memory; bench/bench_kernels_ce.py);
- the chunkwise mLSTM cell (tinylm.kernels.mlstm), bf16 under autocast, fwd and fwd+bwd at
  B16 H12 D64 and T = 1024, 4096, 8192 (Mtok/s) vs the model's native chunkwise PyTorch form, vs
  the fastest Triton chunkwise backend of the `mlstm_kernels` package when it is installed (a
  printed line says so when not), and vs causal SDPA attention of the same shape.

The table goes to stdout and, as markdown, to --out (a CSV with the same rows next to it).

    python bench/bench_kernels.py [--only attention doc bert layernorm ce mlstm] [--out PATH]

Needs a CUDA GPU; without one it says so and exits 0.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

SECTIONS = ("attention", "doc", "bert", "layernorm", "ce", "mlstm")
RESULTS_DIR = Path(os.environ.get("TINYLM_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")  # see report.py

# (B, H, T, D, causal, padding mask)
ATTN_SHAPES = [
    (16, 12, 1024, 64, True, False),
    (8, 12, 2048, 64, True, False),
    (64, 12, 128, 64, False, False),
    (16, 12, 512, 64, False, True),
    (16, 8, 1024, 128, True, False),
]
DOC_SHAPE = (8, 12, 2048, 64, 8)  # B, H, T, D, documents per row
LN_SHAPES = [(16384, 512), (16384, 768), (16384, 1024), (4096, 4096)]
MLSTM_SHAPES = [(16, 12, T, 64) for T in (1024, 4096, 8192)]  # B, H, T, D (issue 10's goal shape)
MLSTM_CHUNK = 64  # model.mlstm_chunk_size of the shipped configs
# mlstm_kernels' Triton chunkwise backends, fastest first as far as its authors say; every one that
# imports is timed and the fastest counts as the baseline
MLSTM_KERNELS_BACKENDS = ("chunkwise--triton_xl_chunk", "chunkwise--triton_limit_chunk")


# --------------------------------------------------------------------------------------------------
# pure helpers (no GPU needed)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help="markdown report path (default: bench/results/kernels_<gpu>_<date>.md); "
                        "a .csv with the same rows is written next to it")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="run only these sections")
    p.add_argument("--rep", type=int, default=100, help="do_bench repetition time per figure, ms")
    p.add_argument("--warmup", type=int, default=25, help="do_bench warmup time per figure, ms")
    return p.parse_args(argv)


def default_out_path(gpu_name: str, date: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    return RESULTS_DIR / f"kernels_{slug}_{date}.md"


def attn_flops(B: int, H: int, T: int, D: int, causal: bool, backward: bool) -> float:
    """Matmul FLOPs of attention: fwd = QK^T + PV = 4 B H T^2 D; the backward recomputes QK^T and
    does 4 more matmuls (2.5x fwd). Causal counts half."""
    f = 4.0 * B * H * T * T * D * (3.5 if backward else 1.0)
    return f / 2 if causal else f


def useful_pairs(doc_lengths: list[list[int]]) -> int:
    """(query, key) pairs a document-masked causal attention must compute: L(L+1)/2 per doc."""
    return sum(L * (L + 1) // 2 for row in doc_lengths for L in row)


def doc_lengths_for(T: int, n_docs: int, seed: int) -> list[int]:
    """n_docs random document lengths (each >= 16) summing to T, deterministic in seed."""
    import random

    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, T // 16), n_docs - 1))
    bounds = [0] + [c * 16 for c in cuts] + [T]
    return [b - a for a, b in zip(bounds, bounds[1:])]


@dataclass
class Row:
    section: str
    case: str
    pass_: str  # "fwd" | "fwd+bwd"
    baseline: str
    ours_ms: float
    base_ms: float
    unit: str  # "TFLOP/s" | "GB/s"
    ours_rate: float
    base_rate: float
    goal: str = ""
    met: bool | None = None

    @property
    def speedup(self) -> float:
        return self.base_ms / self.ours_ms if self.ours_ms > 0 else float("nan")


COLUMNS = ["section", "case", "pass", "baseline", "ours ms", "baseline ms", "ours rate",
           "baseline rate", "unit", "speedup", "goal", "met"]


def _cells(r: Row) -> list[str]:
    met = "" if r.met is None else ("yes" if r.met else "NO")
    return [r.section, r.case, r.pass_, r.baseline, f"{r.ours_ms:.3f}", f"{r.base_ms:.3f}",
            f"{r.ours_rate:.1f}", f"{r.base_rate:.1f}", r.unit, f"{r.speedup:.2f}x", r.goal, met]


def format_table(rows: list[Row]) -> str:
    """Fixed-width table for the terminal."""
    cells = [COLUMNS] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(rows: list[Row], header: dict[str, str]) -> str:
    out = ["# tinylm kernel benchmark", ""]
    out += [f"- **{k}**: {v}" for k, v in header.items()]
    out += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(out) + "\n"


def format_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow(_cells(r))
    return buf.getvalue()


def goal_for(section: str, case: dict, pass_: str, baseline: str) -> tuple[str, float | None, str]:
    """(goal text, threshold, 'speedup' | 'rate') for a row; ('', None, '') when it has none."""
    if pass_ != "fwd+bwd":
        return "", None, ""
    if section == "attention":
        if case["T"] >= 1024:
            return ">= 1.0x SDPA", 1.0, "speedup"
        if case["T"] <= 512:
            return ">= 1.3x SDPA", 1.3, "speedup"
    if section == "doc" and baseline.startswith("flex"):
        return ">= 2x Flex", 2.0, "speedup"
    if section == "mlstm":
        if baseline.startswith("mlstm_kernels"):
            return ">= 2x mlstm_kernels", 2.0, "speedup"
        if baseline == "SDPA causal" and case["T"] >= 4096:
            return ">= 1.0x SDPA", 1.0, "speedup"
    if section == "layernorm":
        if baseline == "eager" and case["N"] <= 1024:
            return ">= 1.5x eager", 1.5, "speedup"
        if baseline == "eager" and case["M"] == 4096 and case["N"] == 4096:
            return ">= 2.5 TB/s", 2500.0, "rate"
    return "", None, ""


def make_row(section, case, case_name, pass_, baseline, ours_ms, base_ms, unit, work) -> Row:
    """work: FLOPs (unit TFLOP/s), bytes (GB/s) or tokens (Mtok/s) of one call, the same for both sides."""
    scale = {"TFLOP/s": 1e-12, "GB/s": 1e-9, "Mtok/s": 1e-6}[unit]
    rate = lambda ms: work * scale / (ms * 1e-3) if ms > 0 else float("nan")  # noqa: E731
    row = Row(section, case_name, pass_, baseline, ours_ms, base_ms, unit, rate(ours_ms),
              rate(base_ms))
    text, threshold, what = goal_for(section, case, pass_, baseline)
    if threshold is not None:
        row.goal = text
        row.met = (row.speedup if what == "speedup" else row.ours_rate) >= threshold
    return row


# --------------------------------------------------------------------------------------------------
# GPU benchmarks


def _bench(fn, args, grad_to_none=None) -> float:
    from triton.testing import do_bench

    try:
        return do_bench(fn, warmup=args.warmup, rep=args.rep, grad_to_none=grad_to_none,
                        return_mode="median")
    except Exception as e:  # one failing baseline must not sink the whole report
        print(f"  ! {getattr(fn, '__name__', fn)} failed: {type(e).__name__}: {e}", flush=True)
        return float("nan")


def _fwd_bwd(f, grad):
    """One training step's worth of f: forward, then backward from `grad`."""

    def step():
        f().backward(grad)

    return step


def bench_attention(args, rows):
    import torch
    import torch.nn.functional as F

    from tinylm.kernels.attention import flash_attention

    for B, H, T, D, causal, padded in ATTN_SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, generator=g)
                       for _ in range(4))
        for t in (q, k, v):
            t.requires_grad_()
        kpm = sdpa_mask = None
        if padded:  # right padding, each row keeps between T/2 and T real tokens
            lengths = torch.randint(T // 2, T + 1, (B,), device="cuda", generator=g)
            kpm = torch.arange(T, device="cuda")[None] < lengths[:, None]
            sdpa_mask = kpm[:, None, None, :]
        ours = lambda: flash_attention(q, k, v, causal, kpm, None)  # noqa: E731
        sdpa = lambda: F.scaled_dot_product_attention(  # noqa: E731
            q, k, v, attn_mask=sdpa_mask, is_causal=causal)
        name = f"B{B} H{H} T{T} D{D} {'causal' if causal else 'bidir'}"
        name += " +pad" if padded else ""
        case = dict(B=B, H=H, T=T, D=D)
        print(f"attention {name}", flush=True)
        for pass_, backward in (("fwd", False), ("fwd+bwd", True)):
            if backward:
                t_ours = _bench(_fwd_bwd(ours, do), args, [q, k, v])
                t_base = _bench(_fwd_bwd(sdpa, do), args, [q, k, v])
            else:
                with torch.no_grad():
                    t_ours, t_base = _bench(ours, args), _bench(sdpa, args)
            rows.append(make_row("attention", case, name, pass_, "SDPA", t_ours, t_base,
                                 "TFLOP/s", attn_flops(B, H, T, D, causal, backward)))
        del q, k, v, do
        torch.cuda.empty_cache()


def bench_doc(args, rows):
    import torch
    import torch.nn.functional as F

    from tinylm.kernels.attention import flash_attention

    B, H, T, D, n_docs = DOC_SHAPE
    lengths = [doc_lengths_for(T, n_docs, seed=b) for b in range(B)]
    doc = torch.stack([torch.repeat_interleave(torch.arange(n_docs), torch.tensor(ls))
                       for ls in lengths]).to("cuda")  # (B, T), non-decreasing per row
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, generator=g)
                   for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_()
    pos = torch.arange(T, device="cuda")
    dense = (doc[:, None, :, None] == doc[:, None, None, :]) & (pos[:, None] >= pos[None, :])
    impls = {
        "ours": lambda: flash_attention(q, k, v, True, None, doc),
        "SDPA dense mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense),
    }
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        def doc_causal(b, h, q_idx, kv_idx):
            return (doc[b, q_idx] == doc[b, kv_idx]) & (q_idx >= kv_idx)

        block_mask = create_block_mask(doc_causal, B, None, T, T, device="cuda")
        flex = torch.compile(flex_attention, dynamic=False)
        impls["flex (compiled)"] = lambda: flex(q, k, v, block_mask=block_mask)
    except Exception as e:
        print(f"  ! FlexAttention unavailable: {type(e).__name__}: {e}", flush=True)

    flops_fwd = 4.0 * H * D * useful_pairs(lengths)
    name = f"B{B} H{H} T{T} D{D} causal, {n_docs} docs/row"
    print(f"doc-masked {name}", flush=True)
    for pass_, backward in (("fwd", False), ("fwd+bwd", True)):
        times = {}
        for impl, f in impls.items():
            if backward:
                times[impl] = _bench(_fwd_bwd(f, do), args, [q, k, v])
            else:
                with torch.no_grad():
                    times[impl] = _bench(f, args)
        for impl in impls:
            if impl != "ours":
                rows.append(make_row("doc", {}, name, pass_, impl, times["ours"], times[impl],
                                     "TFLOP/s", flops_fwd * (3.5 if backward else 1.0)))


def copy_bandwidth_gbs(args) -> float:
    """Device copy bandwidth: read + write of a 1 GiB bf16 tensor."""
    import torch

    src = torch.empty(2**29, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    ms = _bench(lambda: dst.copy_(src), args)
    nbytes = 2 * src.numel() * src.element_size()
    del src, dst
    torch.cuda.empty_cache()
    return nbytes * 1e-9 / (ms * 1e-3)


def bench_layernorm(args, rows):
    import torch
    import torch.nn.functional as F

    from tinylm.kernels.layer_norm import fused_layer_norm

    compiled_ln = torch.compile(lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b, 1e-5),
                                dynamic=False)
    for M, N in LN_SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(M, N, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
        dy = torch.randn(M, N, device="cuda", dtype=torch.bfloat16, generator=g)
        eager = torch.nn.LayerNorm(N, device="cuda", dtype=torch.bfloat16)
        w, b = eager.weight, eager.bias
        impls = {
            "ours": lambda: fused_layer_norm(x, w, b, 1e-5),
            "eager": lambda: eager(x),
            "torch.compile": lambda: compiled_ln(x, w, b),
        }
        name = f"{M}x{N}"
        case = dict(M=M, N=N)
        # Nominal DRAM traffic, the same for every implementation: fwd reads x, writes y;
        # bwd reads x and dy, writes dx (weights and per-row statistics are negligible).
        elem = x.element_size()
        nbytes = {"fwd": 2 * M * N * elem, "fwd+bwd": 5 * M * N * elem}
        print(f"layernorm {name}", flush=True)
        for pass_ in ("fwd", "fwd+bwd"):
            times = {}
            for impl, f in impls.items():
                if pass_ == "fwd+bwd":
                    times[impl] = _bench(_fwd_bwd(f, dy), args, [x, w, b])
                else:
                    with torch.no_grad():
                        times[impl] = _bench(f, args)
            for impl in ("eager", "torch.compile"):
                rows.append(make_row("layernorm", case, name, pass_, impl, times["ours"],
                                     times[impl], "GB/s", nbytes[pass_]))


def _mlstm_kernels_baseline():
    """{name: fn(q, k, v, i, f) -> h} for the mlstm_kernels Triton chunkwise backends that load."""
    try:
        from mlstm_kernels.torch import get_mlstm_kernel
    except Exception as e:  # not installed (it is not a tinylm dependency)
        print(f"  mlstm_kernels not importable ({type(e).__name__}: {e}); skipping that baseline", flush=True)
        return {}
    out = {}
    for name in MLSTM_KERNELS_BACKENDS:
        try:
            out[name] = get_mlstm_kernel(name)
        except Exception as e:
            print(f"  mlstm_kernels backend {name} unavailable: {type(e).__name__}: {e}", flush=True)
    return out


def bench_mlstm(args, rows):
    import torch
    import torch.nn.functional as F

    from tinylm import ops
    from tinylm.models.mlstm_cell import mlstm_cell

    theirs = _mlstm_kernels_baseline()
    for B, H, T, D in MLSTM_SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, dh = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, generator=g)
                       for _ in range(4))
        i_pre = torch.randn(B, H, T, device="cuda", generator=g)
        f_pre = torch.randn(B, H, T, device="cuda", generator=g) + 3.0  # sigmoid forget gate near init
        leaves = [q, k, v, i_pre, f_pre]
        for t in leaves:
            t.requires_grad_()

        def under_autocast(fn):  # as in training: bf16 autocast, fp32 gates
            def run():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return fn()
            return run

        impls = {
            "ours": under_autocast(lambda: ops.mlstm_cell(q, k, v, i_pre, f_pre, "chunkwise", "sigmoid", MLSTM_CHUNK,
                                                          backend="triton")[0]),
            "native chunkwise": under_autocast(lambda: mlstm_cell(q, k, v, i_pre, f_pre, "chunkwise", "sigmoid",
                                                                  MLSTM_CHUNK)[0]),
            "SDPA causal": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        }
        for name, fn in theirs.items():
            # their interface: f is the forget gate pre-activation (log-sigmoid inside), i the input one
            impls[f"mlstm_kernels {name.split('--')[1]}"] = (lambda fn=fn: fn(q=q, k=k, v=v, i=i_pre.to(q.dtype),
                                                                               f=f_pre.to(q.dtype)))
        case = dict(B=B, H=H, T=T, D=D)
        cname = f"B{B} H{H} T{T} D{D} L{MLSTM_CHUNK}"
        print(f"mlstm {cname}", flush=True)
        for pass_ in ("fwd", "fwd+bwd"):
            times = {}
            for impl, f in impls.items():
                if pass_ == "fwd+bwd":
                    times[impl] = _bench(_fwd_bwd(f, dh), args, leaves)
                else:
                    with torch.no_grad():
                        times[impl] = _bench(f, args)
            best_theirs = min((n for n in times if n.startswith("mlstm_kernels")), key=lambda n: times[n],
                              default=None)
            for impl in impls:
                if impl == "ours" or (impl.startswith("mlstm_kernels") and impl != best_theirs):
                    continue
                label = impl if not impl.startswith("mlstm_kernels") else f"{impl} (fastest of {len(theirs)})"
                rows.append(make_row("mlstm", case, cname, pass_, label, times["ours"], times[impl],
                                     "Mtok/s", B * T))
        del q, k, v, dh, i_pre, f_pre, leaves, impls
        torch.cuda.empty_cache()


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench_kernels.py: no CUDA device found; these Triton kernel benchmarks need a GPU. "
              "Nothing to do.")
        return 0
    import triton

    gpu = torch.cuda.get_device_name()
    date = _dt.date.today().isoformat()
    out = args.out or default_out_path(gpu, date)
    header = {
        "card": gpu,
        "date": date,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "timing": f"triton.testing.do_bench median (warmup {args.warmup} ms, rep {args.rep} ms); "
                  "speedup = baseline ms / ours ms",
    }
    rows: list[Row] = []
    if "layernorm" in args.only:
        header["copy bandwidth"] = f"{copy_bandwidth_gbs(args):.0f} GB/s (1 GiB device copy)"
        print(f"copy bandwidth: {header['copy bandwidth']}", flush=True)
    if "attention" in args.only:
        bench_attention(args, rows)
    if "doc" in args.only:
        bench_doc(args, rows)
    if "bert" in args.only:
        from bench_kernels_bert import bench_bert_attention

        bench_bert_attention(args, rows, make_row, _bench, _fwd_bwd)
    if "layernorm" in args.only:
        bench_layernorm(args, rows)
    if "ce" in args.only:
        from bench_kernels_ce import bench_fused_ce

        bench_fused_ce(args, rows, Row, _bench)
    if "mlstm" in args.only:
        bench_mlstm(args, rows)

    print()
    print("\n".join(f"{k}: {v}" for k, v in header.items()))
    print(format_table(rows))
    missed = [r for r in rows if r.met is False]
    print(f"\ngoals: {sum(r.met is True for r in rows)} met, {len(missed)} missed")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(format_markdown(rows, header))
    out.with_suffix(".csv").write_text(format_csv(rows))
    print(f"wrote {out} and {out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
