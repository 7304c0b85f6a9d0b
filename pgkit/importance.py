"""Importance sampling for off-policy data: log-ratios, per-trajectory, per-decision, truncated and
self-normalised weights, and V-trace.

Episode semantics as in :mod:`pgkit.returns` (CONTRIBUTING.md, convention 2): arrays are time-major
``[T, *B]``; ``dones[t]`` (terminated or truncated) cuts products and traces; ``discounts[t]`` =
γ·(1 − terminated_t); ``next_values[t]`` = V(s'_t) of the true next state. Products of ratios are
accumulated as sums of log-ratios and exponentiated once.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from pgkit import _checks

__all__ = [
    "VTrace",
    "log_ratios",
    "per_decision_weights",
    "per_trajectory_weights",
    "self_normalised_weights",
    "truncated_weights",
    "vtrace",
]


def log_ratios(target_log_probs: ArrayLike, behaviour_log_probs: ArrayLike) -> jax.Array:
    r"""Per-step log importance ratios log π(a_t|s_t) − log μ(a_t|s_t).

    Equation: log ρ_t = log π(a_t|s_t) − log μ(a_t|s_t), for actions a_t drawn from μ.

    Args:
      target_log_probs: ``[T, *B]`` log π(a_t|s_t) under the target policy, t = 0..T-1 (any
        shape; elementwise).
      behaviour_log_probs: ``[T, *B]`` log μ(a_t|s_t) under the behaviour policy that acted.

    Returns:
      ``[T, *B]`` log ρ_t.

    Gradients:
      flow into both arguments (+1 into ``target_log_probs``, −1 into ``behaviour_log_probs``);
      stop the behaviour side yourself if it comes from a differentiable network.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> lr = pgkit.log_ratios(jnp.log(jnp.array([0.5, 0.2])), jnp.log(jnp.array([0.25, 0.4])))
      >>> print(jnp.exp(lr).round(4))
      [2.  0.5]

    Reference:
      Precup, Sutton & Singh, "Eligibility Traces for Off-Policy Policy Evaluation", ICML 2000,
      http://papersdb.cs.ualberta.ca/~papersdb/view_publication.php?pub_id=467
    """
    _checks.check_same_shape(
        "log_ratios", "target_log_probs", target_log_probs, behaviour_log_probs=behaviour_log_probs
    )
    dtype = _checks.float_dtype(target_log_probs, behaviour_log_probs)
    return jnp.asarray(target_log_probs, dtype) - jnp.asarray(behaviour_log_probs, dtype)


def _episode_log_sums(log_ratios: jax.Array, dones: ArrayLike) -> jax.Array:
    """Σ_{k=s}^{t} log ρ_k, s the first step in the rollout of t's episode (forward scan)."""
    starts = _checks.episode_starts(dones)
    return _checks.forward_scan(_log_sum_step, jnp.zeros_like(log_ratios[0]), (log_ratios, starts))


# Scan bodies at module level so that eager calls reuse lax.scan's cached trace.


def _log_sum_step(total, x):
    lr, start = x
    total = lr + jnp.where(start, 0.0, total)
    return total, total


def _hold_from_end_step(total, x):
    s, end = x
    total = jnp.where(end, s, total)
    return total, total


def _vtrace_step(v_next, x):
    v, b, delta, d, c = x
    v_t = v + delta + d * c * (v_next - b)
    return v_t, v_t


