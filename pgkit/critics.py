"""Critic targets and losses for off-policy actor-critics: TD, clipped double-Q, soft (SAC) targets,
the deterministic policy gradient loss, SAC actor and temperature losses, and their discrete-action
variants.

Estimator layer: imports only jax (and the private ``pgkit._checks``). One-step targets are elementwise: any shape ``[*B]`` works (a
replay minibatch ``[N]``, a time-major rollout ``[T, E]``). Episode semantics follow the project
convention: ``discounts = γ·(1 − terminated)``, so a truncated transition bootstraps from its next
value and a terminated one does not. Discrete-action arguments carry the action axis last,
``[*B, A]``.
"""

import math

import jax
import jax.numpy as jnp

from pgkit import _checks

__all__ = [
    "td_targets",
    "clipped_double_q_targets",
    "soft_q_targets",
    "q_loss",
    "dpg_loss",
    "sac_actor_loss",
    "sac_temperature_loss",
    "default_target_entropy",
    "discrete_soft_q_targets",
    "discrete_sac_actor_loss",
    "discrete_sac_temperature_loss",
]


def _expected_soft_value(probs, log_probs, q_values, alpha):
    """Σ_a p(a) (Q(a) − α log p(a)), with 0·log 0 = 0 and no NaN gradient where p(a) = 0."""
    safe_log_probs = jnp.where(probs > 0, log_probs, 0.0)
    return jnp.sum(probs * (q_values - alpha * safe_log_probs), axis=-1)


def td_targets(rewards, discounts, next_values, *, stop_target_gradients=True):
    r"""One-step TD targets y = r + γ(1 − terminated)·V(s').

    y_t = r_t + discounts_t · next_values_t

    Args:
      rewards: r_t, shape ``[*B]`` (e.g. a replay minibatch ``[N]`` or a rollout ``[T, E]``).
      discounts: γ·(1 − terminated_t), shape ``[*B]`` (0 on terminated transitions; γ on
        truncated ones, which bootstrap).
      next_values: V(s'_t) or Q_targ(s'_t, μ_targ(s'_t)), with s'_t the true next state (the
        final observation on a truncated step), shape ``[*B]``.
      stop_target_gradients: if True (default), the target carries no gradient.

    Returns:
      Targets y, shape ``[*B]``.

    Gradients:
      None by default; with ``stop_target_gradients=False``, through all inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> y = pgkit.td_targets(jnp.array([1.0, 1.0]), jnp.array([0.9, 0.0]), jnp.array([10.0, 10.0]))
      >>> print(y)
      [10.  1.]

    Reference:
      Sutton & Barto, "Reinforcement Learning: An Introduction", 2nd ed., 2018, Sec. 6.1,
      http://incompleteideas.net/book/the-book-2nd.html.
    """
    _checks.check_same_shape("td_targets", "rewards", rewards, discounts=discounts, next_values=next_values)
    return _checks.maybe_stop_gradient(rewards + discounts * next_values, stop_target_gradients)


def clipped_double_q_targets(rewards, discounts, next_q1, next_q2, *, stop_target_gradients=True):
    r"""Clipped double-Q targets (TD3): bootstrap from the smaller of two target critics.

    y = r + discounts · min(Q₁_targ(s', a'), Q₂_targ(s', a'))

    Args:
      rewards: r, shape ``[*B]``.
      discounts: γ·(1 − terminated), shape ``[*B]``.
      next_q1: Q₁_targ(s', a') at the (smoothed) target action a', shape ``[*B]``.
      next_q2: Q₂_targ(s', a'), shape ``[*B]``.
      stop_target_gradients: if True (default), the target carries no gradient.

    Returns:
      Targets y, shape ``[*B]`` (shared by both critics).

    Gradients:
      None by default; with ``stop_target_gradients=False``, through all inputs (into the
      smaller Q only).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> y = pgkit.clipped_double_q_targets(jnp.ones(2), jnp.full(2, 0.5),
      ...                                   jnp.array([4.0, 2.0]), jnp.array([3.0, 6.0]))
      >>> print(y)
      [2.5 2. ]

    Reference:
      Fujimoto, van Hoof, Meger, "Addressing Function Approximation Error in Actor-Critic
      Methods", 2018, Eq. 10, https://arxiv.org/abs/1802.09477.
    """
    _checks.check_same_shape(
        "clipped_double_q_targets", "rewards", rewards, discounts=discounts, next_q1=next_q1, next_q2=next_q2
    )
    return _checks.maybe_stop_gradient(rewards + discounts * jnp.minimum(next_q1, next_q2), stop_target_gradients)


