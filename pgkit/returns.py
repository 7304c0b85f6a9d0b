"""Returns and advantages over time-major rollouts: reward-to-go, whole-episode returns, TD errors,
n-step and λ-returns, and generalised advantage estimation (GAE).

Episode semantics (CONTRIBUTING.md, convention 2). Every array is time-major ``[T, *B]`` and a step
``t`` carries

- ``rewards[t]`` = r_t;
- ``discounts[t]`` = γ·(1 − terminated_t), the factor that multiplies anything bootstrapped from
  the next state;
- ``dones[t]`` = terminated_t or truncated_t (bool or 0/1), where sums and traces are cut;
- ``values[t]`` = V(s_t) and ``next_values[t]`` = V(s'_t), with s'_t the true next state (the final
  observation on a done step).

A truncated step bootstraps from its next value, a terminated one does not (its discount is 0),
nothing crosses a done, and the last step of the rollout bootstraps from its next value. Every
function scans over axis 0 with ``jax.lax.scan`` and is elementwise over ``*B``, so one function
serves a single stream ``[T]``, a batch ``[T, E]`` and ``jax.vmap``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from pgkit import _checks

__all__ = [
    "GAE",
    "episode_returns",
    "gae",
    "lambda_returns",
    "n_step_returns",
    "reward_to_go",
    "td_errors",
]


# Scan bodies live at module level: lax.scan caches its trace on the function object, so eager
# (un-jitted) calls do not re-trace and re-compile the loop every time.


def _reward_to_go_step(g_next, x):
    r, d, c, b = x
    g = r + d * jnp.where(c, g_next, b)
    return g, g


def _hold_from_start_step(current, x):
    g, start = x
    current = jnp.where(start, g, current)
    return current, current


def _n_step_step(carry, x):
    # carry[k-1] = G^{(k)}_{t+1} for k = 1..n-1. With G^{(0)}_{t+1} := V(s'_t),
    # G^{(k)}_t = r_t + discounts_t · (G^{(k-1)}_{t+1} if step t continues else V(s'_t)).
    r, d, c, b = x
    previous = jnp.concatenate([b[None], carry], axis=0)
    current = r + d * jnp.where(c, previous, b)
    return current[:-1], current[-1]


def _lambda_return_step(g_next, x):
    r, d, l, b = x
    g = r + d * ((1.0 - l) * b + l * g_next)
    return g, g


def _gae_step(a_next, x):
    delta, d, l = x
    a = delta + d * l * a_next
    return a, a


# ---------------------------------------------------------------------------------------------
# Public functions.
# ---------------------------------------------------------------------------------------------


def reward_to_go(
    rewards: ArrayLike,
    discounts: ArrayLike,
    dones: ArrayLike,
    next_values: ArrayLike | None = None,
    *,
    stop_target_gradients: bool = True,
) -> jax.Array:
    r"""Monte-Carlo reward-to-go: the discounted sum of rewards from step t to its episode's end.

    Equation (backward recursion, t = T-1, ..., 0):

        G_t = r_t + discounts_t · ( G_{t+1}   if not done_t and t < T-1
                                    b_t       otherwise ),

    with the bootstrap b_t = next_values_t if ``next_values`` is given, else 0. Equivalently
    G_t = Σ_{k=t}^{e} (Π_{j=t}^{k-1} discounts_j) r_k + (Π_{j=t}^{e} discounts_j) b_e, where e is
    the first done step at or after t, or T-1. A terminated end contributes nothing (its discount
    is 0); a truncated end or the rollout's end adds the discounted bootstrap.

    Args:
      rewards: ``[T, *B]`` r_t for t = 0..T-1.
      discounts: ``[T, *B]`` γ·(1 − terminated_t) for t = 0..T-1.
      dones: ``[T, *B]`` terminated_t or truncated_t (bool or 0/1) for t = 0..T-1.
      next_values: optional ``[T, *B]`` V(s'_t) for t = 0..T-1, s'_t the true next state (the
        final observation on a done step). Without it, episodes cut by a truncation or by the
        rollout's end are not bootstrapped (pure Monte Carlo on the observed part).
      stop_target_gradients: static bool; if True (default) the returns carry no gradient.

    Returns:
      ``[T, *B]`` G_t for t = 0..T-1.

    Gradients:
      none with ``stop_target_gradients=True``; otherwise into ``rewards``, ``discounts`` and
      ``next_values`` (never into ``dones``).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> rewards = jnp.array([1.0, 1.0, 1.0, 1.0])
      >>> discounts = jnp.array([0.5, 0.0, 0.5, 0.5])  # step 1 terminates
      >>> dones = jnp.array([0, 1, 0, 0])
      >>> print(pgkit.reward_to_go(rewards, discounts, dones))
      [1.5  1.   1.5  1.  ]
      >>> print(pgkit.reward_to_go(rewards, discounts, dones, jnp.full(4, 2.0)))
      [1.5 1.  2.  2. ]

    Reference:
      Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement
      learning", Machine Learning 8, 1992, https://doi.org/10.1007/BF00992696; Sutton & Barto,
      "Reinforcement Learning: An Introduction", 2nd ed., 2018, eq. (3.8),
      http://incompleteideas.net/book/the-book-2nd.html
    """
    if next_values is None:
        _checks.check_time_major("reward_to_go", "rewards", rewards, discounts=discounts, dones=dones)
        dtype = _checks.float_dtype(rewards, discounts)
        next_values = jnp.zeros(jnp.shape(rewards), dtype)
    else:
        _checks.check_time_major(
            "reward_to_go", "rewards", rewards, discounts=discounts, dones=dones, next_values=next_values
        )
        dtype = _checks.float_dtype(rewards, discounts, next_values)
    rewards = jnp.asarray(rewards, dtype)
    discounts = jnp.asarray(discounts, dtype)
    next_values = jnp.asarray(next_values, dtype)
    cont = _checks.continues(dones)
    returns = _checks.reverse_scan(
        _reward_to_go_step, jnp.zeros_like(rewards[0]), (rewards, discounts, cont, next_values)
    )
    return _checks.maybe_stop_gradient(returns, stop_target_gradients)


def episode_returns(
    rewards: ArrayLike,
    discounts: ArrayLike,
    dones: ArrayLike,
    *,
    stop_target_gradients: bool = True,
) -> jax.Array:
    r"""Whole-episode return R(τ), repeated at every step of the episode the step belongs to.

    Equation: for a step t in the episode that occupies steps s..e of the rollout (s its first step
    in the rollout: 0 or just after a done; e its done step, or T-1),

        R_t = Σ_{k=s}^{e} (Π_{j=s}^{k-1} discounts_j) r_k.

    The discount that accumulates on r_k is the product of the discounts of the episode's earlier
    steps s..k-1: within an episode every discount but possibly the last equals γ, so this is
    γ^{k-s}, counted from the episode's first step *within the rollout* (an episode already running
    when the rollout starts is discounted from step 0). Pass ``discounts = 1 - terminated`` for the
    undiscounted R(τ). Nothing is bootstrapped: an episode cut by a truncation or by the rollout's
    end sums only its observed rewards. This is the return of Williams' whole-trajectory REINFORCE,
    ∇J ≈ Σ_t ∇log π(a_t|s_t) R(τ).

    Args:
      rewards: ``[T, *B]`` r_t for t = 0..T-1.
      discounts: ``[T, *B]`` γ·(1 − terminated_t) for t = 0..T-1.
      dones: ``[T, *B]`` terminated_t or truncated_t (bool or 0/1) for t = 0..T-1.
      stop_target_gradients: static bool; if True (default) the returns carry no gradient.

    Returns:
      ``[T, *B]`` R_t for t = 0..T-1 (constant within each episode).

    Gradients:
      none with ``stop_target_gradients=True``; otherwise into ``rewards`` and ``discounts``
      (never into ``dones``).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> rewards = jnp.array([1.0, 2.0, 3.0, 4.0])
      >>> discounts = jnp.array([0.5, 0.0, 0.5, 0.5])
      >>> dones = jnp.array([0, 1, 0, 0])
      >>> print(pgkit.episode_returns(rewards, discounts, dones))
      [2. 2. 5. 5.]

    Reference:
      Williams, "Simple statistical gradient-following algorithms for connectionist reinforcement
      learning", Machine Learning 8, 1992, https://doi.org/10.1007/BF00992696
    """
    _checks.check_time_major("episode_returns", "rewards", rewards, discounts=discounts, dones=dones)
    # The reward-to-go without bootstrap, read at each episode's first step, is R(τ).
    from_start = reward_to_go(rewards, discounts, dones, stop_target_gradients=False)
    starts = _checks.episode_starts(dones)
    init = jnp.zeros_like(from_start[0])
    returns = _checks.forward_scan(_hold_from_start_step, init, (from_start, starts))
    return _checks.maybe_stop_gradient(returns, stop_target_gradients)


def td_errors(
    rewards: ArrayLike,
    discounts: ArrayLike,
    values: ArrayLike,
    next_values: ArrayLike,
    *,
    stop_target_gradients: bool = True,
) -> jax.Array:
    r"""One-step temporal-difference errors.

    Equation: δ_t = r_t + discounts_t · V(s'_t) − V(s_t). A terminated step (discount 0) does not
    bootstrap; a truncated step bootstraps from V of its final observation.

    Args:
      rewards: ``[T, *B]`` r_t for t = 0..T-1 (any shape; elementwise).
      discounts: ``[T, *B]`` γ·(1 − terminated_t) for t = 0..T-1.
      values: ``[T, *B]`` V(s_t) for t = 0..T-1.
      next_values: ``[T, *B]`` V(s'_t) for t = 0..T-1 (s'_t the true next state).
      stop_target_gradients: static bool; if True (default) the target r_t + discounts_t·V(s'_t)
        carries no gradient.

    Returns:
      ``[T, *B]`` δ_t for t = 0..T-1.

    Gradients:
      with ``stop_target_gradients=True`` only through ``values`` (∂δ_t/∂V(s_t) = −1); otherwise
      also through ``rewards``, ``discounts`` and ``next_values``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> print(pgkit.td_errors(jnp.array([1.0, 1.0]), jnp.array([0.9, 0.0]),
      ...                       jnp.array([2.0, 2.0]), jnp.array([10.0, 10.0])))
      [ 8. -1.]

    Reference:
      Sutton, "Learning to predict by the methods of temporal differences", Machine Learning 3,
      1988, https://doi.org/10.1007/BF00115009; Sutton & Barto, "Reinforcement Learning: An
      Introduction", 2nd ed., 2018, eq. (6.5), http://incompleteideas.net/book/the-book-2nd.html
    """
    _checks.check_same_shape(
        "td_errors", "rewards", rewards, discounts=discounts, values=values, next_values=next_values
    )
    dtype = _checks.float_dtype(rewards, discounts, values, next_values)
    target = jnp.asarray(rewards, dtype) + jnp.asarray(discounts, dtype) * jnp.asarray(
        next_values, dtype
    )
    return _checks.maybe_stop_gradient(target, stop_target_gradients) - jnp.asarray(values, dtype)


def n_step_returns(
    rewards: ArrayLike,
    discounts: ArrayLike,
    dones: ArrayLike,
    next_values: ArrayLike,
    *,
    n: int,
    stop_target_gradients: bool = True,
) -> jax.Array:
    r"""n-step bootstrapped returns, cut at episode boundaries.

    Equation: with m = min(n, e − t + 1), e the first done step at or after t or T-1,

        G_t^{(n)} = Σ_{k=0}^{m-1} (Π_{j=0}^{k-1} discounts_{t+j}) r_{t+k}
                    + (Π_{j=0}^{m-1} discounts_{t+j}) · V(s'_{t+m-1}).

    The return bootstraps from ``next_values`` at the n-th step, at a truncation (discount γ) or at
    the rollout's end; a termination contributes nothing (discount 0). Computed by one backward
    ``lax.scan`` carrying the k-step returns of step t+1 for k < n (O(n·T) work).

    Args:
      rewards: ``[T, *B]`` r_t for t = 0..T-1.
      discounts: ``[T, *B]`` γ·(1 − terminated_t) for t = 0..T-1.
      dones: ``[T, *B]`` terminated_t or truncated_t (bool or 0/1) for t = 0..T-1.
      next_values: ``[T, *B]`` V(s'_t) for t = 0..T-1 (s'_t the true next state).
      n: static int >= 1, the number of steps before bootstrapping (mark static under jit).
      stop_target_gradients: static bool; if True (default) the returns carry no gradient.

    Returns:
      ``[T, *B]`` G_t^{(n)} for t = 0..T-1.

    Gradients:
      none with ``stop_target_gradients=True``; otherwise into ``rewards``, ``discounts`` and
      ``next_values``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> rewards = jnp.ones(4)
      >>> discounts = jnp.full(4, 0.5)
      >>> dones = jnp.zeros(4)
      >>> print(pgkit.n_step_returns(rewards, discounts, dones, jnp.full(4, 8.0), n=2))
      [3.5 3.5 3.5 5. ]

    Reference:
      Sutton & Barto, "Reinforcement Learning: An Introduction", 2nd ed., 2018, ch. 7, eq. (7.1),
      http://incompleteideas.net/book/the-book-2nd.html
    """
    _checks.check_static_int("n_step_returns", "n", n)
    _checks.check_time_major(
        "n_step_returns", "rewards", rewards, discounts=discounts, dones=dones, next_values=next_values
    )
    dtype = _checks.float_dtype(rewards, discounts, next_values)
    rewards = jnp.asarray(rewards, dtype)
    discounts = jnp.asarray(discounts, dtype)
    next_values = jnp.asarray(next_values, dtype)
    cont = _checks.continues(dones)

    init = jnp.zeros((n - 1,) + rewards.shape[1:], dtype)
    returns = _checks.reverse_scan(_n_step_step, init, (rewards, discounts, cont, next_values))
    return _checks.maybe_stop_gradient(returns, stop_target_gradients)


def lambda_returns(
    rewards: ArrayLike,
    discounts: ArrayLike,
    dones: ArrayLike,
    next_values: ArrayLike,
    *,
    lambda_: ArrayLike,
    stop_target_gradients: bool = True,
) -> jax.Array:
    r"""λ-returns (truncated at episode boundaries and at the rollout's end).

    Equation (backward recursion, t = T-1, ..., 0):

        G_t = r_t + discounts_t · ((1 − l_t) V(s'_t) + l_t G_{t+1}),
        l_t = λ_t · (1 − done_t), and l_{T-1} = 0.

    Equivalently G_t = Σ_{n=1}^{m} (Π_{j=t}^{t+n-2} l_j)(1 − l_{t+n-1}) G_t^{(n)}, the weighted
    average of the n-step returns up to the episode's end e (m = e − t + 1, l_e = 0). λ = 0 gives
    the TD target r_t + discounts_t V(s'_t); λ = 1 the Monte-Carlo return bootstrapped at
    truncations and at the rollout's end.

    Args:
      rewards: ``[T, *B]`` r_t for t = 0..T-1.
      discounts: ``[T, *B]`` γ·(1 − terminated_t) for t = 0..T-1.
      dones: ``[T, *B]`` terminated_t or truncated_t (bool or 0/1) for t = 0..T-1.
      next_values: ``[T, *B]`` V(s'_t) for t = 0..T-1 (s'_t the true next state).
      lambda_: float scalar or array broadcastable to ``[T, *B]`` (traced; λ_t for step t).
      stop_target_gradients: static bool; if True (default) the returns carry no gradient.

    Returns:
      ``[T, *B]`` G_t for t = 0..T-1.

    Gradients:
      none with ``stop_target_gradients=True``; otherwise into ``rewards``, ``discounts``,
      ``next_values`` and ``lambda_``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> rewards = jnp.ones(3)
      >>> discounts = jnp.array([0.5, 0.5, 0.5])
      >>> dones = jnp.array([0, 0, 1])  # step 2 is truncated: it bootstraps
      >>> print(pgkit.lambda_returns(rewards, discounts, dones, jnp.full(3, 2.0), lambda_=0.5))
      [2. 2. 2.]

    Reference:
      Sutton & Barto, "Reinforcement Learning: An Introduction", 2nd ed., 2018, ch. 12,
      eqs. (12.2) and (12.18), http://incompleteideas.net/book/the-book-2nd.html
    """
    shape = _checks.check_time_major(
        "lambda_returns", "rewards", rewards, discounts=discounts, dones=dones, next_values=next_values
    )
    dtype = _checks.float_dtype(rewards, discounts, next_values)
    rewards = jnp.asarray(rewards, dtype)
    discounts = jnp.asarray(discounts, dtype)
    next_values = jnp.asarray(next_values, dtype)
    lambdas = _checks.broadcast_param("lambda_returns", "lambda_", lambda_, shape, dtype)
    lambdas = jnp.where(_checks.continues(dones), lambdas, 0.0)
    returns = _checks.reverse_scan(
        _lambda_return_step, jnp.zeros_like(rewards[0]), (rewards, discounts, lambdas, next_values)
    )
    return _checks.maybe_stop_gradient(returns, stop_target_gradients)


class GAE(NamedTuple):
    """Output of :func:`gae`.

    Attributes:
      advantages: ``[T, *B]`` generalised advantage estimates A_t.
      targets: ``[T, *B]`` value targets A_t + V(s_t) (the λ-returns when
        ``next_values[t] == values[t + 1]`` on every step that continues).
    """

    advantages: jax.Array
    targets: jax.Array


def gae(
    rewards: ArrayLike,
    discounts: ArrayLike,
    dones: ArrayLike,
    values: ArrayLike,
    next_values: ArrayLike,
    *,
    lambda_: ArrayLike,
    stop_target_gradients: bool = True,
) -> GAE:
    r"""Generalised advantage estimation: exponentially weighted sums of TD errors.

    Equation (backward recursion, t = T-1, ..., 0):

        δ_t = r_t + discounts_t V(s'_t) − V(s_t),
        A_t = δ_t + discounts_t · λ_t · (1 − done_t) · A_{t+1},   A_T = 0 (no step past the
        rollout), targets_t = A_t + V(s_t).

    i.e. A_t = Σ_{k=t}^{e} (Π_{j=t}^{k-1} discounts_j λ_j) δ_k with e the first done step at or
    after t, or T-1. A truncated step keeps its bootstrap r_t + γV(s'_t) inside δ_t; a terminated
    one has discount 0. (The paper writes γλ with a constant γ; ``discounts`` carries γ here.)

    Args:
      rewards: ``[T, *B]`` r_t for t = 0..T-1.
      discounts: ``[T, *B]`` γ·(1 − terminated_t) for t = 0..T-1.
      dones: ``[T, *B]`` terminated_t or truncated_t (bool or 0/1) for t = 0..T-1.
      values: ``[T, *B]`` V(s_t) for t = 0..T-1.
      next_values: ``[T, *B]`` V(s'_t) for t = 0..T-1 (s'_t the true next state).
      lambda_: float scalar or array broadcastable to ``[T, *B]`` (traced; λ_t for step t).
      stop_target_gradients: static bool; if True (default) advantages and targets carry no
        gradient.

    Returns:
      ``GAE(advantages, targets)``, each ``[T, *B]`` for t = 0..T-1.

    Gradients:
      none with ``stop_target_gradients=True``; otherwise into ``rewards``, ``discounts``,
      ``values``, ``next_values`` and ``lambda_``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> out = pgkit.gae(jnp.ones(3), jnp.full(3, 0.5), jnp.array([0, 0, 1]),
      ...                 jnp.zeros(3), jnp.zeros(3), lambda_=1.0)
      >>> print(out.advantages)
      [1.75 1.5  1.  ]

    Reference:
      Schulman, Moritz, Levine, Jordan & Abbeel, "High-Dimensional Continuous Control Using
      Generalized Advantage Estimation", ICLR 2016, https://arxiv.org/abs/1506.02438
    """
    shape = _checks.check_time_major(
        "gae", "rewards", rewards, discounts=discounts, dones=dones, values=values, next_values=next_values
    )
    dtype = _checks.float_dtype(rewards, discounts, values, next_values)
    rewards = jnp.asarray(rewards, dtype)
    discounts = jnp.asarray(discounts, dtype)
    values = jnp.asarray(values, dtype)
    next_values = jnp.asarray(next_values, dtype)
    lambdas = _checks.broadcast_param("gae", "lambda_", lambda_, shape, dtype)
    lambdas = jnp.where(_checks.continues(dones), lambdas, 0.0)
    deltas = rewards + discounts * next_values - values
    advantages = _checks.reverse_scan(_gae_step, jnp.zeros_like(deltas[0]), (deltas, discounts, lambdas))
    return _checks.maybe_stop_gradient(GAE(advantages, advantages + values), stop_target_gradients)
