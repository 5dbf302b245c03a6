"""LAMB and Muon (tinylm/train/optim.py) against hand-written reference steps in float64, and their
checkpoints through the loop's safetensors/JSON format."""

import math

import pytest
import torch
import torch.nn as nn

from tinylm.config import OptimConfig
from tinylm.errors import InputError
from tinylm.models.layers import decay_groups
from tinylm.train.checkpoint import load_checkpoint, save_checkpoint
from tinylm.train.optim import Lamb, Muon, build_optimizer, newton_schulz


class Toy(nn.Module):
    """Embedding -> two hidden matrices (one tall, one wide) -> norm -> untied head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.tok_emb = nn.Embedding(10, 4)
        self.up = nn.Linear(4, 6, bias=True)  # weight (6, 4): rows > cols
        self.down = nn.Linear(6, 4, bias=False)  # weight (4, 6)
        self.ln = nn.LayerNorm(4)
        self.head = nn.Linear(4, 10, bias=False)
        self.double()

    def forward(self, x):
        return self.head(self.ln(self.down(torch.tanh(self.up(self.tok_emb(x))))))

    def optimizer_groups(self, weight_decay):
        return decay_groups(self, weight_decay)


def toy_loss(model, seed):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randint(0, 10, (8,), generator=g), torch.randint(0, 10, (8,), generator=g)
    return nn.functional.cross_entropy(model(x), y)


def grads_of(model, seed):
    model.zero_grad()
    toy_loss(model, seed).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


# --------------------------------------------------------------------------------------------------
# LAMB


def lamb_reference(params, grads, state, lr, b1, b2, eps, wd):
    out = {}
    for n, p in params.items():
        m, v, t = state.get(n, (torch.zeros_like(p), torch.zeros_like(p), 0))
        g = grads[n]
        m, v, t = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g, t + 1
        update = (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t)) + eps) + wd[n] * p
        w_norm, u_norm = math.sqrt(float((p * p).sum())), math.sqrt(float((update * update).sum()))
        trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        out[n] = p - lr * trust * update
        state[n] = (m, v, t)
    return out


def test_lamb_matches_the_hand_written_step():
    model = Toy()
    with torch.no_grad():
        model.up.bias.zero_()  # a zero-norm tensor: trust ratio 1
    cfg = OptimConfig(name="lamb", lr=0.01, weight_decay=0.1, beta1=0.9, beta2=0.99, eps=1e-6)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, Lamb)
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    wd = {n: (0.1 if id(p) in decayed else 0.0) for n, p in model.named_parameters()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = {}
    for seed in range(3):
        grads = grads_of(model, seed)
        params = lamb_reference(params, grads, state, 0.01, 0.9, 0.99, 1e-6, wd)
        opt.step()
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), params[n], rtol=1e-12, atol=1e-14, msg=n)
    assert model.up.bias.abs().sum() > 0  # moved despite its zero norm at the first step


def test_lamb_trust_ratio_is_one_when_the_update_is_zero():
    p = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = Lamb([p], lr=0.1, eps=1e-6)
    p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=torch.float64))


# --------------------------------------------------------------------------------------------------
# Muon


def ns_reference(G, steps=5):
    """The quintic Newton-Schulz iteration written out: a, b, c from modded-nanogpt."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.T if G.shape[0] > G.shape[1] else G
    X = X / (torch.linalg.matrix_norm(X) + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if G.shape[0] > G.shape[1] else X


def test_newton_schulz_orthogonalises():
    g = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    o = newton_schulz(g, 5)
    torch.testing.assert_close(o, ns_reference(g), rtol=1e-12, atol=1e-12)
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.6 and s.max() < 1.25  # modded-nanogpt: singular values pushed into ~[0.7, 1.2]
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    assert torch.nn.functional.cosine_similarity(o.flatten(), (u @ vh).flatten(), dim=0) > 0.98
    batched = newton_schulz(torch.stack([g, 2 * g]), 5)  # leading dims: a batch of matrices
    torch.testing.assert_close(batched[0], o)
    torch.testing.assert_close(batched[1], o, rtol=1e-6, atol=1e-6)


def test_muon_matches_the_hand_written_step():
    model = Toy()
    cfg = OptimConfig(name="muon", lr=0.01, muon_lr=0.05, muon_momentum=0.9, muon_nesterov=True, weight_decay=0.1,
                      beta1=0.9, beta2=0.95, eps=1e-8)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, Muon)
    muon_group = opt.param_groups[0]
    assert muon_group["use_muon"] and {id(p) for p in muon_group["params"]} == {id(model.up.weight), id(model.down.weight)}
    # AdamW reference for the rest: torch's own, on copies, with the same groups
    ref_model = Toy()
    names = dict(model.named_parameters())
    adam_groups = []
    for g in opt.param_groups[1:]:
        ids = {id(p) for p in g["params"]}
        adam_groups.append({"params": [dict(ref_model.named_parameters())[n] for n, p in names.items() if id(p) in ids],
                            "weight_decay": g["weight_decay"]})
    assert sum(len(g["params"]) for g in adam_groups) == 5  # embedding, up.bias, ln weight+bias, head
    ref_adam = torch.optim.AdamW(adam_groups, lr=0.01, betas=(0.9, 0.95), eps=1e-8)
    muon_params = {n: p.detach().clone() for n, p in names.items() if n in ("up.weight", "down.weight")}
    bufs = {n: torch.zeros_like(p) for n, p in muon_params.items()}
    for seed in range(3):
        grads = grads_of(model, seed)
        ref_model.zero_grad()
        toy_loss(ref_model, seed).backward()
        for n in muon_params:  # Muon by hand: momentum, Nesterov, orthogonalise, scale, decoupled decay
            bufs[n] = 0.9 * bufs[n] + grads[n]
            u = grads[n] + 0.9 * bufs[n]
            rows, cols = u.shape
            muon_params[n] = muon_params[n] * (1 - 0.05 * 0.1) - 0.05 * max(1, rows / cols) ** 0.5 * ns_reference(u)
            with torch.no_grad():  # the reference model follows the Muon matrices too
                dict(ref_model.named_parameters())[n].copy_(muon_params[n])
        ref_adam.step()
        opt.step()
        for n, p in model.named_parameters():
            expected = muon_params[n] if n in muon_params else dict(ref_model.named_parameters())[n].detach()
            torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-12, msg=n)


