"""Analytic token distributions with closed-form posteriors under the mixture path.

`MarkovTokens` is a Markov chain over positions, p(x) = pi(x^1) prod_i A_i(x^i, x^{i+1});
`MarkovTokens.product(probs)` is the product of categoricals (A_i with identical rows). Under the
mixture path each token is observed through the emission

    p_t(x_t^i | x1^i = v) = kappa(t) delta_v(x_t^i) + (1 - kappa(t)) p0(x_t^i)

(Gat et al. 2024, sec. 2.2, with an independent source p0), so p(x1 | x_t) is a hidden Markov
model posterior: forward-backward gives the exact per-token posterior p_{1|t}(x1^i | x_t), the
exact marginal log p_t(x_t) and hence the exact rates. Small (V^L) spaces are enumerated for the
exact TV / KL of samples and the exact ELBO of the mixture path.
"""

from __future__ import annotations

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from flowjax.discrete._path import MixturePath, pad_posterior
from flowjax.discrete._sources import AbstractDiscreteSource, check_tokens

__all__ = ["MarkovTokens", "OraclePosterior", "tv", "kl", "sequence_index"]


class MarkovTokens(eqx.Module):
    """A Markov chain over L positions with V token values (exact oracle)."""

    init: Float[Array, " V"]
    trans: Float[Array, "Lm1 V V"]

    def __check_init__(self):
        if (
            self.init.ndim != 1
            or self.trans.ndim != 3
            or self.trans.shape[1:] != (self.init.shape[0],) * 2
        ):
            raise ValueError(
                f"MarkovTokens: init must be (V,) and trans (L-1, V, V); got {self.init.shape} "
                f"and {self.trans.shape}"
            )

    @classmethod
    def product(cls, probs: Float[Array, "L V"]) -> MarkovTokens:
        """The product of categoricals prod_i probs[i, x^i]."""
        probs = jnp.asarray(probs)
        trans = jnp.broadcast_to(probs[1:, None, :], (probs.shape[0] - 1, *probs.shape[1:2] * 2))
        return cls(probs[0], trans)

    @classmethod
    def random(cls, key, length: int, vocab_size: int, concentration: float = 0.5) -> MarkovTokens:
        """A random chain with Dirichlet(concentration) initial and transition rows."""
        k1, k2 = jax.random.split(key)
        init = jax.random.dirichlet(k1, jnp.full((vocab_size,), concentration))
        trans = jax.random.dirichlet(
            k2, jnp.full((vocab_size,), concentration), (length - 1, vocab_size)
        )
        return cls(init, trans)

    @property
    def vocab_size(self) -> int:
        return int(self.init.shape[0])

    @property
    def length(self) -> int:
        return int(self.trans.shape[0]) + 1

    def sample(self, key: PRNGKeyArray, n: int) -> Int[Array, "n L"]:
        """n exact draws, int32 (n, L)."""
        keys = jax.random.split(key, self.length)
        x = jax.random.categorical(keys[0], jnp.log(self.init), shape=(n,))

        def step(prev, inputs):
            k, a = inputs
            nxt = jax.random.categorical(k, jnp.log(a[prev]))
            return nxt, nxt

        _, rest = jax.lax.scan(step, x, (keys[1:], self.trans))
        return jnp.concatenate([x[:, None], rest.T], axis=1).astype(jnp.int32)

    def log_prob(self, x: Int[Array, "n L"]) -> Float[Array, " n"]:
        """log p(x) of data tokens."""
        x = check_tokens(x, self.vocab_size, "x")
        logp = jnp.log(self.init)[x[:, 0]]
        steps = jnp.log(self.trans)[jnp.arange(self.length - 1), x[:, :-1], x[:, 1:]]
        return logp + jnp.sum(steps, axis=1)

    def all_sequences(self) -> Int[Array, "N L"]:
        """Every sequence of V^L in `sequence_index` order (for small spaces)."""
        seqs = np.array(list(itertools.product(range(self.vocab_size), repeat=self.length)))
        return jnp.asarray(seqs, jnp.int32)

    def probs(self) -> Float[Array, " N"]:
        """The exact pmf over `all_sequences()`."""
        return jnp.exp(self.log_prob(self.all_sequences()))

    def _emissions(self, path: MixturePath, source: AbstractDiscreteSource, x_t, t):
        """p_t(x_t^i | x1^i = v), shape (B, L, V)."""
        k = path.kappa(jnp.broadcast_to(jnp.asarray(t, float), x_t.shape[:1]))[:, None, None]
        p0 = source.probs()[x_t][..., None]  # (B, L, 1)
        return k * jax.nn.one_hot(x_t, source.num_states)[..., : self.vocab_size] + (1 - k) * p0

    def _forward_backward(self, emis):
        """Scaled forward-backward; returns (posterior marginals (B, L, V), log Z (B,))."""
        return _forward_backward(self.init, self.trans, emis)

    def posterior(self, path, source, x_t, t) -> Float[Array, "B L V"]:
        """Exact p_{1|t}(x1^i = v | x_t) per position."""
        x_t = check_tokens(x_t, source.num_states, "x_t")
        return self._forward_backward(self._emissions(path, source, x_t, t))[0]

    def log_prob_t(self, path, source, x_t, t) -> Float[Array, " B"]:
        """Exact log p_t(x_t) of the marginal path."""
        x_t = check_tokens(x_t, source.num_states, "x_t")
        return self._forward_backward(self._emissions(path, source, x_t, t))[1]

    def velocity(self, path, source, x_t, t) -> Float[Array, "B L S"]:
        """Exact rates u_t(y | x_t) over the states of x_t."""
        post = pad_posterior(self.posterior(path, source, x_t, t), source.num_states)
        return path.posterior_to_velocity(post, x_t, t)

    def elbo_bpt_exact(self, path, source, x1, num_points: int = 64) -> Float[Array, " B"]:
        """The mixture-path negative ELBO of each x1 in bits per token with the exact posterior:
        the expectation over x_t by enumerating num_states^L states, the time integral by
        Gauss-Legendre quadrature (small spaces only)."""
        from flowjax.discrete.generalized_kl import generalized_kl

        x1 = check_tokens(x1, self.vocab_size, "x1")
        states = jnp.asarray(
            list(itertools.product(range(source.num_states), repeat=self.length)), jnp.int32
        )
        nodes, weights = np.polynomial.legendre.leggauss(num_points)
        p0 = source.probs()

        def at(t):
            post = pad_posterior(self.posterior(path, source, states, t), source.num_states)
            log_post = jnp.where(post > 0, jnp.log(jnp.maximum(post, 1e-300)), -jnp.inf)
            k = path.kappa(t)

            def one(x):  # sum_{x_t} p_t(x_t | x1) sum_i l_i(x1, x_t, t)
                lik = jnp.prod(k * (states == x[None]) + (1 - k) * p0[states], axis=1)
                xb = jnp.broadcast_to(x, states.shape)
                tb = jnp.full((states.shape[0],), t)
                loss = jnp.sum(generalized_kl(path, log_post, xb, states, tb), axis=1)
                return jnp.sum(jnp.where(lik > 0, lik * loss, 0.0))

            return jax.vmap(one)(x1)

        ts = jnp.asarray(0.5 * (nodes + 1.0))
        vals = jax.lax.map(at, ts)  # (num_points, B)
        return 0.5 * jnp.asarray(weights) @ vals / (self.length * np.log(2.0))

    def posterior_fn(self, path, source) -> OraclePosterior:
        """The callable (x_t, t) -> exact posterior, as the samplers take it (a pytree, so
        jitted samplers compile once for every oracle of the same shapes)."""
        return OraclePosterior(self, path, source)


