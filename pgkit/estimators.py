"""Policy-gradient estimators as surrogate losses.

Two families of Monte-Carlo gradient estimators of ∇_θ E_{x∼p_θ}[f(x)]:

- the **score-function** (likelihood-ratio, REINFORCE) estimator f(x)·∇_θ log p_θ(x), which needs
  only log-probabilities of the sampled actions; its surrogate is ``score_function_loss`` and the
  trajectory forms are ``reinforce_loss`` (causal reward-to-go or whole-trajectory return),
  and, for episodes drawn from a behaviour policy μ, ``per_trajectory_importance_loss``
  (weighted by π_θ(τ)/μ(τ)) and ``per_decision_importance_loss`` (each reward weighted by the
  ratios up to its step);
- the **pathwise** (reparameterisation) estimator ∇_θ f(g_θ(ε)), which differentiates through a
  reparameterised sample x = g_θ(ε); its surrogate is ``pathwise_loss``, and through a
  differentiable environment, the short-horizon return bootstrapped by a critic,
  ``short_horizon_pathwise_loss`` (APG, SHAC).

``score_function_multiplier`` puts both in one differentiable expression (stochastic
computation graphs). Every loss is returned per step / per sample, unreduced.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pgkit import _checks
from pgkit import importance as _importance
from pgkit import returns as _returns

__all__ = [
    "ImportanceWeightedLoss",
    "pathwise_loss",
    "per_decision_importance_loss",
    "per_trajectory_importance_loss",
    "reinforce_loss",
    "score_function_loss",
    "score_function_multiplier",
    "short_horizon_pathwise_loss",
]


def score_function_loss(log_probs, weights, *, stop_target_gradients=True):
    """Score-function (likelihood-ratio) surrogate loss, per sample.

    Equation:
        loss_i = −log π_θ(a_i | s_i) · sg(w_i),  so  −∇_θ loss_i = w_i ∇_θ log π_θ(a_i | s_i),

    whose mean over samples a_i ∼ π_θ is an unbiased estimate of ∇_θ E_{a∼π_θ}[w(a)] when w does
    not depend on θ (the log-derivative trick ∇p = p ∇log p). ``sg`` is stop-gradient. Any
    baseline is subtracted by the caller: pass ``weights = returns − baselines``.

    Args:
        log_probs: [T, *B] (or any sample shape S) log π_θ(a_t | s_t) of the actions taken,
            t = 0..T−1; carries the gradient.
        weights: the weight of each sample (return, reward-to-go, advantage), broadcastable to
            ``log_probs.shape`` (e.g. [T, *B], [*B] or a scalar).
        stop_target_gradients: if True (default) no gradient flows into ``weights``.

    Returns:
        [T, *B] (the shape of ``log_probs``) per-sample losses; minimise their mean.

    Gradients:
        Through ``log_probs``; through ``weights`` only when ``stop_target_gradients=False``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pgkit
        >>> logits = jnp.array([0.0, 1.0])
        >>> actions = jnp.array([1, 0, 1])
        >>> def loss(logits):
        ...     log_probs = jax.nn.log_softmax(logits)[actions]
        ...     return pgkit.score_function_loss(log_probs, jnp.array([1.0, -1.0, 2.0])).mean()
        >>> [round(g, 3) for g in jax.grad(loss)(logits).tolist()]
        [0.513, -0.513]

    Reference:
        Williams (1992), "Simple statistical gradient-following algorithms for connectionist
        reinforcement learning", Machine Learning 8, https://doi.org/10.1007/BF00992696;
        Sutton, McAllester, Singh, Mansour (2000), "Policy gradient methods for reinforcement
        learning with function approximation", NeurIPS 12,
        https://papers.nips.cc/paper/1713-policy-gradient-methods-for-reinforcement-learning-with-function-approximation
    """
    _checks.check_broadcasts_to(
        "score_function_loss", "weights", weights, jnp.shape(log_probs), reference_name="log_probs"
    )
    weights = _checks.maybe_stop_gradient(weights, stop_target_gradients)
    return -jnp.asarray(log_probs) * weights  # a JAX array for NumPy inputs too


def reinforce_loss(
    log_probs,
    rewards,
    discounts,
    dones,
    *,
    baselines=None,
    causal=True,
    stop_target_gradients=True,
):
    """REINFORCE surrogate loss over time-major trajectories, per step.

    Equation (causal, ``causal=True``; Sutton et al.'s reward-to-go):
        loss_t = −log π_θ(a_t | s_t) · sg(G_t − b_t),   G_t = Σ_{k=t}^{end of episode}
        (Π_{j=t}^{k−1} discounts_j) r_k,

    Equation (whole trajectory, ``causal=False``; Williams' form):
        loss_t = −log π_θ(a_t | s_t) · sg(R(τ) − b_t),  R(τ) = G_{t₀} the return of the episode
        containing step t, from its first step t₀ in the rollout,

    so every step of an episode carries the same weight R(τ). Both give unbiased estimates of
    ∇_θ J(θ) (summing over t within an episode); the causal form drops the past rewards, which
    only add variance. Sums stop at ``dones`` (terminated or truncated) and at the end of the
    rollout, without bootstrapping; for a bootstrapped return compute it with ``pgkit.returns``
    and call :func:`score_function_loss`.

    Args:
        log_probs: [T, *B] log π_θ(a_t | s_t), t = 0..T−1; carries the gradient.
        rewards: [T, *B] r_t, t = 0..T−1.
        discounts: [T, *B] γ·(1 − terminated_t), t = 0..T−1.
        dones: [T, *B] terminated_t or truncated_t, t = 0..T−1 (bool or 0/1).
        baselines: optional b_t subtracted from the return, broadcastable to [T, *B]
            (e.g. V(s_t) [T, *B], a scalar batch mean, or per-episode [*B]).
        causal: static bool; True for reward-to-go weights, False for whole-trajectory returns.
        stop_target_gradients: if True (default) no gradient flows into rewards or baselines.

    Returns:
        [T, *B] per-step losses; minimise their sum over time averaged over episodes (or their
        mean, which rescales the gradient).

    Gradients:
        Through ``log_probs``; through ``rewards``, ``discounts`` and ``baselines`` only when
        ``stop_target_gradients=False``.

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> log_probs = jnp.log(jnp.array([0.5, 0.5, 0.5]))
        >>> rewards = jnp.array([1.0, 1.0, 1.0])
        >>> discounts = jnp.array([1.0, 0.0, 1.0])  # step 1 terminates an episode
        >>> dones = jnp.array([False, True, False])
        >>> causal = pgkit.reinforce_loss(log_probs, rewards, discounts, dones)
        >>> whole = pgkit.reinforce_loss(log_probs, rewards, discounts, dones, causal=False)
        >>> [round(x, 3) for x in causal.tolist()], [round(x, 3) for x in whole.tolist()]
        ([1.386, 0.693, 0.693], [1.386, 1.386, 0.693])

    Reference:
        Williams (1992), "Simple statistical gradient-following algorithms for connectionist
        reinforcement learning", Machine Learning 8, https://doi.org/10.1007/BF00992696;
        Sutton, McAllester, Singh, Mansour (2000), "Policy gradient methods for reinforcement
        learning with function approximation", NeurIPS 12,
        https://papers.nips.cc/paper/1713-policy-gradient-methods-for-reinforcement-learning-with-function-approximation
    """
    _checks.check_time_major(
        "reinforce_loss", "log_probs", log_probs, rewards=rewards, discounts=discounts, dones=dones
    )
    if baselines is not None:
        _checks.check_broadcasts_to(
            "reinforce_loss", "baselines", baselines, jnp.shape(log_probs), reference_name="log_probs"
        )
    returns_fn = _returns.reward_to_go if causal else _returns.episode_returns
    weights = returns_fn(rewards, discounts, dones, stop_target_gradients=stop_target_gradients)
    if baselines is not None:
        weights = weights - baselines
    return score_function_loss(log_probs, weights, stop_target_gradients=stop_target_gradients)


class ImportanceWeightedLoss(NamedTuple):
    """Output of :func:`per_trajectory_importance_loss` and :func:`per_decision_importance_loss`.

    Attributes:
      losses: ``[T, *B]`` per-step surrogate losses −log π_θ(a_t|s_t) · sg(weights_t); minimise
        their sum over each episode, averaged over episodes.
      weights: ``[T, *B]`` the multiplier of ∇_θ log π_θ(a_t|s_t) in −∇_θ losses_t (importance
        weights included), without gradient unless ``stop_target_gradients=False``.
      importance_weights: ``[T, *B]`` the importance weights that were applied, capped at
        ``max_weight`` where one is given (w(τ) at every step of the episode, or w_{s:t}); never
        carry gradient.
    """

    losses: jax.Array
    weights: jax.Array
    importance_weights: jax.Array


def _capped_weights(weights, max_weight, function, shape, dtype):
    """``weights`` capped at ``max_weight`` (if not None), with their gradient stopped."""
    if max_weight is not None:
        weights = jnp.minimum(weights, _checks.broadcast_param(function, "max_weight", max_weight, shape, dtype))
    return jax.lax.stop_gradient(weights)


def per_trajectory_importance_loss(
    log_probs,
    behaviour_log_probs,
    returns,
    dones,
    *,
    max_weight=None,
    stop_target_gradients=True,
):
    """Score-function surrogate from behaviour-policy episodes, weighted by π_θ(τ)/μ(τ), per step.

    Equation (τ the episode containing step t, occupying steps s..e of the rollout):

        loss_t = −log π_θ(a_t|s_t) · sg(w(τ) ψ_t),   w(τ) = min(c̄, Π_{k=s}^{e} π_θ(a_k|s_k)/μ(a_k|s_k)),

    so −Σ_t ∇_θ loss_t = w(τ) Σ_t ψ_t ∇_θ log π_θ(a_t|s_t). The transition probabilities cancel
    in π_θ(τ)/μ(τ), and E_μ[w(τ) f(τ)] = E_{π_θ}[f(τ)] for any f of the episode, so with
    episodes drawn from μ and c̄ = ∞ this is an unbiased estimate of the on-policy score-function
    gradient that ψ defines: ψ_t = R(τ) (Williams), the reward-to-go G_t (causal), either minus a
    baseline b(s_t), each giving ∇_θ J(θ) of the target policy π_θ. The weight is held constant
    (``sg``): ∇_θ E_μ[w(τ) R(τ)] = E_μ[w(τ) R(τ) ∇_θ log π_θ(τ)], which is the gradient of this
    surrogate; the weight's own dependence on θ is that same score term, not an extra one. A cap
    c̄ (``max_weight``) bounds the variance at the price of a bias where it binds (truncated
    importance sampling). The variance grows exponentially with the episode length; see
    :func:`per_decision_importance_loss` for the lower-variance causal form.

    Args:
      log_probs: ``[T, *B]`` log π_θ(a_t|s_t) under the target policy, t = 0..T-1, of actions
        a_t drawn from μ; carries the gradient.
      behaviour_log_probs: ``[T, *B]`` log μ(a_t|s_t) under the behaviour policy that acted.
      returns: the on-policy weights ψ_t (R(τ), G_t, G_t − b_t, ...), broadcastable to
        ``log_probs.shape`` (``[T, *B]``, ``[*B]`` or a scalar), e.g. from
        :func:`pgkit.episode_returns` or :func:`pgkit.reward_to_go`.
      dones: ``[T, *B]`` terminated_t or truncated_t (bool or 0/1), t = 0..T-1; the product of
        ratios restarts after a done.
      max_weight: optional float c̄ > 0 capping w(τ), scalar or broadcastable to ``[T, *B]``
        (traced); None (default) for no cap.
      stop_target_gradients: static bool; if True (default) no gradient flows into ``returns``.

    Returns:
      ``ImportanceWeightedLoss(losses, weights, importance_weights)``, each ``[T, *B]``:
      ``weights_t = w(τ) ψ_t`` and ``importance_weights_t = w(τ)``.

    Gradients:
      through ``log_probs`` as ∇ log π_θ(a_t|s_t) only: the importance weights carry no gradient
      (neither into ``log_probs`` nor into ``behaviour_log_probs``); into ``returns`` only with
      ``stop_target_gradients=False``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import pgkit
      >>> logits = jnp.array([0.0, 1.0])  # target π = softmax(logits); behaviour μ = Uniform
      >>> actions, rewards = jnp.array([1, 0]), jnp.array([1.0, 2.0])  # one 2-step episode
      >>> dones = jnp.array([False, True])
      >>> def loss(logits):
      ...     log_probs = jax.nn.log_softmax(logits)[actions]
      ...     returns = pgkit.reward_to_go(rewards, jnp.ones(2), dones)
      ...     out = pgkit.per_trajectory_importance_loss(log_probs, jnp.log(jnp.full(2, 0.5)), returns, dones)
      ...     return out.losses.sum()
      >>> [round(g, 3) for g in jax.grad(loss)(logits).tolist()]
      [-0.515, 0.515]

    Reference:
      Precup, Sutton & Singh, "Eligibility Traces for Off-Policy Policy Evaluation", ICML 2000,
      http://papersdb.cs.ualberta.ca/~papersdb/view_publication.php?pub_id=467; Levine, CS285
      lecture 5, "Policy Gradients" (off-policy policy gradient), UC Berkeley,
      http://rail.eecs.berkeley.edu/deeprlcourse/static/slides/lec-5.pdf
    """
    shape = _checks.check_time_major(
        "per_trajectory_importance_loss", "log_probs", log_probs,
        behaviour_log_probs=behaviour_log_probs, dones=dones,
    )
    _checks.check_broadcasts_to(
        "per_trajectory_importance_loss", "returns", returns, shape, reference_name="log_probs"
    )
    ratios = _importance.log_ratios(log_probs, behaviour_log_probs)
    weights = _importance.per_trajectory_weights(jax.lax.stop_gradient(ratios), dones)
    weights = _capped_weights(weights, max_weight, "per_trajectory_importance_loss", shape, weights.dtype)
    scaled = weights * _checks.maybe_stop_gradient(returns, stop_target_gradients)
    losses = score_function_loss(log_probs, scaled, stop_target_gradients=stop_target_gradients)
    return ImportanceWeightedLoss(losses, scaled, weights)


def per_decision_importance_loss(
    log_probs,
    behaviour_log_probs,
    rewards,
    discounts,
    dones,
    next_values=None,
    *,
    baselines=None,
    max_weight=None,
    stop_target_gradients=True,
):
    """Per-decision importance-weighted REINFORCE surrogate from behaviour-policy episodes, per step.

    Equation (s the first step of t's episode in the rollout, e its done step or T-1):

        w_k = min(c̄, Π_{j=s}^{k} π_θ(a_j|s_j)/μ(a_j|s_j)),
        Q_t = Σ_{k=t}^{e} (Π_{j=t}^{k-1} discounts_j) w_k r_k + (Π_{j=t}^{e} discounts_j) w_e V(s'_e),
        loss_t = −log π_θ(a_t|s_t) · sg(Q_t − w_t b_t),

    so −Σ_t ∇_θ loss_t = Σ_t ∇_θ log π_θ(a_t|s_t) (Q_t − w_t b_t). Each reward r_k is weighted by
    the product of the ratios up to its own step k (Precup et al.'s per-decision importance
    sampling): r_k depends only on the actions a_s..a_k, so E_μ[w_k f(τ_{s:k})] = E_{π_θ}[f(τ_{s:k})]
    for every term ∇log π_θ(a_t|s_t) r_k with t ≤ k, and with c̄ = ∞ the sum is an unbiased
    estimate of the causal on-policy gradient Σ_t ∇ log π_θ(a_t|s_t)(G_t − b(s_t)) of
    :func:`pgkit.reinforce_loss`, i.e. of ∇_θ J(θ) of the target policy. The baseline term
    w_t b_t has expectation zero for any b(s_t). With μ = π_θ it *is* ``reinforce_loss``. The
    weights are held constant (``sg``), as the derivation requires: the gradient of the
    importance-sampled objective is the score of the target policy times the weighted rewards.
    Leaving out the ratios of the actions after t (weighting G_t by w_t alone) is biased: the
    rewards after t would be those of μ's later actions. A cap c̄ bounds the variance at the
    price of a bias where it binds. Index convention: as in ``reinforce_loss``, the discount
    accumulates from step t (the paper's γ^k counts from the episode's start).

    Args:
      log_probs: ``[T, *B]`` log π_θ(a_t|s_t) under the target policy, t = 0..T-1, of actions
        a_t drawn from μ; carries the gradient.
      behaviour_log_probs: ``[T, *B]`` log μ(a_t|s_t) under the behaviour policy that acted.
      rewards: ``[T, *B]`` r_t, t = 0..T-1.
      discounts: ``[T, *B]`` γ·(1 − terminated_t), t = 0..T-1.
      dones: ``[T, *B]`` terminated_t or truncated_t (bool or 0/1), t = 0..T-1; sums and
        products restart after a done.
      next_values: optional ``[T, *B]`` V(s'_t), t = 0..T-1, bootstrapping a truncated episode
        (or the rollout's end) with the weight of its last step, as in
        :func:`pgkit.reward_to_go`; None (default) for no bootstrap.
      baselines: optional b_t, broadcastable to ``[T, *B]`` (V(s_t), a scalar, per-episode
        ``[*B]``); weighted by w_t.
      max_weight: optional float c̄ > 0 capping every w_k, scalar or broadcastable to
        ``[T, *B]`` (traced); None (default) for no cap.
      stop_target_gradients: static bool; if True (default) no gradient flows into ``rewards``,
        ``discounts``, ``next_values`` or ``baselines``.

    Returns:
      ``ImportanceWeightedLoss(losses, weights, importance_weights)``, each ``[T, *B]``:
      ``weights_t = Q_t − w_t b_t`` and ``importance_weights_t = w_t``.

    Gradients:
      through ``log_probs`` as ∇ log π_θ(a_t|s_t) only: the importance weights carry no gradient
      (neither into ``log_probs`` nor into ``behaviour_log_probs``); into ``rewards``,
      ``discounts``, ``next_values`` and ``baselines`` only with ``stop_target_gradients=False``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import pgkit
      >>> logits = jnp.array([0.0, 1.0])  # target π = softmax(logits); behaviour μ = Uniform
      >>> actions, rewards = jnp.array([1, 0]), jnp.array([1.0, 2.0])  # one 2-step episode
      >>> dones = jnp.array([False, True])
      >>> def loss(logits):
      ...     log_probs = jax.nn.log_softmax(logits)[actions]
      ...     out = pgkit.per_decision_importance_loss(
      ...         log_probs, jnp.log(jnp.full(2, 0.5)), rewards, jnp.ones(2), dones)
      ...     return out.losses.sum()
      >>> [round(g, 3) for g in jax.grad(loss)(logits).tolist()]
      [-0.334, 0.334]

    Reference:
      Precup, Sutton & Singh, "Eligibility Traces for Off-Policy Policy Evaluation", ICML 2000,
      http://papersdb.cs.ualberta.ca/~papersdb/view_publication.php?pub_id=467; Levine, CS285
      lecture 5, "Policy Gradients" (off-policy policy gradient), UC Berkeley,
      http://rail.eecs.berkeley.edu/deeprlcourse/static/slides/lec-5.pdf
    """
    others = {"behaviour_log_probs": behaviour_log_probs, "rewards": rewards, "discounts": discounts, "dones": dones}
    if next_values is not None:
        others["next_values"] = next_values
    shape = _checks.check_time_major("per_decision_importance_loss", "log_probs", log_probs, **others)
    if baselines is not None:
        _checks.check_broadcasts_to(
            "per_decision_importance_loss", "baselines", baselines, shape, reference_name="log_probs"
        )
    ratios = _importance.log_ratios(log_probs, behaviour_log_probs)
    weights = _importance.per_decision_weights(jax.lax.stop_gradient(ratios), dones)
    weights = _capped_weights(weights, max_weight, "per_decision_importance_loss", shape, weights.dtype)
    bootstrap = None if next_values is None else weights * jnp.asarray(next_values)
    scaled = _returns.reward_to_go(weights * jnp.asarray(rewards), discounts, dones, bootstrap, stop_target_gradients=False)
    if baselines is not None:
        scaled = scaled - weights * jnp.asarray(baselines)
    losses = score_function_loss(log_probs, scaled, stop_target_gradients=stop_target_gradients)
    return ImportanceWeightedLoss(losses, _checks.maybe_stop_gradient(scaled, stop_target_gradients), weights)


def pathwise_loss(objective_values):
    """Pathwise (reparameterisation) surrogate loss, per sample: the negated objective.

    Equation:
        loss_i = −f(x_i),  x_i = g_θ(ε_i),  ε_i ∼ p(ε),  so  −∇_θ loss_i = ∇_x f(x_i) · ∇_θ g_θ(ε_i),

    whose mean is an unbiased estimate of ∇_θ E_{x∼p_θ}[f(x)] when f is differentiable and the
    sample is a differentiable function of θ (e.g. x = μ_θ + σ_θ·ε for a Gaussian). The
    estimator lives in how ``objective_values`` were computed: they must be built from a
    reparameterised sample (``distrax.Normal(mean, std).sample(seed=key)`` or
    ``sample_and_log_prob``, which are differentiable in ``mean`` and ``std``), *not* from a
    stop-gradient'ed action. Use it for DDPG/SAC-style actor losses, where f is a critic.

    Args:
        objective_values: [T, *B] (or any sample shape) f(x_i), to be maximised, computed
            through reparameterised samples x_i.

    Returns:
        [T, *B] per-sample losses −f(x_i) (same shape); minimise their mean.

    Gradients:
        Through ``objective_values`` and, through them, into the sample's parameters (the
        pathwise gradient). Nothing is stop-gradient'ed here.

    Example:
        >>> import jax, jax.numpy as jnp, distrax
        >>> import pgkit
        >>> def loss(mean):  # maximise E[-(a - 3)^2], a ~ N(mean, 1), by differentiating the sample
        ...     actions = distrax.Normal(mean, 1.0).sample(seed=jax.random.key(0), sample_shape=4096)
        ...     return pgkit.pathwise_loss(-(actions - 3.0) ** 2).mean()
        >>> g = jax.grad(loss)(jnp.array(1.0))  # analytic: 2 (mean - 3) = -4
        >>> bool(abs(g + 4.0) < 0.2)
        True

    Reference:
        Kingma, Welling (2014), "Auto-Encoding Variational Bayes", ICLR,
        https://arxiv.org/abs/1312.6114; Mohamed, Rosca, Figurnov, Mnih (2020), "Monte Carlo
        Gradient Estimation in Machine Learning", JMLR 21, https://arxiv.org/abs/1906.10652
    """
    return -jnp.asarray(objective_values)


def score_function_multiplier(log_probs):
    """Multiplier worth 1 whose gradient is the score: exp(log p − sg(log p)).

    Equation:
        m = exp(log p_θ(x) − sg(log p_θ(x))) = 1,   ∇_θ m = ∇_θ log p_θ(x),

    so ∇_θ [m · f] = f ∇_θ log p_θ(x) + ∇_θ f: multiplying an objective by it adds the
    score-function term to whatever pathwise gradient f already carries. This is how a single
    surrogate handles a stochastic computation graph mixing non-reparameterisable samples
    (discrete actions: score function) with reparameterised ones (pathwise), e.g.
    ``pathwise_loss(score_function_multiplier(log_probs) * objective_values)``. With f free of
    θ this reproduces :func:`score_function_loss` (with ``stop_target_gradients=True``).

    Args:
        log_probs: [T, *B] (or any sample shape) log p_θ(x) of the samples that are not
            reparameterised.

    Returns:
        [T, *B] ones (same shape), carrying the gradient of ``log_probs``.

    Gradients:
        Through ``log_probs`` (as ∇ log p); the value itself does not depend on them.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pgkit
        >>> logits = jnp.array([0.0, 1.0])
        >>> m = lambda logits: pgkit.score_function_multiplier(jax.nn.log_softmax(logits)[1])
        >>> float(m(logits)), [round(g, 3) for g in jax.grad(m)(logits).tolist()]
        (1.0, [-0.269, 0.269])

    Reference:
        Schulman, Heess, Weber, Abbeel (2015), "Gradient Estimation Using Stochastic Computation
        Graphs", NeurIPS, https://arxiv.org/abs/1506.05254; Foerster, Farquhar, Al-Shedivat,
        Rocktäschel, Xing, Whiteson (2018), "DiCE: The Infinitely Differentiable Monte Carlo
        Estimator", ICML, https://arxiv.org/abs/1802.05098
    """
    log_probs = jnp.asarray(log_probs)
    return jnp.exp(log_probs - jax.lax.stop_gradient(log_probs))


def _short_horizon_step(weight, x):
    reward, discount, next_value, done, end = x
    loss = -weight * (reward + jnp.where(end, discount * next_value, 0.0))
    return jnp.where(done, jnp.ones_like(weight), weight * discount), loss


def short_horizon_pathwise_loss(rewards, discounts, dones, next_values):
    """Short-horizon pathwise actor loss with a terminal value bootstrap (SHAC), per step.

    Equation: over a horizon of T steps cut into episode segments at the done steps, each
    segment s..e (e a done step or T − 1) contributes its discounted return bootstrapped by the
    critic at its end,

        J_seg = Σ_{t=s}^{e} w_t r_t + w_e · discounts_e · V(s'_e),   w_s = 1, w_{t+1} = w_t · discounts_t,

    and the per-step loss is loss_t = −w_t (r_t + end_t · discounts_t · V(s'_t)), end_t = done_t or
    t = T − 1, so that Σ_t loss_t = −Σ_seg J_seg. A truncated segment bootstraps from the value of
    its true next state; a terminated one does not (its discount is 0). SHAC minimises
    (1 / (T·E)) Σ_{t,e} loss_t over E environments; with ``next_values`` all zero it is APG's
    loss, the negated discounted return of the horizon. The gradient is the pathwise one only if
    ``rewards`` and ``next_values`` were computed through a differentiable rollout of
    reparameterised actions (:func:`pgkit.rollout.differentiable_rollout`).

    Args:
        rewards: ``[T, *B]`` r_t for t = 0..T−1, carrying the gradient of the dynamics.
        discounts: ``[T, *B]`` γ·(1 − terminated_t) for t = 0..T−1.
        dones: ``[T, *B]`` terminated_t or truncated_t (bool or 0/1) for t = 0..T−1.
        next_values: ``[T, *B]`` V(s'_t) for t = 0..T−1 (s'_t the true next state), computed with
            the gradient of s'_t (a critic whose own parameters are held fixed).

    Returns:
        ``[T, *B]`` per-step losses −w_t (r_t + end_t · discounts_t · V(s'_t)); minimise their sum
        over T divided by T (and the mean over ``*B``).

    Gradients:
        Through ``rewards`` and ``next_values`` (and, through them, the policy's actions and the
        states); none into ``discounts`` or ``dones``. Nothing is stop-gradient'ed: the loss is
        the objective itself, not a surrogate built on targets.

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> rewards, discounts = jnp.array([1.0, 1.0, 1.0]), jnp.array([0.5, 0.5, 0.5])
        >>> dones, next_values = jnp.array([False, True, False]), jnp.array([0.0, 4.0, 8.0])
        >>> pgkit.short_horizon_pathwise_loss(rewards, discounts, dones, next_values).tolist()
        [-1.0, -1.5, -5.0]

    Reference:
        Xu, Makoviychuk, Narang, Ramos, Matusik, Garg, Macklin, "Accelerated Policy Learning with
        Parallel Differentiable Simulation", ICLR 2022, https://arxiv.org/abs/2204.07137 (eq. 5);
        Freeman, Frey, Raichuk, Girgin, Mordatch, Bachem, "Brax — A Differentiable Physics Engine
        for Large Scale Rigid Body Simulation", 2021, https://arxiv.org/abs/2106.13281 (APG).
    """
    _checks.check_time_major(
        "short_horizon_pathwise_loss", "rewards", rewards, discounts=discounts, dones=dones, next_values=next_values
    )
    dtype = _checks.float_dtype(rewards, discounts, next_values)
    rewards = jnp.asarray(rewards, dtype)
    discounts = jax.lax.stop_gradient(jnp.asarray(discounts, dtype))
    next_values = jnp.asarray(next_values, dtype)
    done = jnp.asarray(dones).astype(bool)
    ends = jnp.logical_not(_checks.continues(done))
    return _checks.forward_scan(
        _short_horizon_step, jnp.ones_like(rewards[0]), (rewards, discounts, next_values, done, ends)
    )
