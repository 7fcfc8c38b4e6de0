"""Statistics helpers shared by the sampling tests."""
import numpy as np
from scipy.stats import chisquare


def chi2_pvalue(draws, probs) -> float:
    """p-value of a chi-square test that integer ``draws`` follow ``probs``; bins with expected counts < 5
    are pooled (the test needs expected counts >= 5)."""
    counts = np.bincount(draws, minlength=len(probs))
    keep = probs * len(draws) >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(probs[keep], probs[~keep].sum()) * len(draws)
    if exp[-1] == 0:
        assert obs[-1] == 0
        obs, exp = obs[:-1], exp[:-1]
    return chisquare(obs, exp * obs.sum() / exp.sum()).pvalue
