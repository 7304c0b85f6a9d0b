"""The cross-entropy method: elite selection and refits in parameter space and for tabular policies,
plus the maximum-likelihood loss of the approximated (function-approximation) variant.

Estimator layer: imports only jax (and the private ``pgkit._checks``). The loop follows the
lecture notes: sample N candidates (parameter vectors or rollouts) from the current distribution,
keep the M with the largest return (the elite), fit the distribution to the elite, repeat.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pgkit import _checks

__all__ = [
    "GaussianParams",
    "elite_indices",
    "elite_mask",
    "gaussian_refit",
    "tabular_cem_update",
    "tabular_episode_policies",
    "approximate_cem_loss",
]


class GaussianParams(NamedTuple):
    """A diagonal Gaussian over flat parameter vectors.

    Attributes:
      mean: ``[D]`` the mean of each parameter.
      std: ``[D]`` the standard deviation of each parameter.
    """

    mean: jax.Array
    std: jax.Array


def _check_elites(function, scores, num_elites):
    _checks.check_rank(function, "scores", scores, 1, "[N] (one score per candidate)")
    _checks.check_static_int(function, "num_elites", num_elites, high=jnp.shape(scores)[0], meaning="N = len(scores)")


def elite_indices(scores, *, num_elites):
    r"""Indices of the M highest-scoring candidates, best first, ties broken towards the lower index.

    elite = argtop_M(scores), ordered by decreasing score; among equal scores the candidate with
    the lower index comes first (and is kept when the tie straddles the cut). NaN scores rank
    below every number (they are treated as −∞), so a failed evaluation is never preferred.

    Args:
      scores: returns of the N candidates, shape ``[N]`` (vmap for several populations).
      num_elites: M, static int in ``[1, N]`` (mark it static under ``jax.jit``).

    Returns:
      int32 indices, shape ``[M]``.

    Gradients:
      None (integer output).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> print(pgkit.elite_indices(jnp.array([1.0, 5.0, 3.0, 5.0]), num_elites=3))
      [1 3 2]

    Reference:
      Rubinstein & Kroese, "The Cross-Entropy Method", Springer, 2004,
      https://doi.org/10.1007/978-1-4757-4321-0; Szita & Lőrincz, "Learning Tetris Using the
      Noisy Cross-Entropy Method", Neural Computation, 2006,
      https://doi.org/10.1162/neco.2006.18.12.2936.
    """
    _check_elites("elite_indices", scores, num_elites)
    scores = jnp.asarray(scores)
    if jnp.issubdtype(scores.dtype, jnp.floating):
        scores = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
    # lax.top_k is documented to put the lower index first among equal values.
    _, indices = jax.lax.top_k(scores, num_elites)
    return indices.astype(jnp.int32)


def elite_mask(scores, *, num_elites):
    r"""Boolean membership of each candidate in the elite (the M best, ties towards lower index).

    mask_i = [i ∈ elite_indices(scores, num_elites=M)]

    Args:
      scores: returns of the N candidates, shape ``[N]``.
      num_elites: M, static int in ``[1, N]``.

    Returns:
      bool mask, shape ``[N]``, with exactly M True entries.

    Gradients:
      None (boolean output).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> print(pgkit.elite_mask(jnp.array([1.0, 5.0, 3.0, 5.0]), num_elites=2))
      [False  True False  True]

    Reference:
      Rubinstein & Kroese, "The Cross-Entropy Method", Springer, 2004,
      https://doi.org/10.1007/978-1-4757-4321-0.
    """
    _check_elites("elite_mask", scores, num_elites)
    indices = elite_indices(scores, num_elites=num_elites)
    return jnp.zeros(jnp.shape(scores), bool).at[indices].set(True)


def gaussian_refit(samples, elite_idx, old_mean, old_std, *, smoothing=1.0, min_std=0.0):
    r"""Refit a diagonal Gaussian to the elite parameter vectors, with smoothing and a floor on the std.

    μ' = α mean(elite) + (1 − α) μ
    σ' = max(α std(elite) + (1 − α) σ, σ_min)

    ``std(elite)`` is the maximum-likelihood (population, ddof = 0) standard deviation per
    coordinate. Smoothing α < 1 and the floor σ_min keep the search from collapsing too early
    (Szita & Lőrincz add noise to the variance instead; a floor is the simpler, bounded choice).
    α = 1 and σ_min = 0 give the plain CEM refit.

    Args:
      samples: the N candidate parameter vectors, shape ``[N, D]``.
      elite_idx: indices of the elite, int ``[M]`` (e.g. from ``elite_indices``).
      old_mean: μ, shape ``[D]``.
      old_std: σ, shape ``[D]``.
      smoothing: α ∈ (0, 1], weight of the new fit (traced).
      min_std: σ_min ≥ 0, floor on the new std (traced, scalar or ``[D]``).

    Returns:
      ``GaussianParams(mean, std)``, each shape ``[D]``.

    Gradients:
      None intended (a fit, not a loss); mathematically through ``samples``, ``old_mean``,
      ``old_std``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> samples = jnp.array([[0.0, 0.0], [2.0, 4.0], [4.0, 8.0]])
      >>> fit = pgkit.gaussian_refit(samples, jnp.array([1, 2]), jnp.zeros(2), jnp.ones(2))
      >>> print(fit.mean, fit.std)
      [3. 6.] [1. 2.]

    Reference:
      Rubinstein & Kroese, "The Cross-Entropy Method", Springer, 2004,
      https://doi.org/10.1007/978-1-4757-4321-0; Szita & Lőrincz, "Learning Tetris Using the
      Noisy Cross-Entropy Method", Neural Computation, 2006,
      https://doi.org/10.1162/neco.2006.18.12.2936.
    """
    _checks.check_rank("gaussian_refit", "samples", samples, 2, "[N, D]")
    d = jnp.shape(samples)[1]
    for name, value in (("old_mean", old_mean), ("old_std", old_std)):
        _checks.check_shape("gaussian_refit", name, value, (d,), meaning="D of samples")
    if jnp.ndim(elite_idx) != 1 or not jnp.issubdtype(jnp.result_type(elite_idx), jnp.integer):
        actual = f"dtype {jnp.result_type(elite_idx)}, shape {jnp.shape(elite_idx)}"
        raise _checks.argument_error("gaussian_refit", "elite_idx", "be an int array of shape [M]", actual)
    elites = jnp.take(samples, elite_idx, axis=0)
    new_mean = jnp.mean(elites, axis=0)
    new_std = jnp.sqrt(jnp.mean((elites - new_mean) ** 2, axis=0))
    mean = smoothing * new_mean + (1 - smoothing) * old_mean
    std = jnp.maximum(smoothing * new_std + (1 - smoothing) * old_std, min_std)
    return GaussianParams(mean, std)


def tabular_cem_update(states, actions, elite_weights, old_policy, *, lambda_=0.0, smoothing=1.0):
    r"""Tabular cross-entropy update: refit π(a|s) to the elite's action counts, with λ (Laplace) smoothing.

    π'(a|s) = ( n(s, a) + λ ) / ( n(s) + λ|A| )     if n(s) > 0
    π'(a|s) = π(a|s)                                if n(s) = 0 (state never visited by the elite)
    π_new = α π' + (1 − α) π

    n(s, a) = Σ w_i [s_i = s, a_i = a] counts the elite's visits (weights w select elite rollouts
    and mask padding). Keeping the old row for unvisited states (rather than resetting it to
    uniform, which λ > 0 would give) is the usual choice: the elite carries no information there.
    ``lambda_`` here is the lecture notes' smoothing pseudocount λ, not the λ of λ-returns.

    Args:
      states: visited states s_i, int, shape ``[T, N]`` (time-major rollouts; any shape works),
        each in ``[0, S)``.
      actions: actions a_i taken there, int, the shape of ``states``, each in ``[0, A)``.
      elite_weights: w_i ≥ 0, the shape of ``states`` (1 for steps of elite rollouts inside the episode, 0
        otherwise; e.g. ``elite_mask(returns, num_elites=M)[None, :] * valid``).
      old_policy: π(a|s), shape ``[S, A]``, rows summing to 1.
      lambda_: λ ≥ 0, smoothing pseudocount (traced).
      smoothing: α ∈ (0, 1], weight of the new table (traced); 1 replaces it.

    Returns:
      New policy table, shape ``[S, A]``, rows summing to 1.

    Gradients:
      None (counts).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> states = jnp.array([[0], [0], [1], [1], [1]])    # [T=5, N=1]
      >>> actions = jnp.array([[1], [1], [0], [0], [0]])
      >>> new = pgkit.tabular_cem_update(states, actions, jnp.ones((5, 1)), jnp.full((3, 2), 0.5),
      ...                                lambda_=1.0)
      >>> print(new)                  # row 2 was never visited: kept
      [[0.25 0.75]
       [0.8  0.2 ]
       [0.5  0.5 ]]

    Reference:
      Lecture notes (seed 002), "Tabular Cross-Entropy"; Rubinstein & Kroese, "The
      Cross-Entropy Method", Springer, 2004, https://doi.org/10.1007/978-1-4757-4321-0.
    """
    _checks.check_rank("tabular_cem_update", "old_policy", old_policy, 2, "[S, A]")
    _checks.check_same_shape("tabular_cem_update", "states", states, actions=actions, elite_weights=elite_weights)
    for name, value in (("states", states), ("actions", actions)):
        if not jnp.issubdtype(jnp.result_type(value), jnp.integer):
            raise _checks.argument_error(
                "tabular_cem_update", name, "be an int array", f"dtype {jnp.result_type(value)}"
            )
    num_actions = jnp.shape(old_policy)[1]
    old_policy = jnp.asarray(old_policy)
    counts = jnp.zeros(old_policy.shape, old_policy.dtype)
    counts = counts.at[jnp.ravel(states), jnp.ravel(actions)].add(jnp.ravel(elite_weights).astype(old_policy.dtype))
    state_counts = jnp.sum(counts, axis=1, keepdims=True)
    visited = state_counts > 0
    fitted = (counts + lambda_) / jnp.where(visited, state_counts + lambda_ * num_actions, 1.0)
    fitted = jnp.where(visited, fitted, old_policy)
    return smoothing * fitted + (1 - smoothing) * old_policy


def tabular_episode_policies(states, actions, valid, old_policy):
    r"""The policy table of each rollout that replays its own choices: its action frequencies where it went, π elsewhere.

    π_n(a|s) = n_n(s, a) / n_n(s)    if n_n(s) > 0, with n_n(s, a) = Σ_t valid[t, n] [s_tn = s, a_tn = a]
    π_n(a|s) = π(a|s)                if n_n(s) = 0 (rollout n never acted in s)

    The remedy of the lecture notes for "lucky" elite episodes in a stochastic environment: run
    several simulations with an episode's state-action pairs and average their returns. In a
    state the episode visited once, π_n takes the action it took; where it acted several times,
    it draws among the actions it took in their proportions; elsewhere it follows the current
    policy. Each column is ``tabular_cem_update(states[:, n], actions[:, n], valid[:, n],
    old_policy, lambda_=0, smoothing=1)``.

    Args:
      states: visited states s_tn, int, shape ``[T, N]`` (time-major, one column per rollout),
        each in ``[0, S)``.
      actions: actions taken there, int, shape ``[T, N]``, each in ``[0, A)``.
      valid: weights ≥ 0, shape ``[T, N]``: 1 on the steps of the episode to replay (e.g.
        ``pgkit.rollout.first_episode_mask(dones)``), 0 on padding.
      old_policy: π(a|s), shape ``[S, A]``, rows summing to 1.

    Returns:
      Tables π_n, shape ``[N, S, A]``, rows summing to 1.

    Gradients:
      None (counts).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> states = jnp.array([[0, 0], [1, 0]])           # [T=2, N=2]
      >>> actions = jnp.array([[1, 0], [0, 1]])
      >>> tables = pgkit.tabular_episode_policies(states, actions, jnp.ones((2, 2)), jnp.full((3, 2), 0.5))
      >>> print(tables[1])       # rollout 1 took actions 0 and 1 in state 0, never acted in 1 or 2
      [[0.5 0.5]
       [0.5 0.5]
       [0.5 0.5]]
      >>> print(tables[0, :2])
      [[0. 1.]
       [1. 0.]]

    Reference:
      Lecture notes (seed 002), "Tabular Cross-Entropy" (re-simulating the elite's state-action
      pairs against luck); Rubinstein & Kroese, "The Cross-Entropy Method", Springer, 2004,
      https://doi.org/10.1007/978-1-4757-4321-0.
    """
    _checks.check_rank("tabular_episode_policies", "states", states, 2, "[T, N]")
    _checks.check_same_shape("tabular_episode_policies", "states", states, actions=actions, valid=valid)

    def one(s, a, w):
        return tabular_cem_update(s, a, w, old_policy, lambda_=0.0, smoothing=1.0)

    return jax.vmap(one, in_axes=(1, 1, 1))(jnp.asarray(states), jnp.asarray(actions), jnp.asarray(valid))


def approximate_cem_loss(log_probs, elite_mask):
    r"""Approximated CEM loss: negative log-likelihood of the elite's actions (maximum likelihood fit).

    L(θ) = −w · log π_θ(a|s),   w = 1 for (s, a) pairs of elite rollouts, else 0

    Minimising Σ L over a batch is the notes' ascent step θ ← θ + α ∇ Σ_{(s,a)∈elite} log π_θ(a|s).

    Args:
      log_probs: log π_θ(a_t|s_t) of the taken actions, shape ``[T, N]`` (time-major rollouts;
        any shape ``[*B]``).
      elite_mask: elite membership (and validity) weights, bool or float, broadcastable to
        ``log_probs`` (e.g. ``elite_mask(returns, num_elites=M)[None, :]`` for ``[T, N]``).

    Returns:
      Unreduced loss, shape of ``log_probs``. Average over the elite steps (sum divided by
      ``elite_mask`` total) to get the mean negative log-likelihood.

    Gradients:
      Through ``log_probs``; none into ``elite_mask``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> log_probs = jnp.log(jnp.array([[0.5, 0.25], [0.5, 0.25]]))
      >>> print(jnp.round(pgkit.approximate_cem_loss(log_probs, jnp.array([True, False])), 3))
      [[0.693 0.   ]
       [0.693 0.   ]]

    Reference:
      Lecture notes (seed 002), "Approximated Cross-Entropy Method"; de Boer, Kroese, Mannor,
      Rubinstein, "A Tutorial on the Cross-Entropy Method", Annals of Operations Research, 2005,
      https://doi.org/10.1007/s10479-005-5724-z.
    """
    _checks.check_broadcasts_to(
        "approximate_cem_loss", "elite_mask", elite_mask, jnp.shape(log_probs), reference_name="log_probs"
    )
    log_probs = jnp.asarray(log_probs)
    weights = jax.lax.stop_gradient(jnp.asarray(elite_mask).astype(log_probs.dtype))
    # where, not a product: a zero weight on a log-prob of -inf gives 0, not NaN.
    return jnp.where(weights > 0, -weights * log_probs, 0.0)
