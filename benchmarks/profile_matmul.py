"""Profile of the dense-layer products behind the MLP train step: XLA:CPU against torch.

Times, at batch B (default 4096) and width 256, the forward product x @ W and the two
backward products (weight gradient x.T @ g, input gradient g @ W.T), a chain of ten forward
products in one call, and the 2048^2 matmul used as the peak; `jax.jit` and torch with the
same number of threads. Used for the "why" in BENCHMARKS.md:

  python -m benchmarks.profile_matmul 4096
  XLA_FLAGS=--xla_cpu_use_onednn=true python -m benchmarks.profile_matmul 4096
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import torch

WIDTH = 256


def _seconds(fn, n: int) -> float:
    fn()
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def _chain(x, w):
    for _ in range(10):
        x = x @ w
    return x


def main(argv: list[str]) -> None:
    batch = int(argv[0]) if argv else 4096
    torch.set_num_threads(os.cpu_count() or 1)
    flops = 2 * batch * WIDTH * WIDTH
    x, w, g = jnp.ones((batch, WIDTH)), jnp.ones((WIDTH, WIDTH)), jnp.ones((batch, WIDTH))
    tx, tw, tg = torch.ones(batch, WIDTH), torch.ones(WIDTH, WIDTH), torch.ones(batch, WIDTH)
    cases = [
        ("x @ W", jax.jit(lambda x, w: x @ w), (x, w), lambda: tx @ tw, 1),
        ("x.T @ g", jax.jit(lambda x, g: x.T @ g), (x, g), lambda: tx.T @ tg, 1),
        ("g @ W.T", jax.jit(lambda g, w: g @ w.T), (g, w), lambda: tg @ tw.T, 1),
        ("10 x (x @ W)", jax.jit(_chain), (x, w), lambda: _chain(tx, tw), 10),
    ]
    print(f"batch {batch}, width {WIDTH}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    with torch.no_grad():
        for name, jfn, args, tfn, k in cases:
            js = _seconds(lambda jfn=jfn, args=args: jfn(*args).block_until_ready(), 100)
            ts = _seconds(tfn, 100)
            jr, tr = k * flops / js / 1e9, k * flops / ts / 1e9
            print(f"{name:14s} jax {jr:7.1f} GFLOP/s   torch {tr:7.1f}")
        n = 2048
        a, ta = jnp.ones((n, n)), torch.ones(n, n)
        mm = jax.jit(lambda a: a @ a)
        js = _seconds(lambda: mm(a).block_until_ready(), 20)
        ts = _seconds(lambda: ta @ ta, 20)
        jr, tr = 2 * n**3 / js / 1e9, 2 * n**3 / ts / 1e9
        print(f"{'2048^2':14s} jax {jr:7.1f} GFLOP/s   torch {tr:7.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
