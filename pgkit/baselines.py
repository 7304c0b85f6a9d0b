"""Baselines for score-function estimators, and the value-function regression loss.

A baseline b subtracted from the return leaves a score-function estimate unbiased when b does not
depend on the sampled action (E[∇log π · b] = b ∇∫π = 0) and changes its variance. Here: the
batch mean (constant baseline), the variance-minimising constant baseline
b* = E[g² R] / E[g²] (per parameter or scalar), its time-dependent form for the reward-to-go
estimator, the leave-one-out mean of the other samples, the state value
Σ_a π(a|s) Q(s, a) implied by an action-value critic, and ``value_loss`` for a learned,
state-dependent baseline V(s).
"""

import jax
import jax.numpy as jnp

from pgkit import _checks

__all__ = [
    "expected_q_baseline",
    "leave_one_out_baseline",
    "mean_baseline",
    "normalized_advantages",
    "optimal_baseline",
    "per_step_optimal_baseline",
    "value_loss",
]


def mean_baseline(returns, *, axis=None, where=None):
    """Batch-mean baseline: the average return, broadcast back to every sample.

    Equation:
        b = (1/N) Σ_{i=1}^{N} R_i   (mean over ``axis``),

    the constant baseline of the lecture notes: not the variance-minimising one, but close and
    cheap. It uses sample i's own return, so the estimate is biased by O(1/N); see
    :func:`leave_one_out_baseline` for the unbiased variant.

    Args:
        returns: [N] returns of N samples, or [T, *B] per-step returns (any shape).
        axis: static int, tuple of ints or None (default: all axes, a single constant). For
            time-major [T, E] returns ``axis=1`` gives a time-dependent baseline b_t (mean over
            episodes at each step).
        where: optional boolean mask broadcastable to ``returns`` (as in ``jnp.mean``): only
            the samples where it is True enter the mean, e.g. the steps of episodes that have
            not ended in a padded [T, E] batch. A group with no valid sample gets 0.

    Returns:
        The shape of ``returns``: the mean over ``axis``, repeated along it (unreduced, ready
        to subtract).

    Gradients:
        Flow through ``returns`` (a linear map); losses that consume the baseline stop them.

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> returns = jnp.array([[1.0, 3.0], [2.0, 6.0]])  # [T=2, E=2]
        >>> pgkit.mean_baseline(returns).tolist(), pgkit.mean_baseline(returns, axis=1).tolist()
        ([[3.0, 3.0], [3.0, 3.0]], [[2.0, 2.0], [4.0, 4.0]])

    Reference:
        Williams (1992), "Simple statistical gradient-following algorithms for connectionist
        reinforcement learning", Machine Learning 8, https://doi.org/10.1007/BF00992696
    """
    returns = _checks.as_float(returns)
    axes = _checks.normalise_axes("mean_baseline", "returns", axis, returns.ndim)
    if any(returns.shape[a] == 0 for a in axes):
        raise _checks.argument_error(
            "mean_baseline", "returns", f"have at least one sample along axis {axis}", f"shape {returns.shape}"
        )
    if where is None:
        return jnp.broadcast_to(jnp.mean(returns, axis=axes, keepdims=True), returns.shape)
    _checks.check_broadcasts_to("mean_baseline", "where", where, returns.shape, reference_name="returns")
    where = jnp.broadcast_to(jnp.asarray(where, bool), returns.shape)
    total = jnp.sum(jnp.where(where, returns, 0.0), axis=axes, keepdims=True)
    count = jnp.sum(where, axis=axes, keepdims=True)
    return jnp.broadcast_to(total / jnp.maximum(count, 1), returns.shape)


