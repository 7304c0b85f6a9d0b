"""Soft Actor-Critic (SAC): maximum-entropy actor-critic with twin critics and automatic temperature.

Continuous actions (Haarnoja et al., 2018, "Soft Actor-Critic Algorithms and Applications",
https://arxiv.org/abs/1812.05905, Algorithm 1), one ``update``:

    for each of E environments, K steps (interleaved, networks fixed):
        a = tanh(μ(s) + σ(s)·ε)                                      pgkit.tanh_gaussian_sample_and_log_prob
        (uniform random actions while fewer than ``learning_starts`` steps have been taken)
        store (s, a, r, γ(1 − terminated), s') in the replay buffer  pgkit.buffers.ReplayBuffer
    then G = E·K·updates_per_step gradient steps (lax.scan), each on a fresh minibatch:
        a' ~ π(·|s'),  y = r + γ(1 − terminated)·(min_i Q'_i(s', a') − α log π(a'|s'))
                                                                      pgkit.soft_q_targets
        critics: minimise ½(Q₁(s, a) − y)² + ½(Q₂(s, a) − y)²        pgkit.q_loss (pgkit.nn.TwinQCritic)
        actor: ã = f(ε; s) reparameterised, minimise α log π(ã|s) − min_i Q_i(s, ã)
                                                                      pgkit.sac_actor_loss
        temperature: minimise −log α·(log π(ã|s) + H̄), H̄ = −scale·|A|   pgkit.sac_temperature_loss
        targets: φ' ← τφ + (1 − τ)φ' (critics only; SAC has no target actor)   pgkit.polyak_update

Discrete actions (Christodoulou, 2019, "Soft Actor-Critic for Discrete Action Settings",
https://arxiv.org/abs/1910.07207), selected automatically when the environment's action space
is Discrete: the critics output Q(s, ·) for every action (pgkit.nn.DiscreteTwinQCritic), the
actor is a categorical policy, and every expectation over actions is computed exactly:

        y = r + γ(1 − terminated)·Σ_a' π(a'|s')(min_i Q'_i(s', a') − α log π(a'|s'))
                                                                      pgkit.discrete_soft_q_targets
        actor: minimise Σ_a π(a|s)(α log π(a|s) − min_i Q_i(s, a))    pgkit.discrete_sac_actor_loss
        temperature: minimise log α·(H(π(·|s)) − H̄), H̄ = scale·log|A|  pgkit.discrete_sac_temperature_loss

The critics are updated first and the actor and temperature then use the updated critics, as
in the authors' implementation. Episode semantics, warm-up, the loop's shape (one environment
step and one gradient step per update by default) and the on-device replay are shared with
DDPG and TD3 (``pgkit.offpolicy``, ``pgkit.buffers``): truncation bootstraps from the true
final observation, termination does not.

Defaults: the RL-Zoo Pendulum-v1 setting (20,000 steps, Adam lr 1e-3 for actor, critics and
temperature, one gradient step per environment step) with γ = 0.98 (as for DDPG and TD3),
the paper's τ = 0.005, two hidden layers of 256 ReLU units and batch 256, α₀ = 1 tuned
towards H̄ = −|A|, and 1,000 uniformly random warm-up steps. Discrete actions default to
Christodoulou's H̄ = 0.98·log|A|, which keeps the policy near uniform for long; smaller
fractions learn faster (``docs/recipes/sac.md``).

Tested configurations, measured returns and tuning history: ``docs/recipes/sac.md``.
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
from pgkit.recipe import Recipe, hyperparameters, option

NAME = "sac"
DESCRIPTION = "Soft Actor-Critic: twin soft critics, tanh-Gaussian or categorical actor, automatic temperature"
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
    hidden_sizes: tuple[int, ...] = option((256, 256), "hidden layer widths of actor and critics")
    activation: str = option("relu", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))
    autotune: bool = option(True, "learn the temperature alpha (False: keep alpha = alpha_init)")


@hyperparameters
class HParams:
    actor_lr: float = option(1e-3, "Adam learning rate of the actor", positive=True)
    critic_lr: float = option(1e-3, "Adam learning rate of the twin critics", positive=True)
    alpha_lr: float = option(1e-3, "Adam learning rate of log alpha (autotune)", positive=True)
    gamma: float = option(0.98, "discount factor", low=0.0, high=1.0)
    tau: float = option(0.005, "Polyak weight of the online critics in the target update", low=0.0, high=1.0)
    alpha_init: float = option(1.0, "initial (or, without autotune, fixed) temperature alpha", positive=True)
    target_entropy_scale: float = option(
        1.0, "continuous actions: target entropy = -scale*|A| (the paper's default: 1)"
    )
    discrete_target_entropy_scale: float = option(
        0.98,
        "discrete actions: target entropy = scale*log|A|, a fraction of the uniform policy's "
        "(0.98 as in the paper; smaller values, e.g. 0.2, learn faster)",
        low=0.0,
        high=1.0,
    )


class State(NamedTuple):
    actor: Any  # π_θ: pgkit.nn.TanhGaussianPolicy (continuous) or pgkit.nn.CategoricalPolicy (discrete)
    critic: Any  # (Q_φ1, Q_φ2): pgkit.nn.TwinQCritic or pgkit.nn.DiscreteTwinQCritic
    target_critic: Any  # (Q_φ1', Q_φ2')
    log_alpha: jax.Array  # log α, scalar
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    buffer: BufferState
    env_state: Any
    obs: jax.Array  # [E, obs_size]
    key: jax.Array  # PRNGKey (uint32[2])
    env_steps: jax.Array  # environment steps taken by this seed (int32)
    last_return: jax.Array  # last known completed-episode return


def make(config: Config, env_name: str) -> Recipe:
    """Build SAC's pure ``init``/``update``/``act``; discrete SAC when the action space is Discrete."""
    offpolicy.check_config(config)
    env = offpolicy.make_env(config, env_name, discrete=None)
    discrete = env.discrete
    steps_per_update = config.num_envs * config.num_steps
    num_updates = config.total_steps // steps_per_update
    gradient_steps = offpolicy.gradient_steps_per_update(config)
    net = dict(hidden_sizes=config.hidden_sizes, activation=config.activation)

    def target_entropy(hp: HParams):
        if discrete:
            return pgkit.default_target_entropy(env.num_actions, discrete=True, scale=hp.discrete_target_entropy_scale)
        return hp.target_entropy_scale * pgkit.default_target_entropy(env.action_size)

    def init(key, hp: HParams) -> State:
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        if discrete:
            actor = nn.CategoricalPolicy(env.observation_size, env.num_actions, key=actor_key, **net)
            critic = nn.DiscreteTwinQCritic(env.observation_size, env.num_actions, key=critic_key, **net)
        else:
            actor = nn.TanhGaussianPolicy(env.observation_size, env.action_size, key=actor_key, **net)
            critic = nn.TwinQCritic(env.observation_size, env.action_size, key=critic_key, **net)
        log_alpha = jnp.log(jnp.asarray(hp.alpha_init, jnp.float32))
        env_state, obs = env.reset(env_key)
        return State(
            actor=actor,
            critic=critic,
            target_critic=critic,
            log_alpha=log_alpha,
            actor_opt=optax.adam(hp.actor_lr).init(eqx.filter(actor, eqx.is_array)),
            critic_opt=optax.adam(hp.critic_lr).init(eqx.filter(critic, eqx.is_array)),
            alpha_opt=optax.adam(hp.alpha_lr).init(eqx.filter(log_alpha, eqx.is_array)),
            buffer=buffers.transition_buffer(env, config.buffer_size),
            env_state=env_state,
            obs=obs,
            key=key,
            env_steps=jnp.int32(0),
            last_return=jnp.float32(0.0),
        )

    # -- continuous actions: reparameterised tanh-Gaussian samples

    def policy_sample(actor, obs, key):
        mean, log_std = jax.vmap(actor)(obs)
        return pgkit.tanh_gaussian_sample_and_log_prob(mean, log_std, key=key)

    def continuous_critic_loss(critic, target_critic, actor, alpha, batch, key):
        next_actions, next_log_probs = policy_sample(actor, batch.next_obs, key)
        next_q1, next_q2 = jax.vmap(target_critic)(batch.next_obs, next_actions)
        y = pgkit.soft_q_targets(batch.reward, batch.discount, next_q1, next_q2, next_log_probs, alpha=alpha)
        q1, q2 = jax.vmap(critic)(batch.obs, batch.action)
        return (pgkit.q_loss(q1, y) + pgkit.q_loss(q2, y)).mean(), q1.mean()

    def continuous_actor_loss(actor, critic, alpha, obs, key):
        actions, log_probs = policy_sample(actor, obs, key)
        q1, q2 = jax.vmap(critic)(obs, actions)
        loss = pgkit.sac_actor_loss(jnp.minimum(q1, q2), log_probs, alpha=alpha).mean()
        return loss, log_probs

    def continuous_temperature_loss(log_alpha, log_probs, hp):
        return pgkit.sac_temperature_loss(log_alpha, log_probs, target_entropy=target_entropy(hp)).mean()

    # -- discrete actions: exact expectations over the categorical policy

    def policy_probs(actor, obs):
        logits = jax.vmap(actor)(obs)
        return jax.nn.softmax(logits), jax.nn.log_softmax(logits)

    def discrete_critic_loss(critic, target_critic, actor, alpha, batch, key):
        del key
        next_probs, next_log_probs = policy_probs(actor, batch.next_obs)
        next_q1, next_q2 = jax.vmap(target_critic)(batch.next_obs)
        y = pgkit.discrete_soft_q_targets(
            batch.reward, batch.discount, next_probs, next_log_probs, next_q1, next_q2, alpha=alpha
        )
        q1, q2 = jax.vmap(critic)(batch.obs)
        actions = batch.action[:, None]
        q1 = jnp.take_along_axis(q1, actions, axis=-1)[:, 0]
        q2 = jnp.take_along_axis(q2, actions, axis=-1)[:, 0]
        return (pgkit.q_loss(q1, y) + pgkit.q_loss(q2, y)).mean(), q1.mean()

    def discrete_actor_loss(actor, critic, alpha, obs, key):
        del key
        probs, log_probs = policy_probs(actor, obs)
        q1, q2 = jax.vmap(critic)(obs)
        loss = pgkit.discrete_sac_actor_loss(probs, log_probs, jnp.minimum(q1, q2), alpha=alpha).mean()
        return loss, (probs, log_probs)

    def discrete_temperature_loss(log_alpha, policy, hp):
        probs, log_probs = policy
        return pgkit.discrete_sac_temperature_loss(
            log_alpha, probs, log_probs, target_entropy=target_entropy(hp)
        ).mean()

    if discrete:
        critic_loss_fn, actor_loss_fn, temperature_loss_fn = (
            discrete_critic_loss, discrete_actor_loss, discrete_temperature_loss,
        )
    else:
        critic_loss_fn, actor_loss_fn, temperature_loss_fn = (
            continuous_critic_loss, continuous_actor_loss, continuous_temperature_loss,
        )

    def gradient_step(carry, key, buffer: BufferState, hp: HParams):
        actor, critic, target_critic, log_alpha, actor_opt, critic_opt, alpha_opt = carry
        sample_key, critic_key, actor_key = jax.random.split(key, 3)
        batch = ReplayBuffer.sample(buffer, sample_key, config.batch_size)
        alpha = jnp.exp(log_alpha)
        (critic_loss, q_mean), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
            critic, target_critic, actor, alpha, batch, critic_key
        )
        updates, critic_opt = optax.adam(hp.critic_lr).update(grads, critic_opt)
        critic = optax.apply_updates(critic, updates)
        (actor_loss, policy), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
            actor, critic, alpha, batch.obs, actor_key
        )
        updates, actor_opt = optax.adam(hp.actor_lr).update(grads, actor_opt)
        actor = optax.apply_updates(actor, updates)
        if config.autotune:
            alpha_loss, grad = jax.value_and_grad(temperature_loss_fn)(log_alpha, policy, hp)
            updates, alpha_opt = optax.adam(hp.alpha_lr).update(grad, alpha_opt)
            log_alpha = optax.apply_updates(log_alpha, updates)
        else:
            alpha_loss = jnp.float32(0.0)
        target_critic = pgkit.polyak_update(critic, target_critic, tau=hp.tau)
        stats = {
            "critic_loss": critic_loss,
            "actor_loss": actor_loss,
            "alpha_loss": alpha_loss,
            "alpha": alpha,
            "q_mean": q_mean,
        }
        return (actor, critic, target_critic, log_alpha, actor_opt, critic_opt, alpha_opt), stats

    def update(state: State, hp: HParams):
        key, collect_key, learn_key = jax.random.split(state.key, 3)
        actor = state.actor
        started = state.env_steps >= config.learning_starts

        def behaviour(key, obs, noise):
            policy_key, random_key = jax.random.split(key)
            if discrete:
                actions = jax.random.categorical(policy_key, jax.vmap(actor)(obs)).astype(jnp.int32)
            else:
                actions = policy_sample(actor, obs, policy_key).action
            return jnp.where(started, actions, offpolicy.uniform_actions(random_key, env)), noise

        env_state, obs, _, traj = offpolicy.collect(
            collect_key, env, state.env_state, state.obs, behaviour, (),
            num_steps=config.num_steps, gamma=hp.gamma,
        )
        buffer = buffers.add_trajectory(state.buffer, traj)
        env_steps = state.env_steps + steps_per_update
        carry = (
            state.actor, state.critic, state.target_critic, state.log_alpha,
            state.actor_opt, state.critic_opt, state.alpha_opt,
        )
        carry, stats = offpolicy.gated_scan(
            env_steps >= config.learning_starts,
            lambda c, k: gradient_step(c, k, buffer, hp),
            carry,
            learn_key,
            gradient_steps,
        )
        actor, critic, target_critic, log_alpha, actor_opt, critic_opt, alpha_opt = carry
        stats["alpha"] = jnp.exp(log_alpha)  # the current temperature, also before learning starts
        last_return, episodes = rollout.latest_episode_return(traj, state.last_return)
        stats.update(episode_return=last_return, episodes=episodes.astype(jnp.float32))
        new_state = State(
            actor, critic, target_critic, log_alpha, actor_opt, critic_opt, alpha_opt, buffer,
            env_state, obs, key, env_steps, last_return,
        )
        return new_state, stats

    def act(state: State, key, obs):
        """Greedy evaluation policy: tanh of the mean (continuous) or the argmax (discrete)."""
        del key
        if discrete:
            return jnp.argmax(jax.vmap(state.actor)(obs), axis=-1)
        mean, _ = jax.vmap(state.actor)(obs)
        return pgkit.tanh_gaussian_mode(mean)

    return Recipe(init, update, act, env, steps_per_update, num_updates)
