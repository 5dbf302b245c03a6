"""The fused linear cross-entropy section of bench/bench_kernels.py (`--only ce`).

Head matmul + cross-entropy + backward (grads of hidden and weight) in bf16 at the issue's shape
(tokens 65536, d 512, V 16384), ours (tinylm.kernels.fused_ce) against eager PyTorch (F.linear +
F.cross_entropy on fp32 logits, as the training loss did) and against torch.compile of the same
function: median time (do_bench) and peak CUDA memory above the inputs of one fwd+bwd.
Goal (issue 10): peak memory at most 1/4 of eager's, speed at least 1.0x eager.
"""

from __future__ import annotations

CE_SHAPES = [(65536, 512, 16384), (16384, 768, 32768)]  # (tokens, d, V)


def _peak_gib(step) -> float:
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def bench_fused_ce(args, rows, Row, bench) -> None:
    import torch
    import torch.nn.functional as F

    from tinylm.kernels.fused_ce import fused_linear_cross_entropy

    def eager(h, w, t):
        return F.cross_entropy(F.linear(h, w).float(), t, ignore_index=-100)

    compiled = torch.compile(eager, dynamic=False)
    for N, C, V in CE_SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        h = (torch.randn(N, C, device="cuda", generator=g) * 0.5).to(torch.bfloat16).requires_grad_()
        w = (torch.randn(V, C, device="cuda", generator=g) * 0.02).to(torch.bfloat16).requires_grad_()
        t = torch.randint(0, V, (N,), device="cuda", generator=g)
        t[::10] = -100  # some ignored targets, as in masked objectives
        impls = {
            "ours": lambda: fused_linear_cross_entropy(h, w, None, t)[0],
            "eager": lambda: eager(h, w, t),
            "torch.compile": lambda: compiled(h, w, t),
        }
        name = f"tokens {N} d {C} V {V} bf16"
        print(f"fused CE {name}", flush=True)
        times, peaks = {}, {}
        for impl, f in impls.items():
            def step(f=f):
                f().backward()
            step()  # warm up (compile) before measuring memory
            h.grad = w.grad = None
            peaks[impl] = _peak_gib(step)
            h.grad = w.grad = None
            times[impl] = bench(step, args, [h, w])
        for impl in ("eager", "torch.compile"):
            row = Row("ce", name, "fwd+bwd", impl, times["ours"], times[impl], "peak GiB",
                      peaks["ours"], peaks[impl])
            if impl == "eager":
                row.goal = "<= 1/4 eager memory, >= 1.0x eager"
                row.met = peaks["ours"] <= peaks[impl] / 4 and row.speedup >= 1.0
            rows.append(row)
        del h, w, t
        torch.cuda.empty_cache()
