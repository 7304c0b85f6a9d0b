"""Policy-gradient estimators as surrogate losses.

Two families of Monte-Carlo gradient estimators of ∇_θ E_{x∼p_θ}[f(x)]:

- the **score-function** (likelihood-ratio, REINFORCE) estimator f(x)·∇_θ log p_θ(x), which needs
  only log-probabilities of the sampled actions; its surrogate is ``score_function_loss`` and the
  trajectory forms are ``reinforce_loss`` (causal reward-to-go or whole-trajectory return);
- the **pathwise** (reparameterisation) estimator ∇_θ f(g_θ(ε)), which differentiates through a
  reparameterised sample x = g_θ(ε); its surrogate is ``pathwise_loss``.

``score_function_multiplier`` puts both in one differentiable expression (stochastic
computation graphs). Every loss is returned per step / per sample, unreduced.
"""

import jax
import jax.numpy as jnp

from pgkit import _checks
from pgkit import returns as _returns

__all__ = [
    "pathwise_loss",
    "reinforce_loss",
    "score_function_loss",
    "score_function_multiplier",
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