def per_decision_weights(log_ratios: ArrayLike, dones: ArrayLike) -> jax.Array:
    r"""Per-decision importance weights: the product of ratios from the episode's start to step t.

    Equation: w_t = Π_{k=s}^{t} π(a_k|s_k)/μ(a_k|s_k) = exp(Σ_{k=s}^{t} log ρ_k), where s is the
    first step of t's episode within the rollout (0, or the step after a done). Future actions do
    not enter the weight of r_t, so Σ_t γ^t w_t r_t is an unbiased estimate of the target policy's
    return, usually of lower variance than the per-trajectory one.

    Args:
      log_ratios: ``[T, *B]`` log ρ_t for t = 0..T-1 (see :func:`log_ratios`).
      dones: ``[T, *B]`` terminated_t or truncated_t (bool or 0/1); the product restarts after a
        done.

    Returns:
      ``[T, *B]`` w_t for t = 0..T-1.

    Gradients:
      flow into ``log_ratios`` (∂w_t/∂log ρ_k = w_t for k in s..t), as the off-policy gradient
      ∇(w_t r_t) requires; none into ``dones``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> lr = jnp.log(jnp.array([2.0, 0.5, 4.0, 2.0]))
      >>> print(pgkit.per_decision_weights(lr, jnp.array([0, 1, 0, 0])).round(4))
      [2. 1. 4. 8.]

    Reference:
      Precup, Sutton & Singh, "Eligibility Traces for Off-Policy Policy Evaluation", ICML 2000,
      http://papersdb.cs.ualberta.ca/~papersdb/view_publication.php?pub_id=467
    """
    _checks.check_time_major("per_decision_weights", "log_ratios", log_ratios, dones=dones)
    log_ratios = jnp.asarray(log_ratios, _checks.float_dtype(log_ratios))
    return jnp.exp(_episode_log_sums(log_ratios, dones))


def per_trajectory_weights(log_ratios: ArrayLike, dones: ArrayLike) -> jax.Array:
    r"""Per-trajectory importance weights π(τ)/μ(τ), repeated at every step of the episode.

    Equation: w_t = Π_{k=s}^{e} π(a_k|s_k)/μ(a_k|s_k) = exp(Σ_{k=s}^{e} log ρ_k), where the episode
    containing t occupies steps s..e of the rollout (e its done step, or T-1). The transition
    probabilities cancel, so E_μ[w R(τ)] = E_π[R(τ)] for a whole episode.

    Args:
      log_ratios: ``[T, *B]`` log ρ_t for t = 0..T-1 (see :func:`log_ratios`).
      dones: ``[T, *B]`` terminated_t or truncated_t (bool or 0/1); the product restarts after a
        done.

    Returns:
      ``[T, *B]`` w_t for t = 0..T-1 (constant within each episode).

    Gradients:
      flow into ``log_ratios`` (∂w_t/∂log ρ_k = w_t for k in s..e), so ∇(w R(τ)) is the off-policy
      REINFORCE gradient; none into ``dones``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> lr = jnp.log(jnp.array([2.0, 0.5, 4.0, 2.0]))
      >>> print(pgkit.per_trajectory_weights(lr, jnp.array([0, 1, 0, 0])).round(4))
      [1. 1. 8. 8.]

    Reference:
      Precup, Sutton & Singh, "Eligibility Traces for Off-Policy Policy Evaluation", ICML 2000,
      http://papersdb.cs.ualberta.ca/~papersdb/view_publication.php?pub_id=467
    """
    _checks.check_time_major("per_trajectory_weights", "log_ratios", log_ratios, dones=dones)
    log_ratios = jnp.asarray(log_ratios, _checks.float_dtype(log_ratios))
    partial = _episode_log_sums(log_ratios, dones)
    ends = jnp.logical_not(_checks.continues(dones))
    totals = _checks.reverse_scan(_hold_from_end_step, jnp.zeros_like(partial[0]), (partial, ends))
    return jnp.exp(totals)


def truncated_weights(
    log_ratios: ArrayLike,
    *,
    max_weight: ArrayLike,
    stop_target_gradients: bool = True,
) -> jax.Array:
    r"""Truncated importance weights min(ρ_t, c̄).

    Equation: w_t = min(π(a_t|s_t)/μ(a_t|s_t), c̄) = min(exp(log ρ_t), max_weight).

    Args:
      log_ratios: ``[T, *B]`` log ρ_t (any shape; elementwise).
      max_weight: float c̄ > 0, scalar or broadcastable to ``log_ratios`` (traced).
      stop_target_gradients: static bool; if True (default) the weights carry no gradient.

    Returns:
      ``[T, *B]`` w_t.

    Gradients:
      none with ``stop_target_gradients=True``; otherwise into ``log_ratios`` where ρ_t < c̄
      (and into ``max_weight`` where ρ_t > c̄).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> print(pgkit.truncated_weights(jnp.log(jnp.array([0.5, 3.0])), max_weight=1.0))
      [0.5 1. ]

    Reference:
      Wang, Bapst, Heess, Mnih, Munos, Kavukcuoglu & de Freitas, "Sample Efficient Actor-Critic
      with Experience Replay", ICLR 2017, https://arxiv.org/abs/1611.01224; Espeholt et al.,
      "IMPALA", 2018, https://arxiv.org/abs/1802.01561
    """
    log_ratios = jnp.asarray(log_ratios, _checks.float_dtype(log_ratios))
    max_weight = _checks.broadcast_param(
        "truncated_weights", "max_weight", max_weight, log_ratios.shape, log_ratios.dtype
    )
    weights = jnp.minimum(jnp.exp(log_ratios), max_weight)
    return _checks.maybe_stop_gradient(weights, stop_target_gradients)


