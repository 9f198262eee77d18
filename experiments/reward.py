r"""Reward fine-tuning (Adjoint Matching, reward-weighted training, DRaFT) vs guidance.

  python -m experiments.reward --workdir=/tmp/reward                        # embedded default
  python -m experiments.reward --config=configs/reward_default.py:smoke --workdir=/tmp/reward_s

Writes DIR/report.md, DIR/results.json and DIR/samples_<task>.png (flowjax.studies.reward).
"""

from experiments import _study

if __name__ == "__main__":
    _study.launch("reward", "reward_default.py")
