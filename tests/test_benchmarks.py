"""Smoke of the benchmark harness: the JSON schema of a tiny run, and the peer-agreement gate.

No timing is asserted: the machine is shared and times are whatever they are. What is
asserted: the document has every field the report and BENCHMARKS.md rely on, the timing
statistics are consistent with their own samples, no recompilation after warm-up, the
ported torch network equals flowjax's, and a speed ratio is refused when it does not.
"""

import json
import statistics

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchcfm")
pytest.importorskip("flow_matching")

import flowjax as fj  # noqa: E402
from benchmarks import run, train  # noqa: E402
from benchmarks._harness import AgreementError, CompileWatch, agreement, measure, speedup  # noqa: E402
from benchmarks._torch_peers import port_mlp  # noqa: E402

ROW_KEYS = {
    "suite",
    "case",
    "impl",
    "unit",
    "batch",
    "median_s",
    "times_s",
    "number",
    "repeats",
    "first_call_s",
    "compile_s",
    "recompiles",
    "retraces",
    "host_rss_delta_bytes",
    "per_s",
    "flops_per_unit",
    "flops_per_s",
    "frac_of_peak",
}


@pytest.fixture(scope="module")
def smoke_doc(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    doc = run.main(["--suite=smoke", "--repeats=2", f"--out={out}"])
    with open(out) as f:
        return doc, json.load(f)


def test_smoke_json_schema(smoke_doc):
    doc, written = smoke_doc
    assert written["schema_version"] == 1
    assert set(written) >= {
        "env",
        "settings",
        "matmul_peak",
        "results",
        "comparisons",
        "targets",
        "notes",
    }
    env = written["env"]
    for key in (
        "date_utc",
        "backend",
        "cpu_model",
        "cpu_usable",
        "versions",
        "loadavg_start",
        "loadavg_end",
    ):
        assert key in env
    assert env["versions"]["jax"] == jax.__version__
    assert env["versions"]["torch"] == torch.__version__
    peak = written["matmul_peak"]["float32"]
    assert peak["flops"] == 2.0 * peak["n"] ** 3
    assert peak["flops_per_s"] == pytest.approx(peak["flops"] / peak["median_s"])

    impls = {r["impl"] for r in written["results"]}
    assert impls == {"flowjax", "torchcfm", "flow_matching"}
    for r in written["results"]:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert len(r["times_s"]) == r["repeats"] == 2
        assert r["median_s"] == pytest.approx(statistics.median(r["times_s"]))
        assert r["per_s"] == pytest.approx(1.0 / r["median_s"])
    fj_row = next(r for r in written["results"] if r["impl"] == "flowjax")
    # The train step compiled in its first call and never again.
    assert fj_row["compiles_first_call"] >= 1
    assert fj_row["recompiles"] == 0
    assert fj_row["K"] == 2 and fj_row["units_per_call"] == 2
    assert fj_row["nonfinite_step"] == -1 and np.isfinite(fj_row["final_loss"])
    # XLA's count for one step of this MLP is at least 6 * batch * (matmul parameters).
    hyper = train.mlp_hyper("tiny")
    width, freq = hyper["width"], hyper["freq_dim"]
    matmul_params = freq * width + width * width + (2 + width) * width + width * 2
    matmul_params += (hyper["depth"] - 1) * width * width
    assert fj_row["flops_per_unit"] >= 6 * 32 * matmul_params

    assert len(written["comparisons"]) == 2
    for c in written["comparisons"]:
        assert all(ch["ok"] for ch in c["checks"])
        assert c["refused"] is None
        assert c["speedup"] == pytest.approx(c["peer_s"] / c["flowjax_s"])
    names = [t["name"] for t in written["targets"]]
    assert "no_recompilation" in names
    assert next(t for t in written["targets"] if t["name"] == "no_recompilation")["met"]


def _tiny_mlp():
    model = fj.models.build_model("mlp", "tiny", input_shape=(2,), key=jax.random.key(3))
    return fj.models.functional(model)


def test_ported_weights_agree_and_differing_weights_refuse_a_ratio():
    apply_fn, params = _tiny_mlp()
    hyper = train.mlp_hyper("tiny")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 2)).astype(np.float32)
    t = rng.uniform(size=16).astype(np.float32)

    same = train.check_ported_mlp(apply_fn, params, port_mlp(params, hyper, 2), x, t)
    assert all(c["ok"] for c in same)
    assert speedup(1.0, 3.0, same) == 3.0

    other = port_mlp(params, hyper, 2)
    with torch.no_grad():
        other.hidden[0].weight[0, 0] += 0.05  # one weight differs
    differ = train.check_ported_mlp(apply_fn, params, other, x, t)
    assert not all(c["ok"] for c in differ)
    with pytest.raises(AgreementError, match="no speed ratio"):
        speedup(1.0, 3.0, differ)


def test_agreement_tolerance_and_no_checks():
    ref = np.array([1.0, -2.0, 3.0])
    assert agreement("a", ref + 0.9e-4, ref, atol=1e-4)["ok"]
    bad = agreement("a", ref + np.array([0.0, 2e-4, 0.0]), ref, atol=1e-4)
    assert not bad["ok"] and bad["max_abs_err"] == pytest.approx(2e-4)
    assert not agreement("a", np.array([np.nan, 0, 0]), ref, atol=1.0)["ok"]
    with pytest.raises(AgreementError):
        speedup(1.0, 2.0, [])


def test_compile_watch_sees_a_new_shape_and_measure_counts_none_after_warmup():
    f = jax.jit(lambda x: x * 2.0 + 1.0)
    with CompileWatch() as watch:
        f(np.ones(3, np.float32)).block_until_ready()
        f(np.ones(3, np.float32)).block_until_ready()
    assert watch.compiles == 1
    with CompileWatch() as watch:
        f(np.ones(5, np.float32)).block_until_ready()  # new shape: one more compile
    assert watch.compiles == 1

    shapes = iter([4, 4, 4, 6, 6, 6, 6, 6])  # the shape changes after warm-up
    timing = measure(
        lambda: f(np.ones(next(shapes, 6), np.float32)),
        warmup=2,
        warmup_s=0.0,
        repeats=2,
        min_repeat_s=0.0,
    )
    assert timing["compiles_first_call"] == 1
    assert timing["recompiles"] == 1
