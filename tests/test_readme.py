"""The README's Python quickstart runs as written, and its claims hold."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_block_runs_and_its_comments_hold():
    text = README.read_text()
    section = text.split("## Quickstart (Python)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md:quickstart", "exec"), namespace)
    gmm, x1, logp = namespace["gmm"], namespace["x1"], namespace["logp"]
    # "equals gmm.log_prob(x1[:10])" (float32, default tolerances)
    np.testing.assert_allclose(logp, gmm.log_prob(x1[:10]), atol=5e-3)
    assert int(namespace["info"]["nfe"]) > 0
    assert namespace["x"].shape == (1000, 2)


def test_readme_names_the_ci_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    command = "python -m pytest -n 2 -q"
    assert command in README.read_text() and command in ci
