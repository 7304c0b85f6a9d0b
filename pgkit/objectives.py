"""Surrogate objectives for proximal policy updates: PPO clip and KL-penalty losses, value clipping.

Estimator layer (see ARCHITECTURE): imports only jax (and the private ``pgkit._checks``). Every
function is elementwise over its inputs (any shape, conventionally time-major ``[T, *B]``) and
returns unreduced per-step values; recipes reduce with a mean (and a mask where padding exists).

Conventions shared by the module:

* ``r_t = exp(log_probs[t] - old_log_probs[t]) = π_θ(a_t|s_t) / π_old(a_t|s_t)``, actions drawn
  from ``π_old``.
* Losses are to be *minimised* (the negated surrogates of the papers).
* ``stop_target_gradients=True`` (default) stops the gradient into the targets: old log-probs,
  advantages, old values and value targets. Gradients then flow only through the current
  ``log_probs`` / ``values`` (and ``kls`` for the KL penalty).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pgkit import _checks

__all__ = [
    "adaptive_kl_coefficient",
    "approx_kl",
    "clip_fraction",
    "clipped_value_loss",
    "kl_penalty_loss",
    "ppo_clip_loss",
]


def ppo_clip_loss(
    log_probs,
    old_log_probs,
    advantages,
    *,
    clip_eps,
    stop_target_gradients: bool = True,
):
    """Per-step PPO clipped surrogate loss (negated, to be minimised).

    ``loss_t = -min(r_t A_t, clip(r_t, 1 - ε, 1 + ε) A_t)``, with
    ``r_t = exp(log π_θ(a_t|s_t) - log π_old(a_t|s_t))``.

    The clip removes the incentive to move ``r_t`` beyond ``1 + ε`` when ``A_t > 0`` and below
    ``1 - ε`` when ``A_t < 0``: there the gradient is exactly zero. Elsewhere the gradient with
    respect to ``log_probs[t]`` is ``-A_t r_t``.

    Args:
      log_probs: ``[T, *B]`` log π_θ(a_t|s_t) under the current parameters, t = 0..T-1.
      old_log_probs: ``[T, *B]`` log π_old(a_t|s_t) of the policy that collected the data,
        t = 0..T-1.
      advantages: ``[T, *B]`` advantage estimates Â_t, t = 0..T-1 (normalise them, if wanted,
        before the call: nothing is normalised here).
      clip_eps: scalar ε > 0 (traced float, or an array broadcastable to ``[T, *B]``).
      stop_target_gradients: if True (default), no gradient flows into ``old_log_probs`` and
        ``advantages``.

    Returns:
      ``[T, *B]`` per-step loss.

    Gradients:
      Through ``log_probs`` only (and also ``old_log_probs`` / ``advantages`` when
      ``stop_target_gradients=False``).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> log_probs = jnp.log(jnp.array([1.5, 1.5, 0.5, 1.0]))
      >>> loss = pgkit.ppo_clip_loss(log_probs, jnp.zeros(4), jnp.array([1.0, -1.0, -1.0, 2.0]),
      ...                            clip_eps=0.2)
      >>> print([round(float(v), 3) for v in loss])
      [-1.2, 1.5, 0.8, -2.0]

    Reference:
      Schulman, Wolski, Dhariwal, Radford, Klimov. Proximal Policy Optimization Algorithms.
      2017. https://arxiv.org/abs/1707.06347 (eq. 7).
    """
    _checks.check_same_shape(
        "ppo_clip_loss", "log_probs", log_probs,
        old_log_probs=old_log_probs, advantages=advantages,
    )
    old_log_probs = _checks.maybe_stop_gradient(old_log_probs, stop_target_gradients)
    advantages = _checks.maybe_stop_gradient(advantages, stop_target_gradients)
    ratio = jnp.exp(log_probs - old_log_probs)
    clipped_ratio = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return -jnp.minimum(ratio * advantages, clipped_ratio * advantages)


def clipped_value_loss(
    values,
    old_values,
    targets,
    *,
    clip_eps,
    stop_target_gradients: bool = True,
):
    """Per-step clipped value loss: the larger of the plain and the clipped squared error.

    ``loss_t = ½ max((V_t - G_t)², (V_old,t + clip(V_t - V_old,t, -ε, ε) - G_t)²)``.

    Args:
      values: ``[T, *B]`` current value predictions V_θ(s_t), t = 0..T-1.
      old_values: ``[T, *B]`` predictions V_old(s_t) of the critic that produced the targets,
        t = 0..T-1.
      targets: ``[T, *B]`` value targets G_t (e.g. λ-returns), t = 0..T-1.
      clip_eps: scalar ε > 0 (traced float) bounding ``|V_t - V_old,t|`` in the clipped term.
      stop_target_gradients: if True (default), no gradient flows into ``old_values`` and
        ``targets``.

    Returns:
      ``[T, *B]`` per-step loss.

    Gradients:
      Through ``values`` only (and also ``old_values`` / ``targets`` when
      ``stop_target_gradients=False``).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> loss = pgkit.clipped_value_loss(jnp.array([1.0, 0.5]), jnp.array([0.0, 0.0]),
      ...                                 jnp.array([2.0, 0.0]), clip_eps=0.2)
      >>> print([round(float(v), 3) for v in loss])
      [1.62, 0.125]

    Reference:
      Engstrom, Ilyas, Santurkar, Tsipras, Janoos, Rudolph, Madry. Implementation Matters in
      Deep Policy Gradients: A Case Study on PPO and TRPO. 2020.
      https://arxiv.org/abs/2005.12729 (value clipping as in OpenAI baselines' ppo2).
    """
    _checks.check_same_shape(
        "clipped_value_loss", "values", values, old_values=old_values, targets=targets
    )
    old_values = _checks.maybe_stop_gradient(old_values, stop_target_gradients)
    targets = _checks.maybe_stop_gradient(targets, stop_target_gradients)
    clipped_values = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum(jnp.square(values - targets), jnp.square(clipped_values - targets))


def kl_penalty_loss(
    log_probs,
    old_log_probs,
    advantages,
    kls,
    *,
    beta,
    stop_target_gradients: bool = True,
):
    """Per-step KL-penalised importance-sampling surrogate loss (negated, to be minimised).

    ``loss_t = -r_t A_t + β KL_t``, with ``r_t = exp(log π_θ(a_t|s_t) - log π_old(a_t|s_t))`` and
    ``KL_t = KL(π_old(·|s_t) || π_θ(·|s_t))`` supplied by the caller (e.g. an analytic KL of the
    policy distributions, which carries the gradient with respect to θ).

    Args:
      log_probs: ``[T, *B]`` log π_θ(a_t|s_t) under the current parameters, t = 0..T-1.
      old_log_probs: ``[T, *B]`` log π_old(a_t|s_t), t = 0..T-1.
      advantages: ``[T, *B]`` advantage estimates Â_t, t = 0..T-1.
      kls: ``[T, *B]`` per-state KL(π_old(·|s_t) || π_θ(·|s_t)), t = 0..T-1.
      beta: scalar penalty coefficient β ≥ 0 (traced float; see ``adaptive_kl_coefficient``).
      stop_target_gradients: if True (default), no gradient flows into ``old_log_probs`` and
        ``advantages``.

    Returns:
      ``[T, *B]`` per-step loss.

    Gradients:
      Through ``log_probs`` and ``kls`` (and also ``old_log_probs`` / ``advantages`` when
      ``stop_target_gradients=False``). ``beta`` is treated as a constant by callers.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> loss = pgkit.kl_penalty_loss(jnp.log(jnp.array([2.0])), jnp.zeros(1), jnp.ones(1),
      ...                              jnp.array([0.5]), beta=1.0)
      >>> print([round(float(v), 3) for v in loss])
      [-1.5]

    Reference:
      Schulman, Wolski, Dhariwal, Radford, Klimov. Proximal Policy Optimization Algorithms.
      2017. https://arxiv.org/abs/1707.06347 (section 4, eq. 8).
    """
    _checks.check_same_shape(
        "kl_penalty_loss", "log_probs", log_probs,
        old_log_probs=old_log_probs, advantages=advantages, kls=kls,
    )
    old_log_probs = _checks.maybe_stop_gradient(old_log_probs, stop_target_gradients)
    advantages = _checks.maybe_stop_gradient(advantages, stop_target_gradients)
    ratio = jnp.exp(log_probs - old_log_probs)
    return -ratio * advantages + beta * kls


def adaptive_kl_coefficient(beta, kl, *, target_kl, min_beta=1e-6, max_beta=1e6):
    """Adaptive KL-penalty coefficient: double β when the KL overshoots, halve it when it undershoots.

    ``β' = 2β`` if ``KL > 1.5 d_targ``; ``β' = β / 2`` if ``KL < d_targ / 1.5``; else ``β' = β``;
    then ``β'`` is clipped to ``[min_beta, max_beta]``. Without the floor, a policy that stays
    inside the target for a few hundred updates halves β down to float32 zero, where doubling
    can never bring it back; a penalty of 1e-6 is already negligible.

    Args:
      beta: scalar (or any shape) current coefficient β.
      kl: the measured mean KL(π_old || π_new) after the policy update, broadcastable with
        ``beta`` (a scalar, or one value per seed under vmap).
      target_kl: scalar target d_targ > 0 (traced float).
      min_beta, max_beta: bounds on the new coefficient (defaults 1e-6 and 1e6; a β of 0
        becomes ``min_beta``, so the penalty can switch itself back on).

    Returns:
      The new coefficient, shape ``broadcast(beta, kl)``.

    Gradients:
      None meant: the update is piecewise constant in ``kl`` (zero gradient) and linear in
      ``beta``; callers treat β as a constant.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> new = pgkit.adaptive_kl_coefficient(1.0, jnp.array([0.03, 0.01, 0.005]), target_kl=0.01)
      >>> print([round(float(v), 3) for v in new])
      [2.0, 1.0, 0.5]

    Reference:
      Schulman, Wolski, Dhariwal, Radford, Klimov. Proximal Policy Optimization Algorithms.
      2017. https://arxiv.org/abs/1707.06347 (section 4).
    """
    beta = jnp.asarray(beta)
    kl = jnp.asarray(kl)
    new = jnp.where(
        kl > 1.5 * target_kl,
        2.0 * beta,
        jnp.where(kl < target_kl / 1.5, 0.5 * beta, beta),
    )
    return jnp.clip(new, min_beta, max_beta)


def approx_kl(log_probs, old_log_probs):
    """Per-sample unbiased, non-negative estimate ("k3") of KL(π_old || π_θ).

    ``k3_t = (r_t - 1) - log r_t`` with ``r_t = π_θ(a_t|s_t) / π_old(a_t|s_t)``, ``a_t ~ π_old``.
    ``E_old[r - 1] = 0`` so the mean is ``E_old[-log r] = KL(π_old || π_θ)``; each sample is
    ≥ 0 because ``log x ≤ x - 1``.

    Args:
      log_probs: ``[T, *B]`` log π_θ(a_t|s_t), t = 0..T-1.
      old_log_probs: ``[T, *B]`` log π_old(a_t|s_t) of the sampling policy, t = 0..T-1.

    Returns:
      ``[T, *B]`` per-sample estimate (average it for the KL).

    Gradients:
      Through both inputs (a diagnostic; wrap in ``jax.lax.stop_gradient`` when logging).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> kl = pgkit.approx_kl(jnp.log(jnp.array([1.0, 2.0, 0.5])), jnp.zeros(3))
      >>> print([round(float(v), 4) for v in kl])
      [0.0, 0.3069, 0.1931]

    Reference:
      Schulman. Approximating KL Divergence. 2020. http://joschu.net/blog/kl-approx.html
    """
    _checks.check_same_shape("approx_kl", "log_probs", log_probs, old_log_probs=old_log_probs)
    log_ratio = log_probs - old_log_probs
    return jnp.expm1(log_ratio) - log_ratio


def clip_fraction(log_probs, old_log_probs, *, clip_eps):
    """Per-sample indicator that the PPO ratio lies outside the clip range: ``1[|r_t - 1| > ε]``.

    ``c_t = 1`` if ``|exp(log π_θ(a_t|s_t) - log π_old(a_t|s_t)) - 1| > ε`` else ``0``.

    Args:
      log_probs: ``[T, *B]`` log π_θ(a_t|s_t), t = 0..T-1.
      old_log_probs: ``[T, *B]`` log π_old(a_t|s_t), t = 0..T-1.
      clip_eps: scalar ε > 0 (traced float).

    Returns:
      ``[T, *B]`` float indicator (its mean is the clip fraction).

    Gradients:
      None (piecewise constant; the output is stop-gradient'ed).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> c = pgkit.clip_fraction(jnp.log(jnp.array([1.0, 1.5, 0.7])), jnp.zeros(3),
      ...                         clip_eps=0.2)
      >>> print([float(v) for v in c])
      [0.0, 1.0, 1.0]

    Reference:
      Schulman, Wolski, Dhariwal, Radford, Klimov. Proximal Policy Optimization Algorithms.
      2017. https://arxiv.org/abs/1707.06347 (the diagnostic logged by OpenAI baselines' ppo2).
    """
    _checks.check_same_shape("clip_fraction", "log_probs", log_probs, old_log_probs=old_log_probs)
    ratio = jnp.exp(jax.lax.stop_gradient(log_probs - old_log_probs))
    dtype = jnp.result_type(log_probs, old_log_probs)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    return (jnp.abs(ratio - 1.0) > clip_eps).astype(dtype)