class OraclePosterior(eqx.Module):
    """(x_t, t) -> the exact p_{1|t}(x1^i | x_t) of `oracle` under `path` and `source`."""

    oracle: MarkovTokens
    path: MixturePath
    source: AbstractDiscreteSource

    def __call__(self, x_t, t):
        return self.oracle.posterior(self.path, self.source, x_t, t)


def sequence_index(x: Int[Array, "n L"], vocab_size: int) -> Int[Array, " n"]:
    """Base-V code of each sequence (the order of `MarkovTokens.all_sequences`)."""
    weights = vocab_size ** jnp.arange(x.shape[1] - 1, -1, -1)
    return jnp.sum(x * weights, axis=1)


def _histogram(samples, oracle: MarkovTokens):
    samples = check_tokens(samples, oracle.vocab_size, "samples")
    idx = sequence_index(samples, oracle.vocab_size)
    n_states = oracle.vocab_size**oracle.length
    return jnp.bincount(idx, length=n_states) / samples.shape[0]


def tv(samples: Int[Array, "n L"], oracle: MarkovTokens) -> Float[Array, ""]:
    """Total variation between the empirical law of `samples` and the exact pmf (metric `tv`)."""
    return 0.5 * jnp.sum(jnp.abs(_histogram(samples, oracle) - oracle.probs()))


def kl(samples: Int[Array, "n L"], oracle: MarkovTokens) -> Float[Array, ""]:
    """KL(empirical || exact) in nats (metric `kl`); biased up by about (N - 1) / (2 n)."""
    q = _histogram(samples, oracle)
    return jnp.sum(
        jnp.where(q > 0, q * (jnp.log(jnp.maximum(q, 1e-38)) - jnp.log(oracle.probs())), 0.0)
    )


@jax.jit
def _forward_backward(init, trans, emis):
    """Scaled forward-backward; returns (posterior marginals (B, L, V), log Z (B,))."""

    def fwd(alpha, inputs):
        a, e = inputs
        alpha = (alpha @ a) * e
        z = jnp.sum(alpha, axis=-1, keepdims=True)
        return alpha / z, (alpha / z, jnp.log(z[:, 0]))

    a0 = init * emis[:, 0]
    z0 = jnp.sum(a0, axis=-1, keepdims=True)
    e_rest = jnp.moveaxis(emis[:, 1:], 1, 0)
    _, (alphas, logz) = jax.lax.scan(fwd, a0 / z0, (trans, e_rest))
    alphas = jnp.concatenate([(a0 / z0)[None], alphas], axis=0)  # (L, B, V)
    log_z = jnp.log(z0[:, 0]) + jnp.sum(logz, axis=0)

    def bwd(beta, inputs):
        a, e = inputs
        beta = (beta * e) @ a.T
        return beta / jnp.sum(beta, axis=-1, keepdims=True), beta

    b_last = jnp.ones_like(a0)
    _, betas = jax.lax.scan(bwd, b_last, (trans, e_rest), reverse=True)
    betas = jnp.concatenate([betas, b_last[None]], axis=0)
    post = alphas * betas
    post = post / jnp.sum(post, axis=-1, keepdims=True)
    return jnp.moveaxis(post, 0, 1), log_z