def normalized_advantages(advantages, *, eps=1e-8, stop_target_gradients=True, axis_name=None):
    """Advantages standardised over the batch: zero mean, unit standard deviation.

    Equation:
        Â_i = (A_i − mean(A)) / (std(A) + ε),   mean and (population) std over every element,

    the per-batch normalisation of PPO and TRPO implementations (Engstrom et al. 2020 count it
    among the "code-level optimisations"). It subtracts a constant, which leaves a score-function
    estimate unbiased, and rescales the step by 1/std. Apply it to the batch or minibatch the
    loss averages over, outside the loss, so that the loss itself stays an estimator.

    Args:
        advantages: [T, *B] (or any shape) advantage estimates of one batch.
        eps: float added to the standard deviation (traced; guards a constant batch).
        stop_target_gradients: if True (default), the result carries no gradient.
        axis_name: a named axis (``vmap``, ``shard_map``) over which the batch is split into
            equal shards: mean and std are then those of every shard's elements together,
            the same in each shard (a data-parallel minibatch normalised as one).

    Returns:
        The shape of ``advantages``: the standardised advantages.

    Gradients:
        None by default (advantages are targets); with ``stop_target_gradients=False`` they flow
        through ``advantages``, mean and std included.

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> [round(a, 4) for a in pgkit.normalized_advantages(jnp.array([1.0, 2.0, 3.0]), eps=0.0).tolist()]
        [-1.2247, 0.0, 1.2247]

    Reference:
        Engstrom et al. (2020), "Implementation Matters in Deep Policy Gradients: A Case Study on
        PPO and TRPO", ICLR, https://arxiv.org/abs/2005.12729
    """
    advantages = _checks.as_float(advantages)
    if advantages.size == 0:
        raise _checks.argument_error(
            "normalized_advantages", "advantages", "hold at least one element", f"shape {advantages.shape}"
        )
    if axis_name is None:
        normalized = (advantages - advantages.mean()) / (advantages.std() + eps)
    else:  # moments of the union of equal shards: the means of the shards' moments
        mean = jax.lax.pmean(advantages.mean(), axis_name)
        std = jnp.sqrt(jax.lax.pmean(jnp.mean((advantages - mean) ** 2), axis_name))
        normalized = (advantages - mean) / (std + eps)
    return _checks.maybe_stop_gradient(normalized, stop_target_gradients)


def leave_one_out_baseline(returns, *, axis=0):
    """Leave-one-out baseline: for sample i, the mean return of the other samples.

    Equation:
        b_i = (1/(N−1)) Σ_{j≠i} R_j = (Σ_j R_j − R_i) / (N − 1)   (along ``axis``),

    independent of sample i, so the score-function estimate stays exactly unbiased with N
    samples per group (e.g. N actions sampled for the same state or prompt).

    Args:
        returns: [N, *B] returns of N ≥ 2 samples along ``axis`` (any shape).
        axis: static int (default 0), or tuple of ints / None to leave one out of several axes.

    Returns:
        The shape of ``returns``: b_i for each sample.

    Gradients:
        Flow through ``returns`` (a linear map); losses that consume the baseline stop them.

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> pgkit.leave_one_out_baseline(jnp.array([1.0, 2.0, 6.0])).tolist()
        [4.0, 3.5, 1.5]

    Reference:
        Kool, van Hoof, Welling (2019), "Buy 4 REINFORCE Samples, Get a Baseline for Free!",
        ICLR Workshop on Deep RL Meets Structured Prediction,
        https://openreview.net/forum?id=r1lgTGL5DE
    """
    returns = _checks.as_float(returns)
    axes = _checks.normalise_axes("leave_one_out_baseline", "returns", axis, returns.ndim)
    count = 1
    for a in axes:
        count *= returns.shape[a]
    if count < 2:
        raise _checks.argument_error(
            "leave_one_out_baseline", "returns", f"hold at least 2 samples along axis {axis}", f"shape {returns.shape}"
        )
    total = jnp.sum(returns, axis=axes, keepdims=True)
    return (total - returns) / (count - 1)