def soft_q_targets(rewards, discounts, next_q1, next_q2, next_log_probs, *, alpha, stop_target_gradients=True):
    r"""Soft (maximum-entropy) Q targets for SAC with twin critics.

    y = r + discounts · ( min(Q₁_targ(s', a'), Q₂_targ(s', a')) − α log π(a'|s') ),  a' ~ π(·|s')

    Args:
      rewards: r, shape ``[*B]``.
      discounts: γ·(1 − terminated), shape ``[*B]``.
      next_q1: Q₁_targ(s', a') at a fresh policy sample a', shape ``[*B]``.
      next_q2: Q₂_targ(s', a'), shape ``[*B]``.
      next_log_probs: log π(a'|s'), shape ``[*B]``.
      alpha: α > 0, temperature (traced scalar or ``[*B]``).
      stop_target_gradients: if True (default), the target carries no gradient.

    Returns:
      Targets y, shape ``[*B]``.

    Gradients:
      None by default; with ``stop_target_gradients=False``, through all inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> y = pgkit.soft_q_targets(jnp.array([1.0]), jnp.array([0.5]), jnp.array([4.0]),
      ...                          jnp.array([3.0]), jnp.array([-2.0]), alpha=0.5)
      >>> print(y)
      [3.]

    Reference:
      Haarnoja, Zhou, Hartikainen, Tucker, Ha, Tan, Kumar, Zhu, Gupta, Abbeel, Levine, "Soft
      Actor-Critic Algorithms and Applications", 2018, Eqs. 3 and 5,
      https://arxiv.org/abs/1812.05905.
    """
    _checks.check_same_shape(
        "soft_q_targets", "rewards", rewards,
        discounts=discounts, next_q1=next_q1, next_q2=next_q2, next_log_probs=next_log_probs,
    )
    soft_value = jnp.minimum(next_q1, next_q2) - alpha * next_log_probs
    return _checks.maybe_stop_gradient(rewards + discounts * soft_value, stop_target_gradients)


def q_loss(q_values, targets, *, stop_target_gradients=True):
    r"""Per-sample squared TD error of a critic against fixed targets.

    L = ½ (Q(s, a) − sg(y))²

    Args:
      q_values: Q(s, a) of the online critic, shape ``[*B]``.
      targets: y (e.g. from ``td_targets``, ``clipped_double_q_targets``, ``soft_q_targets``),
        shape ``[*B]``.
      stop_target_gradients: if True (default), no gradient reaches ``targets``.

    Returns:
      Unreduced loss, shape ``[*B]`` (average it, with a mask where padding exists).

    Gradients:
      Through ``q_values``; through ``targets`` only with ``stop_target_gradients=False``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> print(pgkit.q_loss(jnp.array([1.0, 3.0]), jnp.array([2.0, 1.0])))
      [0.5 2. ]

    Reference:
      Mnih et al., "Human-level control through deep reinforcement learning", Nature, 2015,
      https://doi.org/10.1038/nature14236; Lillicrap et al., "Continuous control with deep
      reinforcement learning", 2016, https://arxiv.org/abs/1509.02971.
    """
    _checks.check_same_shape("q_loss", "q_values", q_values, targets=targets)
    return 0.5 * (q_values - _checks.maybe_stop_gradient(targets, stop_target_gradients)) ** 2


