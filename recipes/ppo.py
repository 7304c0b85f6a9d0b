"""Proximal Policy Optimization (clipped surrogate or adaptive KL penalty), discrete or continuous.

Algorithm (Schulman et al., 2017, "Proximal Policy Optimization Algorithms",
https://arxiv.org/abs/1707.06347), one ``update``:

    collect T steps from E environments with π_old,
    advantages, value targets by GAE(γ, λ)          pgkit.rollout.gae_rollout (rollout, pgkit.gae)
    for each of K epochs, for each of M minibatches:
        normalise advantages within the minibatch (optional)
        L = E[clip or KL-penalty surrogate] + c_v·value loss − c_e·entropy
            pgkit.ppo_clip_loss | pgkit.kl_penalty_loss, pgkit.clipped_value_loss | pgkit.value_loss
        clip the gradient's global norm, Adam step with a linearly annealed learning rate
    adaptive-KL variant: β ← adaptive_kl_coefficient(β, KL(π_old‖π), target_kl)
    KL early stopping (kl_stop = k1 | k2 | k3, off by default): before each minibatch step,
        estimate KL(π_old‖π) on the minibatch from the log-ratios     pgkit.kl_k1 | kl_k2 | kl_k3
        (samples from π_old); once it exceeds 1.5·target_kl, that step and the rest of the
        update's epochs are skipped (Stable-Baselines3's rule; OpenAI Spinning Up's PPO stops
        its policy iterations the same way)

Default configuration (the standard CartPole setting of the PPO implementation-details study,
Huang et al., 2022, https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/):
4 envs x 128 steps, 4 epochs, 4 minibatches, lr 2.5e-4 annealed, γ 0.99, λ 0.95, clip 0.2,
entropy 0.01, value 0.5, grad-norm 0.5, separate 64x64 tanh actor and critic, orthogonal init.

On Pendulum-v1 the preset (``pgkit list ppo``; applied with ``--env Pendulum-v1``) trains
8 envs x 256 steps, 10 epochs x 16 minibatches, normalised observations and scaled rewards,
γ 0.9, lr 5e-4, no entropy bonus, 3e5 steps.

Tested configurations, measured returns and tuning history: ``docs/recipes/ppo.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import pgkit
from pgkit import envs, nn, recurrent, rollout
from pgkit.recipe import DATA_AXIS, ConfigError, Recipe, hyperparameters, option, shard_key, shard_mean

NAME = "ppo"
DESCRIPTION = "Proximal Policy Optimization: clipped or adaptive-KL surrogate, GAE, minibatch epochs"
DEFAULT_ENV = "CartPole-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(500_000, "environment steps per seed", positive=True)
    num_envs: int = option(4, "parallel environments per seed", positive=True)
    num_steps: int = option(128, "rollout length per environment per update", positive=True)
    epochs: int = option(4, "optimisation epochs over each rollout", positive=True)
    minibatches: int = option(4, "minibatches per epoch (must divide num_envs*num_steps)", positive=True)
    hidden_sizes: tuple[int, ...] = option((64, 64), "hidden layer widths of actor and critic")
    activation: str = option("tanh", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))
    objective: str = option("clip", "surrogate objective", choices=("clip", "adaptive_kl"))
    kl_stop: str = option(
        "none", "end an update's epochs at the first minibatch whose sample KL estimate of KL(π_old‖π) "
        "exceeds 1.5·target_kl (pgkit.kl_k1/k2/k3), its step not taken", choices=("none", "k1", "k2", "k3"),
    )
    clip_value: bool = option(True, "clip the value loss around the old values")
    normalize_advantages: bool = option(True, "normalise advantages within each minibatch")
    anneal_lr: bool = option(True, "anneal the learning rate linearly to 0")
    normalize_observations: bool = option(False, "running mean/variance observation normalisation")
    scale_rewards: bool = option(False, "divide rewards by the running std of the discounted return")
    log_std_init: float = option(0.0, "initial log-std of the Gaussian policy (continuous actions)")
    policy: str = option(
        "mlp", "memoryless MLP policy and critic, or recurrent ones (a GRU or LSTM cell each; minibatches "
        "split the environments into whole sequences replayed from their stored initial hidden state)",
        choices=("mlp", "gru", "lstm"),
    )
    cell_size: int = option(64, "units of the recurrent cell (policy=gru|lstm)", positive=True)
    torso: str = option(
        "auto", "network torso: MLP, convolutional (image observations), or auto (cnn where the observation "
        "is [H, W] or [H, W, C])", choices=("mlp", "cnn", "auto"),
    )
    data_shards: int = option(
        1, "split each seed's environments and minibatches into this many shards, one per device where there "
        "are enough, gradients and statistics averaged over them (data-parallel; docs/distributed.md)", positive=True,
    )


@hyperparameters
class HParams:
    lr: float = option(2.5e-4, "Adam learning rate (initial, if annealed)", positive=True)
    gamma: float = option(0.99, "discount factor", low=0.0, high=1.0)
    gae_lambda: float = option(0.95, "GAE lambda", low=0.0, high=1.0)
    clip_eps: float = option(0.2, "clip range of the probability ratio (and of the value)", positive=True)
    ent_coef: float = option(0.01, "entropy bonus coefficient", low=0.0)
    vf_coef: float = option(0.5, "value loss coefficient", low=0.0)
    max_grad_norm: float = option(0.5, "global gradient-norm clip", positive=True)
    target_kl: float = option(0.01, "target KL per update (adaptive_kl objective, kl_stop)", positive=True)
    kl_beta: float = option(1.0, "initial KL penalty coefficient (adaptive_kl; kept in [1e-6, 1e6] after each update)", low=0.0)


class Networks(NamedTuple):
    actor: Any
    critic: Any


class State(NamedTuple):
    networks: Networks
    opt_state: Any
    env_state: Any
    obs: jax.Array  # [E, obs_size]
    key: jax.Array  # PRNGKey (uint32[2])
    step: jax.Array  # optimizer steps taken (int32)
    beta: jax.Array  # KL penalty coefficient (adaptive_kl)
    last_return: jax.Array  # last known completed-episode return
    hidden: Any = None  # policy=gru|lstm: (actor, critic) hidden states [E, ...] the next rollout starts from


def make(config: Config, env_name: str) -> Recipe:
    """Build PPO's pure ``init``/``update``/``act`` for ``env_name``."""
    batch_size = config.num_envs * config.num_steps
    if batch_size % config.minibatches:
        raise ConfigError(
            f"option 'minibatches' must divide num_envs*num_steps={batch_size}, got {config.minibatches}"
        )
    if any(h < 1 for h in config.hidden_sizes) or not config.hidden_sizes:
        raise ConfigError(f"option 'hidden_sizes' must be positive widths, got {config.hidden_sizes}")
    shards = config.data_shards
    if shards > 1:
        _check_data_shards(config, batch_size)
    env = envs.make(
        env_name,
        num_envs=config.num_envs // shards,
        normalize_observations=config.normalize_observations,
        scale_rewards=config.scale_rewards,
    )
    is_recurrent = config.policy != "mlp"
    if is_recurrent and config.num_envs % config.minibatches:
        raise ConfigError(
            f"option 'minibatches' must divide num_envs={config.num_envs} for policy={config.policy!r} "
            f"(minibatches split the environments, not time), got {config.minibatches}"
        )
    try:
        torso = nn.torso_for(env.observation_shape, config.torso)
    except ValueError as error:
        raise ConfigError(f"option 'torso': {error}") from None
    image_shape = env.observation_shape if torso == "cnn" else None
    num_updates = config.total_steps // batch_size
    minibatch_size = batch_size // config.minibatches
    shard_batch, shard_minibatch = batch_size // shards, minibatch_size // shards  # what one shard holds
    total_opt_steps = max(num_updates * config.epochs * config.minibatches, 1)

    def optimizer(hp: HParams):
        """Clip the gradient's global norm, then Adam (eps 1e-5) at ``hp.lr``, annealed linearly to 0.

        Built from the traced ``hp`` inside ``init``/``update`` (a new learning rate does not
        recompile); the annealing schedule counts minibatch steps in the optimiser state.
        """
        lr = optax.linear_schedule(hp.lr, 0.0, total_opt_steps) if config.anneal_lr else hp.lr
        # optax.flatten runs the clip and Adam on one vector instead of once per parameter array
        # (a third fewer kernels in the minibatch step; docs/benchmarks.md)
        return optax.flatten(optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), optax.adam(lr, eps=1e-5)))

    def distribution(actor, obs):
        # raw parameters cross the vmap boundary; the distribution is built on the batch
        return nn.policy_distribution(jax.vmap(actor)(obs), discrete=env.discrete)

    def fresh_hidden(networks: Networks):
        """h0 of one environment: the (actor, critic) states of a fresh episode."""
        return (networks.actor.initial_state(), networks.critic.initial_state())

    def init(key, hp: HParams) -> State:
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        net = dict(hidden_sizes=config.hidden_sizes, activation=config.activation)
        hidden = None
        if is_recurrent:
            cell = dict(cell=config.policy, cell_size=config.cell_size, **net)
            actor = nn.recurrent_policy_for(env, log_std_init=config.log_std_init, torso=torso, key=actor_key, **cell)
            critic = nn.RecurrentNetwork(env.observation_size, "scalar", final_gain=nn.VALUE_GAIN,
                                         observation_shape=image_shape, key=critic_key, **cell)
            hidden = recurrent.fresh_hidden_batch(fresh_hidden(Networks(actor, critic)), config.num_envs)
        else:
            actor = nn.policy_for(env, log_std_init=config.log_std_init, torso=torso, key=actor_key, **net)
            critic = nn.ValueCritic(env.observation_size, key=critic_key, **net,
                                    **({} if image_shape is None else {"observation_shape": image_shape}))
        networks = Networks(actor, critic)
        env_state, obs = env.reset(shard_key(env_key, shards))
        opt_state = optimizer(hp).init(eqx.filter(networks, eqx.is_array))
        return State(
            networks, opt_state, env_state, obs, key, jnp.int32(0), jnp.asarray(hp.kl_beta, jnp.float32), jnp.float32(0.0),
            hidden,
        )

    def sequence_outputs(networks: Networks, traj, initial_hidden):
        """Policy parameters and values of sequences [T, B] replayed from their initial hidden states, flattened to [T·B]."""
        params, values = recurrent.actor_critic_replay(
            networks.actor, networks.critic, traj.obs, traj.dones, initial_hidden, fresh_hidden(networks)
        )
        return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), (params, values))

    def loss_fn(networks: Networks, batch, beta, hp: HParams):
        traj, advantages, targets, old_dist, *initial_hidden = batch
        if is_recurrent:  # sequences [T, B]: replay them, then the losses of every step as for the MLP
            params, values = sequence_outputs(networks, traj, initial_hidden[0])
            traj, advantages, targets = jax.tree.map(
                lambda x: x.reshape((-1,) + x.shape[2:]), (traj, advantages, targets)
            )
            dist = nn.policy_distribution(params, discrete=env.discrete)
        else:
            dist = distribution(networks.actor, traj.obs)
            values = jax.vmap(networks.critic)(traj.obs)
        log_probs = dist.log_prob(traj.actions)
        if config.normalize_advantages:  # over the whole minibatch, all its shards together
            advantages = pgkit.normalized_advantages(advantages, axis_name=DATA_AXIS if shards > 1 else None)
        if config.objective == "clip":
            policy_loss = pgkit.ppo_clip_loss(log_probs, traj.log_probs, advantages, clip_eps=hp.clip_eps)
        else:
            kls = old_dist.kl_divergence(dist)
            policy_loss = pgkit.kl_penalty_loss(log_probs, traj.log_probs, advantages, kls, beta=beta)
        if config.clip_value:
            value_loss = pgkit.clipped_value_loss(values, traj.values, targets, clip_eps=hp.clip_eps)
        else:
            value_loss = pgkit.value_loss(values, targets)
        entropy = dist.entropy()
        loss = policy_loss.mean() + hp.vf_coef * value_loss.mean() - hp.ent_coef * entropy.mean()
        stats = {
            "policy_loss": policy_loss.mean(),
            "value_loss": value_loss.mean(),
            "entropy": entropy.mean(),
            "approx_kl": pgkit.approx_kl(log_probs, traj.log_probs).mean(),
            "clip_fraction": pgkit.clip_fraction(log_probs, traj.log_probs, clip_eps=hp.clip_eps).mean(),
        }
        if config.kl_stop != "none":  # samples from π_old: log r = log π − log π_old estimates KL(π_old‖π)
            estimator = {"k1": pgkit.kl_k1, "k2": pgkit.kl_k2, "k3": pgkit.kl_k3}[config.kl_stop]
            stats["kl_estimate"] = estimator(jax.lax.stop_gradient(log_probs - traj.log_probs)).mean()
        return loss, stats

    def recurrent_update(state: State, hp: HParams):
        """The update of policy=gru|lstm: a rollout carrying the hidden states, minibatches of whole sequences."""
        key, rollout_key, perm_key = jax.random.split(state.key, 3)
        networks = state.networks
        actor, critic = networks
        h0 = fresh_hidden(networks)
        env_state, obs, hidden, batch = recurrent.recurrent_rollout(
            rollout_key, env, state.env_state, state.obs, state.hidden,
            recurrent.recurrent_actor_critic_act_fn(actor, critic, discrete=env.discrete),
            num_steps=config.num_steps, gamma=hp.gamma, fresh_hidden=h0,
            value_fn=lambda o, h: jax.vmap(critic)(h[1], o)[1],
        )
        traj = batch.trajectory
        estimates = pgkit.gae(traj.rewards, traj.discounts, traj.dones, traj.values, traj.next_values, lambda_=hp.gae_lambda)
        old_params = None
        if config.objective == "adaptive_kl":  # the behaviour policy's raw parameters [T, E, ...]
            old_params = recurrent.actor_critic_replay(actor, critic, traj.obs, traj.dones, batch.initial_hidden, h0)[0]
        sequences = (traj, estimates.advantages, estimates.targets, old_params)

        def minibatch(indices):
            (traj_mb, adv_mb, target_mb, old_mb), hidden_mb = recurrent.take_envs(sequences, batch.initial_hidden, indices)
            old_dist = None
            if old_mb is not None:
                old_flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), old_mb)
                old_dist = nn.policy_distribution(old_flat, discrete=env.discrete)
            return traj_mb, adv_mb, target_mb, old_dist, hidden_mb

        networks, opt_state, step, stats = optimise(
            state, hp, minibatch, lambda key: recurrent.env_minibatch_indices(key, config.num_envs, config.minibatches),
            perm_key,
        )
        kl_terms = None
        if config.objective == "adaptive_kl":
            new_params, _ = sequence_outputs(networks, traj, batch.initial_hidden)
            old_flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), old_params)
            kl_terms = (old_flat, nn.policy_distribution(new_params, discrete=env.discrete))
        beta, stats = finish_stats(state, hp, stats, traj, kl_terms)
        return State(networks, opt_state, env_state, obs, key, step, beta, stats["episode_return"], hidden), stats

    def optimise(state: State, hp: HParams, minibatch, minibatch_indices, perm_key):
        """``epochs`` passes of Adam steps over the minibatches ``minibatch(indices)`` gives (the
        indices of each pass from ``minibatch_indices(key)``), stopped by the KL bound where
        ``kl_stop`` asks: (networks, opt_state, optimizer steps taken in all, per-step stats)."""

        def minibatch_step(carry, indices):
            networks, opt_state, *stopped = carry
            grads, stats = jax.grad(loss_fn, has_aux=True)(networks, minibatch(indices), state.beta, hp)
            grads, stats = shard_mean((grads, stats), shards)  # every shard takes the same step
            updates, new_opt_state = optimizer(hp).update(grads, opt_state)
            new = (optax.apply_updates(networks, updates), new_opt_state)
            if config.kl_stop == "none":
                return new, stats
            # the first minibatch over the bound ends the update: its step and all later ones skipped
            stop = stopped[0] | (stats["kl_estimate"] > 1.5 * hp.target_kl)
            stats["steps_taken"] = (~stop).astype(jnp.float32)
            kept = jax.tree.map(lambda n, o: jnp.where(stop, o, n) if eqx.is_array(n) else n, new, (networks, opt_state))
            return (*kept, stop), stats

        def epoch(carry, key):
            return jax.lax.scan(minibatch_step, carry, minibatch_indices(key))

        carry = (state.networks, state.opt_state) + (() if config.kl_stop == "none" else (jnp.bool_(False),))
        (networks, opt_state, *_), stats = jax.lax.scan(epoch, carry, jax.random.split(perm_key, config.epochs))
        if config.kl_stop == "none":
            step = state.step + config.epochs * config.minibatches
        else:  # the minibatch steps taken before the KL bound was crossed
            step = state.step + stats["steps_taken"].sum().astype(jnp.int32)
        return networks, opt_state, step, stats

    def finish_stats(state: State, hp: HParams, stats, traj, kl_terms):
        """The update's mean stats, the adaptive-KL coefficient from ``kl_terms`` = (the behaviour
        policy's raw parameters, the new policy's distribution) where given, and the returns:
        (beta, stats)."""
        stats = jax.tree.map(jnp.mean, stats)
        beta = state.beta
        if kl_terms is not None:
            old_params, new_dist = kl_terms
            kl = shard_mean(nn.policy_distribution(old_params, discrete=env.discrete).kl_divergence(new_dist).mean(), shards)
            beta = pgkit.adaptive_kl_coefficient(beta, kl, target_kl=hp.target_kl)
            stats["kl"] = kl
            stats["beta"] = beta
        last_return, episodes = rollout.latest_episode_return(traj, state.last_return)
        stats["episode_return"] = shard_mean(last_return, shards)
        stats["episodes"] = shard_mean(episodes.astype(jnp.float32), shards) * shards
        return beta, stats

    def update(state: State, hp: HParams):
        if is_recurrent:
            return recurrent_update(state, hp)
        key, rollout_key, perm_key = jax.random.split(state.key, 3)
        actor, critic = state.networks

        env_state, obs, traj, gae = rollout.gae_rollout(
            shard_key(rollout_key, shards), env, state.env_state, state.obs, actor, critic,
            num_steps=config.num_steps, gamma=hp.gamma, lambda_=hp.gae_lambda,
        )
        flat = jax.tree.map(lambda x: x.reshape((shard_batch,) + x.shape[2:]), (traj, gae.advantages, gae.targets))
        # the behaviour policy's raw parameters, for the analytic KL of the penalty objective
        old_params = jax.vmap(actor)(flat[0].obs) if config.objective == "adaptive_kl" else None
        flat = (*flat, old_params)

        def minibatch(indices):
            traj_mb, adv_mb, target_mb, old_params_mb = jax.tree.map(lambda x: x[indices], flat)
            old_dist = None if old_params_mb is None else nn.policy_distribution(old_params_mb, discrete=env.discrete)
            return traj_mb, adv_mb, target_mb, old_dist

        networks, opt_state, step, stats = optimise(
            state, hp, minibatch,
            lambda key: jax.random.permutation(key, shard_batch).reshape(config.minibatches, shard_minibatch),
            shard_key(perm_key, shards),
        )
        kl_terms = (old_params, distribution(networks.actor, flat[0].obs)) if config.objective == "adaptive_kl" else None
        beta, stats = finish_stats(state, hp, stats, traj, kl_terms)
        new_state = State(networks, opt_state, env_state, obs, key, step, beta, stats["episode_return"])
        return new_state, stats

    def act(state: State, key, obs):
        """Greedy evaluation policy: argmax (discrete) or the mean (continuous); obs as the env gives them."""
        del key
        if is_recurrent:  # the protocol's act(state, key, obs) carries no hidden state between calls
            raise ConfigError(
                f"policy={config.policy!r}: greedy evaluation needs a hidden state carried between steps, which "
                "the recipe protocol's act(state, key, obs) does not have yet; the training metrics hold the returns"
            )
        return nn.greedy_action(jax.vmap(state.networks.actor)(obs), discrete=env.discrete)

    return Recipe(init, update, act, env, batch_size, num_updates, shards)


def _check_data_shards(config: Config, batch_size: int) -> None:
    """ConfigErrors for what data-parallel PPO (data_shards > 1) cannot split or does not average yet."""
    shards = config.data_shards
    if config.num_envs % shards or (batch_size // config.minibatches) % shards:
        raise ConfigError(
            f"option 'data_shards': {shards} must divide num_envs={config.num_envs} and the minibatch size "
            f"{batch_size // config.minibatches}"
        )
    for name in ("normalize_observations", "scale_rewards"):
        if getattr(config, name):
            raise ConfigError(f"option 'data_shards': {shards} shards do not share running statistics yet; set {name}=false")
    if config.policy != "mlp":
        raise ConfigError(f"option 'data_shards': {shards} shards need policy='mlp', got {config.policy!r}")
