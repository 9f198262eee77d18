"""The discrete study: discrete flow matching (mask / uniform source x CE / generalized KL)
against masked diffusion (MDLM), one token transformer, one budget, several seeds; and the
discrete flow map against its teacher's few-step sampler.

Datasets:
  oracle         a Markov chain over positions (`fj.discrete.analytic.MarkovTokens`): exact
                 TV and KL of samples to the token distribution after K sampling steps
                 (CTMC Euler; the exact masked sampler for the mask arms), and the flow map
                 distilled from the exact teacher against that teacher's K-step sampler;
  digits_tokens  scikit-learn digits as 64 tokens with 17 levels: ELBO in bits per token on
                 the test split, against the unigram baseline;
  pydoc_text     character-level English (pydoc_data.topics): ELBO in bits per character on
                 the held-out 10%, against the unigram baseline.

Writes DIR/report.md and DIR/results.json (the shared results schema).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import discrete as D
from flowjax import studies
from flowjax.discrete import analytic, flowmap

# arm -> (source class, objective class).
ARMS = {
    "mask_ce": (D.MaskSource, D.CrossEntropy),
    "mask_gkl": (D.MaskSource, D.GeneralizedKL),
    "uniform_ce": (D.UniformSource, D.CrossEntropy),
    "uniform_gkl": (D.UniformSource, D.GeneralizedKL),
    "mdlm": (D.MaskSource, D.MDLM),
}


class OracleStream:
    """Batches (S, K, B, L) of exact draws of the oracle, one stream per seed."""

    def __init__(self, chain, seeds, batch_size, num_steps, k):
        self.chain, self.seeds = chain, tuple(seeds)
        self.batch_size, self.num_steps, self.k = batch_size, num_steps, k
        self._draw = jax.jit(
            jax.vmap(lambda key: chain.sample(key, k * batch_size).reshape(k, batch_size, -1))
        )

    def __iter__(self):
        for c in range(self.num_steps // self.k):
            keys = jnp.stack([jax.random.fold_in(jax.random.key(s), c) for s in self.seeds])
            yield {"x1": self._draw(keys)}


def _unigram_bpt(train, test, vocab):
    counts = np.bincount(np.asarray(train).ravel(), minlength=vocab) + 0.5
    p = counts / counts.sum()
    return float(-np.mean(np.log2(p[np.asarray(test).ravel()])))


def _sample(arm, post, src, dpath, n, length, k, key):
    x0 = src.sample(key, (n, length))
    if arm.startswith("mask") or arm == "mdlm":
        return D.sample_masked(post, x0, path=dpath, num_steps=k, key=key, source=src)
    return D.sample_euler(post, x0, path=dpath, num_steps=k, key=key)


def _dataset(config, name):
    if name == "oracle":
        o = config.oracle
        chain = analytic.MarkovTokens.random(
            jax.random.key(o.seed), o.length, o.vocab_size, o.concentration
        )
        return chain, None, None, o.vocab_size, o.length
    from flowjax.data import _tokens

    if name == "digits_tokens":
        train, test = _tokens.digits_tokens("train")[0], _tokens.digits_tokens("test")[0]
        return None, train, test, _tokens.DIGITS_LEVELS, 64
    if name == "pydoc_text":
        seq = config.text_seq_len
        train, test = _tokens.pydoc_text("train", seq), _tokens.pydoc_text("test", seq)
        return None, train, test, len(_tokens.text_vocab()), seq
    raise ValueError(f"unknown dataset {name!r}; valid: oracle, digits_tokens, pydoc_text")


def _train_arm(config, arm, dataset, seeds, chain, vocab, length, net):
    src_cls, obj_cls = ARMS[arm]
    src, dpath = src_cls(vocab), D.MixturePath(kappa=D.PolynomialKappa(n=1.0))
    loss = obj_cls(path=dpath, source=src, model=net.apply_fn)
    if chain is not None:
        stream = OracleStream(
            chain, seeds, config.batch_size, config.num_steps, config.steps_per_dispatch
        )
    else:
        kw = {"seq_len": config.text_seq_len} if dataset == "pydoc_text" else {}
        stream = studies.BatchStream(
            dataset, seeds, config.batch_size, config.num_steps, config.steps_per_dispatch, **kw
        )
    trainer = studies.SeedTrainer(loss, net, config.optim, config.num_steps, ema_decay=0.99)
    state, losses = trainer.train(stream)
    return state, losses, src, dpath


def _flowmap(config, chain, seeds, log):
    """Distil the flow map from the exact teacher; TV of K jumps vs the teacher's K steps."""
    o, f = config.oracle, config.flowmap
    src, dpath = D.MaskSource(o.vocab_size), D.MixturePath()
    teacher = chain.posterior_fn(dpath, src)
    module = lambda key: _flowmap_module(o, key)  # noqa: E731
    from flax import nnx

    apply_fn, _ = flowmap.flowmap_apply(nnx.eval_shape(lambda: module(jax.random.key(0))))
    net = studies.Network(apply_fn, lambda key: flowmap.flowmap_apply(module(key))[1], (o.length,))
    loss = flowmap.FlowMapDistillation(
        teacher=teacher, path=dpath, source=src, model=apply_fn, teacher_steps=f.teacher_steps
    )
    stream = OracleStream(chain, seeds, f.batch_size, f.num_steps, config.steps_per_dispatch)
    state, _ = studies.SeedTrainer(loss, net, config.optim, f.num_steps, ema_decay=0.99).train(
        stream
    )
    out = {}
    n = config.eval_samples
    for k in f.jump_steps:
        tv_map, tv_teacher = [], []
        for i, _ in enumerate(seeds):
            key = jax.random.key(10_000 + i)
            params = studies.unstack(state.ema[0], i)
            x = flowmap.sample_jump(
                apply_fn,
                params,
                key=key,
                shape=(n, o.length),
                path=dpath,
                source=src,
                num_steps=k,
            )
            tv_map.append(float(analytic.tv(x, chain)))
            xt = _sample("mdlm", teacher, src, dpath, n, o.length, k, key)
            tv_teacher.append(float(analytic.tv(xt, chain)))
        out[k] = {"flowmap": studies.mean_ci(tv_map), "teacher": studies.mean_ci(tv_teacher)}
        log(f"  flow map K={k}: TV {np.mean(tv_map):.4f} vs teacher {np.mean(tv_teacher):.4f}")
    return out


