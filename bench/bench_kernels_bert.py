"""The BERT relative-attention section of bench/bench_kernels.py (`--only bert`).

LTG-BERT's disentangled attention in bf16, forward and forward + backward (gradients of q, k, v,
c2p and p2c, which carry on to the relative position embeddings), ours
(tinylm.kernels.bert_attention) against, in the same run:
- "SDPA dense bias": tinylm.ops.disentangled_attention_reference, the path BERT took before the
  kernel (gather a (B, H, T, T) bias, SDPA with it as a float mask);
- "flex (compiled)": torch FlexAttention with a score_mod that gathers c2p / p2c by bucket.
FLOPs counted as for plain attention (the position gathers are not matmul work), so the rates
compare the three on the same footing. Shapes: the BabyLM GPT-BERT recipe (12 heads of 64, 128
tokens, 64 sequences per micro-batch, 63 buckets), bert_30m, and the scoring length 512 with
padding.
"""

from __future__ import annotations

import math

# (B, H, T, D, n_buckets, padded)
BERT_SHAPES = [(64, 12, 128, 64, 32, False), (64, 6, 128, 64, 32, False), (16, 12, 512, 64, 32, True)]


def bench_bert_attention(args, rows, make_row, bench, fwd_bwd) -> None:
    import torch

    from tinylm import ops
    from tinylm.kernels.bert_attention import relative_flash_attention
    from tinylm.models.bert_positions import log_bucket_table

    for B, H, T, D, nb, padded in BERT_SHAPES:
        R = 2 * nb - 1
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
        c2p, p2c = (torch.randn(B, H, T, R, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
        inputs = [q, k, v, c2p, p2c]
        for t in inputs:
            t.requires_grad_()
        table = log_bucket_table(T, nb, 512, "cuda")
        scale = 1.0 / math.sqrt(3 * D)
        kpm = None
        if padded:
            lengths = torch.randint(T // 2, T + 1, (B,), device="cuda", generator=g)
            kpm = torch.arange(T, device="cuda")[None] < lengths[:, None]
        impls = {
            "ours": lambda: relative_flash_attention(q, k, v, c2p, p2c, table, scale, False, kpm),
            "SDPA dense bias": lambda: ops.disentangled_attention_reference(q, k, v, c2p, p2c, table, scale, False, kpm),
        }
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention

            def score_mod(score, b, h, q_idx, kv_idx):
                r = table[q_idx - kv_idx + T - 1]
                return score + (c2p[b, h, q_idx, r] + p2c[b, h, kv_idx, r]).float() * scale

            block_mask = None
            if kpm is not None:
                block_mask = create_block_mask(lambda b, h, q_idx, kv_idx: kpm[b, kv_idx], B, None, T, T, device="cuda")
            flex = torch.compile(flex_attention, dynamic=False)
            impls["flex (compiled)"] = lambda: flex(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
        except Exception as e:
            print(f"  ! FlexAttention unavailable: {type(e).__name__}: {e}", flush=True)
        name = f"B{B} H{H} T{T} D{D} R{R}" + (" +pad" if padded else "")
        case = dict(B=B, H=H, T=T, D=D)
        print(f"bert attention {name}", flush=True)
        for pass_, backward in (("fwd", False), ("fwd+bwd", True)):
            times = {}
            for impl, f in impls.items():
                if backward:
                    times[impl] = bench(fwd_bwd(f, do), args, inputs)
                else:
                    with torch.no_grad():
                        times[impl] = bench(f, args)
            flops = 4.0 * B * H * T * T * D * (3.5 if backward else 1.0)
            for impl in impls:
                if impl != "ours":
                    rows.append(make_row("bert", case, name, pass_, impl, times["ours"], times[impl], "TFLOP/s", flops))
        del q, k, v, do, c2p, p2c, inputs
        torch.cuda.empty_cache()
