"""On-policy rollouts: ``lax.scan`` over a :class:`pgkit.envs.VecEnv` into a time-major Trajectory.

::

    env_state, obs, traj = rollout(key, env, env_state, obs, act_fn, num_steps=128,
                                   gamma=0.99, value_fn=value_fn)
    advantages = pgkit.gae(traj.rewards, traj.discounts, traj.dones, traj.values,
                           traj.next_values, ...)

Episode semantics follow CONTRIBUTING: ``discounts[t] = γ·(1 − terminated_t)``,
``dones[t] = terminated_t ∨ truncated_t``, ``next_obs[t]`` is the true next observation s'_t
(pre-reset on a done step) and ``next_values[t] = V(s'_t)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from pgkit.actions import categorical_sample_and_log_prob
from pgkit.returns import GAE, gae
from pgkit.envs import VecEnv, VecEnvState
from pgkit.nn import policy_distribution

__all__ = [
    "EpisodeStatistics",
    "Trajectory",
    "actor_critic_act_fn",
    "clip_gradient_norm",
    "completed_episode_statistics",
    "differentiable_rollout",
    "first_episode_mask",
    "gae_rollout",
    "latest_episode_return",
    "rollout",
]


class Trajectory(NamedTuple):
    """A time-major batch of transitions ``[T, E, ...]`` collected by :func:`rollout`.

    Attributes:
        obs: s_t, ``[T, E, obs_size]`` (what the policy acted on).
        actions: a_t, ``[T, E]`` (discrete) or ``[T, E, action_size]``.
        rewards: r_t, ``[T, E]``.
        discounts: γ·(1 − terminated_t), ``[T, E]``.
        dones: terminated_t ∨ truncated_t, ``[T, E]`` bool.
        terminated: ``[T, E]`` bool.
        truncated: ``[T, E]`` bool.
        next_obs: s'_t, the true next observation (pre-reset where done), ``[T, E, obs_size]``.
        log_probs: log π(a_t|s_t) of the behaviour policy, ``[T, E]``.
        values: V(s_t) from the behaviour critic, ``[T, E]``.
        next_values: V(s'_t) from ``value_fn`` (zeros without one), ``[T, E]``.
        episode_returns: undiscounted return of the episode ending at t (valid where done),
            ``[T, E]``.
        episode_lengths: its length (valid where done), ``[T, E]`` int32.
    """

    obs: Float[Array, "T E obs_size"]
    actions: Array
    rewards: Float[Array, "T E"]
    discounts: Float[Array, "T E"]
    dones: Bool[Array, "T E"]
    terminated: Bool[Array, "T E"]
    truncated: Bool[Array, "T E"]
    next_obs: Float[Array, "T E obs_size"]
    log_probs: Float[Array, "T E"]
    values: Float[Array, "T E"]
    next_values: Float[Array, "T E"]
    episode_returns: Float[Array, "T E"]
    episode_lengths: Int[Array, "T E"]


def rollout(
    key: Array,
    env: VecEnv,
    env_state: VecEnvState,
    obs: Float[Array, "E obs_size"],
    act_fn: Callable[[Array, Array], tuple[Array, Array, Array]],
    *,
    num_steps: int,
    gamma: float | Array,
    value_fn: Callable[[Array], Array] | None = None,
    training: bool = True,
) -> tuple[VecEnvState, Float[Array, "E obs_size"], Trajectory]:
    """Run ``act_fn`` in ``env`` for ``num_steps`` steps and return a time-major Trajectory.

    For t = 0..T−1: (a_t, log π(a_t|s_t), V(s_t)) = act_fn(k_t, s_t); s_{t+1}, r_t, … =
    env.step(k'_t, a_t). All 2T keys come from ONE split of ``key`` made before the scan (no
    split inside the loop body besides the env's own per-env split). After the scan,
    ``next_values = value_fn(next_obs)`` is evaluated in one batched call over ``T·E`` rows.

    Args:
        key: PRNG key.
        env: a :class:`pgkit.envs.VecEnv` with E environments (static).
        env_state: its current state.
        obs: the observations to act on, ``[E, obs_size]`` (from ``reset`` or the previous
            rollout's ``last_obs``).
        act_fn: ``act_fn(key, obs [E, obs_size]) -> (actions, log_probs [E], values [E])``;
            actions ``[E]`` int or ``[E, action_size]`` in [−1, 1]. Return zeros for values
            (or log-probs) that an algorithm does not need.
        num_steps: T, the rollout length (static int).
        gamma: discount factor γ (traced float or array); also the discount of the return
            whose running std scales rewards when the env has ``scale_rewards``.
        value_fn: ``value_fn(obs [N, obs_size]) -> [N]``; ``None`` gives zero next_values.
        training: static bool forwarded to ``env.step`` (False freezes normalisation stats).

    Returns:
        ``(env_state, last_obs [E, obs_size], trajectory)``: the state after T steps, the
        observations to act on next and a :class:`Trajectory` with arrays ``[T, E, ...]``.

    Gradients:
        None intended: the rollout collects data; wrap the result in ``stop_gradient`` if it
        is used inside a differentiated function.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> env = pgkit.envs.make("CartPole-v1", num_envs=2)
        >>> state, obs = env.reset(jax.random.key(0))
        >>> def act_fn(key, obs):
        ...     actions = jax.random.bernoulli(key, 0.5, obs.shape[:1]).astype(jnp.int32)
        ...     return actions, jnp.full(obs.shape[:1], jnp.log(0.5)), jnp.zeros(obs.shape[:1])
        >>> state, obs, traj = pgkit.rollout.rollout(jax.random.key(1), env, state, obs,
        ...                                          act_fn, num_steps=5, gamma=0.99)
        >>> traj.obs.shape, traj.rewards.shape, traj.next_values.shape
        ((5, 2, 4), (5, 2), (5, 2))

    Reference:
        Lu et al., "Discovered Policy Optimisation" (purejaxrl, whole runs as one ``lax.scan``),
        2022. https://arxiv.org/abs/2210.05639
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    expected = (env.num_envs, env.observation_size)
    if tuple(obs.shape) != expected:
        raise ValueError(f"obs must have shape [num_envs, obs_size]={expected}, got {obs.shape}")

    keys = jax.random.split(key, (num_steps, 2))

    def body(carry, step_keys):
        state, current_obs = carry
        actions, log_probs, values = act_fn(step_keys[0], current_obs)
        state, step = env.step(step_keys[1], state, actions, training=training, gamma=gamma)
        out = (current_obs, actions, log_probs, values, step)
        return (state, step.obs), out

    (env_state, last_obs), (obs_t, actions, log_probs, values, steps) = jax.lax.scan(
        body, (env_state, obs), keys
    )

    T, E = num_steps, env.num_envs
    if value_fn is None:
        next_values = jnp.zeros((T, E), jnp.float32)
    else:
        flat = jnp.reshape(steps.final_obs, (T * E, env.observation_size))
        next_values = jnp.reshape(value_fn(flat), (T, E))
    gamma = jnp.asarray(gamma, jnp.float32)
    trajectory = Trajectory(
        obs=obs_t,
        actions=actions,
        rewards=steps.reward,
        discounts=gamma * (1.0 - steps.terminated.astype(jnp.float32)),
        dones=steps.terminated | steps.truncated,
        terminated=steps.terminated,
        truncated=steps.truncated,
        next_obs=steps.final_obs,
        log_probs=jnp.reshape(log_probs, (T, E)),
        values=jnp.reshape(values, (T, E)),
        next_values=next_values,
        episode_returns=steps.episode_return,
        episode_lengths=steps.episode_length,
    )
    return env_state, last_obs, trajectory


def actor_critic_act_fn(actor: Callable, critic: Callable, *, discrete: bool, per_env_keys: bool = False):
    """The ``act_fn`` of :func:`rollout` for a policy network and a value network.

    ``act_fn(key, obs [E, obs_size])`` returns (a ~ π(·|s), log π(a|s), V(s)) for the batch, with
    π given by ``jax.vmap(actor)(obs)``: logits ``[E, A]`` (``discrete``; drawn by
    :func:`pgkit.categorical_sample_and_log_prob`, distrax's draws without its validity check)
    or ``(mean, log_std)`` ``[E, A]`` each (a diagonal Gaussian,
    :func:`pgkit.nn.policy_distribution`), one ``key`` for the whole batch, and V = ``jax.vmap(critic)(obs)``.
    The networks act on one example, as :mod:`pgkit.nn`'s policies and critics do.

    Args:
        actor: ``actor(obs [obs_size])`` -> logits ``[A]`` or ``(mean [A], log_std [A])``.
        critic: ``critic(obs [obs_size])`` -> V(s) ``[]``.
        discrete: static bool, which of the two the actor returns.
        per_env_keys: static bool; True splits ``key`` into one key per environment and draws
            each action from its own (A2C's and A3C's draws), False draws the batch from one.

    Returns:
        ``act_fn(key, obs) -> (actions [E] int32 or [E, A], log_probs [E], values [E])``.

    Gradients:
        As :func:`rollout`'s: none intended (it collects data).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from pgkit import nn
        >>> actor = nn.CategoricalPolicy(4, 2, hidden_sizes=(8,), key=jax.random.key(0))
        >>> critic = nn.ValueCritic(4, hidden_sizes=(8,), key=jax.random.key(1))
        >>> act_fn = pgkit.rollout.actor_critic_act_fn(actor, critic, discrete=True)
        >>> [x.shape for x in act_fn(jax.random.key(2), jnp.ones((3, 4)))]
        [(3,), (3,), (3,)]

    Reference:
        Konda, Tsitsiklis, "Actor-Critic Algorithms", NeurIPS 2000.
        https://papers.nips.cc/paper/1786-actor-critic-algorithms
    """

    def one_env(o, k):
        if discrete:
            return categorical_sample_and_log_prob(actor(o), key=k)
        return policy_distribution(actor(o), discrete=False).sample_and_log_prob(seed=k)

    def act_fn(key, obs):
        if per_env_keys:
            actions, log_probs = jax.vmap(one_env)(obs, jax.random.split(key, obs.shape[0]))
            return actions, log_probs, jax.vmap(critic)(obs)
        params = jax.vmap(actor)(obs)
        if discrete:
            actions, log_probs = categorical_sample_and_log_prob(params, key=key)
        else:
            actions, log_probs = policy_distribution(params, discrete=False).sample_and_log_prob(seed=key)
        return actions, log_probs, jax.vmap(critic)(obs)

    return act_fn


class EpisodeStatistics(NamedTuple):
    """Summary of the episodes that ended inside a trajectory.

    Attributes:
        mean_return: mean undiscounted return over completed episodes (0 when none).
        num_episodes: number of completed episodes (int32).
    """

    mean_return: Float[Array, ""]
    num_episodes: Int[Array, ""]


def completed_episode_statistics(trajectory: Trajectory) -> EpisodeStatistics:
    """Mean return and count of the episodes completed in ``trajectory`` (NaN-free).

    mean_return = Σ_{t,e} done·G / max(1, Σ done), num_episodes = Σ done, where G is
    ``episode_returns``. Works on any leading shape (e.g. ``[T, E]`` or ``[S, T, E]``).

    Args:
        trajectory: a :class:`Trajectory` (uses ``dones`` and ``episode_returns``).

    Returns:
        :class:`EpisodeStatistics` ``(mean_return [], num_episodes [])``; the mean is 0
        (not NaN) when no episode ended.

    Gradients:
        None (statistics for logging).

    Example:
        >>> import jax.numpy as jnp
        >>> traj = pgkit.rollout.Trajectory(*([None] * 13))._replace(
        ...     dones=jnp.array([[False, True], [True, True]]),
        ...     episode_returns=jnp.array([[9.0, 2.0], [4.0, 6.0]]))
        >>> stats = pgkit.rollout.completed_episode_statistics(traj)
        >>> float(stats.mean_return), int(stats.num_episodes)
        (4.0, 3)

    Reference:
        Sutton, Barto, "Reinforcement Learning: An Introduction", 2nd ed., 2018, §3.3.
        http://incompleteideas.net/book/the-book-2nd.html
    """
    dones = trajectory.dones
    count = jnp.sum(dones, dtype=jnp.int32)
    total = jnp.sum(jnp.where(dones, trajectory.episode_returns, 0.0))
    mean = total / jnp.maximum(count, 1).astype(total.dtype)
    return EpisodeStatistics(mean_return=mean, num_episodes=count)


def latest_episode_return(trajectory: Trajectory, last_return) -> EpisodeStatistics:
    """The mean return of the episodes completed in ``trajectory``, or ``last_return`` if none ended.

    What every recipe reports as ``episode_return``: a run's learning curve needs a value at each
    update, also where an update's rollout completes no episode (long episodes, short rollouts):
    then the last known value carries over. mean_return = :func:`completed_episode_statistics`'s
    mean where num_episodes > 0, else ``last_return``.

    Args:
        trajectory: a :class:`Trajectory` (uses ``dones`` and ``episode_returns``).
        last_return: ``[]`` the value reported by the previous update (0 at the start).

    Returns:
        :class:`EpisodeStatistics` ``(mean_return [], num_episodes [])``; keep ``mean_return`` as
        the next update's ``last_return``.

    Gradients:
        None (statistics for logging).

    Example:
        >>> import jax.numpy as jnp
        >>> traj = pgkit.rollout.Trajectory(*([None] * 13))._replace(
        ...     dones=jnp.array([[False, False]]), episode_returns=jnp.array([[9.0, 2.0]]))
        >>> float(pgkit.rollout.latest_episode_return(traj, jnp.float32(7.0)).mean_return)
        7.0

    Reference:
        Sutton, Barto, "Reinforcement Learning: An Introduction", 2nd ed., 2018, §3.3.
        http://incompleteideas.net/book/the-book-2nd.html
    """
    stats = completed_episode_statistics(trajectory)
    return stats._replace(mean_return=jnp.where(stats.num_episodes > 0, stats.mean_return, last_return))


def gae_rollout(key, env: VecEnv, env_state: VecEnvState, obs, actor, critic, *, num_steps: int, gamma, lambda_):
    """An actor-critic's on-policy batch: :func:`rollout` with π = ``actor``, then :func:`pgkit.gae` with V = ``critic``.

    The first two lines of every GAE actor-critic update (PPO, NPG, TRPO): T steps of every
    environment with actions drawn by :func:`actor_critic_act_fn`, values V(s_t) and
    V(s'_t) of the true next states from ``critic``, then advantages and λ-return targets.

    Args:
        key, env, env_state, obs, num_steps, gamma: as for :func:`rollout`.
        actor: ``actor(obs [obs_size])`` -> logits or ``(mean, log_std)`` (``env.discrete`` says which).
        critic: ``critic(obs [obs_size])`` -> V(s).
        lambda_: GAE's λ (traced float).

    Returns:
        ``(env_state, last_obs, trajectory, gae)`` with ``gae`` a ``pgkit.GAE(advantages [T, E],
        targets [T, E])``.

    Example:
        >>> import jax
        >>> from pgkit import envs, nn
        >>> env = envs.make("CartPole-v1", num_envs=2)
        >>> state, obs = env.reset(jax.random.key(0))
        >>> actor = nn.CategoricalPolicy(4, 2, hidden_sizes=(8,), key=jax.random.key(1))
        >>> critic = nn.ValueCritic(4, hidden_sizes=(8,), key=jax.random.key(2))
        >>> *_, estimates = pgkit.rollout.gae_rollout(jax.random.key(3), env, state, obs, actor, critic,
        ...                                           num_steps=5, gamma=0.99, lambda_=0.95)
        >>> estimates.advantages.shape
        (5, 2)
    """
    act_fn = actor_critic_act_fn(actor, critic, discrete=env.discrete)
    env_state, obs, traj = rollout(
        key, env, env_state, obs, act_fn, num_steps=num_steps, gamma=gamma, value_fn=jax.vmap(critic)
    )
    estimates: GAE = gae(traj.rewards, traj.discounts, traj.dones, traj.values, traj.next_values, lambda_=lambda_)
    return env_state, obs, traj, estimates


def first_episode_mask(dones):
    """Which steps belong to each environment's first episode of a rollout: up to and including its first done.

    mask[t, e] = (Σ_{t' < t} done[t', e]) == 0. For recipes that reset every environment at the
    start of an update and roll out long enough for one complete episode (REINFORCE, CEM): the
    steps after the first done (a second, unfinished episode) are padding and masked out.

    Args:
        dones: ``[T, *B]`` bool (or 0/1), terminated or truncated at step t (``Trajectory.dones``).

    Returns:
        ``[T, *B]`` bool mask.

    Example:
        >>> import jax.numpy as jnp
        >>> pgkit.rollout.first_episode_mask(jnp.array([[False], [True], [False]])).ravel().tolist()
        [True, True, False]
    """
    dones = jnp.asarray(dones).astype(jnp.int32)
    return (jnp.cumsum(dones, axis=0) - dones) == 0


@jax.custom_vjp
def _clip_rows(leaves, max_norm):
    return leaves


def _clip_rows_forward(leaves, max_norm):
    return leaves, max_norm


def _clip_rows_backward(max_norm, cotangents):
    # zero what is not finite, then scale each row (leading axis) to a norm of at most max_norm
    cotangents = [jnp.where(jnp.isfinite(c), c, 0.0) for c in cotangents]
    squares = sum(jnp.sum(jnp.reshape(jnp.square(c), (c.shape[0], -1)), axis=1) for c in cotangents)
    norm = jnp.sqrt(squares)
    scale = jnp.where(norm > max_norm, max_norm / jnp.maximum(norm, 1e-30), 1.0)
    scaled = [c * jnp.reshape(scale, (-1,) + (1,) * (c.ndim - 1)).astype(c.dtype) for c in cotangents]
    return scaled, jnp.zeros_like(max_norm)


_clip_rows.defvjp(_clip_rows_forward, _clip_rows_backward)


def clip_gradient_norm(tree, max_norm):
    """Identity on the way forward; on the way back, each row's gradient is made finite and clipped to ``max_norm``.

    For every leading index e (an environment), with g_e the cotangent of the floating-point
    leaves of ``tree`` at row e (non-finite entries set to 0 first):

        g_e ← g_e · min(1, max_norm / ‖g_e‖₂).

    Placed on the state carried from one step of a differentiable rollout to the next, it bounds
    the gradient that flows back through each transition, so that a long horizon through chaotic
    dynamics cannot make it overflow (Metz et al. 2021 on exploding gradients through unrolled
    dynamics; SHAC's short horizons are the other remedy). Integer and boolean leaves pass
    untouched (they carry no gradient).

    Args:
        tree: a pytree whose floating-point leaves all have the leading axis ``[E, ...]``.
        max_norm: scalar bound on each row's gradient norm (traced float, > 0).

    Returns:
        ``tree`` unchanged (same structure and shapes as ``tree``).

    Gradients:
        Through ``tree``, clipped as above; none into ``max_norm``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda x: jnp.sum(pgkit.rollout.clip_gradient_norm(x, 1.0) * jnp.array([[3.0, 4.0], [0.3, 0.4]]))
        >>> jax.grad(f)(jnp.ones((2, 2))).tolist()
        [[0.6000000238418579, 0.800000011920929], [0.30000001192092896, 0.4000000059604645]]

    Reference:
        Metz, Freeman, Schoenholz, Kachman, "Gradients are Not All You Need", 2021.
        https://arxiv.org/abs/2111.05803
    """
    leaves, treedef = jax.tree.flatten(tree)
    floating = [i for i, leaf in enumerate(leaves) if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact)]
    if not floating:
        return tree
    clipped = _clip_rows([leaves[i] for i in floating], jnp.asarray(max_norm, jnp.float32))
    for i, leaf in zip(floating, clipped):
        leaves[i] = leaf
    return jax.tree.unflatten(treedef, leaves)


def differentiable_rollout(
    key: Array,
    env: VecEnv,
    env_state: VecEnvState,
    obs: Float[Array, "E obs_size"],
    policy_fn: Callable[[Array, Array], Array],
    *,
    num_steps: int,
    gamma: float | Array,
    value_fn: Callable[[Array], Array] | None = None,
    max_gradient_norm: float | Array | None = None,
) -> tuple[VecEnvState, Float[Array, "E obs_size"], Trajectory]:
    """Run ``policy_fn`` for ``num_steps`` steps of a differentiable ``env``, keeping the gradient path through every transition.

    For t = 0..T−1: a_t = policy_fn(k_t, s_t) (a reparameterised or deterministic action, a
    differentiable function of the policy's parameters); s_{t+1}, r_t = env.step(a_t, s_t) with
    gymnax's transition gradients, so that ∂r_t/∂θ and ∂V(s'_t)/∂θ reach back through
    a_0..a_t and s_0..s_t:

        ∂s_{t+1}/∂θ = ∂f/∂s_t · ∂s_t/∂θ + ∂f/∂a_t · ∂a_t/∂θ,   a_t = π_θ(s_t, ε_t).

    Where an episode ends the environment resets, and the reset state does not depend on the
    previous one: the gradient path is cut there, while ``next_obs`` (gymnax's
    ``info["final_observation"]``) and ``next_values = value_fn(next_obs)`` keep theirs, so a
    truncated step bootstraps differentiably from its true next state. Episode semantics are those
    of :func:`rollout`: ``discounts = γ·(1 − terminated)``, ``dones = terminated ∨ truncated``.
    With ``max_gradient_norm`` the gradient flowing back from step t+1 into the state of step t is
    made finite and clipped per environment (:func:`clip_gradient_norm`) at every step.

    Args:
        key: PRNG key (one split into T policy keys and T environment keys before the scan).
        env: a :class:`pgkit.envs.VecEnv` built with ``transition_gradients=True`` (static).
        env_state: its current state (the gradient path starts here; pass it through
            ``jax.lax.stop_gradient`` to start a new horizon).
        obs: the observations to act on, ``[E, obs_size]``.
        policy_fn: ``policy_fn(key, obs [E, obs_size]) -> actions [E, action_size]`` in [−1, 1]
            (values outside are clipped by the environment, with zero gradient there).
        num_steps: T, the horizon (static int).
        gamma: discount factor γ (traced float).
        value_fn: ``value_fn(obs [N, obs_size]) -> [N]``, evaluated on the true next observations
            with their gradient; ``None`` gives zero next_values.
        max_gradient_norm: scalar bound on the per-environment gradient norm through each
            transition (traced float), or ``None`` for none (static switch).

    Returns:
        ``(env_state, last_obs [E, obs_size], trajectory)`` as for :func:`rollout`; the
        :class:`Trajectory` has ``log_probs`` and ``values`` zero, and its rewards, observations
        and next values carry gradients.

    Gradients:
        Through ``policy_fn``'s actions into r_t, s_{t+1}, ``next_obs`` and ``next_values`` (and
        into the parameters ``value_fn`` closes over), and from ``env_state``/``obs``; none across
        a reset. Rewards are r_t as the environment defines them (no reward scaling gradient
        beyond its own arithmetic).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> env = pgkit.envs.make("Pendulum-v1", num_envs=2, transition_gradients=True)
        >>> state, obs = env.reset(jax.random.key(0))
        >>> def total_reward(gain):
        ...     policy_fn = lambda key, obs: jnp.tanh(gain * obs[:, 2:3])
        ...     _, _, traj = pgkit.rollout.differentiable_rollout(
        ...         jax.random.key(1), env, state, obs, policy_fn, num_steps=10, gamma=0.99)
        ...     return traj.rewards.sum()
        >>> bool(jnp.isfinite(jax.grad(total_reward)(-0.5)))
        True

    Reference:
        Xu, Makoviychuk, Narang, Ramos, Matusik, Garg, Macklin, "Accelerated Policy Learning with
        Parallel Differentiable Simulation", ICLR 2022. https://arxiv.org/abs/2204.07137
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if not env.transition_gradients:
        raise ValueError(
            f"env must carry transition gradients: build it with pgkit.envs.make({env.name!r}, ..., "
            "transition_gradients=True)"
        )
    expected = (env.num_envs, env.observation_size)
    if tuple(obs.shape) != expected:
        raise ValueError(f"obs must have shape [num_envs, obs_size]={expected}, got {obs.shape}")

    keys = jax.random.split(key, (num_steps, 2))

    def body(carry, step_keys):
        state, current_obs = carry
        if max_gradient_norm is not None:  # the per-environment parts of the carried state
            inner, current_obs = clip_gradient_norm((state.env_state, current_obs), max_gradient_norm)
            state = state._replace(env_state=inner)
        actions = policy_fn(step_keys[0], current_obs)
        state, step = env.step(step_keys[1], state, actions, gamma=gamma)
        return (state, step.obs), (current_obs, actions, step)

    (env_state, last_obs), (obs_t, actions, steps) = jax.lax.scan(body, (env_state, obs), keys)

    T, E = num_steps, env.num_envs
    if value_fn is None:
        next_values = jnp.zeros((T, E), jnp.float32)
    else:
        flat = jnp.reshape(steps.final_obs, (T * E, env.observation_size))
        next_values = jnp.reshape(value_fn(flat), (T, E))
    gamma = jnp.asarray(gamma, jnp.float32)
    zeros = jnp.zeros((T, E), jnp.float32)
    trajectory = Trajectory(
        obs=obs_t,
        actions=actions,
        rewards=steps.reward,
        discounts=gamma * (1.0 - steps.terminated.astype(jnp.float32)),
        dones=steps.terminated | steps.truncated,
        terminated=steps.terminated,
        truncated=steps.truncated,
        next_obs=steps.final_obs,
        log_probs=zeros,
        values=zeros,
        next_values=next_values,
        episode_returns=steps.episode_return,
        episode_lengths=steps.episode_length,
    )
    return env_state, last_obs, trajectory