def _flowmap_module(o, key):
    from flowjax import models

    return models.build_model(
        "token_transformer",
        o.flowmap_variant,
        input_shape=(o.length,),
        key=key,
        vocab_size=o.vocab_size,
        two_times=True,
        token_features=o.vocab_size + 1,
    )


def run(config, workdir, *, log=print, command=None):
    """Runs the study; returns the results dict (also written to workdir)."""
    studies.check_positive(config, "num_seeds", "num_steps", "batch_size", "eval_samples")
    seeds = [config.seed + i for i in range(config.num_seeds)]
    record = studies.Record("discrete", config, seeds, command)
    arms = studies.names(config.arms, "arms", list(ARMS))
    for name in studies.names(config.datasets, "datasets"):
        chain, train, test, vocab, length = _dataset(config, name)
        net = studies.build_network(
            "token_transformer", config.variant, (length,), vocab_size=vocab
        )
        finals, metric = {}, "tv" if chain is not None else "bpt"
        for arm in arms:
            log(f"[{name}] training {arm} ({len(seeds)} seeds x {config.num_steps} steps)")
            state, losses, src, dpath = _train_arm(
                config, arm, name, seeds, chain, vocab, length, net
            )
            per_seed = []
            for i in range(len(seeds)):
                params = studies.unstack(state.ema[0], i)
                post = D.model_posterior(net.apply_fn, params, source=src)
                key = jax.random.key(1000 + i)
                if chain is not None:
                    cell = {}
                    for k in config.sample_steps:
                        x = _sample(arm, post, src, dpath, config.eval_samples, length, k, key)
                        cell[k] = {
                            "tv": float(analytic.tv(x, chain)),
                            "kl": float(analytic.kl(x, chain)),
                        }
                    per_seed.append(cell)
                else:
                    x1 = jnp.asarray(test[: config.eval_samples])
                    bpt, _ = D.elbo_bpt(
                        post,
                        x1,
                        path=dpath,
                        source=src,
                        key=key,
                        num_samples=config.elbo_samples,
                    )
                    per_seed.append({"bpt": float(jnp.mean(bpt))})
            if chain is not None:
                finals[arm] = {
                    str(k): {m: studies.mean_ci([c[k][m] for c in per_seed]) for m in ("tv", "kl")}
                    for k in config.sample_steps
                }
            else:
                finals[arm] = {"bpt": studies.mean_ci([c["bpt"] for c in per_seed])}
            finals[arm]["final_loss"] = float(np.mean(losses[:, -10:]))
            log(f"  {arm}: {_summary(finals[arm], metric, config)}")
        ds = {"metric": metric, "finals": finals, "vocab_size": vocab, "length": length}
        verdicts = []
        if chain is not None:
            ref = chain.sample(jax.random.key(99), config.eval_samples)
            ds["tv_floor"] = float(analytic.tv(ref, chain))
            k_max = str(max(config.sample_steps))
            pairs = [("mdlm", "uniform_gkl"), ("mask_gkl", "uniform_gkl"), ("mdlm", "mask_ce")]
            for a, b in pairs:
                if a in finals and b in finals:
                    r = studies.paired_log_ratio(
                        finals[b][k_max]["tv"]["values"], finals[a][k_max]["tv"]["values"]
                    )
                    verdicts.append(
                        studies.verdict(f"{a} has lower TV than {b} at {k_max} steps", "tv", r)
                    )
            if config.flowmap.num_steps:
                log(f"[{name}] distilling the flow map from the exact teacher")
                ds["flowmap"] = fm = _flowmap(config, chain, seeds, log)
                k1 = min(config.flowmap.jump_steps)
                r = studies.paired_log_ratio(
                    fm[k1]["teacher"]["values"], fm[k1]["flowmap"]["values"]
                )
                verdicts.append(
                    studies.verdict(
                        f"the flow map's {k1}-jump TV is below the teacher's {k1}-step TV", "tv", r
                    )
                )
        else:
            ds["unigram_bpt"] = uni = _unigram_bpt(train, test[: config.eval_samples], vocab)
            for arm in finals:
                verdicts.append(
                    studies.verdict(
                        f"{arm} beats the unigram baseline in bits per token",
                        "bpt",
                        studies.ratio_to(finals[arm]["bpt"], uni),
                        above=False,
                    )
                )
            if "mdlm" in finals and "mask_gkl" in finals:
                r = studies.paired_log_ratio(
                    finals["mask_gkl"]["bpt"]["values"], finals["mdlm"]["bpt"]["values"]
                )
                verdicts.append(studies.verdict("mdlm has a lower ELBO than mask_gkl", "bpt", r))
        record.add(name, ds, verdicts=verdicts, num_seeds=len(seeds))
    return record.finish(workdir, render=lambda r: _render(r, config))


