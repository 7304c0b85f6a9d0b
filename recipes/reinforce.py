"""REINFORCE (Williams' Monte-Carlo policy gradient) on batches of complete episodes.

Algorithm (Williams, 1992, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", https://doi.org/10.1007/BF00992696; lecture notes 001 "Reducing
variance", 002 "REINFORCE algorithm with baseline"), one ``update``:

    sample m = num_envs complete episodes τ^i from the behaviour policy      pgkit.rollout.rollout
        (π_θ, or Uniform(A) while η < k: η = m · updates episodes so far, k = relaxation_episodes;
         or during the first relaxation_updates updates)
    returns:   G_t = Σ_{t'≥t} γ^{t'−t} r_t'  (reward_to_go)   or  R(τ) (whole_trajectory)
                                                                 pgkit.reward_to_go | pgkit.episode_returns
    baseline:  b = 0 | batch mean | leave-one-out mean | E[‖g‖²R]/E[‖g‖²] (g = ∇_θ log π_θ(τ)) | V_w(s_t)
               pgkit.mean_baseline | pgkit.leave_one_out_baseline | pgkit.optimal_baseline | critic
    ∇_θ J ≈ (1/m) Σ_i Σ_t ∇_θ log π_θ(a_{i,t}|s_{i,t}) (G_{i,t} − b_{i,t})     pgkit.score_function_loss
      per parameter k (baseline='optimal_per_parameter'), from per-episode / per-step score vectors:
        whole trajectory: (1/m) Σ_i g_{i,k} (R_i − b_k),  b_k = Σ_i g_{i,k}² R_i / Σ_i g_{i,k}²   pgkit.optimal_baseline
        reward-to-go:     (1/m) Σ_i Σ_t g_{i,t,k} (G_{i,t} − b_{t,k}),
                          b_{t,k} = Σ_i g_{i,t,k}² G_{i,t} / Σ_i g_{i,t,k}²       pgkit.per_step_optimal_baseline
      relaxed updates replace G_{i,t} − b_{i,t} by (ρ_t = π_θ(a_t|s_t)/π_r(a_t|s_t)):
        per trajectory: (G_{i,t} − b_{i,t}) × w_i, w_i = Π_t ρ_{i,t}   pgkit.per_trajectory_importance_loss
        per decision:   Σ_{t'≥t} γ^{t'−t} w_{i,t'} r_{i,t'} − w_{i,t} b_{i,t}, w_{i,t} = Π_{t''≤t} ρ_{i,t''}
                                                                       pgkit.per_decision_importance_loss
    θ ← θ + α ∇_θ J  (Adam);   value baseline: w ← w − β ∇_w Σ_t ½(V_w(s_t) − G_t)²   pgkit.value_loss

Complete episodes with fixed shapes: every update resets the E environments and rolls them out
for exactly ``env.env_params.max_steps_in_episode`` steps (pgkit.rollout.rollout), so each
environment's first episode ends (terminates, or is truncated at the time limit) inside the
window; the steps after an environment's first done are masked out of every sum. The masked
steps are still simulated, so ``env_steps_per_update = num_envs · max_steps_in_episode``
counts them (early on, with short episodes, most of them are padding: this is the price of a
jit-able, fixed-shape batch of whole episodes). Observation-normalisation statistics are carried
across the resets.

Options. ``returns='reward_to_go'`` uses causality (Sutton et al. 2000), ``'whole_trajectory'``
gives every step of an episode its whole return R(τ) (Williams' form). Baselines: ``'mean'`` is
the batch mean of R(τ) (whole trajectory) or the time-dependent batch mean of G_t over the m
episodes, finished episodes counting 0 (reward-to-go); ``'optimal'`` is the scalar
variance-minimising constant b* = Σ_i ‖g_i‖² R_i / Σ_i ‖g_i‖² computed from the per-episode
score vectors g_i = Σ_t ∇_θ log π_θ(a_{i,t}|s_{i,t}) of the flattened policy parameters
(``jax.vmap(jax.grad)`` over episodes), with R_i replaced by G_{i,t} at each step t for the
reward-to-go form (a heuristic kept as it was); ``'optimal_per_parameter'`` is Chen & Wang's
b_k = E[g_k² R] / E[g_k²] for each parameter component k (lecture notes 001, "Analyzing the
variance"), the gradient assembled per component from the score vectors (no scalar surrogate
has it; ``policy_loss`` and ``mean_weight`` then report the returns without baseline), and
for the reward-to-go its per-step form from the per-step score vectors g_{i,t} (``jax.vmap``
over steps and episodes): pgkit.per_step_optimal_baseline derives the exact minimiser (with
cross terms between steps) and the form without them; the recipe uses the latter, whose
estimate from m episodes is a bounded weighted mean of the G_{i,t} (the exact one's is not:
docs/recipes/reinforce.md). It is on-policy only (no relaxation). ``'leave_one_out'`` is the
mean of the other m − 1 episodes' R (or G_t, finished episodes counting 0), independent of the
episode it is applied to; ``'value'`` learns V_w(s) by regression on the reward-to-go (bootstrapped
from V_w of the final observation where an episode is truncated at the time limit: truncation
bootstraps, termination does not; without a critic nothing is bootstrapped). The critic is
trained on whatever policy acted (a baseline only needs to be action-independent).

Policy relaxation (Wang, Li & Chen, 2019, "Incremental Reinforcement Learning in Continuous
Spaces via Policy Relaxation and Importance Weighting", IEEE TNNLS,
https://doi.org/10.1109/TNNLS.2019.2927320, Algorithm 1): during the burn-in the actions are
drawn uniformly (discrete: Uniform{0..A−1}; continuous: Uniform[−1, 1]^d
in the policy's action space) and the gradient is importance weighted by π_θ(τ)/π_r(τ)
(``importance='per_trajectory'``, Algorithm 1 line 6) or per decision (``'per_decision'``, Precup
et al.'s per-decision importance sampling with the reward-to-go: each reward r_t' weighted by the
product Π_{t''≤t'} π_θ/π_r of the ratios up to its own step, the baseline b_t by the product up to
t; weighting the whole G_t by the product up to t alone, as the lecture slide transcribes it,
leaves out the ratios of the actions between t and t' and is biased: tests/test_estimators.py
shows it on a 2-step problem); afterwards the updates are on-policy (the weights are 1 up to
rounding). The burn-in counts episodes as the algorithm box does (``relaxation_episodes`` = k:
η ← η + m after each update of m = num_envs episodes, relaxed while η < k, i.e. the first
⌈k/m⌉ updates; the box's test η ≤ k would relax one batch even for k = 0) or, as before,
updates (``relaxation_updates``); give one of the two. ``importance_weights`` chooses the form
of the per-trajectory weights w_i = π_θ(τ^i)/π_r(τ^i): ``'plain'`` (capped only against
overflow, below), ``'truncated'`` (min(w_i, c̄) with c̄ = ``importance_truncation``,
pgkit.truncated_weights: truncated importance sampling, Ionides 2008; per decision, every
w_{s:t} is truncated at c̄) or ``'self_normalised'`` (m·w_i/Σ_j w_j, pgkit.self_normalised_weights:
weighted importance sampling, biased but consistent, per trajectory only).
The weights are capped at ``max_importance_weight`` so that a degenerate product cannot overflow
(they stay far below the cap on CartPole: each uniform step multiplies the weight by at most
A·π_θ(a|s) ≤ 2 and the episodes are short). On long continuous-action episodes they vanish
instead: against Uniform[−1, 1] each ratio of an initial N(0, 1) policy is 2·N(a; 0, 1) < 0.8, so
200 Pendulum steps give a weight near 0 and the relaxed updates barely move θ (the exponential
dependence on T that the lecture notes warn about).

Defaults (the configuration of the learning test, CartPole-v1): reward-to-go with the value
baseline, 8 episodes per update, separate 64x64 tanh actor and critic, Adam at lr 0.003 (policy)
and 0.01 (critic), gradient-norm clip 10, γ = 0.99, 320k simulated steps (80 updates of 8 x 500
steps, many of them padding).

Tested configurations, measured returns and tuning history: ``docs/recipes/reinforce.md``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import optax

import pgkit
from pgkit import envs, nn, recurrent, rollout
from pgkit.recipe import ConfigError, Recipe, hyperparameters, option

NAME = "reinforce"
DESCRIPTION = "REINFORCE on whole episodes: reward-to-go or R(tau), mean/leave-one-out/optimal/value baselines, policy relaxation"
DEFAULT_ENV = "CartPole-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(320_000, "simulated environment steps per seed (num_envs*max_steps per update)", positive=True)
    num_envs: int = option(8, "episodes per update (parallel environments)", positive=True)
    returns: str = option("reward_to_go", "weight of each step", choices=("reward_to_go", "whole_trajectory"))
    baseline: str = option(
        "value", "baseline subtracted from the returns",
        choices=("none", "mean", "leave_one_out", "optimal", "optimal_per_parameter", "value"),
    )
    relaxation_updates: int = option(0, "updates with a uniform behaviour policy and importance weights (policy relaxation)", low=0)
    relaxation_episodes: int = option(
        0, "burn-in episodes k of policy relaxation, counted as the seed's eta (eta += num_envs per update)", low=0
    )
    importance: str = option("per_trajectory", "importance weights of relaxed updates", choices=("per_trajectory", "per_decision"))
    importance_weights: str = option(
        "plain", "form of the relaxed updates' importance weights",
        choices=("plain", "truncated", "self_normalised"),
    )
    hidden_sizes: tuple[int, ...] = option((64, 64), "hidden layer widths of actor and critic")
    activation: str = option("tanh", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))
    normalize_observations: bool = option(False, "running mean/variance observation normalisation")
    log_std_init: float = option(0.0, "initial log-std of the Gaussian policy (continuous actions)")
    policy: str = option(
        "mlp", "memoryless MLP policy, or a recurrent one (a GRU or LSTM cell, a fresh hidden state at each "
        "episode; log-probabilities replayed over the episodes; the value baseline stays an MLP)",
        choices=("mlp", "gru", "lstm"),
    )
    cell_size: int = option(64, "units of the recurrent cell (policy=gru|lstm)", positive=True)


@hyperparameters
class HParams:
    lr: float = option(0.003, "Adam learning rate of the policy", positive=True)
    critic_lr: float = option(0.01, "Adam learning rate of the value baseline", positive=True)
    gamma: float = option(0.99, "discount factor", low=0.0, high=1.0)
    max_grad_norm: float = option(10.0, "global gradient-norm clip (policy and critic separately)", positive=True)
    max_importance_weight: float = option(1e4, "cap of the importance weights of relaxed updates", positive=True)
    importance_truncation: float = option(
        1.0, "truncation level c of importance_weights='truncated' (w = min(w, c))", positive=True
    )


class Networks(NamedTuple):
    actor: Any
    critic: Any  # None unless baseline == 'value'


class State(NamedTuple):
    networks: Networks
    actor_opt_state: Any
    critic_opt_state: Any
    env_state: Any  # VecEnvState of the last rollout (carries normalisation statistics)
    key: jax.Array  # PRNGKey (uint32[2])
    updates: jax.Array  # updates done (int32)
    last_return: jax.Array  # mean return of the last batch of episodes


def make(config: Config, env_name: str) -> Recipe:
    """Build REINFORCE's pure ``init``/``update``/``act`` for ``env_name``."""
    return _build(config, env_name).recipe


