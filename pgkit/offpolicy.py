"""The interaction loop, warm-up and checks the off-policy recipes (DDPG, TD3, SAC) share.

One ``update`` of an off-policy recipe steps E environments K times with a behaviour policy
(:func:`uniform_actions` during the warm-up), stores the transitions in a replay buffer
(:func:`pgkit.buffers.add_trajectory`, into one from :func:`pgkit.buffers.transition_buffer`),
then takes G gradient steps on replayed minibatches, switched off by :func:`gated_scan` until
``learning_starts`` environment steps have been taken::

    check_config(config)
    env = make_env(config, env_name, discrete=False)
    env_state, obs, noise, traj = collect(key, env, env_state, obs, behaviour, noise,
                                          num_steps=config.num_steps, gamma=hp.gamma)
    buffer = pgkit.buffers.add_trajectory(buffer, traj)
    carry, stats = gated_scan(env_steps >= config.learning_starts, gradient_step,
                              carry, key, gradient_steps_per_update(config))

The configuration functions read the options every off-policy ``Config`` has: ``num_envs``,
``num_steps``, ``updates_per_step``, ``learning_starts``, ``batch_size``, ``buffer_size`` and
``hidden_sizes``; they raise :class:`pgkit.recipe.ConfigError` naming the option at fault.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from pgkit import envs, rollout
from pgkit.actions import gaussian_exploration, ornstein_uhlenbeck_noise
from pgkit.recipe import ConfigError

__all__ = [
    "EXPLORATION",
    "check_config",
    "collect",
    "exploratory_actions",
    "gated_scan",
    "gradient_steps_per_update",
    "make_env",
    "uniform_actions",
]


def gradient_steps_per_update(config) -> int:
    """The gradient steps per update, G = num_envs·num_steps·updates_per_step.

    Args:
        config: an off-policy ``Config`` (uses ``num_envs``, ``num_steps``, ``updates_per_step``).

    Returns:
        G as a Python int (static: it is the length of the gradient-step scan).

    Raises:
        ConfigError: naming ``updates_per_step`` where G is not a positive integer.
    """
    steps = config.num_envs * config.num_steps
    count = steps * config.updates_per_step
    if count < 1 or abs(count - round(count)) > 1e-9:
        raise ConfigError(
            f"option 'updates_per_step' times num_envs*num_steps={steps} must be a positive integer "
            f"(gradient steps per update), got {config.updates_per_step}"
        )
    return int(round(count))


def check_config(config) -> None:
    """Check the options every off-policy recipe shares; a :class:`ConfigError` names the one at fault.

    ``hidden_sizes`` must be positive widths; ``buffer_size`` must hold one update's
    num_envs·num_steps transitions and at least ``batch_size``; the first minibatch must come
    from at least ``batch_size`` stored transitions (max(learning_starts, num_envs·num_steps) ≥
    batch_size); G = num_envs·num_steps·updates_per_step must be a positive integer
    (:func:`gradient_steps_per_update`).

    Args:
        config: an off-policy ``Config``.

    Raises:
        ConfigError: for the first option that fails.
    """
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
    """The training :class:`pgkit.envs.VecEnv` of ``config.num_envs`` copies of ``env_name``.

    Args:
        config: an off-policy ``Config`` (uses ``num_envs``).
        env_name: a name :func:`pgkit.envs.make` knows.
        discrete: the action space the recipe requires: True (Discrete), False (Box) or None
            (either).

    Returns:
        The VecEnv.

    Raises:
        ConfigError: where the environment's action space is not the required kind.
    """
    env = envs.make(env_name, num_envs=config.num_envs)
    if discrete is not None and env.discrete != discrete:
        kind = "discrete (Discrete)" if discrete else "continuous (Box)"
        raise ConfigError(f"environment {env_name!r} must have {kind} actions for this recipe")
    return env


def uniform_actions(key, env):
    """Uniformly random actions for every environment: U[−1, 1]^A or U{0, …, A−1}.

    The warm-up behaviour of the off-policy recipes (actions live in [−1, 1]; the environment
    rescales them to its Box bounds).

    Args:
        key: PRNG key.
        env: a :class:`pgkit.envs.VecEnv` (uses ``num_envs``, ``discrete`` and ``action_size``
            or ``num_actions``).

    Returns:
        float32 ``[E, action_size]`` for a Box action space, int32 ``[E]`` for a Discrete one.
    """
    if env.discrete:
        return jax.random.randint(key, (env.num_envs,), 0, env.num_actions)
    return jax.random.uniform(key, (env.num_envs, env.action_size), minval=-1.0, maxval=1.0)


EXPLORATION = ("gaussian", "ornstein_uhlenbeck")


def exploratory_actions(kind: str, greedy, noise_state, *, key, hp):
    """A deterministic actor's behaviour actions: ``greedy`` plus Gaussian or Ornstein-Uhlenbeck noise.

    - ``"gaussian"``: ``clip(μ(s) + σ ε, −1, 1)`` with σ = ``hp.exploration_noise``
      (:func:`pgkit.gaussian_exploration`); the noise state passes through unchanged.
    - ``"ornstein_uhlenbeck"``: ``n ← OU step(n)`` with θ, σ, dt = ``hp.ou_theta``,
      ``hp.ou_sigma``, ``hp.ou_dt`` (:func:`pgkit.ornstein_uhlenbeck_noise`), then
      ``clip(μ(s) + n, −1, 1)``: temporally correlated noise, which explores tasks where a
      push has to be held for many steps (MountainCarContinuous). :func:`collect` restarts the
      noise state at 0 where an episode ended.

    Args:
        kind: one of :data:`EXPLORATION` (static).
        greedy: μ(s), ``[E, action_size]`` in [−1, 1].
        noise_state: ``[E, action_size]`` OU state (any pytree for Gaussian noise, returned as is).
        key: PRNG key.
        hp: the recipe's hyperparameters (reads the fields named above).

    Returns:
        ``(actions [E, action_size], noise_state)``.
    """
    if kind == "gaussian":
        return gaussian_exploration(greedy, key=key, scale=hp.exploration_noise), noise_state
    if kind == "ornstein_uhlenbeck":
        noise_state = ornstein_uhlenbeck_noise(
            noise_state, key=key, theta=hp.ou_theta, sigma=hp.ou_sigma, dt=hp.ou_dt
        )
        return jnp.clip(greedy + noise_state, -1.0, 1.0), noise_state
    raise ConfigError(f"option 'exploration' must be one of {', '.join(EXPLORATION)}, got {kind!r}")


def collect(key, env, env_state, obs, behaviour: Callable, noise_state, *, num_steps: int, gamma):
    """K steps of every environment with ``behaviour``: a time-major Trajectory ``[K, E]``.

    At step t: ``a_t, n_t = behaviour(key_t, s_t, n_{t-1})``, the environments step with
    ``a_t``, and the noise state restarts at 0 in every environment whose episode ended
    (n_t ← 0 where done_t), so each episode's noise starts afresh (an Ornstein-Uhlenbeck
    process, say). The keys of step t are ``jax.random.split(key, (K, 2))[t]``: the first for
    ``behaviour``, the second for ``env.step``.

    Episode semantics: ``discounts = γ(1 − terminated)``, ``dones = terminated | truncated``,
    and ``next_obs`` is the true next observation (``EnvStep.final_obs``: the final observation,
    not the reset one, on a done step), so a truncated step bootstraps from it and a terminated
    one does not. ``log_probs``, ``values`` and ``next_values`` are zeros (an off-policy learner
    does not use them).

    Args:
        key: PRNG key.
        env: a :class:`pgkit.envs.VecEnv` of E environments.
        env_state: the environments' state.
        obs: ``[E, obs_size]`` current observations s_0.
        behaviour: ``behaviour(key, obs [E, obs_size], noise_state) -> (actions, noise_state)``;
            actions ``[E, action_size]`` in [−1, 1] (int32 ``[E]`` for discrete actions).
        noise_state: a pytree whose leaves have leading axis E (``()`` for none).
        num_steps: K (static int).
        gamma: γ, scalar (may be traced).

    Returns:
        ``(env_state, obs [E, obs_size], noise_state, trajectory)``: the state after the K steps
        (``obs`` is s_K, the reset observation where the last step ended an episode) and a
        :class:`pgkit.rollout.Trajectory` with leading axes ``[K, E]``.
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