def optimal_baseline(score_vectors, returns, *, per_parameter=True):
    """Variance-minimising constant baseline b* = E[g² R] / E[g²] from samples.

    Equation (per parameter component k, ``per_parameter=True``):
        b*_k = Σ_i g_{ik}² R_i / Σ_i g_{ik}²,
    which minimises Var[g_k (R − b_k)] for each component separately; (scalar,
    ``per_parameter=False``):
        b* = Σ_i ‖g_i‖² R_i / Σ_i ‖g_i‖²,
    which minimises the total variance Σ_k Var[g_k (R − b)] among scalar baselines. Here
    g_i = ∇_θ log π_θ(τ_i) is the score of sample i (e.g. ``jax.vmap(jax.grad(log_prob))``,
    flattened). A component whose scores are all zero gets the mean return (its estimate is
    zero whatever b is).

    Args:
        score_vectors: [N, *P] scores g_i of N samples (P parameter components).
        returns: [N] returns R_i of the same samples.
        per_parameter: static bool (default True): one baseline per component, or one scalar.

    Returns:
        [*P] baselines b*_k if ``per_parameter`` else a scalar [].

    Gradients:
        Flow through ``score_vectors`` and ``returns`` (a ratio of sums); it is used as a
        target, so consuming losses stop them.

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> scores = jnp.array([[1.0, 0.0], [-1.0, 2.0], [0.0, -2.0]])  # [N=3, P=2]
        >>> returns = jnp.array([1.0, 3.0, 5.0])
        >>> pgkit.optimal_baseline(scores, returns).tolist()
        [2.0, 4.0]
        >>> round(float(pgkit.optimal_baseline(scores, returns, per_parameter=False)), 4)
        3.6

    Reference:
        Greensmith, Bartlett, Baxter (2004), "Variance Reduction Techniques for Gradient
        Estimates in Reinforcement Learning", JMLR 5,
        https://www.jmlr.org/papers/v5/greensmith04a.html;
        Peters, Schaal (2008), "Reinforcement learning of motor skills with policy gradients",
        Neural Networks 21(4), https://doi.org/10.1016/j.neunet.2008.02.003
    """
    score_vectors = _checks.as_float(score_vectors)
    returns = _checks.as_float(returns)
    if score_vectors.ndim < 1 or score_vectors.shape[0] < 1:
        raise _checks.argument_error(
            "optimal_baseline", "score_vectors", "have shape [N, *P] with N >= 1", f"shape {score_vectors.shape}"
        )
    _checks.check_shape(
        "optimal_baseline", "returns", returns, score_vectors.shape[:1], meaning="[N] of score_vectors"
    )
    squares = score_vectors**2
    if not per_parameter:
        squares = jnp.sum(squares.reshape(squares.shape[0], -1), axis=1)
    r = returns.reshape(returns.shape + (1,) * (squares.ndim - 1))
    numerator = jnp.sum(squares * r, axis=0)
    denominator = jnp.sum(squares, axis=0)
    positive = denominator > 0
    safe = jnp.where(positive, denominator, 1.0)
    return jnp.where(positive, numerator / safe, jnp.mean(returns))