def self_normalised_weights(weights: ArrayLike, *, axis: int = 0) -> jax.Array:
    r"""Self-normalised importance weights: weights divided by their sum along ``axis``.

    Equation: w̃_i = w_i / Σ_j w_j, the sum over the samples j along ``axis``. The weighted
    estimate Σ_i w̃_i f_i is biased for finite samples but consistent, and usually of much lower
    variance than the plain mean (1/N) Σ_i w_i f_i; it also does not need normalised densities.
    All weights along ``axis`` must not be zero together (the result would be NaN).

    Args:
      weights: ``[..., N, ...]`` non-negative importance weights (e.g. per-trajectory weights
        taken at each episode's first step, one per sample).
      axis: static int, the sample axis to normalise over (default 0).

    Returns:
      Array of the shape of ``weights``, summing to 1 along ``axis``.

    Gradients:
      flow into ``weights`` (through both numerator and the sum).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> print(pgkit.self_normalised_weights(jnp.array([1.0, 3.0])))
      [0.25 0.75]

    Reference:
      Owen, "Monte Carlo theory, methods and examples", 2013, ch. 9.2 (self-normalized importance
      sampling), https://artowen.su.domains/mc/; Precup, Sutton & Singh, "Eligibility Traces for
      Off-Policy Policy Evaluation", ICML 2000,
      http://papersdb.cs.ualberta.ca/~papersdb/view_publication.php?pub_id=467
    """
    weights = jnp.asarray(weights, _checks.float_dtype(weights))
    _checks.check_static_int(
        "self_normalised_weights", "axis", axis, low=-weights.ndim, high=weights.ndim - 1,
        meaning=f"an axis of weights, shape {weights.shape}",
    )
    return weights / jnp.sum(weights, axis=axis, keepdims=True)


class VTrace(NamedTuple):
    """Output of :func:`vtrace`.

    Attributes:
      targets: ``[T, *B]`` V-trace value targets v_s for each step s.
      pg_advantages: ``[T, *B]`` ρ̄_s (r_s + discounts_s · v_{s+1}' − V(x_s)), the advantages for
        the off-policy policy-gradient term.
    """

    targets: jax.Array
    pg_advantages: jax.Array


