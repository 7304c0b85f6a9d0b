"""What the off-policy recipes (DDPG, TD3, SAC) share: their interaction loop, replay and checks.

One ``update`` of an off-policy recipe steps E environments K times with a behaviour policy
(:func:`uniform_actions` during the warm-up), stores the transitions (:func:`store`, into a
buffer from :func:`empty_buffer`), then takes G gradient steps on replayed minibatches, gated
by :func:`gated_scan` until ``learning_starts`` steps are stored::

    env = offpolicy.make_env(config, env_name, discrete=False)
    env_state, obs, noise, traj = offpolicy.collect(key, env, env_state, obs, behaviour, noise,
                                                    num_steps=config.num_steps, gamma=hp.gamma)
    buffer = offpolicy.store(buffer, traj)
    carry, stats = offpolicy.gated_scan(env_steps >= config.learning_starts, gradient_step,
                                        carry, key, offpolicy.gradient_steps_per_update(config))

The configuration functions read the options every off-policy ``Config`` has: ``num_envs``,
``num_steps``, ``updates_per_step``, ``learning_starts``, ``batch_size``, ``buffer_size`` and
``hidden_sizes``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from pgkit import envs, rollout
from pgkit.buffers import BufferState, ReplayBuffer, Transition
from pgkit.recipe import ConfigError

__all__ = [
    "check_config",
    "collect",
    "empty_buffer",
    "gated_scan",
    "gradient_steps_per_update",
    "make_env",
    "store",
    "uniform_actions",
]


def gradient_steps_per_update(config) -> int:
    """G = num_envs·num_steps·updates_per_step, which must be a positive integer."""
    steps = config.num_envs * config.num_steps
    count = steps * config.updates_per_step
    if count < 1 or abs(count - round(count)) > 1e-9:
        raise ConfigError(
            f"option 'updates_per_step' times num_envs*num_steps={steps} must be a positive integer "
            f"(gradient steps per update), got {config.updates_per_step}"
        )
    return int(round(count))


def check_config(config) -> None:
    """ConfigErrors for the options every off-policy recipe shares."""
    if not config.hidden_sizes or any(h < 1 for h in config.hidden_sizes):
        raise ConfigError(f"option 'hidden_sizes' must be positive widths, got {config.hidden_sizes}")
    steps = config.num_envs * config.num_steps
    if config.buffer_size < steps:
        raise ConfigError(
            f"option 'buffer_size' must hold one update's num_envs*num_steps={steps} transitions, "
            f"got {config.buffer_size}"
        )
    # A minibatch is drawn with replacement from the stored transitions: from fewer than
    # batch_size of them it repeats items. The first gradient step comes after the update in
    # which this seed's env_steps (all environments together) reach learning_starts, when at
    # least min(max(learning_starts, num_envs*num_steps), buffer_size) transitions are stored.
    # (Passing min_size=batch_size to ReplayBuffer.sample cannot enforce this: under vmap over
    # seeds the warm-up lax.cond runs its learning branch too, so the check would fire.)
    if config.buffer_size < config.batch_size:
        raise ConfigError(
            f"option 'buffer_size' must be >= batch_size={config.batch_size} (a minibatch is drawn "
            f"from the stored transitions), got {config.buffer_size}"
        )
    if max(config.learning_starts, steps) < config.batch_size:
        raise ConfigError(
            f"option 'learning_starts' must be >= batch_size={config.batch_size}, got "
            f"{config.learning_starts}: the first minibatch is drawn from the transitions stored by "
            f"then (learning_starts counts a seed's environment steps, all environments together; "
            f"one update stores num_envs*num_steps={steps})"
        )
    gradient_steps_per_update(config)


def make_env(config, env_name: str, *, discrete: bool | None):
    """The training VecEnv; ``discrete`` = required action-space kind (None accepts both)."""
    env = envs.make(env_name, num_envs=config.num_envs)
    if discrete is not None and env.discrete != discrete:
        kind = "discrete (Discrete)" if discrete else "continuous (Box)"
        raise ConfigError(f"environment {env_name!r} must have {kind} actions for this recipe")
    return env


def empty_buffer(env, capacity: int) -> BufferState:
    """A replay buffer for the transitions of ``env``."""
    if env.discrete:
        action = jnp.zeros((), jnp.int32)
    else:
        action = jnp.zeros((env.action_size,), jnp.float32)
    obs = jnp.zeros((env.observation_size,), jnp.float32)
    example = Transition(obs, action, jnp.float32(0.0), jnp.float32(0.0), obs)
    return ReplayBuffer.init(example, capacity)


def uniform_actions(key, env):
    """Uniformly random actions for every environment: U[−1, 1]^A or U{0, …, A−1}."""
    if env.discrete:
        return jax.random.randint(key, (env.num_envs,), 0, env.num_actions)
    return jax.random.uniform(key, (env.num_envs, env.action_size), minval=-1.0, maxval=1.0)


def collect(key, env, env_state, obs, behaviour: Callable, noise_state, *, num_steps: int, gamma):
    """K steps of every environment with ``behaviour``; a time-major Trajectory ``[K, E]``.

    ``behaviour(key, obs [E, obs_size], noise_state) -> (actions, noise_state)``; the noise
    state (any pytree with leading axis E, e.g. an Ornstein-Uhlenbeck process) restarts at 0
    where an episode ends. ``discounts = γ(1 − terminated)``, ``next_obs`` is the true final
    observation. Log-probs and values are zeros (an off-policy learner does not use them).
    """
    keys = jax.random.split(key, (num_steps, 2))

    def body(carry, step_keys):
        env_state, obs, noise_state = carry
        actions, noise_state = behaviour(step_keys[0], obs, noise_state)
        env_state, step = env.step(step_keys[1], env_state, actions)
        done = step.terminated | step.truncated
        noise_state = jax.tree.map(
            lambda n: jnp.where(jnp.reshape(done, done.shape + (1,) * (n.ndim - 1)), 0.0, n), noise_state
        )
        return (env_state, step.obs, noise_state), (obs, actions, step)

    (env_state, obs, noise_state), (obs_t, actions, steps) = jax.lax.scan(
        body, (env_state, obs, noise_state), keys
    )
    zeros = jnp.zeros(steps.reward.shape, jnp.float32)
    traj = rollout.Trajectory(
        obs=obs_t,
        actions=actions,
        rewards=steps.reward,
        discounts=jnp.asarray(gamma, jnp.float32) * (1.0 - steps.terminated.astype(jnp.float32)),
        dones=steps.terminated | steps.truncated,
        terminated=steps.terminated,
        truncated=steps.truncated,
        next_obs=steps.final_obs,
        log_probs=zeros,
        values=zeros,
        next_values=zeros,
        episode_returns=steps.episode_return,
        episode_lengths=steps.episode_length,
    )
    return env_state, obs, noise_state, traj


def store(buffer: BufferState, traj) -> BufferState:
    """Add the ``[K, E]`` transitions of a Trajectory to the buffer (K·E items)."""
    transitions = Transition(traj.obs, traj.actions, traj.rewards, traj.discounts, traj.next_obs)
    flat = jax.tree.map(lambda x: jnp.reshape(x, (-1, *x.shape[2:])), transitions)
    return ReplayBuffer.add(buffer, flat)


def gated_scan(learning, step_fn, carry, key, length: int):
    """``length`` gradient steps ``lax.scan(step_fn)`` when ``learning``, else nothing (zero stats).

    Returns the new carry and the per-step statistics averaged over the steps.
    """
    keys = jax.random.split(key, length)

    def learn(carry):
        carry, stats = jax.lax.scan(step_fn, carry, keys)
        return carry, jax.tree.map(jnp.mean, stats)

    def wait(carry):
        shapes = jax.eval_shape(learn, carry)[1]
        return carry, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    return jax.lax.cond(learning, learn, wait, carry)
