"""Recurrent policies in on-policy rollouts: hidden state carried, reset after dones, sequences replayed.

::

    env_state, obs, hidden, batch = recurrent_rollout(key, env, env_state, obs, hidden, act_fn,
                                                      num_steps=T, gamma=0.99, fresh_hidden=h0,
                                                      value_fn=value_fn)
    outputs = replay(step_fn, batch.trajectory.obs, batch.trajectory.dones, batch.initial_hidden, h0)

The hidden state h_t that step t acts with obeys

    (h'_t, out_t) = step(h_t, o_t),   h_{t+1} = h0 if done_t else h'_t,

with done_t = terminated_t ∨ truncated_t (the reset applies to the step AFTER the done: the
first observation of the next episode meets a fresh state, the done step itself still sees its
episode's memory). A rollout stores ``initial_hidden`` = h_0 of its first step (already reset
if the previous rollout ended with a done), so :func:`replay` recomputes every h_t of the rollout
from h_0 and the dones alone, and with it the policy's outputs under new parameters.
Minibatches split the environments, never the time axis (:func:`env_minibatch_indices`): each
minibatch holds whole sequences and their h_0.

Episode semantics are those of :func:`pgkit.rollout.rollout` (CONTRIBUTING convention 2);
``next_values[t]`` = V(s'_t) is evaluated with h'_t, the state that continues the episode
(before any reset). Hidden states are pytrees (an LSTM's is the pair (h, c)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from pgkit.actions import categorical_sample_and_log_prob
from pgkit.envs import VecEnv, VecEnvState
from pgkit.nn import policy_distribution
from pgkit.rollout import Trajectory

__all__ = [
    "RecurrentBatch",
    "actor_critic_replay",
    "env_minibatch_indices",
    "fresh_hidden_batch",
    "recurrent_actor_critic_act_fn",
    "recurrent_rollout",
    "replay",
    "reset_where_done",
    "take_envs",
]


class RecurrentBatch(NamedTuple):
    """A recurrent rollout: the time-major transitions and the hidden state each sequence started from.

    Attributes:
        trajectory: a :class:`pgkit.rollout.Trajectory` with arrays ``[T, E, ...]``.
        initial_hidden: h_0, the hidden state the first step acted with, a pytree of ``[E, ...]``
            leaves (the reset already applied where the previous rollout ended with a done).
        next_hidden: h'_t, the state after step t before any reset, a pytree of ``[T, E, ...]``
            leaves (what V(s'_t) was evaluated with).
    """

    trajectory: Trajectory
    initial_hidden: Any
    next_hidden: Any


def reset_where_done(hidden, dones: Bool[Array, " E"], fresh_hidden):
    """h ← h0 where done, else h: the reset after an episode ends, for every leaf of a hidden-state pytree.

    h_{t+1}[e] = h0 if dones[e] else hidden[e] (leafwise; ``fresh_hidden`` broadcasts against
    each ``[E, ...]`` leaf).

    Args:
        hidden: pytree of ``[E, ...]`` leaves, h'_t after step t.
        dones: ``[E]`` bool, done_t = terminated_t ∨ truncated_t.
        fresh_hidden: h0, a pytree like ``hidden`` with ``[...]`` (one environment's) or
            ``[E, ...]`` leaves.

    Returns:
        A pytree like ``hidden``: the state step t+1 acts with.

    Gradients:
        Through ``hidden`` where not done and ``fresh_hidden`` where done.

    Example:
        >>> import jax.numpy as jnp
        >>> h = jnp.ones((2, 3))
        >>> pgkit.recurrent.reset_where_done(h, jnp.array([True, False]), jnp.zeros(3)).tolist()
        [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]

    Reference:
        Hausknecht, Stone, "Deep Recurrent Q-Learning for Partially Observable MDPs", 2015
        (hidden state zeroed at episode starts). https://arxiv.org/abs/1507.06527
    """
    dones = jnp.asarray(dones, jnp.bool_)

    def one(h, h0):
        mask = jnp.reshape(dones, dones.shape + (1,) * (h.ndim - dones.ndim))
        return jnp.where(mask, jnp.broadcast_to(h0, h.shape), h)

    return jax.tree.map(one, hidden, fresh_hidden)


def fresh_hidden_batch(fresh_hidden, num_envs: int):
    """h0 for ``num_envs`` environments: every leaf of ``fresh_hidden`` repeated along a new axis 0.

    H[e] = h0 for e = 0..E−1.

    Args:
        fresh_hidden: one environment's h0, a pytree (e.g. ``policy.initial_state()``).
        num_envs: E (static int).

    Returns:
        A pytree like ``fresh_hidden`` with ``[E, ...]`` leaves.

    Gradients:
        None (a constant).

    Example:
        >>> import jax.numpy as jnp
        >>> pgkit.recurrent.fresh_hidden_batch((jnp.zeros(3), jnp.zeros(3)), 4)[0].shape
        (4, 3)

    Reference:
        Hausknecht, Stone, "Deep Recurrent Q-Learning for Partially Observable MDPs", 2015.
        https://arxiv.org/abs/1507.06527
    """
    return jax.tree.map(lambda h: jnp.broadcast_to(h, (num_envs,) + jnp.shape(h)), fresh_hidden)


def recurrent_rollout(
    key: Array,
    env: VecEnv,
    env_state: VecEnvState,
    obs: Float[Array, "E obs_size"],
    hidden,
    act_fn: Callable,
    *,
    num_steps: int,
    gamma: float | Array,
    fresh_hidden,
    value_fn: Callable | None = None,
    training: bool = True,
):
    """Run a recurrent ``act_fn`` for ``num_steps`` steps, carrying its hidden state and resetting it after dones.

    For t = 0..T−1: (a_t, log π(a_t|o_≤t), V_t, h'_t) = act_fn(k_t, o_t, h_t); the env steps;
    h_{t+1} = h0 where done_t else h'_t (:func:`reset_where_done`). Keys, episode semantics and
    the Trajectory are those of :func:`pgkit.rollout.rollout` (the same ``(T, 2)`` split of
    ``key``: a memoryless ``act_fn`` gives the same Trajectory); ``next_values`` =
    ``value_fn(final_obs, h'_t)`` in one batched call over T·E rows after the scan.

    Args:
        key: PRNG key.
        env: a :class:`pgkit.envs.VecEnv` with E environments (static).
        env_state: its current state.
        obs: ``[E, obs_size]`` observations to act on.
        hidden: h_0, a pytree of ``[E, ...]`` leaves (``fresh_hidden_batch`` at the start of
            training, then the previous rollout's ``last_hidden``).
        act_fn: ``act_fn(key, obs [E, obs_size], hidden) -> (actions, log_probs [E], values [E],
            hidden')``.
        num_steps: T (static int).
        gamma: discount factor γ (traced).
        fresh_hidden: h0 of one environment (a pytree of ``[...]`` leaves), the reset value.
        value_fn: ``value_fn(obs [N, obs_size], hidden [N, ...]) -> [N]``; ``None`` gives zeros.
        training: static bool forwarded to ``env.step``.

    Returns:
        ``(env_state, last_obs [E, obs_size], last_hidden, batch)``: ``last_hidden`` = h_T (a
        pytree of ``[E, ...]`` leaves, reset where the last step was done) and a
        :class:`RecurrentBatch` ``[T, E, ...]``.

    Gradients:
        None intended (it collects data).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from pgkit import envs, nn, recurrent
        >>> env = envs.make("CartPole-v1[0,2]", num_envs=2)
        >>> state, obs = env.reset(jax.random.key(0))
        >>> actor = nn.recurrent_policy_for(env, cell_size=4, hidden_sizes=(4,), key=jax.random.key(1))
        >>> critic = nn.RecurrentNetwork(2, "scalar", cell_size=4, hidden_sizes=(4,), key=jax.random.key(2))
        >>> h0 = (actor.initial_state(), critic.initial_state())
        >>> act_fn = recurrent.recurrent_actor_critic_act_fn(actor, critic, discrete=True)
        >>> state, obs, h, batch = recurrent.recurrent_rollout(
        ...     jax.random.key(3), env, state, obs, recurrent.fresh_hidden_batch(h0, 2), act_fn,
        ...     num_steps=5, gamma=0.99, fresh_hidden=h0)
        >>> batch.trajectory.log_probs.shape, batch.initial_hidden[0].shape
        ((5, 2), (2, 4))

    Reference:
        Kapturowski et al., "Recurrent Experience Replay in Distributed Reinforcement Learning",
        ICLR 2019 (stored start states replayed). https://openreview.net/forum?id=r1lyTjAqYX
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    expected = (env.num_envs, env.observation_size)
    if tuple(obs.shape) != expected:
        raise ValueError(f"obs must have shape [num_envs, obs_size]={expected}, got {obs.shape}")
    for leaf in jax.tree.leaves(hidden):
        if leaf.shape[:1] != (env.num_envs,):
            raise ValueError(f"hidden must have leaves [num_envs, ...] with num_envs={env.num_envs}, got {leaf.shape}")

    keys = jax.random.split(key, (num_steps, 2))  # as pgkit.rollout.rollout splits them

    def body(carry, step_keys):
        state, current_obs, h = carry
        actions, log_probs, values, h_next = act_fn(step_keys[0], current_obs, h)
        state, step = env.step(step_keys[1], state, actions, training=training, gamma=gamma)
        h_reset = reset_where_done(h_next, step.terminated | step.truncated, fresh_hidden)
        return (state, step.obs, h_reset), (current_obs, actions, log_probs, values, step, h_next)

    (env_state, last_obs, last_hidden), (obs_t, actions, log_probs, values, steps, next_hidden) = jax.lax.scan(
        body, (env_state, obs, hidden), keys
    )
    T, E = num_steps, env.num_envs
    if value_fn is None:
        next_values = jnp.zeros((T, E), jnp.float32)
    else:
        flat_obs = jnp.reshape(steps.final_obs, (T * E, env.observation_size))
        flat_hidden = jax.tree.map(lambda h: jnp.reshape(h, (T * E,) + h.shape[2:]), next_hidden)
        next_values = jnp.reshape(value_fn(flat_obs, flat_hidden), (T, E))
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
    return env_state, last_obs, last_hidden, RecurrentBatch(trajectory, hidden, next_hidden)


def _replay_step(step_fn, fresh_hidden):
    def body(h, inputs):
        obs_t, done_t = inputs
        h_next, out = step_fn(h, obs_t)
        return reset_where_done(h_next, done_t, fresh_hidden), out

    return body


def replay(step_fn: Callable, obs, dones: Bool[Array, "T B"], initial_hidden, fresh_hidden):
    """Recompute a recurrent network's outputs over stored sequences from their initial hidden states.

    (h'_t, out_t) = step_fn(h_t, o_t), h_{t+1} = h0 where done_t else h'_t, from h_0 =
    ``initial_hidden``: the recursion :func:`recurrent_rollout` ran, so with the behaviour
    parameters the outputs are the rollout's. Scans over axis 0.

    Args:
        step_fn: ``step_fn(hidden, obs [B, ...]) -> (hidden', outputs)`` on a batch of B
            environments (e.g. ``jax.vmap(policy)``).
        obs: ``[T, B, obs_size]`` observations o_t, t = 0..T−1.
        dones: ``[T, B]`` bool, done_t.
        initial_hidden: h_0, a pytree of ``[B, ...]`` leaves (``RecurrentBatch.initial_hidden``,
            or the columns of a minibatch of environments).
        fresh_hidden: h0 of one environment, the reset value.

    Returns:
        The outputs stacked over time: a pytree of ``[T, B, ...]`` leaves.

    Gradients:
        Through ``step_fn``'s parameters (back through time, truncated at each reset) and
        ``initial_hidden``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> step = lambda h, o: (h + o, h + o)          # a running sum, reset after dones
        >>> obs = jnp.ones((4, 1))
        >>> dones = jnp.array([[False], [True], [False], [False]])
        >>> pgkit.recurrent.replay(step, obs, dones, jnp.zeros(1), jnp.zeros(())).ravel().tolist()
        [1.0, 2.0, 1.0, 2.0]

    Reference:
        Kapturowski et al., "Recurrent Experience Replay in Distributed Reinforcement Learning",
        ICLR 2019. https://openreview.net/forum?id=r1lyTjAqYX
    """
    if dones.shape != obs.shape[:2]:
        raise ValueError(f"dones must have shape [T, B]={obs.shape[:2]} of obs, got {dones.shape}")
    _, outputs = jax.lax.scan(_replay_step(step_fn, fresh_hidden), initial_hidden, (obs, dones))
    return outputs


def env_minibatch_indices(key: Array, num_envs: int, minibatches: int) -> Int[Array, "M N"]:
    """A random split of the E environments into M minibatches of whole sequences: ``[M, E/M]`` indices.

    rows = reshape(permutation(E), [M, E/M]); each row selects the columns of ``[T, E, ...]``
    arrays (and the rows of ``initial_hidden``) of one minibatch (:func:`take_envs`).

    Args:
        key: PRNG key of the permutation.
        num_envs: E (static int).
        minibatches: M (static int dividing E).

    Returns:
        ``[M, E/M]`` int32 environment indices.

    Gradients:
        None.

    Example:
        >>> import jax
        >>> sorted(pgkit.recurrent.env_minibatch_indices(jax.random.key(0), 4, 2).ravel().tolist())
        [0, 1, 2, 3]

    Reference:
        Schulman et al., "Proximal Policy Optimization Algorithms", 2017 (minibatch epochs).
        https://arxiv.org/abs/1707.06347
    """
    if not isinstance(minibatches, int) or minibatches < 1 or num_envs % minibatches:
        raise ValueError(f"minibatches must be a positive int dividing num_envs={num_envs}, got {minibatches!r}")
    return jax.random.permutation(key, num_envs).reshape(minibatches, num_envs // minibatches)


def take_envs(time_major, initial_hidden, indices: Int[Array, " N"]):
    """The sequences of the environments ``indices``: columns of ``[T, E, ...]`` leaves, rows of ``[E, ...]`` ones.

    out[t, n] = time_major[t, indices[n]], h0[n] = initial_hidden[indices[n]].

    Args:
        time_major: a pytree of ``[T, E, ...]`` leaves (a Trajectory, advantages, targets).
        initial_hidden: a pytree of ``[E, ...]`` leaves.
        indices: ``[N]`` int environment indices.

    Returns:
        ``(time_major [T, N, ...], initial_hidden [N, ...])``.

    Gradients:
        Through both (a gather).

    Example:
        >>> import jax.numpy as jnp
        >>> seq, h = pgkit.recurrent.take_envs(jnp.arange(6.0).reshape(3, 2), jnp.array([5.0, 7.0]), jnp.array([1]))
        >>> seq.ravel().tolist(), h.tolist()
        ([1.0, 3.0, 5.0], [7.0])

    Reference:
        Schulman et al., "Proximal Policy Optimization Algorithms", 2017.
        https://arxiv.org/abs/1707.06347
    """
    return (jax.tree.map(lambda x: x[:, indices], time_major), jax.tree.map(lambda h: h[indices], initial_hidden))


def recurrent_actor_critic_act_fn(actor: Callable, critic: Callable, *, discrete: bool):
    """The ``act_fn`` of :func:`recurrent_rollout` for a recurrent policy and a recurrent critic.

    With hidden = (h^π, h^V): (h^π', params) = vmap(actor)(h^π, o), a ~ π(·|params) (as
    :func:`pgkit.rollout.actor_critic_act_fn` draws: one key for the batch), (h^V', V) =
    vmap(critic)(h^V, o).

    Args:
        actor: ``actor(state, obs [obs_size]) -> (state', logits [A] or (mean, log_std))``
            (:class:`pgkit.nn.RecurrentPolicy`).
        critic: ``critic(state, obs [obs_size]) -> (state', V [])``
            (:class:`pgkit.nn.RecurrentNetwork` with a scalar head).
        discrete: static bool, which output the actor gives.

    Returns:
        ``act_fn(key, obs [E, obs_size], (h_actor, h_critic)) -> (actions [E, ...], log_probs [E],
        values [E], (h_actor', h_critic'))``.

    Gradients:
        None intended (it collects data).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from pgkit import envs, nn, recurrent
        >>> env = envs.make("CartPole-v1", num_envs=3)
        >>> actor = nn.recurrent_policy_for(env, cell_size=4, hidden_sizes=(4,), key=jax.random.key(0))
        >>> critic = nn.RecurrentNetwork(4, "scalar", cell_size=4, hidden_sizes=(4,), key=jax.random.key(1))
        >>> h = recurrent.fresh_hidden_batch((actor.initial_state(), critic.initial_state()), 3)
        >>> act_fn = recurrent.recurrent_actor_critic_act_fn(actor, critic, discrete=True)
        >>> actions, log_probs, values, h = act_fn(jax.random.key(2), jnp.ones((3, 4)), h)
        >>> actions.shape, values.shape, h[0].shape
        ((3,), (3,), (3, 4))

    Reference:
        Mnih et al., "Asynchronous Methods for Deep Reinforcement Learning", 2016 (an LSTM
        actor-critic). https://arxiv.org/abs/1602.01783
    """

    def act_fn(key, obs, hidden):
        actor_hidden, critic_hidden = hidden
        actor_hidden, params = jax.vmap(actor)(actor_hidden, obs)
        if discrete:
            actions, log_probs = categorical_sample_and_log_prob(params, key=key)
        else:
            actions, log_probs = policy_distribution(params, discrete=False).sample_and_log_prob(seed=key)
        critic_hidden, values = jax.vmap(critic)(critic_hidden, obs)
        return actions, log_probs, values, (actor_hidden, critic_hidden)

    return act_fn


def actor_critic_replay(actor: Callable, critic: Callable, obs, dones: Bool[Array, "T B"], initial_hidden,
                        fresh_hidden):
    """A recurrent actor's raw outputs and a recurrent critic's values over stored sequences.

    (params_t, V_t) from :func:`replay` of the pair (actor, critic) with hidden (h^π, h^V): the
    policy's outputs and values that :func:`recurrent_actor_critic_act_fn` produced in the
    rollout, recomputed under the current parameters.

    Args:
        actor, critic: as for :func:`recurrent_actor_critic_act_fn`.
        obs: ``[T, B, obs_size]``.
        dones: ``[T, B]`` bool.
        initial_hidden: ``(h^π_0, h^V_0)``, pytrees of ``[B, ...]`` leaves.
        fresh_hidden: ``(h^π0, h^V0)`` of one environment.

    Returns:
        ``(params, values)``: logits ``[T, B, A]`` or ``(mean, log_std)`` ``[T, B, A]`` each, and
        ``[T, B]`` values.

    Gradients:
        Through the networks' parameters.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from pgkit import envs, nn, recurrent
        >>> env = envs.make("CartPole-v1", num_envs=2)
        >>> actor = nn.recurrent_policy_for(env, cell_size=4, hidden_sizes=(4,), key=jax.random.key(0))
        >>> critic = nn.RecurrentNetwork(4, "scalar", cell_size=4, hidden_sizes=(4,), key=jax.random.key(1))
        >>> h0 = (actor.initial_state(), critic.initial_state())
        >>> logits, values = recurrent.actor_critic_replay(actor, critic, jnp.ones((5, 2, 4)),
        ...     jnp.zeros((5, 2), bool), recurrent.fresh_hidden_batch(h0, 2), h0)
        >>> logits.shape, values.shape
        ((5, 2, 2), (5, 2))

    Reference:
        Mnih et al., "Asynchronous Methods for Deep Reinforcement Learning", 2016.
        https://arxiv.org/abs/1602.01783
    """

    def step_fn(hidden, obs_t):
        actor_hidden, critic_hidden = hidden
        actor_hidden, params = jax.vmap(actor)(actor_hidden, obs_t)
        critic_hidden, values = jax.vmap(critic)(critic_hidden, obs_t)
        return (actor_hidden, critic_hidden), (params, values)

    return replay(step_fn, obs, dones, initial_hidden, fresh_hidden)