def vtrace(
    rewards: ArrayLike,
    discounts: ArrayLike,
    dones: ArrayLike,
    values: ArrayLike,
    next_values: ArrayLike,
    log_ratios: ArrayLike,
    *,
    lambda_: ArrayLike = 1.0,
    clip_rho: ArrayLike = 1.0,
    clip_c: ArrayLike = 1.0,
    stop_target_gradients: bool = True,
) -> VTrace:
    r"""V-trace targets and policy-gradient advantages (IMPALA), cut at episode boundaries.

    Equation: with ρ_t = π(a_t|s_t)/μ(a_t|s_t), ρ̄_t = min(clip_rho, ρ_t),
    c_t = λ_t · min(clip_c, ρ_t) · (1 − done_t) (and c_{T-1} = 0), backwards for t = T-1..0:

        v_t = V(s_t) + ρ̄_t (r_t + discounts_t V(s'_t) − V(s_t))
              + discounts_t c_t (v_{t+1} − V(s'_t)),
        pg_advantages_t = ρ̄_t (r_t + discounts_t v'_{t+1} − V(s_t)),
        v'_{t+1} = v_{t+1} if step t continues (not done, t < T-1) else V(s'_t).

    Where ``next_values[t] == values[t+1]`` on every continuing step this is eq. (1) of the paper,
    v_t = V(s_t) + Σ_{k=t}^{e} (Π_{j=t}^{k-1} discounts_j c_j) ρ̄_k (r_k + discounts_k V(s_{k+1}) −
    V(s_k)), with the trace cut at the episode's end e; a truncated step bootstraps from V of its
    final observation and a terminated one from nothing. On-policy (ρ = 1, clips ≥ 1) v_t equals
    the λ-return of :func:`pgkit.lambda_returns`. Index convention: the paper's c_i carries λ
    (its "λ-V-trace" variant) and γ is ``discounts``.

    Args:
      rewards: ``[T, *B]`` r_t for t = 0..T-1.
      discounts: ``[T, *B]`` γ·(1 − terminated_t) for t = 0..T-1.
      dones: ``[T, *B]`` terminated_t or truncated_t (bool or 0/1) for t = 0..T-1.
      values: ``[T, *B]`` V(s_t) for t = 0..T-1.
      next_values: ``[T, *B]`` V(s'_t) for t = 0..T-1 (s'_t the true next state).
      log_ratios: ``[T, *B]`` log π(a_t|s_t) − log μ(a_t|s_t) for t = 0..T-1.
      lambda_: float λ, scalar or broadcastable to ``[T, *B]`` (traced), default 1.
      clip_rho: float ρ̄ threshold for the TD term and the policy-gradient advantage (traced),
        default 1.
      clip_c: float c̄ threshold for the trace coefficients (traced), default 1.
      stop_target_gradients: static bool; if True (default) targets and advantages carry no
        gradient.

    Returns:
      ``VTrace(targets, pg_advantages)``, each ``[T, *B]`` for t = 0..T-1.

    Gradients:
      none with ``stop_target_gradients=True``; otherwise into ``rewards``, ``discounts``,
      ``values``, ``next_values``, ``log_ratios`` (through the clipped ratios, where unclipped)
      and the float hyperparameters.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> out = pgkit.vtrace(jnp.ones(3), jnp.full(3, 0.5), jnp.array([0, 0, 1]), jnp.zeros(3),
      ...                    jnp.zeros(3), jnp.zeros(3))
      >>> print(out.targets)
      [1.75 1.5  1.  ]

    Reference:
      Espeholt, Soyer, Munos, Simonyan, Mnih, Ward, Doron, Firoiu, Harley, Dunning, Legg &
      Kavukcuoglu, "IMPALA: Scalable Distributed Deep-RL with Importance Weighted Actor-Learner
      Architectures", ICML 2018, https://arxiv.org/abs/1802.01561
    """
    shape = _checks.check_time_major(
        "vtrace",
        "rewards",
        rewards,
        discounts=discounts,
        dones=dones,
        values=values,
        next_values=next_values,
        log_ratios=log_ratios,
    )
    dtype = _checks.float_dtype(rewards, discounts, values, next_values, log_ratios)
    rewards = jnp.asarray(rewards, dtype)
    discounts = jnp.asarray(discounts, dtype)
    values = jnp.asarray(values, dtype)
    next_values = jnp.asarray(next_values, dtype)
    ratios = jnp.exp(jnp.asarray(log_ratios, dtype))
    lambdas = _checks.broadcast_param("vtrace", "lambda_", lambda_, shape, dtype)
    clip_rho = _checks.broadcast_param("vtrace", "clip_rho", clip_rho, shape, dtype)
    clip_c = _checks.broadcast_param("vtrace", "clip_c", clip_c, shape, dtype)
    cont = _checks.continues(dones)

    rhos = jnp.minimum(clip_rho, ratios)
    cs = jnp.where(cont, lambdas * jnp.minimum(clip_c, ratios), 0.0)
    td = rhos * (rewards + discounts * next_values - values)
    targets = _checks.reverse_scan(
        _vtrace_step, jnp.zeros_like(values[0]), (values, next_values, td, discounts, cs)
    )
    following = jnp.concatenate([targets[1:], jnp.zeros_like(targets[:1])], axis=0)
    next_targets = jnp.where(cont, following, next_values)
    pg_advantages = rhos * (rewards + discounts * next_targets - values)
    return _checks.maybe_stop_gradient(VTrace(targets, pg_advantages), stop_target_gradients)
