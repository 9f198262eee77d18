"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework"), data prediction.

Predictor UniP-p and corrector UniC-p, B(h) variants (their Alg. 1-2 and eq. (5)-(8), with
x1_hat in place of their x_theta). From the point s (half log-SNR lambda_s, h = lambda_t -
lambda_s) with earlier points lambda_{s_k} (r_k = (lambda_{s_k} - lambda_s) / h < 0) and
D_k = (x1_hat_{s_k} - x1_hat_s) / r_k:

    x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) x1_hat_s - alpha_t B(h) sum_k a_k D_k,

where B(h) = -h ("bh1") or e^-h - 1 ("bh2") and the weights a solve R a = g: R_{mk} = r_k^(m-1),
g_m = (-h) phi_{m+1}(-h) m! / B(h) with h phi_{k+1}(h) = h phi_k(h) / h - 1/k! (their
eq. (7); UniP-2 uses a = 1/2). The corrector UniC-p redoes the last step from x_s with the
model's new prediction at x_t added as the point r = 1 (no extra model call); the next
predictor starts from the corrected state, while the history keeps the prediction at the
uncorrected x_t. UniC-p raises the order by one (their Thm. 3.1): "unipc" (p = 2, bh2) is
third order in the step. The final step is not corrected (there is no further model call);
steps from lambda = -inf (alpha = 0) are taken at first order and not corrected.
This follows diffusers' UniPCMultistepScheduler step by step (tests/test_multistep.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from flowjax.sampling._exponential import AbstractMultistep, Point, at

__all__ = ["UniPC"]

VARIANTS = ("bh1", "bh2")


def _finite_points(hist):
    """How many of the newest history entries are valid with a finite log-SNR."""
    k = hist.point.lam.shape[0]
    ok = jnp.isfinite(hist.point.lam) & (jnp.arange(k) < hist.count)
    return jnp.sum(jnp.cumprod(ok.astype(jnp.int32)))


def _b_of_h(variant: str, hh):
    return hh if variant == "bh1" else jnp.expm1(hh)


def _rhs(p: int, hh, b_h):
    """g_m = hh phi_{m+1}(hh) m! / B(h) for m = 1..p, hh = -h (Zhao et al. eq. (7))."""
    h_phi = jnp.expm1(hh) / hh - 1.0
    out = []
    for m in range(1, p + 1):
        out.append(h_phi * math.factorial(m) / b_h)
        h_phi = h_phi / hh - 1.0 / math.factorial(m + 1)
    return jnp.stack(out)


def _update(variant, x, d0, earlier, s: Point, t: Point, weights, new=None):
    """(sigma_t / sigma_s) x - alpha_t (e^-h - 1) d0 - alpha_t B(h) sum_k a_k D_k (+ the new point).

    `earlier`: [(x1_hat_k, Point_k)] for the points before s; `new`: x1_hat at t (corrector).
    """
    h = t.lam - s.lam
    hh = -h
    out = (t.sigma / s.sigma) * x - t.alpha * jnp.expm1(hh) * d0
    terms = [(dk - d0) / ((pk.lam - s.lam) / h) for dk, pk in earlier]
    if new is not None:
        terms.append(new - d0)
    if not terms:
        return out
    res = sum(w * term for w, term in zip(weights, terms, strict=True))
    return out - t.alpha * _b_of_h(variant, hh) * res


class UniPC(AbstractMultistep):
    """UniP-p predictor with UniC-p corrector; order p in {1, 2, 3}, variant "bh1" or "bh2"."""

    order: int = 2
    variant: str = "bh2"

    def __check_init__(self):
        if self.order not in (1, 2, 3):
            raise ValueError(f"UniPC: order must be 1, 2 or 3, got {self.order!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"UniPC: variant must be one of {VARIANTS}, got {self.variant!r}")

    @property
    def history(self) -> int:
        return self.order + 1  # the corrector also reads the point before the last step

    def _weights(self, p: int, s: Point, t: Point, earlier, corrector: bool):
        h = t.lam - s.lam
        hh = -h
        b_h = _b_of_h(self.variant, hh)
        g = _rhs(p, hh, b_h)
        rks = [(pk.lam - s.lam) / h for _, pk in earlier] + [jnp.ones_like(h)]
        rmat = jnp.stack([jnp.stack([r ** (m - 1) for r in rks]) for m in range(1, p + 1)])
        if corrector:
            return [jnp.asarray(0.5, h.dtype)] if p == 1 else list(jnp.linalg.solve(rmat, g))
        if p == 1:
            return []
        if p == 2:
            return [jnp.asarray(0.5, h.dtype)]
        return list(jnp.linalg.solve(rmat[:-1, :-1], g[:-1]))

    def _correct(self, x, x_base, hist):
        """UniC-p on the step t_{i-1} -> t_i, p the order the predictor used there."""
        s, t = at(hist, 1), at(hist, 0)
        d = hist.d

        def corrector(p):
            def run():
                earlier = [(d[1 + k], at(hist, 1 + k)) for k in range(1, p)]
                w = self._weights(p, s, t, earlier, corrector=True)
                return _update(self.variant, x_base, d[1], earlier, s, t, w, new=d[0])

            return run

        # The predictor's order at t_{i-1}, less points at lambda = -inf (alpha = 0), which
        # carry no slope and give an infinite h.
        p_prev = jnp.minimum(self.order, _finite_points(hist) - 1)
        branches = [lambda: x] + [corrector(p) for p in range(1, self.order + 1)]
        return jax.lax.switch(jnp.maximum(p_prev, 0), branches)

    def step(self, x, x_base, hist, nxt, final, path):
        del path
        x = self._correct(x, x_base, hist)
        s, d = at(hist, 0), hist.d

        def predictor(p):
            def run():
                earlier = [(d[k], at(hist, k)) for k in range(1, p)]
                w = self._weights(p, s, nxt, earlier, corrector=False)
                return _update(self.variant, x, d[0], earlier, s, nxt, w)

            return run

        q = jnp.where(final, 1, jnp.clip(_finite_points(hist), 1, self.order))
        branches = [predictor(p) for p in range(1, self.order + 1)]
        return jax.lax.switch(q - 1, branches), x
