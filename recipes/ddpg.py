"""Deep Deterministic Policy Gradient (DDPG), with the off-policy loop shared by TD3 and SAC.

Algorithm (Lillicrap et al., 2016, "Continuous control with deep reinforcement learning",
https://arxiv.org/abs/1509.02971, Algorithm 1), one ``update``:

    for each of E environments, K steps (interleaved with the networks fixed):
        a = clip(μ(s) + noise, −1, 1)       pgkit.gaussian_exploration | pgkit.ornstein_uhlenbeck_noise
        (uniform random actions while fewer than ``learning_starts`` steps have been taken)
        store (s, a, r, γ(1 − terminated), s') in the replay buffer    pgkit.buffers.ReplayBuffer
    then G = E·K·updates_per_step gradient steps (lax.scan), each on a fresh minibatch:
        y = r + γ(1 − terminated)·Q'(s', μ'(s'))                       pgkit.td_targets
        critic: minimise ½(Q(s, a) − y)²                               pgkit.q_loss
        actor:  minimise −Q(s, μ(s)) (critic held fixed)               pgkit.dpg_loss
        targets: θ' ← τθ + (1 − τ)θ'                                   pgkit.polyak_update

Episode semantics: a truncated step (Pendulum's 200-step time limit) bootstraps from the true
final observation s' (``EnvStep.final_obs``), a terminated one does not (its discount is 0).
Actions live in [−1, 1]; the environment wrapper rescales them to the Box bounds.

Loop shape and cost. With the defaults (E = 1, K = 1, updates_per_step = 1) one update is one
environment step and one gradient step, as in the paper's algorithm box; the driver scans
updates in chunks, so nothing leaves the device. The gradient steps of the first updates are
switched off by ``lax.cond`` until ``learning_starts`` steps are stored (under ``vmap`` over
seeds the cond becomes a select, so those updates cost as much as the others: a few percent
of a run). Larger E or K trade data freshness for fewer, larger device calls.

Defaults: the RL-Zoo Pendulum-v1 setting (20,000 steps, Adam lr 1e-3 for actor and critic,
γ = 0.98, τ = 0.005, Gaussian exploration σ = 0.1, one gradient step per environment step)
with the two hidden layers of 256 ReLU units and the batch of 256 of the authors' TD3 and SAC
implementations, and 1,000 uniformly random warm-up steps. Lillicrap et al.'s own choices
(Ornstein-Uhlenbeck noise θ = 0.15, σ = 0.2; actor lr 1e-4; τ = 0.001) are options.

Learning-test configuration (tests/test_recipe_ddpg.py, Pendulum-v1, 4 seeds, 20,000 steps):
the defaults with two hidden layers of 64 units, batch 64 and a 20,000-transition buffer.
Pendulum needs far less than the default capacity, and the smaller networks and minibatch cut
the cost of a gradient step about tenfold on a CPU while still learning reliably (final
returns about −150 to −180 for master seeds 0, 1, 2; threshold −300). With 10,000 steps the
same configuration sometimes ends a seed in a bad phase (−450), so the test keeps the full
20,000-step budget.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import pgkit
from pgkit import envs, nn, rollout
from pgkit.buffers import BufferState, ReplayBuffer
from pgkit.recipe import ConfigError, Recipe, hyperparameters, option

NAME = "ddpg"
DESCRIPTION = "Deep Deterministic Policy Gradient: deterministic actor, replay, target networks"
DEFAULT_ENV = "Pendulum-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(20_000, "environment steps per seed", positive=True)
    num_envs: int = option(1, "parallel environments per seed", positive=True)
    num_steps: int = option(1, "environment steps per environment per update", positive=True)
    updates_per_step: float = option(
        1.0, "gradient steps per environment step (num_envs*num_steps*updates_per_step per update)", positive=True
    )
    learning_starts: int = option(
        1_000, "uniformly random steps per seed (all environments) before learning starts; >= batch_size "
        "unless num_envs*num_steps >= batch_size", low=0
    )
    batch_size: int = option(256, "replay minibatch size", positive=True)
    buffer_size: int = option(1_000_000, "replay buffer capacity (transitions per seed)", positive=True)
    hidden_sizes: tuple[int, ...] = option((256, 256), "hidden layer widths of actor and critic")
    activation: str = option("relu", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))
    exploration: str = option(
        "gaussian", "exploration noise added to the actor's action", choices=("gaussian", "ornstein_uhlenbeck")
    )


@hyperparameters
class HParams:
    actor_lr: float = option(1e-3, "Adam learning rate of the actor", positive=True)
    critic_lr: float = option(1e-3, "Adam learning rate of the critic", positive=True)
    gamma: float = option(0.98, "discount factor", low=0.0, high=1.0)
    tau: float = option(0.005, "Polyak weight of the online networks in the target update", low=0.0, high=1.0)
    exploration_noise: float = option(0.1, "std of the Gaussian exploration noise (actions in [-1, 1])", low=0.0)
    ou_theta: float = option(0.15, "Ornstein-Uhlenbeck mean reversion rate", low=0.0)
    ou_sigma: float = option(0.2, "Ornstein-Uhlenbeck diffusion scale", low=0.0)
    ou_dt: float = option(1e-2, "Ornstein-Uhlenbeck time step", positive=True)


# ----------------------------------------------------------------------------- shared machinery
# (TD3 and SAC import these: the same interaction loop, replay and optimizer plumbing.)


class Transition(NamedTuple):
    """One stored transition (leaves gain a leading axis in the buffer and in minibatches)."""

    obs: jax.Array  # s, [obs_size]
    action: jax.Array  # a, [action_size] in [-1, 1] (int32 [] for discrete actions)
    reward: jax.Array  # r, []
    discount: jax.Array  # γ(1 − terminated), []
    next_obs: jax.Array  # s', the true next observation (pre-reset), [obs_size]


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


def check_common_config(config) -> None:
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


_ADAM = optax.scale_by_adam()


def adam_init(params):
    return _ADAM.init(eqx.filter(params, eqx.is_array))


def adam_step(params, opt_state, grads, lr):
    """One Adam step with a traced learning rate (kept out of the optax chain on purpose)."""
    updates, opt_state = _ADAM.update(grads, opt_state)
    return optax.apply_updates(params, jax.tree.map(lambda u: -lr * u, updates)), opt_state


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


def episode_metrics(traj, last_return):
    """``episode_return`` (last known where no episode ended here) and the episode count."""
    mean_return, episodes = rollout.completed_episode_statistics(traj)
    last_return = jnp.where(episodes > 0, mean_return, last_return)
    return last_return, {"episode_return": last_return, "episodes": episodes.astype(jnp.float32)}


# ----------------------------------------------------------------------------- DDPG


class Networks(NamedTuple):
    actor: Any  # μ_θ, pgkit.nn.DeterministicPolicy
    critic: Any  # Q_φ, pgkit.nn.QCritic


class State(NamedTuple):
    networks: Networks
    targets: Networks  # μ_θ', Q_φ'
    actor_opt: Any
    critic_opt: Any
    buffer: BufferState
    env_state: Any
    obs: jax.Array  # [E, obs_size]
    noise: jax.Array  # Ornstein-Uhlenbeck state [E, action_size] (zeros for Gaussian noise)
    key: jax.Array  # PRNGKey (uint32[2])
    env_steps: jax.Array  # environment steps taken by this seed (int32)
    last_return: jax.Array  # last known completed-episode return


def make(config: Config, env_name: str) -> Recipe:
    """Build DDPG's pure ``init``/``update``/``act`` for ``env_name`` (continuous actions)."""
    check_common_config(config)
    env = make_env(config, env_name, discrete=False)
    steps_per_update = config.num_envs * config.num_steps
    num_updates = config.total_steps // steps_per_update
    gradient_steps = gradient_steps_per_update(config)
    net = dict(hidden_sizes=config.hidden_sizes, activation=config.activation)

    def init(key, hp: HParams) -> State:
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        actor = nn.DeterministicPolicy(env.observation_size, env.action_size, key=actor_key, **net)
        critic = nn.QCritic(env.observation_size, env.action_size, key=critic_key, **net)
        networks = Networks(actor, critic)
        env_state, obs = env.reset(env_key)
        return State(
            networks=networks,
            targets=networks,
            actor_opt=adam_init(actor),
            critic_opt=adam_init(critic),
            buffer=empty_buffer(env, config.buffer_size),
            env_state=env_state,
            obs=obs,
            noise=jnp.zeros((env.num_envs, env.action_size), jnp.float32),
            key=key,
            env_steps=jnp.int32(0),
            last_return=jnp.float32(0.0),
        )

    def critic_loss_fn(critic, targets: Networks, batch: Transition):
        next_actions = jax.vmap(targets.actor)(batch.next_obs)
        next_q = jax.vmap(targets.critic)(batch.next_obs, next_actions)
        y = pgkit.td_targets(batch.reward, batch.discount, next_q)
        q = jax.vmap(critic)(batch.obs, batch.action)
        return pgkit.q_loss(q, y).mean(), q.mean()

    def actor_loss_fn(actor, critic, obs):
        q = jax.vmap(critic)(obs, jax.vmap(actor)(obs))
        return pgkit.dpg_loss(q).mean()

    def gradient_step(carry, key, buffer: BufferState, hp: HParams):
        networks, targets, actor_opt, critic_opt = carry
        batch = ReplayBuffer.sample(buffer, key, config.batch_size)
        (critic_loss, q_mean), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
            networks.critic, targets, batch
        )
        critic, critic_opt = adam_step(networks.critic, critic_opt, grads, hp.critic_lr)
        actor_loss, grads = jax.value_and_grad(actor_loss_fn)(networks.actor, critic, batch.obs)
        actor, actor_opt = adam_step(networks.actor, actor_opt, grads, hp.actor_lr)
        networks = Networks(actor, critic)
        targets = pgkit.polyak_update(networks, targets, tau=hp.tau)
        stats = {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_mean": q_mean}
        return (networks, targets, actor_opt, critic_opt), stats

    def update(state: State, hp: HParams):
        key, collect_key, learn_key = jax.random.split(state.key, 3)
        actor = state.networks.actor
        started = state.env_steps >= config.learning_starts

        def behaviour(key, obs, noise):
            noise_key, random_key = jax.random.split(key)
            greedy = jax.vmap(actor)(obs)
            if config.exploration == "gaussian":
                actions = pgkit.gaussian_exploration(greedy, key=noise_key, scale=hp.exploration_noise)
            else:
                noise = pgkit.ornstein_uhlenbeck_noise(
                    noise, key=noise_key, theta=hp.ou_theta, sigma=hp.ou_sigma, dt=hp.ou_dt
                )
                actions = jnp.clip(greedy + noise, -1.0, 1.0)
            return jnp.where(started, actions, uniform_actions(random_key, env)), noise

        env_state, obs, noise, traj = collect(
            collect_key, env, state.env_state, state.obs, behaviour, state.noise,
            num_steps=config.num_steps, gamma=hp.gamma,
        )
        buffer = store(state.buffer, traj)
        env_steps = state.env_steps + steps_per_update
        carry = (state.networks, state.targets, state.actor_opt, state.critic_opt)
        (networks, targets, actor_opt, critic_opt), stats = gated_scan(
            env_steps >= config.learning_starts,
            lambda c, k: gradient_step(c, k, buffer, hp),
            carry,
            learn_key,
            gradient_steps,
        )
        last_return, episode_stats = episode_metrics(traj, state.last_return)
        stats.update(episode_stats)
        new_state = State(
            networks, targets, actor_opt, critic_opt, buffer, env_state, obs, noise, key, env_steps, last_return
        )
        return new_state, stats

    def act(state: State, key, obs):
        """Greedy evaluation policy μ(s) (no exploration noise); obs ``[E, obs_size]``."""
        del key
        return jax.vmap(state.networks.actor)(obs)

    return Recipe(init, update, act, env, steps_per_update, num_updates)
