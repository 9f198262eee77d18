"""Every study launcher reaches its study's config check and fails in one line on bad input."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
STUDIES = ("compare", "flowmaps", "forecast", "discrete", "riemannian")


@pytest.mark.parametrize("name", STUDIES)
def test_launcher_runs_its_study_and_reports_bad_config_in_one_line(name, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            f"experiments.{name}",
            f"--workdir={tmp_path}",
            "--config.num_seeds=0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1] == "error: config.num_seeds: a positive int, got 0"
    assert not (tmp_path / "results.json").exists()