def _summary(cell, metric, config):
    if metric == "bpt":
        return f"bpt {studies.fmt_ci(cell['bpt'])}"
    return ", ".join(f"K={k}: TV {cell[str(k)]['tv']['mean']:.4f}" for k in config.sample_steps)


def _render(r, config) -> str:
    lines = ["# Discrete flow matching vs masked diffusion", "", *studies.machine_lines(r), ""]
    for name, ds in r["datasets"].items():
        lines += [f"## {name}", ""]
        if ds["metric"] == "tv":
            header = ["arm", *[f"TV @ {k} steps" for k in config.sample_steps]]
            rows = [
                [arm, *[studies.fmt_ci(c[str(k)]["tv"]) for k in config.sample_steps]]
                for arm, c in ds["finals"].items()
            ]
            lines += studies.table(header, rows)
            lines += ["", f"Sampling-noise floor (exact samples): TV {ds['tv_floor']:.4f}", ""]
            if "flowmap" in ds:
                rows = [
                    [k, studies.fmt_ci(v["flowmap"]), studies.fmt_ci(v["teacher"])]
                    for k, v in ds["flowmap"].items()
                ]
                lines += studies.table(["K", "flow map TV (K jumps)", "teacher TV (K steps)"], rows)
                lines += [""]
        else:
            rows = [[arm, studies.fmt_ci(c["bpt"])] for arm, c in ds["finals"].items()]
            lines += studies.table(["arm", "ELBO bits/token (held out)"], rows)
            lines += ["", f"Unigram baseline: {ds['unigram_bpt']:.3f} bits/token", ""]
        lines += studies.verdict_table(ds["verdicts"]) + [""]
    return "\n".join(lines) + "\n"


__all__ = ["ARMS", "run"]
