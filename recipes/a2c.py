"""Synchronous advantage actor-critic (A2C): many environments, short n-step rollouts.

Algorithm (Mnih et al., 2016, "Asynchronous Methods for Deep Reinforcement Learning", ICML,
https://arxiv.org/abs/1602.01783, Algorithm S3, run synchronously: the E environments play
the role of A3C's actor-learners and their gradients are averaged in one step; lecture notes 002
"Advantage Actor Critic", "A3C"), one ``update``:

    collect t_max = num_steps steps from each of E environments with π_θ     pgkit.rollout.rollout
    targets R_t: the n-step return bootstrapped from V(s_{t_max}) (A3C's forward view,
        R = r_t + γR cut at episode ends, each step using the longest return inside the rollout)
        or the GAE(λ) λ-return                                  pgkit.n_step_returns | pgkit.gae
    advantages A_t = R_t − V(s_t)
    L = mean_t,e[−log π_θ(a_t|s_t) A_t] + c_v · mean[½(V(s_t) − R_t)²] − c_e · mean[H(π_θ(·|s_t))]
                                  pgkit.score_function_loss, pgkit.value_loss, distrax entropy
    clip the gradient's global norm, one RMSProp (or Adam) step, learning rate optionally
    annealed linearly to 0

Truncated steps bootstrap from V of the final observation, terminated ones do not (CONTRIBUTING,
convention 2). Actor and critic are separate networks or share a torso (``shared=True``: one MLP
torso with a policy head, gain 0.01, and a value head, gain 1; the value loss then shapes the
torso's features too, so ``vf_coef`` matters).

Defaults (the configuration of the learning test, CartPole-v1): 32 environments x 8 steps (256
steps per update), separate 64x64 tanh networks, n-step returns, RMSProp (decay 0.99, eps 1e-5)
at lr 6e-3 annealed linearly to 0, γ = 0.99, entropy 0, value coefficient 0.5, gradient-norm clip
0.5, 250k steps per seed (976 updates).

Tested configurations, measured returns and tuning history: ``docs/recipes/a2c.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import pgkit
from pgkit import envs, nn, recurrent, rollout
from pgkit.recipe import DATA_AXIS, ConfigError, Recipe, hyperparameters, option, shard_key, shard_mean

NAME = "a2c"
DESCRIPTION = "Synchronous advantage actor-critic: n-step or GAE advantages, shared or separate networks, RMSProp/Adam"
DEFAULT_ENV = "CartPole-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(250_000, "environment steps per seed", positive=True)
    num_envs: int = option(32, "parallel environments per seed", positive=True)
    num_steps: int = option(8, "rollout length t_max per environment per update", positive=True)
    advantages: str = option("n_step", "advantage estimator", choices=("n_step", "gae"))
    shared: bool = option(False, "actor and critic share one MLP torso")
    optimizer: str = option("rmsprop", "optimiser", choices=("rmsprop", "adam"))
    hidden_sizes: tuple[int, ...] = option((64, 64), "hidden layer widths (of the torso, when shared)")
    activation: str = option("tanh", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))
    anneal_lr: bool = option(True, "anneal the learning rate linearly to 0")
    normalize_advantages: bool = option(False, "normalise advantages within each batch")
    normalize_observations: bool = option(False, "running mean/variance observation normalisation")
    log_std_init: float = option(0.0, "initial log-std of the Gaussian policy (continuous actions)")
    policy: str = option(
        "mlp", "memoryless MLP actor and critic, or recurrent ones (a GRU or LSTM cell each, separate networks; "
        "the hidden states are carried across updates and the loss replays each rollout from its initial state)",
        choices=("mlp", "gru", "lstm"),
    )
    cell_size: int = option(64, "units of the recurrent cell (policy=gru|lstm)", positive=True)
    data_shards: int = option(
        1, "split each seed's environments into this many shards, one per device where there are enough, "
        "gradients and statistics averaged over them (data-parallel; docs/distributed.md)", positive=True,
    )


@hyperparameters
class HParams:
    lr: float = option(6e-3, "learning rate (initial, if annealed)", positive=True)
    gamma: float = option(0.99, "discount factor", low=0.0, high=1.0)
    gae_lambda: float = option(0.95, "GAE lambda (advantages='gae')", low=0.0, high=1.0)
    ent_coef: float = option(0.0, "entropy bonus coefficient", low=0.0)
    vf_coef: float = option(0.5, "value loss coefficient", low=0.0)
    max_grad_norm: float = option(0.5, "global gradient-norm clip", positive=True)
    rms_decay: float = option(0.99, "RMSProp decay of the squared-gradient average", low=0.0, high=1.0)
    eps: float = option(1e-5, "RMSProp / Adam epsilon", positive=True)


class SeparateActorCritic(eqx.Module):
    """Actor π_θ and critic V_w as two networks (no shared parameters)."""

    actor: Any
    critic: nn.ValueCritic

    def __call__(self, obs):
        return self.actor(obs)

    def distribution(self, obs):
        return self.actor.distribution(obs)

    def value(self, obs):
        return self.critic(obs)


class SharedActorCritic(eqx.Module):
    """One MLP torso φ(s) with a policy head (logits or Gaussian mean) and a scalar value head.

    ``__call__(obs)`` gives the policy parameters (logits ``[A]`` or ``(mean, log_std)``),
    ``distribution(obs)`` the distrax distribution, ``value(obs)`` V(s) ``[]``.
    """

    torso: nn.MLP
    policy_head: nn.Linear
    value_head: nn.Linear
    log_std: Any  # [action_size] for continuous actions, None for discrete
    activation: str = eqx.field(static=True)

    def __init__(self, obs_size, num_outputs, *, hidden_sizes, activation, log_std=None, key):
        torso_key, policy_key, value_key = jax.random.split(key, 3)
        *inner, width = hidden_sizes
        self.torso = nn.MLP(obs_size, width, hidden_sizes=tuple(inner), activation=activation,
                            final_gain=nn.HIDDEN_GAIN, key=torso_key)
        self.policy_head = nn.orthogonal_linear(width, num_outputs, gain=nn.POLICY_GAIN, key=policy_key)
        self.value_head = nn.orthogonal_linear(width, "scalar", gain=nn.VALUE_GAIN, key=value_key)
        self.log_std = log_std
        self.activation = activation

    def features(self, obs):
        return nn.ACTIVATIONS[self.activation](self.torso(obs))

    def __call__(self, obs):
        out = self.policy_head(self.features(obs))
        if self.log_std is None:
            return out
        return out, jnp.broadcast_to(self.log_std, out.shape)

    def distribution(self, obs):
        out = self(obs)
        if self.log_std is None:
            return distrax.Categorical(logits=out)
        mean, log_std = out
        return distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))

    def value(self, obs):
        return self.value_head(self.features(obs))


class State(NamedTuple):
    model: Any  # SeparateActorCritic | SharedActorCritic
    opt_state: Any
    env_state: Any
    obs: jax.Array  # [E, obs_size]
    key: jax.Array  # PRNGKey (uint32[2])
    step: jax.Array  # optimizer steps taken (int32)
    last_return: jax.Array  # last known completed-episode return
    hidden: Any = None  # policy=gru|lstm: (actor, critic) hidden states [E, ...] the next rollout starts from


def make(config: Config, env_name: str) -> Recipe:
    """Build A2C's pure ``init``/``update``/``act`` for ``env_name``."""
    if any(h < 1 for h in config.hidden_sizes) or not config.hidden_sizes:
        raise ConfigError(f"option 'hidden_sizes' must be positive widths, got {config.hidden_sizes}")
    if config.normalize_advantages and config.num_envs * config.num_steps < 2:
        raise ConfigError("option 'normalize_advantages' needs num_envs*num_steps >= 2")
    is_recurrent = config.policy != "mlp"
    if is_recurrent and config.shared:
        raise ConfigError(f"option 'shared' must be False for policy={config.policy!r} (separate recurrent actor and critic)")
    shards = config.data_shards
    if shards > 1 and config.num_envs % shards:
        raise ConfigError(f"option 'data_shards': {shards} must divide num_envs={config.num_envs}")
    if shards > 1 and (is_recurrent or config.normalize_observations):
        raise ConfigError(
            f"option 'data_shards': {shards} shards need policy='mlp' and normalize_observations=false (not yet shared)"
        )
    env = envs.make(env_name, num_envs=config.num_envs // shards, normalize_observations=config.normalize_observations)
    batch_size = config.num_envs * config.num_steps
    shard_batch = batch_size // shards  # what one shard holds
    num_updates = config.total_steps // batch_size

    def optimizer(hp: HParams):
        """Clip the gradient's global norm, then RMSProp or Adam at ``hp.lr`` (annealed linearly to 0).

        Built from the traced ``hp`` inside ``init``/``update`` (a new learning rate does not
        recompile); the annealing schedule counts updates in the optimiser state.
        """
        lr = optax.linear_schedule(hp.lr, 0.0, max(num_updates, 1)) if config.anneal_lr else hp.lr
        if config.optimizer == "rmsprop":
            step = optax.rmsprop(lr, decay=hp.rms_decay, eps=hp.eps)
        else:
            step = optax.adam(lr, eps=hp.eps)
        return optax.flatten(optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), step))  # one vector, few kernels

    def init(key, hp: HParams) -> State:
        key, model_key, env_key = jax.random.split(key, 3)
        actor_key, critic_key = jax.random.split(model_key)
        net = dict(hidden_sizes=config.hidden_sizes, activation=config.activation)
        hidden = None
        if is_recurrent:
            cell = dict(cell=config.policy, cell_size=config.cell_size, **net)
            actor = nn.recurrent_policy_for(env, log_std_init=config.log_std_init, key=actor_key, **cell)
            critic = nn.RecurrentNetwork(env.observation_size, "scalar", final_gain=nn.VALUE_GAIN, key=critic_key, **cell)
            model = SeparateActorCritic(actor, critic)
            hidden = recurrent.fresh_hidden_batch(fresh_hidden(model), config.num_envs)
        elif config.shared:
            if env.discrete:
                model = SharedActorCritic(env.observation_size, env.num_actions, key=model_key, **net)
            else:
                log_std = jnp.full((env.action_size,), config.log_std_init, jnp.float32)
                model = SharedActorCritic(env.observation_size, env.action_size, log_std=log_std, key=model_key, **net)
        else:
            actor = nn.policy_for(env, log_std_init=config.log_std_init, key=actor_key, **net)
            model = SeparateActorCritic(actor, nn.ValueCritic(env.observation_size, key=critic_key, **net))
        env_state, obs = env.reset(shard_key(env_key, shards))
        opt_state = optimizer(hp).init(eqx.filter(model, eqx.is_array))
        return State(model, opt_state, env_state, obs, key, jnp.int32(0), jnp.float32(0.0), hidden)

    def fresh_hidden(model):
        """h0 of one environment: the (actor, critic) states of a fresh episode."""
        return (model.actor.initial_state(), model.critic.initial_state())

    def log_prob_and_entropy(model, obs, action):
        # one example at a time: distributions are never batched across a vmap boundary
        dist = model.distribution(obs)
        return dist.log_prob(action), dist.entropy()

    def loss_fn(model, traj, advantages, targets, hp: HParams, initial_hidden=None):
        obs = traj.obs.reshape((shard_batch, -1))
        actions = traj.actions.reshape((shard_batch,) + traj.actions.shape[2:])
        if is_recurrent:  # replay the rollout from its initial hidden states, then every step as for the MLP
            params, values = recurrent.actor_critic_replay(
                model.actor, model.critic, traj.obs, traj.dones, initial_hidden, fresh_hidden(model)
            )
            params, values = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]), (params, values))
            dist = nn.policy_distribution(params, discrete=env.discrete)
            log_probs, entropy = dist.log_prob(actions), dist.entropy()
        else:
            log_probs, entropy = jax.vmap(log_prob_and_entropy, in_axes=(None, 0, 0))(model, obs, actions)
            values = jax.vmap(model.value)(obs)
        advantages = advantages.reshape(shard_batch)
        if config.normalize_advantages:  # over the whole batch, all its shards together
            advantages = pgkit.normalized_advantages(advantages, axis_name=DATA_AXIS if shards > 1 else None)
        policy_loss = pgkit.score_function_loss(log_probs, advantages)
        value_loss = pgkit.value_loss(values, targets.reshape(shard_batch))
        loss = policy_loss.mean() + hp.vf_coef * value_loss.mean() - hp.ent_coef * entropy.mean()
        return loss, {"policy_loss": policy_loss.mean(), "value_loss": value_loss.mean(), "entropy": entropy.mean()}

    def update(state: State, hp: HParams):
        key, rollout_key = jax.random.split(state.key)
        model = state.model

        hidden = initial_hidden = None
        if is_recurrent:
            env_state, obs, hidden, batch = recurrent.recurrent_rollout(
                rollout_key, env, state.env_state, state.obs, state.hidden,
                recurrent.recurrent_actor_critic_act_fn(model.actor, model.critic, discrete=env.discrete),
                num_steps=config.num_steps, gamma=hp.gamma, fresh_hidden=fresh_hidden(model),
                value_fn=lambda o, h: jax.vmap(model.critic)(h[1], o)[1],
            )
            traj, initial_hidden = batch.trajectory, batch.initial_hidden
        else:
            act_fn = rollout.actor_critic_act_fn(model, model.value, discrete=env.discrete, per_env_keys=True)
            env_state, obs, traj = rollout.rollout(
                shard_key(rollout_key, shards), env, state.env_state, state.obs, act_fn,
                num_steps=config.num_steps, gamma=hp.gamma, value_fn=jax.vmap(model.value),
            )
        if config.advantages == "n_step":
            targets = pgkit.n_step_returns(
                traj.rewards, traj.discounts, traj.dones, traj.next_values, n=config.num_steps
            )
            advantages = targets - traj.values
        else:
            advantages, targets = pgkit.gae(
                traj.rewards, traj.discounts, traj.dones, traj.values, traj.next_values, lambda_=hp.gae_lambda
            )
        grads, stats = jax.grad(loss_fn, has_aux=True)(model, traj, advantages, targets, hp, initial_hidden)
        grads, stats = shard_mean((grads, stats), shards)  # every shard takes the same step
        updates, opt_state = optimizer(hp).update(grads, state.opt_state)
        model = optax.apply_updates(model, updates)
        last_return, episodes = rollout.latest_episode_return(traj, state.last_return)
        last_return = shard_mean(last_return, shards)
        stats["episode_return"] = last_return
        stats["episodes"] = shard_mean(episodes.astype(jnp.float32), shards) * shards
        stats["advantage"] = shard_mean(advantages.mean(), shards)
        new_state = State(model, opt_state, env_state, obs, key, state.step + 1, last_return, hidden)
        return new_state, stats

    def act(state: State, key, obs):
        """Greedy evaluation policy: argmax (discrete) or the mean (continuous); obs as the env gives them."""
        del key
        if is_recurrent:  # the protocol's act(state, key, obs) carries no hidden state between calls
            raise ConfigError(
                f"policy={config.policy!r}: greedy evaluation needs a hidden state carried between steps, which "
                "the recipe protocol's act(state, key, obs) does not have yet; the training metrics hold the returns"
            )
        return nn.greedy_action(jax.vmap(state.model)(obs), discrete=env.discrete)

    return Recipe(init, update, act, env, batch_size, num_updates, shards)
