"""Training throughput of tinylm's models against plain PyTorch models of the same shape, same process.

    python bench/bench_train.py                       # CUDA: GPT at 124M and ~30M, BERT and mLSTM at ~30M
    python bench/bench_train.py --families mlstm --shapes mlstm_30m   # conf/model/mlstm_30m itself
    python bench/bench_train.py --families gpt --shapes tiny --steps 20

On CUDA, everything in bf16 autocast + torch.compile, at each (family, shape):
  - tinylm with kernels=triton  vs  the plain model (nn.LayerNorm + F.scaled_dot_product_attention;
    causal for gpt, bidirectional for bert; for mlstm the plain GPT of the same width and depth,
    the transformer it would replace)
  - tinylm with kernels=triton  vs  tinylm with kernels=torch (for mlstm this includes the
    chunkwise mLSTM kernel against the native chunkwise form)
and prints tokens/s, MFU and the ratios. On CPU (no compile, fp32) it compares tinylm[torch]
against the plain model at the tiny shape. A table goes to stdout and to bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from report import save, text_table

from tinylm import ops
from tinylm.config import ModelConfig
from tinylm.models import build_model
from tinylm.train.loop import peak_flops

SHAPES = {  # name: (n_layer, n_head, d_model, seq_len, batch, vocab)
    "124m": (12, 12, 768, 1024, 16, 50304),
    "30m": (8, 8, 512, 512, 32, 16384),
    "tiny": (4, 4, 128, 128, 32, 2048),
    # conf/model/mlstm_30m.yaml itself (4 heads of 256: the mLSTM kernel's widest head) at the
    # BabyLM experiments' sequence length and batch
    "mlstm_30m": (16, 4, 512, 512, 32, 16384),
}


class PlainBlock(nn.Module):
    """The textbook pre-LN block: what a user would write without tinylm."""

    def __init__(self, d: int, h: int, causal: bool = True):
        super().__init__()
        self.h, self.causal = h, causal
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.fc_proj = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class PlainGPT(nn.Module):
    """Plain GPT (causal) or, with causal=False, the plain bidirectional encoder of the same shape."""

    def __init__(self, n_layer, n_head, d, max_len, vocab, causal: bool = True):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList(PlainBlock(d, n_head, causal) for _ in range(n_layer))
        self.ln, self.head = nn.LayerNorm(d, bias=False), nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight
        # nanoGPT's N(0, 0.02) initialisation, as tinylm's: PyTorch's default N(0, 1) embedding
        # gives huge tied logits whose softmax underflows into denormals, which are very slow on CPUs.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x))


def measure(model, shape, device, steps: int, warmup: int, compile_: bool, autocast: bool) -> float:
    """Training tokens/s over `steps` AdamW steps after `warmup` (compilation, autotuning)."""
    n_layer, n_head, d, T, B, V = shape
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    fwd = torch.compile(model) if compile_ else model
    g = torch.Generator(device="cpu").manual_seed(0)
    data = torch.randint(0, V, (B, T + 1), generator=g).to(device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = fwd(data[:, :-1])
        loss = F.cross_entropy(logits.float().view(-1, V), data[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * B * T / (time.perf_counter() - t0)


def main() -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="gpt,bert,mlstm")
    p.add_argument("--shapes", default=None, help="comma list of " + ",".join(SHAPES) +
                   " (default on CUDA: 124m,30m for gpt and 30m for the others; on CPU: tiny)")
    p.add_argument("--steps", type=int, default=30 if cuda else 10)
    p.add_argument("--warmup", type=int, default=5 if cuda else 2)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best round counts")
    p.add_argument("--out", default=None, help="results file (default: bench/results/train_<card>_<date>.md)")
    args = p.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    card = torch.cuda.get_device_name() if cuda else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    peak = peak_flops(device)
    rows = []
    def shapes_of(family: str) -> list[str]:
        if args.shapes:
            return args.shapes.split(",")
        return (["124m", "30m"] if family == "gpt" else ["30m"]) if cuda else ["tiny"]

    for family, name in [(f, s) for f in args.families.split(",") for s in shapes_of(f)]:
        shape = SHAPES[name]
        n_layer, n_head, d, T, B, V = shape
        cfg = ModelConfig(family=family, vocab_size=V, n_layer=n_layer, n_head=n_head, d_model=d, max_seq_len=T)
        results = {}
        variants = {"plain": None, "tinylm[torch]": "torch"}
        if cuda:
            variants["tinylm[triton]"] = "triton"
        # Variants alternate over rounds and keep their best round: the first measurement in a
        # process is slowed by one-off work (allocator growth, kernel selection), which must not
        # count against whichever variant happens to run first.
        for _ in range(args.rounds):
            for label, backend in variants.items():
                torch.manual_seed(0)
                if backend is None:
                    model = PlainGPT(n_layer, n_head, d, T, V, causal=family != "bert")
                else:
                    ops.set_default_backend(backend)
                    model = build_model(cfg)
                tps = measure(model, shape, device, args.steps, args.warmup, compile_=cuda, autocast=cuda)
                results[label] = max(results.get(label, 0.0), tps)
                del model
                if cuda:
                    torch.cuda.empty_cache()
        flops_tok = build_model(cfg).flops_per_token(T)
        best = "tinylm[triton]" if cuda else "tinylm[torch]"
        for label, tps in results.items():
            mfu = f"{flops_tok * tps / peak:.1%}" if peak else "-"
            rows.append((family, name, label, f"{tps:,.0f}", mfu, f"{results[best] / tps:.2f}x" if label != best else "1.00x"))
    header = ("family", "shape", "variant", "tokens/s", "MFU", f"{'tinylm[triton]' if cuda else 'tinylm[torch]'} / variant")
    table = text_table(header, rows)
    date = dt.date.today().isoformat()
    meta = (f"card: {card}\ndate: {date}\ntorch {torch.__version__}\ncommand: {' '.join(sys.argv)}\n"
            f"best of {args.rounds} alternating rounds of {args.steps} steps after {args.warmup} warm-up; {'bf16 autocast + torch.compile' if cuda else 'fp32 eager'}\n")
    print(meta + "\n" + table)
    save("train", card, cuda, "Training throughput", meta + "\n" + table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
