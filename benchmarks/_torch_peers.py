"""The PyTorch peers: flowjax's MLP ported to torch, and the peers' training loops and solvers.

Peers, as their documentation and examples use them:
  * torchcfm (Tong et al. 2024): `ConditionalFlowMatcher(sigma=0)` gives (t, x_t, u_t), the
    loss is the mean squared error of the network to u_t.
  * Meta's flow_matching (Lipman et al. 2024): `AffineProbPath(CondOTScheduler())` gives
    (x_t, dx_t) and the same loss; `ODESolver` (torchdiffeq underneath) samples and computes
    likelihoods.
Both training loops do the work flowjax's train step does (AdamW, global-norm clipping at
the same threshold, one EMA with the same warm-up), so the step times compare equal work.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TorchMLP",
    "port_mlp",
    "make_peer_train_step",
    "PEER_LOSSES",
    "fm_sample",
    "fm_log_prob",
    "count_calls",
]


class TorchMLP(nn.Module):
    """flowjax.models.MLP (residual=False, silu, unconditional, one time) in torch.

    Same layers in the same order: c = W1 silu(W0 emb(t)) with the [cos, sin] sinusoidal
    embedding of 1000 t; h = silu(W_in [x, c]); `depth - 1` layers h = silu(W h); out = W_out h.
    """

    def __init__(
        self,
        dim: int,
        *,
        width: int = 256,
        depth: int = 4,
        freq_dim: int = 64,
        emb_dim: int | None = None,
        time_scale: float = 1000.0,
        max_period: float = 10000.0,
    ):
        super().__init__()
        if freq_dim % 2:
            raise ValueError(f"TorchMLP: freq_dim must be even, got {freq_dim}")
        emb_dim = emb_dim or width
        self.time_scale = float(time_scale)
        self.t_dense0 = nn.Linear(freq_dim, emb_dim)
        self.t_dense1 = nn.Linear(emb_dim, emb_dim)
        self.dense_in = nn.Linear(dim + emb_dim, width)
        self.hidden = nn.ModuleList([nn.Linear(width, width) for _ in range(depth - 1)])
        self.dense_out = nn.Linear(width, dim)
        half = freq_dim // 2
        freqs = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float32) / half)
        self.register_buffer("freqs", torch.from_numpy(freqs.astype(np.float32)))

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        args = (self.time_scale * t)[:, None] * self.freqs.to(x.dtype)[None, :]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        c = self.t_dense1(F.silu(self.t_dense0(emb)))
        h = F.silu(self.dense_in(torch.cat([x, c], dim=-1)))
        for layer in self.hidden:
            h = F.silu(layer(h))
        return self.dense_out(h)


def _copy_linear(layer: nn.Linear, p: dict) -> None:
    # nnx.Linear computes x @ kernel (in, out); torch computes x @ weight.T (weight: out, in).
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.asarray(p["kernel"], np.float64).T.copy()))
        layer.bias.copy_(torch.from_numpy(np.asarray(p["bias"], np.float64)))


def port_mlp(params: dict, hyper: dict, dim: int, dtype=torch.float32) -> TorchMLP:
    """A TorchMLP of `dtype` holding the flowjax MLP parameters `params`.

    Args:
      params: the pure-dict parameters of `fj.models.functional(MLP)`.
      hyper: the MLP's constructor arguments (width, depth, freq_dim, ...).
      dim: data dimension.
    """
    if hyper.get("residual") or hyper.get("two_times") or hyper.get("num_classes"):
        raise ValueError("port_mlp: only the plain one-time unconditional MLP is ported")
    if hyper.get("activation", "silu") not in ("silu", "swish"):
        raise ValueError(f"port_mlp: activation must be silu, got {hyper['activation']!r}")
    kw = {
        k: hyper[k]
        for k in ("width", "depth", "freq_dim", "emb_dim", "time_scale")
        if hyper.get(k) is not None
    }
    model = TorchMLP(dim, **kw)
    t_embed = params["cond"]["t_embed"]
    _copy_linear(model.t_dense0, t_embed["dense0"])
    _copy_linear(model.t_dense1, t_embed["dense1"])
    _copy_linear(model.dense_in, params["dense_in"])
    hidden = params.get("hidden", {})
    if len(hidden) != len(model.hidden):
        raise ValueError(
            f"port_mlp: {len(hidden)} hidden layers in params, "
            f"{len(model.hidden)} in the torch model"
        )
    for i, layer in enumerate(model.hidden):
        _copy_linear(layer, hidden[i] if i in hidden else hidden[str(i)])
    _copy_linear(model.dense_out, params["dense_out"])
    return model.to(dtype)


# Each returns (x_t, t, target) for a batch x1, noise x0 (the peer's documented recipe).
def _torchcfm_batch():
    from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

    matcher = ConditionalFlowMatcher(sigma=0.0)

    def batch(x0, x1):
        t, x_t, u_t = matcher.sample_location_and_conditional_flow(x0, x1)
        return x_t, t, u_t

    return batch


def _flow_matching_batch():
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler

    path = AffineProbPath(scheduler=CondOTScheduler())

    def batch(x0, x1):
        t = torch.rand(x1.shape[0], dtype=x1.dtype, device=x1.device)
        sample = path.sample(t=t, x_0=x0, x_1=x1)
        return sample.x_t, sample.t, sample.dx_t

    return batch


PEER_LOSSES: dict[str, Callable[[], Callable]] = {
    "torchcfm": _torchcfm_batch,
    "flow_matching": _flow_matching_batch,
}


def make_peer_train_step(
    peer: str,
    model: nn.Module,
    x1_batches: list[torch.Tensor],
    *,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
    grad_clip: float,
    ema_decay: float | None,
    seed: int = 0,
) -> Callable[[], torch.Tensor]:
    """One optimizer step per call of the peer's training loop; returns the loss.

    AdamW, global-norm clipping (`grad_clip` > 0) and an EMA with decay
    min(ema_decay, (1 + step) / (10 + step)), as flowjax's train step does.
    """
    if peer not in PEER_LOSSES:
        raise ValueError(f"unknown peer {peer!r}; valid peers: {sorted(PEER_LOSSES)}")
    torch.manual_seed(seed)
    make_batch = PEER_LOSSES[peer]()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay)
    ema = [p.detach().clone() for p in params] if ema_decay is not None else None
    state = {"step": 0}

    def step() -> torch.Tensor:
        i = state["step"]
        x1 = x1_batches[i % len(x1_batches)]
        x0 = torch.randn_like(x1)
        x_t, t, target = make_batch(x0, x1)
        loss = torch.mean((model(x_t, t) - target) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        if ema is not None:
            decay = min(ema_decay, (1.0 + i) / (10.0 + i))
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - decay)
        state["step"] = i + 1
        return loss

    return step


class count_calls(nn.Module):  # noqa: N801 (used like a function)
    """Wraps a velocity model and counts its forward calls (the peers' NFE)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x, t):
        self.calls += 1
        return self.model(x, t)


def fm_sample(
    model: nn.Module, x0: torch.Tensor, *, rtol: float, atol: float, method: str = "dopri5"
) -> torch.Tensor:
    """flow_matching's ODESolver.sample from t = 0 to t = 1 (adaptive, torchdiffeq)."""
    from flow_matching.solver import ODESolver

    grid = torch.tensor([0.0, 1.0], dtype=x0.dtype)
    return ODESolver(velocity_model=model).sample(
        x_init=x0, step_size=None, method=method, atol=atol, rtol=rtol, time_grid=grid
    )


def _std_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    d = x[0].numel()
    return -0.5 * x.flatten(1).pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi)


def fm_log_prob(
    model: nn.Module,
    x1: torch.Tensor,
    *,
    rtol: float,
    atol: float,
    exact: bool = True,
    method: str = "dopri5",
) -> torch.Tensor:
    """flow_matching's ODESolver.compute_likelihood (t = 1 -> 0) with an N(0, I) prior."""
    from flow_matching.solver import ODESolver

    grid = torch.tensor([1.0, 0.0], dtype=x1.dtype)
    _, logp = ODESolver(velocity_model=model).compute_likelihood(
        x_1=x1,
        log_p0=_std_normal_log_prob,
        step_size=None,
        method=method,
        atol=atol,
        rtol=rtol,
        time_grid=grid,
        exact_divergence=exact,
    )
    return logp
