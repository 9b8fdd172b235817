"""The mixture SPRT's p-value computed the long way, by numerical integration (scipy), to check
the closed forms in store.stats against."""

from __future__ import annotations

import math

from scipy import integrate
from scipy import stats as sp

from store.stats import MIXTURE_EFFECT_SIZE


def mixture_p_value(estimate: float, var: float, n_eff: float) -> float:
    """1 / (the likelihood ratio of N(theta, var) against N(0, var) at `estimate`, averaged over
    theta ~ N(0, tau^2)), at most 1; tau is MIXTURE_EFFECT_SIZE standard deviations of one
    observation, whose variance is var * n_eff."""
    tau = MIXTURE_EFFECT_SIZE * math.sqrt(var * n_eff)
    sd = math.sqrt(var)

    def weighted_ratio(theta: float) -> float:
        ratio = math.exp((theta * estimate - theta * theta / 2.0) / var)
        return ratio * float(sp.norm.pdf(theta, 0.0, tau))

    # Where the integrand lives: around the prior's and the estimate's scale.
    bound = 12.0 * max(tau, abs(estimate) + sd)
    ratio, _ = integrate.quad(weighted_ratio, -bound, bound, limit=400, epsabs=0, epsrel=1e-11)
    return min(1.0, 1.0 / float(ratio))