def gated_scan(learning, step_fn, carry, key, length: int):
    """``length`` steps of ``jax.lax.scan(step_fn)`` where ``learning``, else the carry unchanged.

    The warm-up gate of an off-policy update: ``step_fn(carry, key) -> (carry, stats)`` runs
    with the keys ``jax.random.split(key, length)`` and the statistics are averaged over the
    steps; while not ``learning`` the carry comes back as it was and every statistic is 0
    (same shapes and dtypes). Under ``vmap`` with a batched ``learning`` the ``lax.cond``
    becomes a select: both branches run, and the gate chooses each member's result.

    Args:
        learning: bool scalar (may be traced).
        step_fn: one gradient step, ``(carry, key) -> (carry, stats pytree)``.
        carry: the optimisation state (networks, optimiser states, ...).
        key: PRNG key.
        length: number of steps (static int ≥ 1).

    Returns:
        ``(carry, stats)``: the new carry and the mean of each statistic over the steps (zeros
        where not learning).
    """
    keys = jax.random.split(key, length)

    def learn(carry):
        carry, stats = jax.lax.scan(step_fn, carry, keys)
        return carry, jax.tree.map(jnp.mean, stats)

    def wait(carry):
        shapes = jax.eval_shape(learn, carry)[1]
        return carry, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    return jax.lax.cond(learning, learn, wait, carry)
