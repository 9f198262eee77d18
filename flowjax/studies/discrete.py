"""The discrete study: discrete flow matching (mask / uniform source x CE / generalized KL)
against masked diffusion (MDLM) and continuous flow matching on one-hot vectors, one token
transformer, one budget, several seeds; and the discrete flow map against its teacher.

Every arm trains the same network (`build_network("token_transformer", ...)`) on the same
batches with the same optimizer and steps; the one-hot arm feeds it x_t (B, L, V) through its
embedding matrix and reads its (B, L, V) output as a velocity (`fj.discrete.onehot`). Sampling
at K steps costs K network evaluations in every arm (CTMC Euler for the uniform source, the exact
masked sampler for the mask source, Euler on the ODE + argmax for one-hot).

Datasets and their primary metric (lower is better; each against a data-vs-data floor):
  oracle         a Markov chain over positions (`fj.discrete.analytic.MarkovTokens`): exact TV
                 (and KL) of samples to the token law; the flow map distilled from the exact
                 teacher against that teacher's K-step sampler;
  digits_tokens  scikit-learn digits as 64 tokens with 17 levels: the digits-classifier FD
                 (`fj.metrics.digits_fd`, the FD of the continuous digits studies) of the samples
                 as images (level / 8 - 1) to the test digits; ELBO bits per token on the test
                 split for the discrete arms, against the unigram baseline;
  pydoc_text     character-level English (pydoc_data.topics): TV of the samples' bigram
                 frequencies to the held-out text's; ELBO bits per character on the held-out 10%.

Per arm and seed: the primary metric at `curve_steps` sampling steps at log-spaced training
steps (-> training steps to `thresholds[dataset]`, `studies.steps_to_threshold`), and at every
`sample_steps` after training (quality against sampling steps). Verdicts are computed from
these recorded numbers (`studies.paired_log_ratio` over seeds; a seed that never reaches the
threshold is counted at the last evaluation, which only favours it, and the verdict is then
one-sided, see `_steps_verdict`).

Writes DIR/report.md and DIR/results.json (the shared results schema) and curves.png.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flowjax import discrete as D
from flowjax import studies
from flowjax.discrete import analytic, flowmap

# arm -> (source class or None for the continuous arm, objective class).
ARMS = {
    "mask_ce": (D.MaskSource, D.CrossEntropy),
    "mask_gkl": (D.MaskSource, D.GeneralizedKL),
    "uniform_ce": (D.UniformSource, D.CrossEntropy),
    "uniform_gkl": (D.UniformSource, D.GeneralizedKL),
    "mdlm": (D.MaskSource, D.MDLM),
    "onehot_fm": (None, D.OneHotFlowMatching),
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


class Arm(NamedTuple):
    name: str
    loss: object
    source: object  # None for the one-hot arm
    path: object


def make_arm(name: str, vocab: int, apply_fn) -> Arm:
    """The arm's objective (bound to the network), its discrete source and path."""
    src_cls, obj_cls = ARMS[name]
    if src_cls is None:
        return Arm(name, obj_cls(vocab_size=vocab, model=apply_fn), None, None)
    src, dpath = src_cls(vocab), D.MixturePath(kappa=D.PolynomialKappa(n=1.0))
    return Arm(name, obj_cls(path=dpath, source=src, model=apply_fn), src, dpath)


def draw(arm: Arm, apply_fn, params, n: int, length: int, vocab: int, k: int, key):
    """n samples (n, L) of the arm's model after k sampling steps (k network evaluations)."""
    if arm.source is None:
        v = D.OneHotVelocity(apply_fn, params)
        return D.sample_onehot(v, key, (n, length), vocab, num_steps=k)
    post = D.model_posterior(apply_fn, params, source=arm.source)
    x0 = arm.source.sample(key, (n, length))
    if isinstance(arm.source, D.MaskSource):
        return D.sample_masked(post, x0, path=arm.path, num_steps=k, key=key, source=arm.source)
    return D.sample_euler(post, x0, path=arm.path, num_steps=k, key=key)


