"""Executes notebooks/quickstart.ipynb on CPU and checks what it computed."""

import json
import math
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


@pytest.fixture(scope="module")
def executed():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        # The kernel is this interpreter (jupyter_client runs the kernelspec's "python" as
        # sys.executable); PYTHONPATH and the working directory make the checkout importable
        # without installing it.
        paths = [str(ROOT), os.environ.get("PYTHONPATH")]
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
        mp.setenv("JAX_PLATFORMS", "cpu")
        client = nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        )
        client.execute()  # raises CellExecutionError on the first failing cell
    return nb


def _outputs(nb):
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


@pytest.mark.slow
def test_quickstart_runs_and_draws_its_figures(executed):
    outs = _outputs(executed)
    assert not [o for o in outs if o.output_type == "error"]
    figures = [o for o in outs if "image/png" in o.get("data", {})]
    assert len(figures) >= 4  # data, samples, losses, quality vs NFE


@pytest.mark.slow
def test_quickstart_models_beat_the_noise_they_start_from(executed):
    text = "".join(o.get("text", "") for o in _outputs(executed) if o.output_type == "stream")
    line = next(s for s in text.splitlines() if s.startswith("SUMMARY "))
    summary = json.loads(line[len("SUMMARY ") :])
    noise = summary.pop("noise")
    assert set(summary) == {"flow matching", "diffusion (DDPM)"}
    for name, s in summary.items():
        assert math.isfinite(s["hist_kl"]) and math.isfinite(s["energy"]), name
        # 600 steps must take either model far from N(0, I): a histogram KL below half the
        # noise's and an energy distance below a fifth of it.
        assert s["hist_kl"] < 0.5 * noise["hist_kl"], (name, s, noise)
        assert s["energy"] < 0.2 * noise["energy"], (name, s, noise)
        assert len(s["euler_hist_kl"]) == 4 and all(math.isfinite(v) for v in s["euler_hist_kl"])
    # The flow-matching sampler, the ODE of a trained field, is deterministic: Euler with 16
    # steps is at least as good as with 2.
    fm = summary["flow matching"]["euler_hist_kl"]
    assert fm[-1] <= fm[0]


def test_notebook_installs_only_when_flowjax_is_missing():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    install = next(c for c in nb.cells if c.cell_type == "code" and "pip" in c.source)
    assert 'find_spec("flowjax") is None' in install.source
    assert "FLOWJAX_SOURCE" in install.source


@pytest.mark.slow
def test_discrete_notebook_runs_at_small_size():
    """notebooks/discrete.ipynb (owner: discrete) at 60 training steps."""
    nb = nbformat.read(ROOT / "notebooks" / "discrete.ipynb", as_version=4)
    with pytest.MonkeyPatch.context() as mp:
        paths = [str(ROOT), os.environ.get("PYTHONPATH")]
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
        mp.setenv("JAX_PLATFORMS", "cpu")
        mp.setenv("DISCRETE_NB_STEPS", "60")
        nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        ).execute()
    text = "".join(o.get("text", "") for o in _outputs(nb) if o.output_type == "stream")
    s = json.loads(next(x for x in text.splitlines() if x.startswith("SUMMARY "))[8:])
    for tvs in s["oracle_tv"].values():  # exact posterior: error falls with the steps
        assert tvs[-1] < 0.5 * tvs[0]
    assert s["bpt_after"] < s["bpt_before"] - 0.5  # training moved the ELBO
