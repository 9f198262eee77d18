"""Reward fine-tuning of flow and flow-map models towards p*(x) ~ p(x) exp(lambda r(x)).

    r = fj.reward.Quadratic(center=c, scale=s)          # r(x) = -|x - c|^2 / (2 s^2)
    p_star = r.tilt(gmm, strength=lam)                  # the exact target (GaussianMixture)
    am = fj.reward.AdjointMatching(path=path, reward=r, strength=lam, base=v_base)
    rw = fj.reward.RewardWeighted(inner=fm, reward=r, strength=lam, proposal=MapProposal(...))
    dr = fj.reward.DRaFT(reward=r, strength=lam, anchor=beta, base=X_base_one_step)

Each objective has the one signature `(params, key, batch, *, model=None) -> (loss, aux)` and
trains through `fj.train.step.make_update`; they are registered in `fj.objectives.OBJECTIVES`
as "adjoint_matching", "reward_weighted" and "draft".
"""

from flowjax.reward import memoryless as memoryless
from flowjax.reward.adjoint_matching import AdjointMatching as AdjointMatching
from flowjax.reward.adjoint_matching import regression_target as regression_target
from flowjax.reward.draft import DRaFT as DRaFT
from flowjax.reward.rewards import ClassLogProb as ClassLogProb
from flowjax.reward.rewards import Quadratic as Quadratic
from flowjax.reward.rewards import Region as Region
from flowjax.reward.weighted import MapProposal as MapProposal
from flowjax.reward.weighted import ODEProposal as ODEProposal
from flowjax.reward.weighted import RewardWeighted as RewardWeighted
from flowjax.reward.weighted import normalized_weights as normalized_weights

__all__ = [
    "AdjointMatching",
    "ClassLogProb",
    "DRaFT",
    "MapProposal",
    "ODEProposal",
    "Quadratic",
    "Region",
    "RewardWeighted",
    "memoryless",
    "normalized_weights",
    "regression_target",
]