def dpg_loss(q_values):
    r"""Deterministic policy gradient loss: the negated critic value at the actor's action.

    L(θ) = −Q_φ(s, μ_θ(s)),  ∇_θ L = −∇_a Q_φ(s, a)|_{a=μ_θ(s)} ∇_θ μ_θ(s)

    ``q_values`` must be computed as Q_φ(s, μ_θ(s)) inside the function being differentiated,
    so that the gradient flows through the action into the actor. Differentiate with respect to
    the actor parameters θ only: the critic parameters φ must be held fixed by the caller (take
    the gradient w.r.t. θ alone, or pass ``jax.lax.stop_gradient(critic_params)``), otherwise
    this loss would also train the critic to overestimate.

    Args:
      q_values: Q_φ(s, μ_θ(s)), shape ``[*B]`` (for TD3, the first critic only).

    Returns:
      Unreduced loss −Q, shape ``[*B]``.

    Gradients:
      Through ``q_values`` (hence through the action into θ, and into φ unless the caller
      holds it fixed).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import pgkit
      >>> critic = lambda a: -(a - 2.0) ** 2          # Q(s, a) for one state
      >>> actor = lambda theta: theta * 1.0           # μ_θ(s)
      >>> g = jax.grad(lambda th: pgkit.dpg_loss(critic(actor(th))))(0.5)
      >>> print(round(float(g), 4))                   # −dQ/da · dμ/dθ = −2(2 − 0.5)
      -3.0

    Reference:
      Silver, Lever, Heess, Degris, Wierstra, Riedmiller, "Deterministic Policy Gradient
      Algorithms", ICML 2014, http://proceedings.mlr.press/v32/silver14.html; Lillicrap et al.,
      "Continuous control with deep reinforcement learning", 2016,
      https://arxiv.org/abs/1509.02971.
    """
    return -jnp.asarray(q_values)


def sac_actor_loss(q_values, log_probs, *, alpha):
    r"""SAC actor loss with a reparameterised action: temperature-weighted log-prob minus the critic value.

    L(φ) = α log π_φ(ã|s) − Q(s, ã),  ã = f_φ(ε; s) (reparameterised, e.g.
    ``tanh_gaussian_sample_and_log_prob``)

    Args:
      q_values: Q(s, ã) (usually min(Q₁, Q₂)) at the reparameterised action, shape ``[*B]``.
      log_probs: log π_φ(ã|s), shape ``[*B]``.
      alpha: α > 0, temperature (traced scalar or ``[*B]``); it carries no gradient here (it
        is learned by ``sac_temperature_loss``).

    Returns:
      Unreduced loss, shape ``[*B]``.

    Gradients:
      Through ``q_values`` (via the action; hold the critic parameters fixed) and
      ``log_probs``; none into ``alpha``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> print(pgkit.sac_actor_loss(jnp.array([1.0]), jnp.array([-2.0]), alpha=0.5))
      [-2.]

    Reference:
      Haarnoja, Zhou, Abbeel, Levine, "Soft Actor-Critic: Off-Policy Maximum Entropy Deep
      Reinforcement Learning with a Stochastic Actor", 2018, Eq. 12,
      https://arxiv.org/abs/1801.01290.
    """
    _checks.check_same_shape("sac_actor_loss", "q_values", q_values, log_probs=log_probs)
    return jax.lax.stop_gradient(jnp.asarray(alpha)) * log_probs - q_values  # a JAX array for NumPy inputs too


def sac_temperature_loss(log_alpha, log_probs, *, target_entropy, stop_target_gradients=True):
    r"""SAC automatic temperature loss on log α: α rises when the policy entropy is below the target.

    L(log α) = −log α · sg(log π(a|s) + H̄),  a ~ π(·|s)

    ∂L/∂log α = −(log π + H̄) = H_est − H̄, so gradient descent raises α when the entropy
    estimate −log π is below the target H̄. The paper writes the loss with α instead of
    log α; the log parameterisation keeps α positive and has the same sign.

    Args:
      log_alpha: log α, a scalar parameter (or broadcastable to ``log_probs``).
      log_probs: log π(a|s) of fresh policy samples, shape ``[*B]``.
      target_entropy: H̄ (traced scalar). Required, because the loss cannot see |A|: the
        standard choice −|A| (Haarnoja et al., 2018b) is ``default_target_entropy(action_size)``.
      stop_target_gradients: if True (default), no gradient reaches ``log_probs``.

    Returns:
      Unreduced loss, shape ``[*B]``.

    Gradients:
      Through ``log_alpha``; ``log_probs`` only with ``stop_target_gradients=False``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import pgkit
      >>> g = jax.grad(lambda la: pgkit.sac_temperature_loss(
      ...     la, jnp.array([1.0]), target_entropy=-1.0).sum())(0.0)
      >>> print(float(g))   # entropy −1 equals target −1: no change
      -0.0

    Reference:
      Haarnoja, Zhou, Hartikainen, Tucker, Ha, Tan, Kumar, Zhu, Gupta, Abbeel, Levine, "Soft
      Actor-Critic Algorithms and Applications", 2018, Eq. 18, https://arxiv.org/abs/1812.05905.
    """
    return -log_alpha * _checks.maybe_stop_gradient(log_probs + target_entropy, stop_target_gradients)