# ---------------------------------------------------------------- datasets and their metrics


def _unigram_bpt(train, test, vocab):
    counts = np.bincount(np.asarray(train).ravel(), minlength=vocab) + 0.5
    p = counts / counts.sum()
    return float(-np.mean(np.log2(p[np.asarray(test).ravel()])))


def bigram_freq(x, vocab: int) -> np.ndarray:
    """Frequencies (V * V,) of the adjacent pairs (x_i, x_{i+1}) within each row of x (N, L)."""
    x = np.asarray(x, np.int64)
    counts = np.bincount((x[:, :-1] * vocab + x[:, 1:]).ravel(), minlength=vocab * vocab)
    return counts / max(counts.sum(), 1)


def tokens_to_digits(x) -> np.ndarray:
    """Digits tokens (N, 64) with 17 levels -> images (N, 8, 8, 1) in [-1, 1] (level / 8 - 1)."""
    return (np.asarray(x, np.float32) / 8.0 - 1.0).reshape(-1, 8, 8, 1)


class Judge(NamedTuple):
    """A dataset: its metrics of samples, primary metric, floor and baselines."""

    name: str
    vocab: int
    length: int
    metric: str
    score: object  # samples (n, L) -> {metric: value}
    floor: float  # the primary metric of held-out data (same n) against the reference
    baseline: float | None  # the primary metric of a position-wise independent sampler
    chain: object = None
    train: object = None
    test: object = None


def _independent(key, train, n):
    """n rows whose positions are drawn independently from the training marginals."""
    train = np.asarray(train)
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    return np.stack([rng.choice(train[:, i], n) for i in range(train.shape[1])], axis=1)


def make_judge(config, name: str) -> Judge:
    n = config.eval_samples
    if name == "oracle":
        o = config.oracle
        chain = analytic.MarkovTokens.random(
            jax.random.key(o.seed), o.length, o.vocab_size, o.concentration
        )

        def score(x):
            return {"tv": float(analytic.tv(x, chain)), "kl": float(analytic.kl(x, chain))}

        floor = score(chain.sample(jax.random.key(99), n))["tv"]
        ref = np.asarray(chain.sample(jax.random.key(97), 50_000))
        base = score(_independent(jax.random.key(96), ref, n))["tv"]
        return Judge(name, o.vocab_size, o.length, "tv", score, floor, base, chain=chain)
    from flowjax.data import _tokens

    key = jax.random.key(98)
    if name == "digits_tokens":
        from flowjax.metrics import digits_features, fid_from_features

        train, test = _tokens.digits_tokens("train")[0], _tokens.digits_tokens("test")[0]
        ref = digits_features(tokens_to_digits(test))

        def score(x):
            return {
                "digits_fd": float(fid_from_features(digits_features(tokens_to_digits(x)), ref))
            }

        rows = np.random.default_rng(0).choice(len(train), min(n, len(train)), replace=False)
        floor, base = score(train[rows])["digits_fd"], score(_independent(key, train, n))
        return Judge(
            name, _tokens.DIGITS_LEVELS, 64, "digits_fd", score, floor, base["digits_fd"],
            train=train, test=test,
        )  # fmt: skip
    if name == "pydoc_text":
        seq, vocab = config.text_seq_len, len(_tokens.text_vocab())
        train, test = _tokens.pydoc_text("train", seq), _tokens.pydoc_text("test", seq)
        ref = bigram_freq(test, vocab)

        def score(x):
            return {"bigram_tv": float(0.5 * np.abs(bigram_freq(x, vocab) - ref).sum())}

        rows = np.random.default_rng(0).choice(len(train), min(n, len(train)), replace=False)
        # The unigram baseline: i.i.d. characters with the training frequencies.
        p = np.bincount(train.ravel(), minlength=vocab) / train.size
        uni = np.random.default_rng(1).choice(vocab, (n, seq), p=p)
        floor, base = score(train[rows])["bigram_tv"], score(uni)["bigram_tv"]
        return Judge(name, vocab, seq, "bigram_tv", score, floor, base, train=train, test=test)
    raise ValueError(f"unknown dataset {name!r}; valid: oracle, digits_tokens, pydoc_text")


