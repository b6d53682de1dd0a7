"""Optimizers: AdamW for everything (the lecture), or Muon for the hidden matrices with AdamW for
the rest.

Muon (momentum, orthogonalised): each update of a 2-D hidden weight is its Nesterov momentum
replaced by the nearest semi-orthogonal matrix, found by a few Newton-Schulz iterations. Every
direction of the matrix then moves by the same amount, which on small transformers reaches a
given loss in fewer steps than AdamW. Embeddings, the output head, norms and biases are not
hidden matrices and stay with AdamW.
"""

from __future__ import annotations

import torch

# Coefficients of the quintic iteration x <- a x + b (x x^T) x + c (x x^T)^2 x, chosen so that
# singular values in (0, 1] are pushed towards 1 quickly (to about 0.7..1.2, which is enough).
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately U V^T for g = U S V^T (every singular value set to ~1), in float32."""
    a, b, c = NEWTON_SCHULZ
    x = g.float() / (g.norm() + 1e-7)  # singular values now <= 1
    wide = x.size(0) <= x.size(1)
    if not wide:
        x = x.T  # iterate on the smaller Gram matrix
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.T).type_as(g)


class Muon(torch.optim.Optimizer):
    """SGD with Nesterov momentum whose update is orthogonalised; for 2-D weights only."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(p.grad)
                update = orthogonalize(p.grad.add(buf, alpha=momentum))
                # An orthogonal update has entries of size ~1/sqrt(cols); tall matrices get more.
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                if decay:
                    p.mul_(1 - lr * decay)
                p.add_(update, alpha=-lr * scale)


class Optimizers:
    """Several optimizers stepped as one: one param_groups list for the learning-rate schedule
    (each group's "lr_ratio" scales the scheduled rate) and one state dict for checkpoints."""

    def __init__(self, named: dict[str, torch.optim.Optimizer]):
        self.named = named

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.named.values() for g in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.named.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.named.values():
            opt.step()

    def set_lr(self, lr: float) -> None:
        for group in self.param_groups:
            group["lr"] = lr * group.get("lr_ratio", 1.0)

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.named.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(self.named) == {"adamw"} and "param_groups" in state:
            state = {"adamw": state}  # a checkpoint from before Muon: one plain AdamW state
        if set(state) != set(self.named):
            raise ValueError(f"optimizer state holds {sorted(state)}, this run uses {sorted(self.named)}")
        for name, opt in self.named.items():
            opt.load_state_dict(state[name])


def is_hidden_matrix(name: str, p: torch.nn.Parameter) -> bool:
    """The weights Muon handles: 2-D weights inside the transformer blocks."""
    return p.ndim == 2 and name.startswith("blocks.")


def build_optimizers(model: torch.nn.Module, cfg) -> Optimizers:
    """AdamW over every parameter, or (cfg.optimizer == "muon") Muon over the hidden matrices and
    AdamW over the rest. Learning rates are set by Optimizers.set_lr each step."""
    # fused: one kernel for all tensors instead of a Python loop (3% more characters/s on CPU).
    adam_kw = dict(lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay, fused=True)
    params = dict(model.named_parameters())  # a tied weight appears once
    if cfg.optimizer == "adamw":
        adamw = torch.optim.AdamW([{"params": list(params.values()), "lr_ratio": 1.0}], **adam_kw)
        return Optimizers({"adamw": adamw})
    hidden = [p for n, p in params.items() if is_hidden_matrix(n, p)]
    rest = [p for n, p in params.items() if not is_hidden_matrix(n, p)]
    muon = Muon(
        [{"params": hidden, "lr_ratio": cfg.muon_lr / cfg.learning_rate}],
        lr=cfg.muon_lr,
        momentum=cfg.muon_momentum,
        weight_decay=cfg.weight_decay,
    )
    adamw = torch.optim.AdamW([{"params": rest, "lr_ratio": 1.0}], **adam_kw)
    return Optimizers({"adamw": adamw, "muon": muon})
