"""Twin Delayed DDPG (TD3): twin critics, clipped double-Q, target-policy smoothing, delayed actor.

Algorithm (Fujimoto, van Hoof, Meger, 2018, "Addressing Function Approximation Error in
Actor-Critic Methods", https://arxiv.org/abs/1802.09477, Algorithm 1), one ``update``:

    for each of E environments, K steps (interleaved, networks fixed):
        a = clip(μ(s) + N(0, σ_explore), −1, 1)                     pgkit.gaussian_exploration
          (exploration='ornstein_uhlenbeck': a = clip(μ(s) + n, −1, 1),
           n an OU process restarted with each episode)               pgkit.ornstein_uhlenbeck_noise
        (uniform random actions while fewer than ``learning_starts`` steps have been taken)
        store (s, a, r, γ(1 − terminated), s') in the replay buffer  pgkit.buffers.ReplayBuffer
    then G = E·K·updates_per_step gradient steps, as G/d blocks of d = policy_delay:
        d times, on fresh minibatches:
            ã = clip(μ'(s') + clip(N(0, σ̃), −c, c), −1, 1)          pgkit.target_policy_smoothing
            y = r + γ(1 − terminated)·min(Q'₁(s', ã), Q'₂(s', ã))    pgkit.clipped_double_q_targets
            critics: minimise ½(Q₁(s, a) − y)² + ½(Q₂(s, a) − y)²    pgkit.q_loss (pgkit.nn.TwinQCritic)
        then once (delayed), on the last minibatch:
            actor: minimise −Q₁(s, μ(s)) (critics held fixed)        pgkit.dpg_loss
            targets: θ' ← τθ + (1 − τ)θ' for actor and critics       pgkit.polyak_update
              (target_update='periodic': θ' ← θ after every target_period
              of these blocks, DQN's hard copy)                        pgkit.periodic_update

The delay is built into the loop's shape rather than tested with a step counter: a counter
test inside ``vmap`` over seeds would compute the actor update on every step and discard it
(a batched ``lax.cond`` runs both branches), so ``G`` must be a multiple of ``policy_delay``
(a ConfigError says so otherwise). The defaults make one update two environment steps, two
critic steps and one actor step: the schedule of the paper's implementation, with actions
chosen by a policy at most one step stale. Episode semantics, warm-up and the on-device replay
are shared with DDPG and SAC (``pgkit.offpolicy``): truncation bootstraps from the true final
observation, termination does not.

Defaults: the RL-Zoo Pendulum-v1 setting (20,000 steps, Adam lr 1e-3, γ = 0.98, τ = 0.005,
exploration σ = 0.1, one critic step per environment step) with the paper's smoothing σ̃ = 0.2
clipped at c = 0.5, policy delay 2, the two hidden layers of 256 ReLU units and batch 256 of
the authors' implementation, and 1,000 uniformly random warm-up steps.

Tested configurations, measured returns and tuning history: ``docs/recipes/td3.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import pgkit
from pgkit import buffers, nn, offpolicy, rollout
from pgkit.buffers import BufferState, ReplayBuffer
from pgkit.recipe import ConfigError, Recipe, hyperparameters, option

NAME = "td3"
DESCRIPTION = "Twin Delayed DDPG: clipped double-Q, target-policy smoothing, delayed actor updates"
DEFAULT_ENV = "Pendulum-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(20_000, "environment steps per seed", positive=True)
    num_envs: int = option(1, "parallel environments per seed", positive=True)
    num_steps: int = option(2, "environment steps per environment per update", positive=True)
    updates_per_step: float = option(
        1.0, "critic gradient steps per environment step (num_envs*num_steps*updates_per_step per update)",
        positive=True,
    )
    policy_delay: int = option(2, "critic steps per actor and target update (must divide the critic steps)", positive=True)
    learning_starts: int = option(
        1_000, "uniformly random steps per seed (all environments) before learning starts; >= batch_size "
        "unless num_envs*num_steps >= batch_size", low=0
    )
    batch_size: int = option(256, "replay minibatch size", positive=True)
    buffer_size: int = option(1_000_000, "replay buffer capacity (transitions per seed)", positive=True)
    hidden_sizes: tuple[int, ...] = option((256, 256), "hidden layer widths of actor and critics")
    activation: str = option("relu", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))
    target_update: str = option(
        "polyak", "target networks: Polyak averaging with tau after every actor step, or a hard copy every "
        "target_period actor steps (DQN's periodic targets)", choices=("polyak", "periodic"),
    )
    target_period: int = option(250, "actor steps between hard target copies (target_update='periodic')", positive=True)
    exploration: str = option(
        "gaussian", "exploration noise added to the actor's action (pgkit.offpolicy.exploratory_actions)",
        choices=offpolicy.EXPLORATION,
    )


@hyperparameters
class HParams:
    actor_lr: float = option(1e-3, "Adam learning rate of the actor", positive=True)
    critic_lr: float = option(1e-3, "Adam learning rate of the twin critics", positive=True)
    gamma: float = option(0.98, "discount factor", low=0.0, high=1.0)
    tau: float = option(0.005, "Polyak weight of the online networks in the target update", low=0.0, high=1.0)
    exploration_noise: float = option(0.1, "std of the Gaussian exploration noise (actions in [-1, 1])", low=0.0)
    policy_noise: float = option(0.2, "std of the target-policy smoothing noise", low=0.0)
    noise_clip: float = option(0.5, "clip bound of the target-policy smoothing noise", low=0.0)
    ou_theta: float = option(0.15, "Ornstein-Uhlenbeck mean reversion rate (exploration='ornstein_uhlenbeck')", low=0.0)
    ou_sigma: float = option(0.2, "Ornstein-Uhlenbeck diffusion scale (exploration='ornstein_uhlenbeck')", low=0.0)
    ou_dt: float = option(1e-2, "Ornstein-Uhlenbeck time step (exploration='ornstein_uhlenbeck')", positive=True)


class Networks(NamedTuple):
    actor: Any  # μ_θ, pgkit.nn.DeterministicPolicy
    critic: Any  # (Q_φ1, Q_φ2), pgkit.nn.TwinQCritic


class State(NamedTuple):
    networks: Networks
    targets: Networks  # μ_θ', (Q_φ1', Q_φ2')
    actor_opt: Any
    critic_opt: Any
    buffer: BufferState
    env_state: Any
    obs: jax.Array  # [E, obs_size]
    key: jax.Array  # PRNGKey (uint32[2])
    env_steps: jax.Array  # environment steps taken by this seed (int32)
    last_return: jax.Array  # last known completed-episode return
    actor_steps: Any = None  # actor steps taken (int32) with target_update='periodic', else None
    noise: Any = None  # Ornstein-Uhlenbeck state [E, action_size] with exploration='ornstein_uhlenbeck', else None


def make(config: Config, env_name: str) -> Recipe:
    """Build TD3's pure ``init``/``update``/``act`` for ``env_name`` (continuous actions)."""
    offpolicy.check_config(config)
    env = offpolicy.make_env(config, env_name, discrete=False)
    steps_per_update = config.num_envs * config.num_steps
    num_updates = config.total_steps // steps_per_update
    critic_steps = offpolicy.gradient_steps_per_update(config)
    if critic_steps % config.policy_delay:
        raise ConfigError(
            f"option 'policy_delay' must divide the critic steps per update "
            f"num_envs*num_steps*updates_per_step={critic_steps}, got {config.policy_delay}"
        )
    net = dict(hidden_sizes=config.hidden_sizes, activation=config.activation)

    def init(key, hp: HParams) -> State:
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        actor = nn.DeterministicPolicy(env.observation_size, env.action_size, key=actor_key, **net)
        critic = nn.TwinQCritic(env.observation_size, env.action_size, key=critic_key, **net)
        networks = Networks(actor, critic)
        env_state, obs = env.reset(env_key)
        return State(
            networks=networks,
            targets=networks,
            actor_opt=optax.adam(hp.actor_lr).init(eqx.filter(actor, eqx.is_array)),
            critic_opt=optax.adam(hp.critic_lr).init(eqx.filter(critic, eqx.is_array)),
            buffer=buffers.transition_buffer(env, config.buffer_size),
            env_state=env_state,
            obs=obs,
            key=key,
            env_steps=jnp.int32(0),
            last_return=jnp.float32(0.0),
            actor_steps=jnp.int32(0) if config.target_update == "periodic" else None,
            noise=(
                jnp.zeros((env.num_envs, env.action_size), jnp.float32)
                if config.exploration == "ornstein_uhlenbeck" else None
            ),
        )

    def critic_loss_fn(critic, targets: Networks, batch, key, hp: HParams):
        next_actions = pgkit.target_policy_smoothing(
            jax.vmap(targets.actor)(batch.next_obs), key=key, noise_scale=hp.policy_noise, noise_clip=hp.noise_clip
        )
        next_q1, next_q2 = jax.vmap(targets.critic)(batch.next_obs, next_actions)
        y = pgkit.clipped_double_q_targets(batch.reward, batch.discount, next_q1, next_q2)
        q1, q2 = jax.vmap(critic)(batch.obs, batch.action)
        loss = pgkit.q_loss(q1, y) + pgkit.q_loss(q2, y)
        return loss.mean(), q1.mean()

    def actor_loss_fn(actor, critic, obs):
        q1 = jax.vmap(critic.q1)(obs, jax.vmap(actor)(obs))
        return pgkit.dpg_loss(q1).mean()

    def critic_step(carry, key, buffer: BufferState, hp: HParams):
        networks, targets, critic_opt = carry
        sample_key, smoothing_key = jax.random.split(key)
        batch = ReplayBuffer.sample(buffer, sample_key, config.batch_size)
        (loss, q_mean), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
            networks.critic, targets, batch, smoothing_key, hp
        )
        updates, critic_opt = optax.adam(hp.critic_lr).update(grads, critic_opt)
        critic = optax.apply_updates(networks.critic, updates)
        return (networks._replace(critic=critic), targets, critic_opt), (loss, q_mean, batch.obs)

    def delayed_step(carry, key, buffer: BufferState, hp: HParams):
        """policy_delay critic steps, then one actor step and one target update."""
        networks, targets, actor_opt, critic_opt, actor_steps = carry
        (networks, targets, critic_opt), (critic_loss, q_mean, obs) = jax.lax.scan(
            lambda c, k: critic_step(c, k, buffer, hp),
            (networks, targets, critic_opt),
            jax.random.split(key, config.policy_delay),
        )
        actor_loss, grads = jax.value_and_grad(actor_loss_fn)(networks.actor, networks.critic, obs[-1])
        updates, actor_opt = optax.adam(hp.actor_lr).update(grads, actor_opt)
        actor = optax.apply_updates(networks.actor, updates)
        networks = networks._replace(actor=actor)
        if config.target_update == "polyak":
            targets = pgkit.polyak_update(networks, targets, tau=hp.tau)
        else:  # counted from 1: the first copy after target_period actor steps
            actor_steps = actor_steps + 1
            targets = pgkit.periodic_update(networks, targets, step=actor_steps, period=config.target_period)
        stats = {"critic_loss": critic_loss.mean(), "actor_loss": actor_loss, "q_mean": q_mean.mean()}
        return (networks, targets, actor_opt, critic_opt, actor_steps), stats

    def update(state: State, hp: HParams):
        key, collect_key, learn_key = jax.random.split(state.key, 3)
        actor = state.networks.actor
        started = state.env_steps >= config.learning_starts

        def behaviour(key, obs, noise):
            noise_key, random_key = jax.random.split(key)
            actions, noise = offpolicy.exploratory_actions(
                config.exploration, jax.vmap(actor)(obs), noise, key=noise_key, hp=hp
            )
            return jnp.where(started, actions, offpolicy.uniform_actions(random_key, env)), noise

        env_state, obs, noise, traj = offpolicy.collect(
            collect_key, env, state.env_state, state.obs, behaviour, () if state.noise is None else state.noise,
            num_steps=config.num_steps, gamma=hp.gamma,
        )
        buffer = buffers.add_trajectory(state.buffer, traj)
        env_steps = state.env_steps + steps_per_update
        carry = (state.networks, state.targets, state.actor_opt, state.critic_opt, state.actor_steps)
        (networks, targets, actor_opt, critic_opt, actor_steps), stats = offpolicy.gated_scan(
            env_steps >= config.learning_starts,
            lambda c, k: delayed_step(c, k, buffer, hp),
            carry,
            learn_key,
            critic_steps // config.policy_delay,
        )
        last_return, episodes = rollout.latest_episode_return(traj, state.last_return)
        stats.update(episode_return=last_return, episodes=episodes.astype(jnp.float32))
        new_state = State(
            networks, targets, actor_opt, critic_opt, buffer, env_state, obs, key, env_steps, last_return, actor_steps,
            None if state.noise is None else noise,
        )
        return new_state, stats

    def act(state: State, key, obs):
        """Greedy evaluation policy μ(s) (no exploration noise); obs ``[E, obs_size]``."""
        del key
        return jax.vmap(state.networks.actor)(obs)

    return Recipe(init, update, act, env, steps_per_update, num_updates)