# ---------------------------------------------------------------- training with evaluations


def threshold(config, judge) -> float:
    """`config.thresholds[dataset]`; 0 or less: the position-wise independent baseline."""
    value = float(config.thresholds[judge.name])
    return value if value > 0 else float(judge.baseline)


def train_with_curve(trainer, stream, eval_at, evaluate):
    """`trainer.train(stream)` with `evaluate(step, state)` after the chunks ending at eval_at."""
    state = trainer.init(stream.seeds)
    losses, step, curve = [], 0, []
    for chunk in stream:
        state, metrics = trainer._update(state, {k: jnp.asarray(v) for k, v in chunk.items()})
        losses.append(metrics["loss"])
        step += stream.k
        if step in eval_at:
            curve.append(evaluate(step, state))
    return state, np.concatenate([np.asarray(v) for v in losses], axis=1), curve


def _stream(config, judge, seeds, batch_size, num_steps):
    k = config.steps_per_dispatch
    if judge.chain is not None:
        return OracleStream(judge.chain, seeds, batch_size, num_steps, k)
    kw = {"seq_len": config.text_seq_len} if judge.name == "pydoc_text" else {}
    return studies.BatchStream(judge.name, seeds, batch_size, num_steps, k, **kw)


def _run_arm(config, judge, arm, net, seeds, eval_at, log):
    n, length, vocab = config.eval_samples, judge.length, judge.vocab

    def sample_and_score(params, k, i):
        key = jax.random.key(1000 + i)
        return judge.score(draw(arm, net.apply_fn, params, n, length, vocab, k, key))

    def evaluate(step, state):
        values = [
            sample_and_score(studies.unstack(state.ema[0], i), config.curve_steps, i)[judge.metric]
            for i in range(len(seeds))
        ]
        log(f"    step {step}: {judge.metric} {np.mean(values):.4f}")
        return values

    stream = _stream(config, judge, seeds, config.batch_size, config.num_steps)
    trainer = studies.SeedTrainer(arm.loss, net, config.optim, config.num_steps, ema_decay=0.99)
    state, losses, curve = train_with_curve(trainer, stream, eval_at, evaluate)
    per_k = {}
    for k in config.sample_steps:
        cells = [
            sample_and_score(studies.unstack(state.ema[0], i), k, i) for i in range(len(seeds))
        ]
        per_k[str(k)] = {m: studies.mean_ci([c[m] for c in cells]) for m in cells[0]}
    curve = np.asarray(curve).T  # (S, E)
    thr = threshold(config, judge)
    reach = [studies.steps_to_threshold(eval_at, c, thr) for c in curve]
    out = {
        "curve": {
            "step": list(eval_at),
            judge.metric: {
                "values": curve.tolist(),
                **{
                    k: [studies.mean_ci(curve[:, e])[k] for e in range(len(eval_at))]
                    for k in ("mean", "ci_low", "ci_high")
                },
            },
        },
        "sample_steps": per_k,
        "steps_to_threshold": reach,
        "final_loss": float(np.mean(losses[:, -10:])),
    }
    if judge.chain is None and arm.source is not None:  # the ELBO of the discrete arms
        bpts = []
        for i in range(len(seeds)):
            post = D.model_posterior(
                net.apply_fn, studies.unstack(state.ema[0], i), source=arm.source
            )
            x1 = jnp.asarray(judge.test[:n])
            bpt, _ = D.elbo_bpt(
                post, x1, path=arm.path, source=arm.source, key=jax.random.key(2000 + i),
                num_samples=config.elbo_samples,
            )  # fmt: skip
            bpts.append(float(jnp.mean(bpt)))
        out["bpt"] = studies.mean_ci(bpts)
    return out


