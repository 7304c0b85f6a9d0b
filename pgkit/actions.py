"""Sampled, reparameterised and squashed actions, exploration noise and target policy smoothing.

Estimator layer: imports only jax and distrax (and the private ``pgkit._checks``). Action axes
come last: a mean of shape ``[*B, A]`` gives actions ``[*B, A]`` and log-probabilities ``[*B]``
(summed over the action axis). Bounds ``low``/``high`` are floats or arrays of shape ``[A]``;
they are traced (an array of bounds does not recompile).
"""

import math
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp

from pgkit import _checks

__all__ = [
    "CategoricalSample",
    "categorical_sample_and_log_prob",
    "SquashedSample",
    "tanh_gaussian_sample_and_log_prob",
    "tanh_gaussian_log_prob",
    "tanh_gaussian_mode",
    "gaussian_exploration",
    "ornstein_uhlenbeck_noise",
    "target_policy_smoothing",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class CategoricalSample(NamedTuple):
    """A categorical sample and its log-probability.

    Attributes:
      action: ``[*B]`` int32, the sampled category.
      log_prob: ``[*B]`` its log-probability.
    """

    action: jax.Array
    log_prob: jax.Array


def categorical_sample_and_log_prob(logits, *, key):
    r"""Sample of a categorical distribution given by unnormalised logits, with its log-probability.

    ℓ = log_softmax(logits),  a = argmax_i (ℓ_i + g_i) with g_i ~ Gumbel(0, 1),  log π(a) = ℓ_a

    The same draws and values as ``distrax.Categorical(logits=logits).sample_and_log_prob``
    (``jax.random.categorical`` on the normalised logits), without distrax's validity check of
    the probabilities, which costs an acting step a softmax and two reductions; for a rollout
    that samples every environment step this is part of the inner loop (non-finite logits give
    a NaN log-probability, which the driver reports, instead of the action −1).

    Args:
      logits: unnormalised log-probabilities, shape ``[*B, A]`` (categories last).
      key: PRNG key (keyword-only).

    Returns:
      ``CategoricalSample(action, log_prob)``: action ``[*B]`` int32 in ``[0, A)``; log_prob
      ``[*B]``.

    Gradients:
      ``log_prob`` is differentiable in ``logits`` (the score function
      ∇ log π(a) = onehot(a) − softmax(logits)); the sample is discrete and has none.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import pgkit
      >>> logits = jnp.log(jnp.array([[0.25, 0.75], [1.0, 0.0]]))
      >>> a, logp = pgkit.categorical_sample_and_log_prob(logits, key=jax.random.key(0))
      >>> a.shape, int(a[1]), float(logp[1])
      ((2,), 0, 0.0)

    Reference:
      Gumbel, "Statistical Theory of Extreme Values and Some Practical Applications", 1954;
      Maddison, Tarlow, Minka, "A* Sampling", 2014, https://arxiv.org/abs/1411.0030 (the
      Gumbel-max trick).
    """
    logits = jnp.asarray(logits)
    _checks.check_has_action_axis("categorical_sample_and_log_prob", "logits", logits, axis="a category")
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        raise _checks.argument_error(
            "categorical_sample_and_log_prob", "logits", "be floating point", f"dtype {logits.dtype}"
        )
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    action = jax.random.categorical(key, log_probs, axis=-1)
    log_prob = jnp.take_along_axis(log_probs, action[..., None], axis=-1)[..., 0]
    return CategoricalSample(action.astype(jnp.int32), log_prob)


class SquashedSample(NamedTuple):
    """A squashed Gaussian sample and its log-density.

    Attributes:
      action: ``[*B, A]`` the squashed action, in ``[low, high]``.
      log_prob: ``[*B]`` its log-density, summed over the action axis.
    """

    action: jax.Array
    log_prob: jax.Array


def _affine(low, high, dtype):
    """Centre and half-width of [low, high]: a = centre + half_width * y maps [-1, 1] onto it."""
    low = jnp.asarray(low, dtype)
    high = jnp.asarray(high, dtype)
    return low, high, 0.5 * (high + low), 0.5 * (high - low)


def _squash_log_det(pre_tanh, half_width):
    """Sum over the action axis of log|d a / d u| for a = centre + half_width * tanh(u).

    Uses distrax's stable form log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), finite for
    every finite u (it is about log 4 - 2|u| for large |u|, where 1 - tanh(u)^2 underflows).
    """
    tanh_term = distrax.Tanh().forward_log_det_jacobian(pre_tanh)
    scale_term = jnp.broadcast_to(jnp.log(half_width), pre_tanh.shape)
    return jnp.sum(tanh_term + scale_term, axis=-1)


def _squash(pre_tanh, low, high, centre, half_width):
    # clip only guards against one-ulp rounding past a bound; it is the identity otherwise.
    return jnp.clip(centre + half_width * jnp.tanh(pre_tanh), low, high)


def tanh_gaussian_sample_and_log_prob(mean, log_std, *, key, low=-1.0, high=1.0):
    r"""Reparameterised sample of a tanh-squashed diagonal Gaussian, rescaled to [low, high], with its log-density.

    u = μ + σ ⊙ ε,  ε ~ N(0, I),  a = c + h ⊙ tanh(u),  c = (high + low)/2,  h = (high − low)/2

    log π(a) = Σ_i [ log N(ε_i; 0, 1) − log σ_i − log(1 − tanh(u_i)²) − log h_i ]

    with the stable log(1 − tanh(u)²) = 2 (log 2 − u − softplus(−2u)) (distrax ``Tanh``). The
    Gaussian term is computed from ε (not from u − μ), so it stays exact when σ ≪ |μ|. Sampling
    draws ``ε = jax.random.normal(key, mean.shape)``.

    Args:
      mean: μ, pre-squash mean, shape ``[*B, A]`` (any batch/time axes, action axis last).
      log_std: log σ, shape ``[*B, A]``.
      key: PRNG key (keyword-only).
      low: lower action bound, float or ``[A]`` (traced).
      high: upper action bound, float or ``[A]`` (traced), ``high > low``.

    Returns:
      ``SquashedSample(action, log_prob)``: action ``[*B, A]`` in ``[low, high]``; log_prob ``[*B]``
      (density with respect to Lebesgue measure on the rescaled action box).

    Gradients:
      Pathwise (reparameterised): both outputs are differentiable in ``mean`` and ``log_std``
      (the SAC actor loss flows through both). ``low``/``high`` are treated as constants.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import pgkit
      >>> mean, log_std = jnp.zeros((4, 2)), jnp.full((4, 2), -1.0)
      >>> a, logp = pgkit.tanh_gaussian_sample_and_log_prob(
      ...     mean, log_std, key=jax.random.key(0), low=-2.0, high=2.0)
      >>> a.shape, logp.shape, bool(jnp.all(jnp.abs(a) <= 2.0))
      ((4, 2), (4,), True)

    Reference:
      Haarnoja, Zhou, Abbeel, Levine, "Soft Actor-Critic: Off-Policy Maximum Entropy Deep
      Reinforcement Learning with a Stochastic Actor", 2018, Appendix C (enforcing action
      bounds), https://arxiv.org/abs/1801.01290; Kingma & Welling, "Auto-Encoding Variational
      Bayes", 2014, https://arxiv.org/abs/1312.6114.
    """
    mean = jnp.asarray(mean)
    log_std = jnp.asarray(log_std)
    _checks.check_has_action_axis("tanh_gaussian_sample_and_log_prob", "mean", mean)
    _checks.check_same_shape("tanh_gaussian_sample_and_log_prob", "mean", mean, log_std=log_std)
    action_size = mean.shape[-1]
    _checks.check_action_bounds("tanh_gaussian_sample_and_log_prob", action_size, low=low, high=high)
    dtype = jnp.result_type(mean, log_std, jnp.float32)
    mean, log_std = mean.astype(dtype), log_std.astype(dtype)
    low, high, centre, half_width = _affine(low, high, dtype)

    noise = jax.random.normal(key, mean.shape, dtype)
    pre_tanh = mean + jnp.exp(log_std) * noise
    base_log_prob = jnp.sum(distrax.Normal(jnp.zeros((), dtype), jnp.ones((), dtype)).log_prob(noise) - log_std, axis=-1)
    log_prob = base_log_prob - _squash_log_det(pre_tanh, half_width)
    return SquashedSample(_squash(pre_tanh, low, high, centre, half_width), log_prob)


def tanh_gaussian_log_prob(pre_tanh, mean, log_std, *, low=-1.0, high=1.0):
    r"""Log-density of the rescaled tanh-Gaussian action a = c + h ⊙ tanh(u), given the pre-squash value u.

    log π(a) = Σ_i [ log N(u_i; μ_i, σ_i) − log(1 − tanh(u_i)²) − log h_i ],  h = (high − low)/2

    Pass the pre-squash value u (store it with the action in a buffer): inverting a squashed
    action with atanh loses all precision near the bounds.

    Args:
      pre_tanh: u, shape ``[*B, A]``.
      mean: μ, shape ``[*B, A]``.
      log_std: log σ, shape ``[*B, A]``.
      low: lower action bound, float or ``[A]`` (traced).
      high: upper action bound, float or ``[A]`` (traced).

    Returns:
      Log-density of the squashed, rescaled action, shape ``[*B]``.

    Gradients:
      Flow through ``pre_tanh``, ``mean`` and ``log_std``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> u = jnp.array([[0.0, 20.0]])
      >>> logp = pgkit.tanh_gaussian_log_prob(u, jnp.zeros((1, 2)), jnp.zeros((1, 2)))
      >>> bool(jnp.isfinite(logp).all()), logp.shape
      (True, (1,))

    Reference:
      Haarnoja, Zhou, Abbeel, Levine, "Soft Actor-Critic: Off-Policy Maximum Entropy Deep
      Reinforcement Learning with a Stochastic Actor", 2018, Appendix C,
      https://arxiv.org/abs/1801.01290.
    """
    pre_tanh = jnp.asarray(pre_tanh)
    mean = jnp.asarray(mean)
    log_std = jnp.asarray(log_std)
    _checks.check_has_action_axis("tanh_gaussian_log_prob", "pre_tanh", pre_tanh)
    _checks.check_same_shape("tanh_gaussian_log_prob", "pre_tanh", pre_tanh, mean=mean, log_std=log_std)
    action_size = pre_tanh.shape[-1]
    _checks.check_action_bounds("tanh_gaussian_log_prob", action_size, low=low, high=high)
    dtype = jnp.result_type(pre_tanh, mean, log_std, jnp.float32)
    pre_tanh, mean, log_std = pre_tanh.astype(dtype), mean.astype(dtype), log_std.astype(dtype)
    _, _, _, half_width = _affine(low, high, dtype)
    # (u - μ) is exact in floating point when u and μ are close (Sterbenz), so σ ≪ |μ| is fine.
    z = (pre_tanh - mean) * jnp.exp(-log_std)
    base_log_prob = jnp.sum(-0.5 * z**2 - log_std - _HALF_LOG_2PI, axis=-1)
    return base_log_prob - _squash_log_det(pre_tanh, half_width)


def tanh_gaussian_mode(mean, *, low=-1.0, high=1.0):
    r"""Deterministic action of a tanh-Gaussian policy: the squashed, rescaled mean.

    a = c + h ⊙ tanh(μ),  c = (high + low)/2,  h = (high − low)/2

    This is the conventional evaluation action (the squashed median); it is not the mode of the
    squashed density when σ is large.

    Args:
      mean: μ, pre-squash mean, shape ``[*B, A]``.
      low: lower action bound, float or ``[A]`` (traced).
      high: upper action bound, float or ``[A]`` (traced).

    Returns:
      Action, shape ``[*B, A]``, in ``[low, high]``.

    Gradients:
      Flow through ``mean``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> print(pgkit.tanh_gaussian_mode(jnp.array([0.0, 100.0]), low=0.0, high=2.0))
      [1. 2.]

    Reference:
      Haarnoja, Zhou, Abbeel, Levine, "Soft Actor-Critic: Off-Policy Maximum Entropy Deep
      Reinforcement Learning with a Stochastic Actor", 2018, https://arxiv.org/abs/1801.01290.
    """
    mean = jnp.asarray(mean)
    _checks.check_has_action_axis("tanh_gaussian_mode", "mean", mean)
    _checks.check_action_bounds("tanh_gaussian_mode", mean.shape[-1], low=low, high=high)
    dtype = jnp.result_type(mean, jnp.float32)
    low, high, centre, half_width = _affine(low, high, dtype)
    return _squash(mean.astype(dtype), low, high, centre, half_width)


def gaussian_exploration(actions, *, key, scale, low=-1.0, high=1.0):
    r"""Gaussian exploration noise added to deterministic actions, clipped to the action box.

    a' = clip(a + σ ε, low, high),  ε ~ N(0, I)

    Args:
      actions: deterministic actions μ(s), shape ``[*B, A]``.
      key: PRNG key (keyword-only).
      scale: σ, noise standard deviation, float or ``[A]`` (traced).
      low: lower action bound, float or ``[A]`` (traced).
      high: upper action bound, float or ``[A]`` (traced).

    Returns:
      Noisy actions, shape ``[*B, A]``, in ``[low, high]``.

    Gradients:
      None intended (behaviour actions are data); mathematically identity in ``actions``
      inside the box, zero where clipped.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import pgkit
      >>> a = pgkit.gaussian_exploration(jnp.zeros((3, 2)), key=jax.random.key(0), scale=10.0)
      >>> bool(jnp.all(jnp.abs(a) <= 1.0))
      True

    Reference:
      Fujimoto, van Hoof, Meger, "Addressing Function Approximation Error in Actor-Critic
      Methods", 2018, https://arxiv.org/abs/1802.09477 (uncorrelated Gaussian exploration).
    """
    actions = jnp.asarray(actions)
    _checks.check_has_action_axis("gaussian_exploration", "actions", actions)
    _checks.check_action_bounds("gaussian_exploration", actions.shape[-1], scale=scale, low=low, high=high)
    dtype = jnp.result_type(actions, jnp.float32)
    noise = jax.random.normal(key, actions.shape, dtype)
    return jnp.clip(actions.astype(dtype) + jnp.asarray(scale, dtype) * noise, jnp.asarray(low, dtype), jnp.asarray(high, dtype))


def ornstein_uhlenbeck_noise(noise_state, *, key, theta=0.15, sigma=0.2, dt=1e-2):
    r"""One Euler–Maruyama step of a zero-mean Ornstein–Uhlenbeck process (temporally correlated noise).

    x_{k+1} = x_k − θ x_k dt + σ √dt ε_k,  ε_k ~ N(0, I)

    Stationary variance of this discrete chain: σ² dt / (1 − (1 − θ dt)²) = σ² / (2θ − θ² dt),
    which tends to the continuous-time σ²/(2θ) as θ dt → 0.

    The function is pure: the caller carries ``noise_state`` (start at zeros, shape of the
    actions) and adds the returned state to the deterministic action. Reset it at episode
    ends by multiplying with ``(1 - dones)`` (broadcast over the action axis) before the next
    step: ``noise_state = noise_state * (1 - dones)[..., None]``.

    Args:
      noise_state: x_k, shape ``[*B, A]`` (any shape).
      key: PRNG key (keyword-only).
      theta: θ, mean-reversion rate (traced).
      sigma: σ, diffusion scale (traced), float or broadcastable to ``noise_state``.
      dt: time step (traced).

    Returns:
      x_{k+1}, shape of ``noise_state`` (the new noise state and the noise to add).

    Gradients:
      None intended (exploration noise).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import pgkit
      >>> x = jnp.zeros(2)
      >>> x = pgkit.ornstein_uhlenbeck_noise(x, key=jax.random.key(0))
      >>> x.shape
      (2,)

    Reference:
      Uhlenbeck & Ornstein, "On the Theory of the Brownian Motion", Physical Review 36, 1930,
      https://doi.org/10.1103/PhysRev.36.823; used for exploration by Lillicrap et al.,
      "Continuous control with deep reinforcement learning", 2016,
      https://arxiv.org/abs/1509.02971.
    """
    noise_state = jnp.asarray(noise_state)
    dtype = jnp.result_type(noise_state, jnp.float32)
    noise_state = noise_state.astype(dtype)
    theta, sigma, dt = (jnp.asarray(v, dtype) for v in (theta, sigma, dt))
    noise = jax.random.normal(key, noise_state.shape, dtype)
    return noise_state - theta * noise_state * dt + sigma * jnp.sqrt(dt) * noise


def target_policy_smoothing(target_actions, *, key, noise_scale=0.2, noise_clip=0.5, low=-1.0, high=1.0):
    r"""TD3 target policy smoothing: clipped Gaussian noise on the target actor's actions.

    a'(s') = clip(μ_targ(s') + clip(σ ε, −c, c), low, high),  ε ~ N(0, I)

    Args:
      target_actions: μ_targ(s'), target-actor actions at the next states, shape ``[*B, A]``.
      key: PRNG key (keyword-only).
      noise_scale: σ, noise standard deviation (traced), float or ``[A]``.
      noise_clip: c ≥ 0, bound on the absolute noise (traced), float or ``[A]``.
      low: lower action bound, float or ``[A]`` (traced).
      high: upper action bound, float or ``[A]`` (traced).

    Returns:
      Smoothed target actions, shape ``[*B, A]``, in ``[low, high]``.

    Gradients:
      None intended: these actions only build critic targets, which ``clipped_double_q_targets``
      stops (mathematically identity in ``target_actions`` inside the box).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import pgkit
      >>> a = pgkit.target_policy_smoothing(jnp.zeros((5, 1)), key=jax.random.key(0), noise_scale=1.0)
      >>> bool(jnp.all(jnp.abs(a) <= 0.5))
      True

    Reference:
      Fujimoto, van Hoof, Meger, "Addressing Function Approximation Error in Actor-Critic
      Methods", 2018, Eq. 14, https://arxiv.org/abs/1802.09477.
    """
    target_actions = jnp.asarray(target_actions)
    _checks.check_has_action_axis("target_policy_smoothing", "target_actions", target_actions)
    _checks.check_action_bounds(
        "target_policy_smoothing", target_actions.shape[-1],
        noise_scale=noise_scale, noise_clip=noise_clip, low=low, high=high,
    )
    dtype = jnp.result_type(target_actions, jnp.float32)
    noise_clip = jnp.asarray(noise_clip, dtype)
    noise = jnp.asarray(noise_scale, dtype) * jax.random.normal(key, target_actions.shape, dtype)
    noise = jnp.clip(noise, -noise_clip, noise_clip)
    return jnp.clip(target_actions.astype(dtype) + noise, jnp.asarray(low, dtype), jnp.asarray(high, dtype))