def per_step_optimal_baseline(step_scores, returns, *, cross_terms=True):
    """Variance-minimising time-dependent baseline of the reward-to-go estimator, per parameter.

    Equation (component k, step t; sums over the N episodes i):
        b*_{t,k} = Σ_i g_{i,t,k} Y_{i,k} / Σ_i g_{i,t,k}²,   Y_{i,k} = Σ_{t'} g_{i,t',k} G_{i,t'},
    and with ``cross_terms=False``:
        b_{t,k} = Σ_i g_{i,t,k}² G_{i,t} / Σ_i g_{i,t,k}²,

    with g_{i,t} = ∇_θ log π_θ(a_{i,t}|s_{i,t}) the per-step score and G_{i,t} the reward-to-go,
    the sample form of b*_{t,k} = E[g_{t,k} Y_k] / E[g_{t,k}²], which minimises the variance of
    the causal estimate X_k = Σ_t g_{t,k} (G_t − b_{t,k}) of one episode over all baselines that
    depend on t and k only. Derivation: E[g_{t,k} g_{t',k}] = 0 for t ≠ t' (the score of the later
    action has mean zero given the past), so the terms of E[X_k²] quadratic in b are
    Σ_t b_{t,k}² E[g_{t,k}²] and Var X_k = Σ_t (b_{t,k}² E[g_{t,k}²] − 2 b_{t,k} E[g_{t,k} Y_k])
    + const: one independent quadratic per (t, k), minimised exactly at b*_{t,k}. Y_k is the
    episode's estimate without baseline, so E[g_{t,k} Y_k] = E[g_{t,k}² G_t] + Σ_{t'≠t}
    E[g_{t,k} g_{t',k} G_{t'}]: the per-step transcription E[g_t² G_t] / E[g_t²] of the lecture's
    b = E[g² R] / E[g²] leaves out the cross terms, which do not vanish (G_{t'} depends on the
    actions of both steps). ``cross_terms=False`` gives that transcription: a g²-weighted mean of
    the G_{i,t} of step t, bounded by them, which is the one to use with few episodes: the exact
    form's sample ratio has no such bound and, where few episodes are still running at step t,
    it is wild (b = Y_i / g_{i,t} with one episode left), so its estimate can raise the variance
    it minimises in population (docs/recipes/reinforce.md has the measurements). With T = 1
    both are :func:`optimal_baseline` per parameter (and b* is it for the whole-trajectory
    estimator: one "step" whose score is g = Σ_t g_t and Y = g R). A
    component with no score at step t in any episode (every episode over) gets the mean of
    ``returns[t]``: its estimate does not depend on it. Estimated from the same episodes it is
    used on, b depends on each episode by O(1/N), as the batch mean does.

    Args:
        step_scores: [T, N, *P] per-step scores g_{i,t} of N episodes, t = 0..T−1 (P parameter
            components, e.g. ``jax.vmap(jax.vmap(jax.grad(log_prob)))`` flattened); zero on the
            steps after an episode has ended (padding).
        returns: [T, N] reward-to-go G_{i,t} of the same steps (values on padding steps are
            multiplied by zero scores and do not matter).
        cross_terms: static bool (default True): the exact minimiser b*, or (False) the
            per-step weighted mean without the cross terms.

    Returns:
        [T, *P] baselines b*_{t,k}, to subtract from G_t in component k: the gradient estimate
        is (1/N) Σ_i Σ_t g_{i,t,k} (G_{i,t} − b*_{t,k}).

    Gradients:
        Flow through ``step_scores`` and ``returns`` (ratios of sums); it is used as a target, so
        consuming estimates stop them.

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> scores = jnp.array([[[1.0], [-1.0]], [[0.5], [0.0]]])  # [T=2, N=2, P=1]
        >>> returns = jnp.array([[3.0, 1.0], [2.0, 1.0]])  # [T=2, N=2]
        >>> pgkit.per_step_optimal_baseline(scores, returns).tolist()
        [[2.5], [8.0]]
        >>> pgkit.per_step_optimal_baseline(scores, returns, cross_terms=False).tolist()
        [[2.0], [2.0]]

    Reference:
        Greensmith, Bartlett, Baxter (2004), "Variance Reduction Techniques for Gradient
        Estimates in Reinforcement Learning", JMLR 5,
        https://www.jmlr.org/papers/v5/greensmith04a.html; Peters, Schaal (2008), "Reinforcement
        learning of motor skills with policy gradients", Neural Networks 21(4),
        https://doi.org/10.1016/j.neunet.2008.02.003 (their time-dependent G(PO)MDP baseline
        b_t^h = E[(Σ_{k≤t} g_k)² r_t] / E[(Σ_{k≤t} g_k)²] weights rewards, not reward-to-go, and
        drops the cross terms; here the reward-to-go form makes them separable, so none is dropped)
    """
    step_scores = _checks.as_float(step_scores)
    returns = _checks.as_float(returns)
    if step_scores.ndim < 2 or step_scores.shape[0] < 1 or step_scores.shape[1] < 1:
        raise _checks.argument_error(
            "per_step_optimal_baseline", "step_scores", "have shape [T, N, *P] with T, N >= 1",
            f"shape {step_scores.shape}",
        )
    _checks.check_shape(
        "per_step_optimal_baseline", "returns", returns, step_scores.shape[:2], meaning="[T, N] of step_scores"
    )
    r = returns.reshape(returns.shape + (1,) * (step_scores.ndim - 2))
    if cross_terms:
        totals = jnp.sum(step_scores * r, axis=0)  # [N, *P]: Y_{i,k}
        numerator = jnp.sum(step_scores * totals[None], axis=1)  # [T, *P]
    else:
        numerator = jnp.sum(step_scores**2 * r, axis=1)
    denominator = jnp.sum(step_scores**2, axis=1)
    positive = denominator > 0
    safe = jnp.where(positive, denominator, 1.0)
    fallback = jnp.mean(returns, axis=1).reshape((returns.shape[0],) + (1,) * (step_scores.ndim - 2))
    return jnp.where(positive, numerator / safe, fallback)