# ---------------------------------------------------------------- verdicts


def _steps_verdict(a, b, finals, last, metric, thr):
    """ "a reaches the threshold in fewer training steps than b": ratio steps_b / steps_a > 1.

    A censored seed (threshold never reached) is counted at the last evaluation `last`. That
    under-counts its steps, so a verdict against the censored side stays valid but one in its
    favour cannot be claimed: with only b censored, "supported" stands and "not supported"
    becomes "not significant"; with a censored, the reverse.
    """
    sa, sb = finals[a]["steps_to_threshold"], finals[b]["steps_to_threshold"]
    fill = lambda s: [last if v is None else v for v in s]  # noqa: E731
    r = studies.paired_log_ratio(fill(sb), fill(sa))
    claim = f"{a} reaches {metric} <= {thr:g} in fewer training steps than {b}"
    v = studies.verdict(claim, f"steps_to_{metric}", r)
    a_cens, b_cens = any(x is None for x in sa), any(x is None for x in sb)
    if (b_cens and v["verdict"] != "supported") or (a_cens and v["verdict"] != "not supported"):
        v["verdict"] = "not significant"
    v["censored"] = {a: sum(x is None for x in sa), b: sum(x is None for x in sb)}
    return v


def _verdicts(config, judge, finals):
    m, out = judge.metric, []
    k_lo, k_hi = str(min(config.sample_steps)), str(max(config.sample_steps))
    thr, last = threshold(config, judge), float(config.num_steps)
    for pair in studies.names(config.pairs, "pairs"):
        a, b = pair.split(":")
        if a not in finals or b not in finals:
            continue
        for k in dict.fromkeys((k_lo, k_hi)):
            r = studies.paired_log_ratio(
                finals[b]["sample_steps"][k][m]["values"], finals[a]["sample_steps"][k][m]["values"]
            )
            out.append(studies.verdict(f"{a} has lower {m} than {b} at {k} sampling steps", m, r))
        out.append(_steps_verdict(a, b, finals, last, m, thr))
    if judge.baseline is not None:
        for arm, f in finals.items():
            r = studies.ratio_to(f["sample_steps"][k_hi][m], judge.baseline)
            claim = f"{arm} beats the position-wise independent baseline in {m} at {k_hi} steps"
            out.append(studies.verdict(claim, m, r, above=False))
    if judge.chain is None:
        uni = _unigram_bpt(judge.train, judge.test[: config.eval_samples], judge.vocab)
        for arm, f in finals.items():
            if "bpt" in f:
                r = studies.ratio_to(f["bpt"], uni)
                claim = f"{arm} beats the unigram baseline in bits per token"
                out.append(studies.verdict(claim, "bpt", r, above=False))
    return out


# ---------------------------------------------------------------- the flow map