def test_torch_muon_is_the_same_rule_but_in_bf16():
    """torch.optim.Muon (when the installed torch has it) against ours on a float64 matrix: the same
    update up to bf16 rounding (torch orthogonalises in bf16 on every device), so not the same to
    float64 precision. If the second assertion ever fails, torch's Muon keeps the dtype and can
    replace ours (see the optim.py docstring)."""
    torch_muon = getattr(torch.optim, "Muon", None)
    if torch_muon is None:
        pytest.skip("this torch has no torch.optim.Muon")
    w0 = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours_p, theirs_p = nn.Parameter(w0.clone()), nn.Parameter(w0.clone())
    ours = Muon([{"params": [ours_p], "use_muon": True, "weight_decay": 0.1, "momentum": 0.9, "nesterov": True,
                  "ns_steps": 5, "lr_scale": 1.0}], lr=0.05)
    theirs = torch_muon([theirs_p], lr=0.05, weight_decay=0.1, momentum=0.9, nesterov=True, ns_steps=5)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        grad = torch.randn(6, 4, dtype=torch.float64, generator=g)
        ours_p.grad, theirs_p.grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()
        moved = (ours_p - w0).norm()
        assert (ours_p - theirs_p).norm() / moved < 0.05  # bf16 has an 8-bit mantissa: ~1% apart
    assert (ours_p - theirs_p).abs().max() > 1e-6


def test_muon_follows_the_schedule_through_lr_scale():
    model = Toy()
    opt = build_optimizer(model, OptimConfig(name="muon", lr=0.01, muon_lr=0.04))
    assert opt.param_groups[0]["lr_scale"] == pytest.approx(4.0)
    assert all(g["lr_scale"] == 1.0 for g in opt.param_groups[1:])
    with pytest.raises(InputError, match="optim.name"):
        build_optimizer(model, OptimConfig(name="sgd"))


@pytest.mark.parametrize("name", ["lamb", "muon"])
def test_checkpoint_round_trip_continues_identically(tmp_path, name):
    cfg = OptimConfig(name=name, lr=0.01)
    a = Toy()
    opt_a = build_optimizer(a, cfg)
    for seed in range(2):
        grads_of(a, seed)
        opt_a.step()
    save_checkpoint(tmp_path, 2, a, opt_a, {}, keep=1)
    b = Toy()
    opt_b = build_optimizer(b, cfg)
    load_checkpoint(tmp_path / "checkpoints" / "step_00000002", b, opt_b)
    for seed in (2, 3):
        for model, opt in ((a, opt_a), (b, opt_b)):
            grads_of(model, seed)
            opt.step()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), n