def default_target_entropy(action_size, *, discrete=False, scale=0.98):
    r"""Default SAC entropy target: −|A| for continuous actions, scale · log|A| for discrete ones.

    H̄ = −dim(A) (continuous, Haarnoja et al. 2018b);  H̄ = scale · log|A| (discrete,
    Christodoulou 2019 uses scale = 0.98 of the uniform policy's entropy log|A|)

    A scale of 0.98 keeps the discrete policy close to uniform for a long time; many later
    implementations use smaller values (e.g. 0.5–0.9): pass ``scale`` to choose.

    Args:
      action_size: static int; the action dimension (continuous) or the number of actions
        (discrete). Must be ≥ 1.
      discrete: static bool; which of the two rules.
      scale: fraction of the maximum entropy log|A| (discrete only; traced).

    Returns:
      Scalar target entropy (float array, shape ``()``).

    Gradients:
      None (a constant).

    Example:
      >>> import pgkit
      >>> print(float(pgkit.default_target_entropy(6)))
      -6.0
      >>> print(round(float(pgkit.default_target_entropy(4, discrete=True)), 4))
      1.3586

    Reference:
      Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", 2018,
      https://arxiv.org/abs/1812.05905; Christodoulou, "Soft Actor-Critic for Discrete Action
      Settings", 2019, https://arxiv.org/abs/1910.07207.
    """
    _checks.check_static_int("default_target_entropy", "action_size", action_size)
    if discrete:
        return jnp.asarray(scale, jnp.float32) * math.log(action_size)
    return jnp.asarray(-float(action_size), jnp.float32)


def discrete_soft_q_targets(
    rewards, discounts, next_probs, next_log_probs, next_q1, next_q2, *, alpha, stop_target_gradients=True
):
    r"""Soft Q targets for discrete actions, with the exact expectation over the next action.

    y = r + discounts · Σ_a' π(a'|s') [ min(Q₁_targ(s', a'), Q₂_targ(s', a')) − α log π(a'|s') ]

    Terms with π(a'|s') = 0 contribute 0 (0·log 0 = 0).

    Args:
      rewards: r, shape ``[*B]``.
      discounts: γ·(1 − terminated), shape ``[*B]``.
      next_probs: π(·|s'), shape ``[*B, A]``.
      next_log_probs: log π(·|s'), shape ``[*B, A]``.
      next_q1: Q₁_targ(s', ·), shape ``[*B, A]``.
      next_q2: Q₂_targ(s', ·), shape ``[*B, A]``.
      alpha: α > 0, temperature (traced scalar or ``[*B]``).
      stop_target_gradients: if True (default), the target carries no gradient.

    Returns:
      Targets y, shape ``[*B]``.

    Gradients:
      None by default; with ``stop_target_gradients=False``, through all inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> p = jnp.array([[0.5, 0.5]])
      >>> y = pgkit.discrete_soft_q_targets(jnp.array([0.0]), jnp.array([1.0]), p, jnp.log(p),
      ...     jnp.array([[1.0, 3.0]]), jnp.array([[2.0, 2.0]]), alpha=1.0)
      >>> print(jnp.round(y, 4))
      [2.1931]

    Reference:
      Christodoulou, "Soft Actor-Critic for Discrete Action Settings", 2019, Eqs. 9–10,
      https://arxiv.org/abs/1910.07207.
    """
    _checks.check_same_shape("discrete_soft_q_targets", "rewards", rewards, discounts=discounts)
    _checks.check_action_arrays(
        "discrete_soft_q_targets", jnp.shape(rewards),
        next_probs=next_probs, next_log_probs=next_log_probs, next_q1=next_q1, next_q2=next_q2,
    )
    alpha = jnp.asarray(alpha)[..., None] if jnp.ndim(alpha) else alpha
    soft_value = _expected_soft_value(next_probs, next_log_probs, jnp.minimum(next_q1, next_q2), alpha)
    return _checks.maybe_stop_gradient(rewards + discounts * soft_value, stop_target_gradients)