def _flowmap(config, chain, seeds, log):
    """Distil the flow map from the exact teacher; TV of K jumps vs the teacher's K steps."""
    o, f = config.oracle, config.flowmap
    src, dpath = D.MaskSource(o.vocab_size), D.MixturePath()
    teacher = chain.posterior_fn(dpath, src)
    from flax import nnx

    module = lambda key: _flowmap_module(o, key)  # noqa: E731
    apply_fn, _ = flowmap.flowmap_apply(nnx.eval_shape(lambda: module(jax.random.key(0))))
    net = studies.Network(apply_fn, lambda key: flowmap.flowmap_apply(module(key))[1], (o.length,))
    loss = flowmap.FlowMapDistillation(
        teacher=teacher, path=dpath, source=src, model=apply_fn, teacher_steps=f.teacher_steps
    )
    stream = OracleStream(chain, seeds, f.batch_size, f.num_steps, config.steps_per_dispatch)
    trainer = studies.SeedTrainer(loss, net, config.optim, f.num_steps, ema_decay=0.99)
    state, _ = trainer.train(stream)
    out, n = {}, config.eval_samples
    for k in f.jump_steps:
        tv_map, tv_teacher = [], []
        for i, _ in enumerate(seeds):
            key = jax.random.key(10_000 + i)
            params = studies.unstack(state.ema[0], i)
            x = flowmap.sample_jump(
                apply_fn, params, key=key, shape=(n, o.length), path=dpath, source=src,
                num_steps=k,
            )  # fmt: skip
            tv_map.append(float(analytic.tv(x, chain)))
            x0 = src.sample(key, (n, o.length))
            xt = D.sample_masked(teacher, x0, path=dpath, num_steps=k, key=key, source=src)
            tv_teacher.append(float(analytic.tv(xt, chain)))
        out[str(k)] = {"flowmap": studies.mean_ci(tv_map), "teacher": studies.mean_ci(tv_teacher)}
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


def _flowmap_verdicts(fm):
    out = []
    for k, cell in fm.items():
        if int(k) > 2:
            continue
        r = studies.paired_log_ratio(cell["teacher"]["values"], cell["flowmap"]["values"])
        claim = f"the flow map's {k}-jump TV is below the teacher's {k}-step TV"
        out.append(studies.verdict(claim, "tv", r))
    k_max = max(fm, key=int)
    r = studies.ratio_to(fm[min(fm, key=int)]["flowmap"], fm[k_max]["teacher"]["mean"])
    claim = f"the flow map's 1-jump TV is within 1.5x of the teacher's {k_max}-step TV"
    out.append(studies.verdict(claim, "tv", r, threshold=1.5, above=False))
    return out


# ---------------------------------------------------------------- the study


def dataset_config(config, name: str):
    """The config with `config.overrides[name]` (if any) applied: per-dataset sizes (an
    unknown field is an error; `model` holds free-form network sizes)."""
    cfg = studies.dataset_config(config, name, free=("model",))
    cfg.thresholds = config.thresholds
    return cfg


def run(config, workdir, *, log=print, command=None):
    """Runs the study; returns the results dict (also written to workdir)."""
    seeds = [config.seed + i for i in range(config.num_seeds)]
    record = studies.Record("discrete", config, seeds, command)
    arms = studies.names(config.arms, "arms", list(ARMS))
    for name in studies.names(config.datasets, "datasets"):
        if name not in config.thresholds:
            raise ValueError(f"config.thresholds has no entry for dataset {name!r}")
        config_all, config = config, dataset_config(config, name)
        studies.check_positive(
            config, "num_seeds", "num_steps", "batch_size", "eval_samples", "curve_steps",
            "num_evals",
        )  # fmt: skip
        eval_at = studies.eval_steps(config.steps_per_dispatch, config.num_steps, config.num_evals)
        judge = make_judge(config, name)
        net = studies.build_network(
            "token_transformer", config.variant, (judge.length,), vocab_size=judge.vocab,
            **dict(config.get("model", {})),
        )  # fmt: skip
        finals = {}
        for arm_name in arms:
            log(f"[{name}] training {arm_name} ({len(seeds)} seeds x {config.num_steps} steps)")
            arm = make_arm(arm_name, judge.vocab, net.apply_fn)
            finals[arm_name] = f = _run_arm(config, judge, arm, net, seeds, eval_at, log)
            log(f"  {arm_name}: {_summary(f, judge, config)}")
        ds = {
            "metric": judge.metric,
            "finals": finals,
            "vocab_size": judge.vocab,
            "length": judge.length,
            "floor": judge.floor,
            "baseline": judge.baseline,
            "threshold": threshold(config, judge),
        }
        if judge.chain is None:
            ds["unigram_bpt"] = _unigram_bpt(
                judge.train, judge.test[: config.eval_samples], judge.vocab
            )
        verdicts = _verdicts(config, judge, finals)
        if judge.chain is not None and config.flowmap.num_steps:
            log(f"[{name}] distilling the flow map from the exact teacher")
            ds["flowmap"] = fm = _flowmap(config, judge.chain, seeds, log)
            verdicts += _flowmap_verdicts(fm)
        ds["config"] = {
            k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k]
            for k in _SIZES
            if k in config
        }
        record.add(name, ds, verdicts=verdicts, num_seeds=len(seeds))
        config = config_all
    return record.finish(workdir, render=_render, plots=_plots)


