"""Statistics across seeds: bootstrap confidence intervals and the interquartile mean.

Host-side NumPy (results are summarised after training, never inside a compiled program).

Reference: Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical
Precipice", NeurIPS 2021, https://arxiv.org/abs/2108.13264 (IQM and bootstrap intervals).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Interval", "bootstrap_ci", "interquartile_mean", "summarise"]


class Interval(NamedTuple):
    """A point estimate with a confidence interval ``[low, high]``."""

    estimate: float
    low: float
    high: float


def interquartile_mean(x, axis: int = 0) -> np.ndarray:
    """Mean of the middle 50% of ``x`` along ``axis`` (trimmed mean, 25% cut each side).

    With fewer than 4 values this is the plain mean of those left after trimming
    ``floor(n/4)`` from each end, so for n < 4 it equals the mean.
    """
    x = np.sort(np.asarray(x, dtype=np.float64), axis=axis)
    n = x.shape[axis]
    if n == 0:
        raise ValueError("interquartile_mean: x must not be empty along axis")
    cut = n // 4
    return np.take(x, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def bootstrap_ci(
    x, *, statistic=np.mean, confidence: float = 0.95, num_resamples: int = 2000, seed: int = 0
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` over the first axis of ``x``.

    Args:
      x: ``[N, ...]`` samples (e.g. one value per seed); resampled along axis 0.
      statistic: reduces axis 0, called as ``statistic(samples, axis=0)``.
      confidence: two-sided level, in (0, 1).
      num_resamples: bootstrap resamples.
      seed: NumPy seed, so the interval is reproducible.

    Returns:
      ``Interval(estimate, low, high)`` (arrays if ``x`` has trailing axes).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_ci: confidence must be in (0, 1), got {confidence}")
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 0:
        raise ValueError("bootstrap_ci: x must hold at least one sample")
    estimate = statistic(x, axis=0)
    if x.shape[0] == 1:
        return Interval(estimate, estimate, estimate)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[0], size=(num_resamples, x.shape[0]))
    resampled = np.stack([statistic(x[i], axis=0) for i in idx])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [alpha, 1.0 - alpha], axis=0)
    return Interval(estimate, low, high)


def summarise(final_returns) -> dict[str, float]:
    """Summary of per-seed final returns: mean with a 95% bootstrap interval, IQM, min, max."""
    x = np.asarray(final_returns, dtype=np.float64)
    mean = bootstrap_ci(x)
    iqm = bootstrap_ci(x, statistic=interquartile_mean)
    return {
        "mean": float(mean.estimate),
        "mean_low": float(mean.low),
        "mean_high": float(mean.high),
        "iqm": float(iqm.estimate),
        "iqm_low": float(iqm.low),
        "iqm_high": float(iqm.high),
        "min": float(x.min()),
        "max": float(x.max()),
        "seeds": int(x.shape[0]),
    }
