"""Deep Deterministic Policy Gradient (DDPG).

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

Tested configurations, measured returns and tuning history: ``docs/recipes/ddpg.md``.
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
from pgkit.buffers import BufferState, ReplayBuffer, Transition
from pgkit.recipe import Recipe, hyperparameters, option

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
        "gaussian", "exploration noise added to the actor's action", choices=offpolicy.EXPLORATION
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
    offpolicy.check_config(config)
    env = offpolicy.make_env(config, env_name, discrete=False)
    steps_per_update = config.num_envs * config.num_steps
    num_updates = config.total_steps // steps_per_update
    gradient_steps = offpolicy.gradient_steps_per_update(config)
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
            actor_opt=optax.adam(hp.actor_lr).init(eqx.filter(actor, eqx.is_array)),
            critic_opt=optax.adam(hp.critic_lr).init(eqx.filter(critic, eqx.is_array)),
            buffer=buffers.transition_buffer(env, config.buffer_size),
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
        updates, critic_opt = optax.adam(hp.critic_lr).update(grads, critic_opt)
        critic = optax.apply_updates(networks.critic, updates)
        actor_loss, grads = jax.value_and_grad(actor_loss_fn)(networks.actor, critic, batch.obs)
        updates, actor_opt = optax.adam(hp.actor_lr).update(grads, actor_opt)
        actor = optax.apply_updates(networks.actor, updates)
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
            actions, noise = offpolicy.exploratory_actions(
                config.exploration, jax.vmap(actor)(obs), noise, key=noise_key, hp=hp
            )
            return jnp.where(started, actions, offpolicy.uniform_actions(random_key, env)), noise

        env_state, obs, noise, traj = offpolicy.collect(
            collect_key, env, state.env_state, state.obs, behaviour, state.noise,
            num_steps=config.num_steps, gamma=hp.gamma,
        )
        buffer = buffers.add_trajectory(state.buffer, traj)
        env_steps = state.env_steps + steps_per_update
        carry = (state.networks, state.targets, state.actor_opt, state.critic_opt)
        (networks, targets, actor_opt, critic_opt), stats = offpolicy.gated_scan(
            env_steps >= config.learning_starts,
            lambda c, k: gradient_step(c, k, buffer, hp),
            carry,
            learn_key,
            gradient_steps,
        )
        last_return, episodes = rollout.latest_episode_return(traj, state.last_return)
        stats.update(episode_return=last_return, episodes=episodes.astype(jnp.float32))
        new_state = State(
            networks, targets, actor_opt, critic_opt, buffer, env_state, obs, noise, key, env_steps, last_return
        )
        return new_state, stats

    def act(state: State, key, obs):
        """Greedy evaluation policy μ(s) (no exploration noise); obs ``[E, obs_size]``."""
        del key
        return jax.vmap(state.networks.actor)(obs)

    return Recipe(init, update, act, env, steps_per_update, num_updates)