_SIZES = ("num_steps", "batch_size", "eval_samples", "curve_steps", "sample_steps", "model")


def _summary(cell, judge, config):
    m, parts = judge.metric, []
    for k in config.sample_steps:
        parts.append(f"K={k}: {m} {cell['sample_steps'][str(k)][m]['mean']:.4f}")
    if "bpt" in cell:
        parts.append(f"bpt {studies.fmt_ci(cell['bpt'])}")
    return ", ".join(parts) + f"; steps to threshold {cell['steps_to_threshold']}"


def _fmt_steps(values):
    return " / ".join("—" if v is None else f"{v:.0f}" for v in values)


def _render(r) -> str:
    lines = ["# Discrete flow matching vs masked diffusion vs one-hot flow matching", ""]
    lines += [*studies.machine_lines(r), ""]
    for name, ds in r["datasets"].items():
        m = ds["metric"]
        lines += [f"## {name}", ""]
        ks = list(next(iter(ds["finals"].values()))["sample_steps"])
        header = ["arm", *[f"{m} @ {k} steps" for k in ks], "steps to threshold (per seed)"]
        if any("bpt" in c for c in ds["finals"].values()):
            header.append("ELBO bits/token")
        rows = []
        for arm, c in ds["finals"].items():
            row = [arm, *[studies.fmt_ci(c["sample_steps"][k][m]) for k in ks]]
            row.append(_fmt_steps(c["steps_to_threshold"]))
            if len(header) > len(row):
                row.append(studies.fmt_ci(c["bpt"]) if "bpt" in c else "—")
            rows.append(row)
        lines += studies.table(header, rows)
        lines += ["", f"Data-vs-data floor: {m} {ds['floor']:.4f}; threshold {ds['threshold']:g}"]
        if ds.get("baseline") is not None:
            lines += [f"Position-wise independent baseline: {m} {ds['baseline']:.4f}"]
        if "unigram_bpt" in ds:
            lines += [f"Unigram baseline: {ds['unigram_bpt']:.3f} bits/token"]
        lines += [""]
        if "flowmap" in ds:
            rows = [
                [k, studies.fmt_ci(v["flowmap"]), studies.fmt_ci(v["teacher"])]
                for k, v in ds["flowmap"].items()
            ]
            lines += studies.table(["K", "flow map TV (K jumps)", "teacher TV (K steps)"], rows)
            lines += [""]
        lines += studies.verdict_table(ds["verdicts"]) + [""]
    return "\n".join(lines) + "\n"


def _plots(r, workdir):
    import os

    panels, hlines = {}, {}
    for name, ds in r["datasets"].items():
        curves = {arm: c["curve"] for arm, c in ds["finals"].items()}
        panels[f"{name}: {ds['metric']} during training"] = (curves, ds["metric"])
        hlines[f"{name}: {ds['metric']} during training"] = ds["threshold"]
    if not panels:
        return {}
    path = os.path.join(workdir, "curves.png")
    try:
        studies.plot_curves(path, panels, hlines=hlines, title="discrete study")
    except Exception as e:  # a plot never loses the numbers
        return {"curves": f"not drawn: {e}"}
    return {"curves": "curves.png"}


__all__ = ["ARMS", "Arm", "bigram_freq", "draw", "make_arm", "make_judge", "run"]