def expected_q_baseline(probs, q_values):
    """State-value baseline of an action-value critic: V(s) = Σ_a π(a|s) Q(s, a).

    Equation:
        b(s) = Σ_a π(a|s) Q(s, a),   so that   Q(s, a) − b(s) = A(s, a),

    the advantage of the notes' "Advantage Actor-Critic" without a second network for V. b
    depends on the state only, not on the sampled action, so E_a[∇log π(a|s) (Q(s, a) − b(s))]
    = E_a[∇log π(a|s) Q(s, a)]: the estimate stays unbiased and (for a Q close to the true one)
    loses the large common part of the Q's that makes the plain Q-weighted estimate noisy.

    Args:
        probs: [*B, A] action probabilities π(·|s) (rows sum to 1).
        q_values: [*B, A] critic values Q(s, ·) of every action (same shape).

    Returns:
        [*B] baselines b(s).

    Gradients:
        Flow through both arguments (a bilinear form); a score-function loss that consumes
        ``Q(s, a) − b(s)`` as its weight stops them.

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> pgkit.expected_q_baseline(jnp.array([0.25, 0.75]), jnp.array([4.0, 8.0])).tolist()
        7.0

    Reference:
        Sutton, McAllester, Singh, Mansour (2000), "Policy Gradient Methods for Reinforcement
        Learning with Function Approximation", NeurIPS (eq. 3: a baseline b(s) leaves the
        gradient unchanged); Ciosek, Whiteson (2018), "Expected Policy Gradients", AAAI,
        https://arxiv.org/abs/1706.05374
    """
    probs = _checks.as_float(probs)
    q_values = _checks.as_float(q_values)
    _checks.check_has_action_axis("expected_q_baseline", "probs", probs)
    _checks.check_same_shape("expected_q_baseline", "probs", probs, q_values=q_values)
    return jnp.sum(probs * q_values, axis=-1)


def value_loss(values, targets, *, stop_target_gradients=True):
    """Squared-error loss of a value baseline against its targets, per step.

    Equation:
        loss_t = ½ (V(s_t) − sg(G_t))²,

    the regression that fits a state-dependent baseline V to returns (Monte-Carlo, n-step, λ or
    GAE targets).

    Args:
        values: [T, *B] predictions V(s_t), t = 0..T−1.
        targets: [T, *B] targets G_t, t = 0..T−1 (same shape).
        stop_target_gradients: if True (default) no gradient flows into ``targets``.

    Returns:
        [T, *B] per-step losses.

    Gradients:
        Through ``values`` (∂loss/∂V = V − G); through ``targets`` only when
        ``stop_target_gradients=False``.

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> pgkit.value_loss(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])).tolist()
        [0.5, 2.0]

    Reference:
        Sutton, Barto (2018), "Reinforcement Learning: An Introduction", 2nd ed., ch. 9 and 13.4,
        http://incompleteideas.net/book/the-book-2nd.html; Mnih et al. (2016), "Asynchronous
        Methods for Deep Reinforcement Learning", ICML, https://arxiv.org/abs/1602.01783
    """
    values = _checks.as_float(values)
    targets = _checks.as_float(targets)
    _checks.check_same_shape("value_loss", "values", values, targets=targets)
    targets = _checks.maybe_stop_gradient(targets, stop_target_gradients)
    return 0.5 * (values - targets) ** 2
