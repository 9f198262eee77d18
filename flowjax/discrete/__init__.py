"""Discrete flow matching for tokens: mixture paths, losses, CTMC samplers, ELBO, flow maps.

Tokens are int arrays (B, L) with values in [0, V); the mask source adds the absorbing state V.

    dpath = fj.discrete.MixturePath(kappa=fj.discrete.PolynomialKappa(n=1.0))
    xt = dpath.sample(key, x0, x1, t)                                   # t of shape (B,)
    x1 = fj.discrete.sample_euler(posterior, x0, path=dpath, num_steps=N, key=key)

`posterior(x_t, t) -> (B, L, V)` gives the probabilities of x1 given x_t (a trained model's
softmax, or the exact `analytic.MarkovTokens.posterior`).
"""

from flowjax.discrete import analytic as analytic
from flowjax.discrete import flowmap as flowmap
from flowjax.discrete._elbo import elbo_bpt as elbo_bpt
from flowjax.discrete._euler import sample_euler as sample_euler
from flowjax.discrete._guidance import guided_posterior as guided_posterior
from flowjax.discrete._kappa import KAPPAS as KAPPAS
from flowjax.discrete._kappa import AbstractKappa as AbstractKappa
from flowjax.discrete._kappa import CosineKappa as CosineKappa
from flowjax.discrete._kappa import LinearKappa as LinearKappa
from flowjax.discrete._kappa import PolynomialKappa as PolynomialKappa
from flowjax.discrete._masked import sample_masked as sample_masked
from flowjax.discrete._model import ModelPosterior as ModelPosterior
from flowjax.discrete._model import model_posterior as model_posterior
from flowjax.discrete._path import MixturePath as MixturePath
from flowjax.discrete._path import pad_posterior as pad_posterior
from flowjax.discrete._sources import SOURCES as SOURCES
from flowjax.discrete._sources import AbstractDiscreteSource as AbstractDiscreteSource
from flowjax.discrete._sources import MaskSource as MaskSource
from flowjax.discrete._sources import UniformSource as UniformSource
from flowjax.discrete._sources import check_tokens as check_tokens
from flowjax.discrete.cross_entropy import CrossEntropy as CrossEntropy
from flowjax.discrete.generalized_kl import GeneralizedKL as GeneralizedKL
from flowjax.discrete.generalized_kl import generalized_kl as generalized_kl
from flowjax.discrete.mdlm import MDLM as MDLM
from flowjax.discrete.onehot import OneHotFlowMatching as OneHotFlowMatching
from flowjax.discrete.onehot import OneHotVelocity as OneHotVelocity
from flowjax.discrete.onehot import sample_onehot as sample_onehot

__all__ = [
    "KAPPAS",
    "MDLM",
    "SOURCES",
    "AbstractDiscreteSource",
    "AbstractKappa",
    "CosineKappa",
    "CrossEntropy",
    "GeneralizedKL",
    "LinearKappa",
    "MaskSource",
    "MixturePath",
    "ModelPosterior",
    "OneHotFlowMatching",
    "OneHotVelocity",
    "PolynomialKappa",
    "UniformSource",
    "analytic",
    "flowmap",
    "check_tokens",
    "elbo_bpt",
    "generalized_kl",
    "guided_posterior",
    "model_posterior",
    "pad_posterior",
    "sample_euler",
    "sample_masked",
    "sample_onehot",
]
