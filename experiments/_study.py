"""What every study launcher shares: the --config / --workdir flags and the run itself.

A launcher is its docstring plus `_study.launch(name, default_config)`; the study is
`flowjax.studies.<name>.run(config, workdir, command=...)` (DESIGN.md: launchers stay thin).
"""

import importlib
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def launch(name: str, default_config: str) -> None:
    """Defines the flags and runs study `name` (configs/`default_config` when --config is unset)."""
    config_flags.DEFINE_config_file(
        "config",
        os.path.join(_CONFIGS, default_config),
        f"Study config, e.g. configs/{name}_NAME.py[:VARIANT] (default: the embedded one).",
    )
    flags.DEFINE_string("workdir", None, "Directory for report.md, results.json and plots.")
    flags.mark_flags_as_required(["workdir"])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        cfg, workdir = flags.FLAGS.config, flags.FLAGS.workdir
        study = importlib.import_module(f"flowjax.studies.{name}")
        command = " ".join([f"python -m experiments.{name}", *sys.argv[1:]])
        try:
            results = study.run(cfg, workdir, command=command)
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"error: {e}")  # one line, exit status 1
        seconds = results.get("wall_seconds")
        wall = f"wall time {seconds:.0f} s; " if seconds is not None else ""
        print(f"\n{wall}report: {os.path.join(workdir, 'report.md')}")
        for ds_name, ds in results["datasets"].items():
            for line in ds.get("findings", []):
                print(f"[{ds_name}] {line}")
            for v in ds.get("verdicts", []):
                ratio = "n/a" if v.get("ratio") is None else f"{v['ratio']:.3g}"
                print(f"[{ds_name}] {v['verdict']}: {v['claim']} (ratio {ratio})")

    app.run(main)