def policy_gradient_estimator(config: Config, env_name: str):
    """The estimate of ∇_θ J that one on-policy ``update`` of ``make(config, env_name)`` follows, as a function.

    Returns ``estimate(key, networks, hparams) -> gradient``: it rolls out ``num_envs`` fresh
    episodes of ``networks.actor`` from ``key`` and returns the gradient of the policy loss (a
    pytree like the actor's array leaves; −∇_θ J: the optimiser minimises), before clipping and
    Adam, for the configured returns and baseline. For variance studies of the baselines:
    ``jax.vmap(estimate, in_axes=(0, None, None))(keys, networks, hparams)`` gives independent
    batches of one policy snapshot (e.g. ``init(key, hparams).networks``).
    """
    return _build(config, env_name).gradient_estimate


class _Built(NamedTuple):
    recipe: Recipe
    gradient_estimate: Any


def _build(config: Config, env_name: str) -> _Built:
    if any(h < 1 for h in config.hidden_sizes) or not config.hidden_sizes:
        raise ConfigError(f"option 'hidden_sizes' must be positive widths, got {config.hidden_sizes}")
    if config.importance == "per_decision" and config.returns != "reward_to_go":
        raise ConfigError(
            "option 'importance' = 'per_decision' needs returns='reward_to_go' "
            f"(a per-decision weight pairs with the reward-to-go), got returns={config.returns!r}"
        )
    for batch_baseline in ("mean", "leave_one_out", "optimal", "optimal_per_parameter"):
        if config.baseline == batch_baseline and config.num_envs < 2:
            raise ConfigError(f"option 'num_envs' must be >= 2 for the {batch_baseline} baseline, got {config.num_envs}")
    if config.relaxation_updates > 0 and config.relaxation_episodes > 0:
        raise ConfigError(
            "options 'relaxation_updates' and 'relaxation_episodes' both set the burn-in: give one, got "
            f"relaxation_updates={config.relaxation_updates}, relaxation_episodes={config.relaxation_episodes}"
        )
    relaxed_phase = config.relaxation_updates > 0 or config.relaxation_episodes > 0
    if config.baseline == "optimal_per_parameter" and relaxed_phase:
        raise ConfigError(
            "option 'baseline' = 'optimal_per_parameter' is on-policy only: relaxation "
            "(relaxation_updates or relaxation_episodes > 0) needs baseline in "
            "('none', 'mean', 'leave_one_out', 'optimal', 'value')"
        )
    if config.importance_weights == "self_normalised" and config.importance != "per_trajectory":
        raise ConfigError(
            "option 'importance_weights' = 'self_normalised' normalises one weight per episode: it needs "
            f"importance='per_trajectory', got importance={config.importance!r}"
        )
    is_recurrent = config.policy != "mlp"
    if is_recurrent and config.baseline in ("optimal", "optimal_per_parameter"):
        raise ConfigError(
            f"option 'baseline' = {config.baseline!r} needs per-step score vectors of a memoryless policy: "
            f"policy={config.policy!r} takes baseline in ('none', 'mean', 'leave_one_out', 'value')"
        )
    env = envs.make(env_name, num_envs=config.num_envs, normalize_observations=config.normalize_observations)
    horizon = int(env.env_params.max_steps_in_episode)
    steps_per_update = config.num_envs * horizon
    num_updates = config.total_steps // steps_per_update
    use_critic = config.baseline == "value"

    def optimizer(lr, max_grad_norm):
        """Clip the gradient's global norm, then Adam at ``lr`` (the policy's and the critic's optimiser).

        Built from the traced hyperparameters inside ``init``/``update``: a new ``lr`` does not recompile.
        """
        return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))

    def per_example(fn, *arrays):
        """Apply ``fn`` to one example at a time over the leading axes of ``arrays[0]`` ([E] or [T, E])."""
        for _ in range(arrays[0].ndim - 1):
            fn = jax.vmap(fn)
        return fn(*arrays)

    def log_probs_and_entropy(actor, obs, actions, dones=None):
        if is_recurrent:  # [T, E] episodes replayed from a fresh hidden state (every update starts fresh episodes)
            h0 = actor.initial_state()
            params = recurrent.replay(
                jax.vmap(actor), obs, dones, recurrent.fresh_hidden_batch(h0, obs.shape[1]), h0
            )
            dist = nn.policy_distribution(
                jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), params), discrete=env.discrete
            )
            flat_actions = actions.reshape((-1,) + actions.shape[2:])
            return dist.log_prob(flat_actions).reshape(dones.shape), dist.entropy().reshape(dones.shape)

        # distributions are built per example (inside vmap), never batched across a vmap boundary
        def one(o, a):
            dist = actor.distribution(o)
            return dist.log_prob(a), dist.entropy()

        return per_example(one, obs, actions)

    def sample_and_log_prob(actor, key, obs):
        keys = jax.random.split(key, obs.shape[0])
        return jax.vmap(lambda o, k: actor.distribution(o).sample_and_log_prob(seed=k))(obs, keys)

    def init(key, hp: HParams) -> State:
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        net = dict(hidden_sizes=config.hidden_sizes, activation=config.activation)
        if is_recurrent:
            actor = nn.recurrent_policy_for(env, cell=config.policy, cell_size=config.cell_size,
                                            log_std_init=config.log_std_init, key=actor_key, **net)
        else:
            actor = nn.policy_for(env, log_std_init=config.log_std_init, key=actor_key, **net)
        critic = nn.ValueCritic(env.observation_size, key=critic_key, **net) if use_critic else None
        networks = Networks(actor, critic)
        env_state, _ = env.reset(env_key)
        actor_opt = optimizer(hp.lr, hp.max_grad_norm).init(eqx.filter(actor, eqx.is_array))
        critic_opt = optimizer(hp.critic_lr, hp.max_grad_norm).init(eqx.filter(critic, eqx.is_array)) if use_critic else None
        return State(networks, actor_opt, critic_opt, env_state, key, jnp.int32(0), jnp.float32(0.0))

    def uniform_actions(key, num):
        """Actions of the relaxed policy π_r = Uniform(A) and their log-probabilities."""
        if env.discrete:
            actions = jax.random.randint(key, (num,), 0, env.num_actions)
            return actions, jnp.full((num,), -math.log(env.num_actions), jnp.float32)
        actions = jax.random.uniform(key, (num, env.action_size), minval=-1.0, maxval=1.0)
        return actions, jnp.full((num,), -env.action_size * math.log(2.0), jnp.float32)

    def is_relaxed(updates):
        """Whether the update numbered ``updates`` (0, 1, ...) samples from π_r (traced bool).

        The seed's counter of learning episodes is η = num_envs · updates (Algorithm 1, line 12:
        η ← η + m), and the burn-in covers the first k episodes: η < k (see docs/recipes/reinforce.md).
        """
        if config.relaxation_episodes > 0:
            return updates * config.num_envs < config.relaxation_episodes
        return updates < config.relaxation_updates

    def episode_log_prob(actor_params, actor_static, obs, actions, mask):
        """log π_θ(τ) = Σ_t log π_θ(a_t|s_t) over one episode's valid steps ([T] inputs)."""
        actor = eqx.combine(actor_params, actor_static)
        log_probs, _ = log_probs_and_entropy(actor, obs, actions)
        return jnp.sum(jnp.where(mask, log_probs, 0.0))

    def step_log_prob(actor_params, actor_static, obs, action):
        """log π_θ(a|s) of one step (unbatched inputs)."""
        return eqx.combine(actor_params, actor_static).distribution(obs).log_prob(action)

    def flat_episode_scores(actor, traj, mask):
        """[E, P] per-episode score vectors g_i = ∇_θ log π_θ(τ^i) of the flattened policy parameters."""
        params, static = eqx.partition(actor, eqx.is_array)
        score_fn = jax.grad(episode_log_prob)
        scores = jax.vmap(score_fn, in_axes=(None, None, 1, 1, 1))(params, static, traj.obs, traj.actions, mask)
        return jax.vmap(lambda tree: jax.flatten_util.ravel_pytree(tree)[0])(scores)

    def flat_step_scores(actor, traj, mask):
        """[T, E, P] per-step score vectors g_{i,t} = ∇_θ log π_θ(a_{i,t}|s_{i,t}), zero on padding steps."""
        params, static = eqx.partition(actor, eqx.is_array)
        score_fn = jax.grad(step_log_prob)
        over_steps = jax.vmap(jax.vmap(score_fn, in_axes=(None, None, 0, 0)), in_axes=(None, None, 0, 0))
        scores = over_steps(params, static, traj.obs, traj.actions)
        flat = jax.vmap(jax.vmap(lambda tree: jax.flatten_util.ravel_pytree(tree)[0]))(scores)
        return jnp.where(mask[..., None], flat, 0.0)

    def baselines_of(actor, traj, returns, mask):
        """b [T, E] (or broadcastable) for the configured scalar-valued baseline."""
        if config.baseline == "none":
            return jnp.zeros_like(returns)
        if config.baseline == "value":
            return traj.values
        masked = jnp.where(mask, returns, 0.0)
        if config.baseline == "mean":
            if config.returns == "whole_trajectory":
                return pgkit.mean_baseline(returns[0])[None, :]  # b = (1/m) Σ_i R(τ^i)
            return pgkit.mean_baseline(masked, axis=1)  # b_t = (1/m) Σ_i G_{i,t}
        if config.baseline == "leave_one_out":
            if config.returns == "whole_trajectory":
                return pgkit.leave_one_out_baseline(returns[0])[None, :]  # b_i = mean_{j≠i} R(τ^j)
            return pgkit.leave_one_out_baseline(masked, axis=1)  # b_{i,t} = mean_{j≠i} G_{j,t}
        # optimal (scalar): per-episode score vectors g_i = ∇_θ log π_θ(τ^i), flattened
        flat = flat_episode_scores(actor, traj, mask)  # [E, P]
        if config.returns == "whole_trajectory":
            return pgkit.optimal_baseline(flat, returns[0], per_parameter=False)
        b = jax.vmap(lambda g_t: pgkit.optimal_baseline(flat, g_t, per_parameter=False))(masked)  # [T]
        return b[:, None]

    def per_parameter_gradient(actor, traj, returns, mask):
        """−∇_θ J assembled per parameter k from score vectors: −(1/m) Σ_i g_{i,k} (R_i − b_k) (whole
        trajectory) or −(1/m) Σ_i Σ_t g_{i,t,k} (G_{i,t} − b_{t,k}) (reward-to-go), as the actor's pytree."""
        params = eqx.filter(actor, eqx.is_array)
        _, unravel = jax.flatten_util.ravel_pytree(params)
        if config.returns == "whole_trajectory":
            flat = flat_episode_scores(actor, traj, mask)  # [E, P]
            b = pgkit.optimal_baseline(flat, returns[0])  # [P]
            grad = -jnp.mean(flat * (returns[0][:, None] - b), axis=0)
        else:
            masked = jnp.where(mask, returns, 0.0)
            scores = flat_step_scores(actor, traj, mask)  # [T, E, P]
            # b_{t,k} = Σ_i g²_{i,t,k} G_{i,t} / Σ_i g²_{i,t,k}; the exact b* (cross terms) is wild from m episodes
            b = pgkit.per_step_optimal_baseline(scores, masked, cross_terms=False)  # [T, P]
            grad = -jnp.sum(scores * (masked[..., None] - b[:, None, :]), axis=(0, 1)) / config.num_envs
        return unravel(grad)

    def relaxed_episode_weights(log_probs, traj, mask, hp):
        """[E] weights of the m relaxed first episodes: truncated min(w_i, c̄) or self-normalised m·w_i/Σ_j w_j,
        with w_i = π_θ(τ^i)/π_r(τ^i) from the log-ratios of each episode's valid steps."""
        log_ratios = pgkit.log_ratios(jax.lax.stop_gradient(log_probs), traj.log_probs)
        log_weights = jnp.sum(jnp.where(mask, log_ratios, 0.0), axis=0)  # [E] log π_θ(τ^i)/π_r(τ^i)
        if config.importance_weights == "truncated":
            return pgkit.truncated_weights(log_weights, max_weight=hp.importance_truncation)
        # w_i/Σ_j w_j does not change when every w_i is scaled: shift the logs so that none overflows
        shifted = jnp.exp(log_weights - jax.lax.stop_gradient(jnp.max(log_weights)))
        return config.num_envs * pgkit.self_normalised_weights(shifted, axis=0)

    def policy_loss_fn(actor, traj, returns, baselines, mask, hp):
        """The per-step surrogate: on-policy, or importance weighted from π_r's episodes (relaxation)."""
        log_probs, entropies = log_probs_and_entropy(actor, traj.obs, traj.actions, traj.dones)
        importance = None
        if not relaxed_phase:
            weights = returns - baselines
            losses = pgkit.score_function_loss(log_probs, weights)
        elif config.importance == "per_trajectory" and config.importance_weights != "plain":
            episode_weights = relaxed_episode_weights(log_probs, traj, mask, hp)  # [E]
            importance = jnp.broadcast_to(episode_weights[None, :], log_probs.shape)
            weights = importance * (returns - baselines)
            losses = pgkit.score_function_loss(log_probs, weights)
        elif config.importance == "per_trajectory":  # w = min(c̄, π_θ(τ)/π_r(τ)) times G_t − b_t (or R(τ) − b)
            losses, weights, importance = pgkit.per_trajectory_importance_loss(
                log_probs, traj.log_probs, returns - baselines, traj.dones, max_weight=hp.max_importance_weight
            )
        else:  # each reward r_k weighted by min(c̄, Π_{t'≤k} π_θ/π_r), the baseline b_t by the weight at t
            cap = hp.max_importance_weight
            if config.importance_weights == "truncated":  # min(w_k, c̄): truncated_weights of the log-weights
                cap = jnp.minimum(cap, hp.importance_truncation)
            losses, weights, importance = pgkit.per_decision_importance_loss(
                log_probs, traj.log_probs, traj.rewards, traj.discounts, traj.dones,
                traj.next_values if use_critic else None, baselines=baselines,
                max_weight=cap,
            )
        # Σ_t over each episode, mean over the m episodes: the estimator of ∇J
        loss = jnp.sum(jnp.where(mask, losses, 0.0)) / config.num_envs
        entropy = jnp.sum(jnp.where(mask, entropies, 0.0)) / jnp.maximum(mask.sum(), 1)
        return loss, (entropy, weights, importance)

    def policy_gradient(actor, traj, returns, mask, hp):
        """(−∇_θ J as the actor's pytree, (policy loss, entropy, weights, importance weights))."""
        if config.baseline == "optimal_per_parameter":
            # no scalar surrogate has this gradient: the loss reported is that of the returns without baseline
            loss, aux = policy_loss_fn(actor, traj, returns, jnp.zeros_like(returns), mask, hp)
            return per_parameter_gradient(actor, traj, returns, mask), (loss, *aux)
        baselines = baselines_of(actor, traj, returns, mask)
        (loss, aux), grads = jax.value_and_grad(policy_loss_fn, has_aux=True)(actor, traj, returns, baselines, mask, hp)
        return grads, (loss, *aux)

    def critic_loss_fn(critic, traj, targets, mask):
        values = jax.vmap(jax.vmap(critic))(traj.obs)
        losses = pgkit.value_loss(values, targets)
        return jnp.sum(jnp.where(mask, losses, 0.0)) / jnp.maximum(mask.sum(), 1)

    def episodes(reset_key, rollout_key, networks, normalization, relaxed, hp):
        """m fresh episodes: (env_state, traj [T, E], first-episode mask [T, E], returns [T, E])."""
        actor, critic = networks

        def act_fn(key, obs, hidden=None):
            policy_key, uniform_key = jax.random.split(key)
            if is_recurrent:
                hidden, params = jax.vmap(actor)(hidden, obs)
                keys = jax.random.split(policy_key, obs.shape[0])
                # one example at a time, as sample_and_log_prob draws: a batch of one, then its only row
                sample = lambda p, k: jax.tree.map(lambda x: x[0], nn.policy_distribution(  # noqa: E731
                    jax.tree.map(lambda x: x[None], p), discrete=env.discrete).sample_and_log_prob(seed=k))
                actions, log_probs = jax.vmap(sample)(params, keys)
            else:
                actions, log_probs = sample_and_log_prob(actor, policy_key, obs)
            if relaxed_phase:
                uniform, uniform_log_probs = uniform_actions(uniform_key, obs.shape[0])
                actions = jnp.where(relaxed, uniform.astype(actions.dtype), actions)
                log_probs = jnp.where(relaxed, uniform_log_probs, log_probs)
            values = jax.vmap(critic)(obs) if use_critic else jnp.zeros(obs.shape[:1])
            if is_recurrent:
                return actions, log_probs, values, hidden
            return actions, log_probs, values

        # fresh episodes every update; normalisation statistics carried over
        env_state, obs = env.reset(reset_key, normalization=normalization)
        if is_recurrent:  # each update's episodes start from a fresh hidden state
            h0 = actor.initial_state()
            env_state, _, _, batch = recurrent.recurrent_rollout(
                rollout_key, env, env_state, obs, recurrent.fresh_hidden_batch(h0, config.num_envs), act_fn,
                num_steps=horizon, gamma=hp.gamma, fresh_hidden=h0,
                value_fn=(lambda o, h: jax.vmap(critic)(o)) if use_critic else None,
            )
            traj = batch.trajectory
        else:
            env_state, _, traj = rollout.rollout(
                rollout_key, env, env_state, obs, act_fn, num_steps=horizon, gamma=hp.gamma,
                value_fn=jax.vmap(critic) if use_critic else None,
            )
        mask = rollout.first_episode_mask(traj.dones)
        if config.returns == "reward_to_go":
            returns = pgkit.reward_to_go(
                traj.rewards, traj.discounts, traj.dones, traj.next_values if use_critic else None
            )
        else:
            returns = pgkit.episode_returns(traj.rewards, traj.discounts, traj.dones)
        return env_state, traj, mask, returns

    def gradient_estimate(key, networks: Networks, hp: HParams):
        reset_key, rollout_key = jax.random.split(key)
        env_state, _ = env.reset(reset_key)
        _, traj, mask, returns = episodes(
            reset_key, rollout_key, networks, env_state.normalization, jnp.bool_(False), hp
        )
        return policy_gradient(networks.actor, traj, returns, mask, hp)[0]

    def update(state: State, hp: HParams):
        key, reset_key, rollout_key = jax.random.split(state.key, 3)
        actor, critic = state.networks
        relaxed = is_relaxed(state.updates)  # traced bool
        env_state, traj, mask, returns = episodes(
            reset_key, rollout_key, state.networks, state.env_state.normalization, relaxed, hp
        )
        grads, (policy_loss, entropy, weights, importance) = policy_gradient(actor, traj, returns, mask, hp)
        stats = {}
        if relaxed_phase:
            valid = jnp.maximum(mask.sum(), 1)
            stats["importance_weight"] = jnp.sum(jnp.where(mask, importance, 0.0)) / valid
            stats["max_importance_weight"] = jnp.max(jnp.where(mask, importance, 0.0))
            # the weight applied at each first episode's done step (w(τ), or w_{s:e} per decision)
            stats["episode_importance_weight"] = jnp.sum(jnp.where(mask & traj.dones, importance, 0.0)) / config.num_envs
            stats["relaxed"] = relaxed.astype(jnp.float32)
        updates, actor_opt = optimizer(hp.lr, hp.max_grad_norm).update(grads, state.actor_opt_state)
        actor = optax.apply_updates(actor, updates)
        critic_opt = state.critic_opt_state
        if use_critic:
            critic_targets = pgkit.reward_to_go(traj.rewards, traj.discounts, traj.dones, traj.next_values)
            value_loss, grads = jax.value_and_grad(critic_loss_fn)(critic, traj, critic_targets, mask)
            updates, critic_opt = optimizer(hp.critic_lr, hp.max_grad_norm).update(grads, critic_opt)
            critic = optax.apply_updates(critic, updates)
            stats["value_loss"] = value_loss

        first = traj._replace(dones=traj.dones & mask)
        last_return, _ = rollout.latest_episode_return(first, state.last_return)
        stats.update(
            episode_return=last_return,
            episode_length=jnp.sum(mask) / config.num_envs,
            policy_loss=policy_loss,
            entropy=entropy,
            mean_weight=jnp.sum(jnp.where(mask, weights, 0.0)) / jnp.maximum(mask.sum(), 1),
        )
        new_state = State(
            Networks(actor, critic), actor_opt, critic_opt, env_state, key, state.updates + 1, last_return
        )
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

    return _Built(Recipe(init, update, act, env, steps_per_update, num_updates), gradient_estimate)