def discrete_sac_actor_loss(probs, log_probs, q_values, *, alpha):
    r"""Discrete SAC actor loss: the exact expectation over actions of α log π − Q.

    L(φ) = Σ_a π_φ(a|s) [ α log π_φ(a|s) − Q(s, a) ]

    Args:
      probs: π_φ(·|s), shape ``[*B, A]``.
      log_probs: log π_φ(·|s), shape ``[*B, A]``.
      q_values: Q(s, ·) (usually min(Q₁, Q₂)), shape ``[*B, A]``; carries no gradient here.
      alpha: α > 0 (traced scalar or ``[*B]``); carries no gradient here.

    Returns:
      Unreduced loss, shape ``[*B]``.

    Gradients:
      Through ``probs`` and ``log_probs``; none into ``q_values`` or ``alpha``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> p = jnp.array([[0.5, 0.5]])
      >>> print(jnp.round(pgkit.discrete_sac_actor_loss(p, jnp.log(p), jnp.array([[1.0, 3.0]]), alpha=1.0), 4))
      [-2.6931]

    Reference:
      Christodoulou, "Soft Actor-Critic for Discrete Action Settings", 2019, Eq. 12,
      https://arxiv.org/abs/1910.07207.
    """
    _checks.check_has_action_axis("discrete_sac_actor_loss", "probs", probs)
    _checks.check_action_arrays(
        "discrete_sac_actor_loss", jnp.shape(probs)[:-1], probs=probs, log_probs=log_probs, q_values=q_values
    )
    alpha = jax.lax.stop_gradient(jnp.asarray(alpha))
    alpha = alpha[..., None] if alpha.ndim else alpha
    return -_expected_soft_value(probs, log_probs, jax.lax.stop_gradient(q_values), alpha)


def discrete_sac_temperature_loss(log_alpha, probs, log_probs, *, target_entropy, stop_target_gradients=True):
    r"""Discrete SAC temperature loss with the exact policy entropy.

    L(log α) = −log α · sg( Σ_a π(a|s) log π(a|s) + H̄ ) = log α · sg(H(π(·|s)) − H̄)

    Gradient descent raises α when the entropy H is below the target H̄.

    Args:
      log_alpha: log α, a scalar parameter (or broadcastable to ``[*B]``).
      probs: π(·|s), shape ``[*B, A]``.
      log_probs: log π(·|s), shape ``[*B, A]``.
      target_entropy: H̄ (traced scalar), e.g. ``default_target_entropy(A, discrete=True)``.
      stop_target_gradients: if True (default), no gradient reaches ``probs``/``log_probs``.

    Returns:
      Unreduced loss, shape ``[*B]``.

    Gradients:
      Through ``log_alpha``; ``probs``/``log_probs`` only with ``stop_target_gradients=False``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import pgkit
      >>> p = jnp.array([[0.9, 0.1]])        # entropy 0.325 < target 0.5
      >>> g = jax.grad(lambda la: pgkit.discrete_sac_temperature_loss(
      ...     la, p, jnp.log(p), target_entropy=0.5).sum())(0.0)
      >>> bool(g < 0)                         # descent raises log α
      True

    Reference:
      Christodoulou, "Soft Actor-Critic for Discrete Action Settings", 2019, Eq. 11,
      https://arxiv.org/abs/1910.07207.
    """
    _checks.check_has_action_axis("discrete_sac_temperature_loss", "probs", probs)
    _checks.check_same_shape("discrete_sac_temperature_loss", "probs", probs, log_probs=log_probs)
    safe_log_probs = jnp.where(probs > 0, log_probs, 0.0)
    negative_entropy = jnp.sum(probs * safe_log_probs, axis=-1)
    return -log_alpha * _checks.maybe_stop_gradient(negative_entropy + target_entropy, stop_target_gradients)
