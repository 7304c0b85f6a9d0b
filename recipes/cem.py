"""The cross-entropy method: over policy parameters, by imitating elite episodes (approximate CEM), or a policy table.

Parameter-space CEM (Rubinstein & Kroese, 2004, "The Cross-Entropy Method",
https://doi.org/10.1007/978-1-4757-4321-0; Szita & Lőrincz, 2006, "Learning Tetris Using the
Noisy Cross-Entropy Method", https://doi.org/10.1162/neco.2006.18.12.2936), one ``update``:

    θ_1..θ_N ~ N(μ, diag σ²)        N candidate flattened policy parameter vectors
    R_i = return of the greedy policy π_{θ_i} on K fresh episodes (mean over K), all N·K
          episodes run in parallel (one vmapped rollout)         pgkit.rollout.rollout,
                                                                 pgkit.episode_returns
    elite = the M candidates with the largest R_i                pgkit.elite_indices
    μ ← α mean(elite) + (1 − α) μ,  σ ← max(α std(elite) + (1 − α) σ, σ_min)
                                                                 pgkit.gaussian_refit

Approximate CEM (the seed notes' "Approximated Cross-Entropy Method"; de Boer, Kroese, Mannor,
Rubinstein, 2005, https://doi.org/10.1007/s10479-005-5724-z), one ``update``:

    sample N episodes with the current stochastic policy π_θ      pgkit.rollout.rollout
    elite = the M episodes with the largest return (the top M/N)  pgkit.elite_mask
    G gradient steps (Adam) on the mean negative log-likelihood of the elite's
    state-action pairs, θ ← θ + α ∇ Σ_{(s,a) ∈ elite} log π_θ(a|s)   pgkit.approximate_cem_loss

Tabular CEM (the seed notes' "Tabular Cross-Entropy", Martin's lecture), for an environment whose
observation is a discrete state index (a gymnax ``Discrete`` observation space: ``FrozenLake-misc``,
``Chain-pgkit`` of ``pgkit.tabular_envs``), one ``update``:

    sample N episodes with the table π(a|s) (π starts uniform)   pgkit.rollout.rollout
    [resimulations = R > 0, the notes' remedy for "lucky" episodes in a stochastic environment:
     run each sampled episode's state-action choices again R times: episode i replays as π_i,
     its own action frequencies in the states it visited and π elsewhere; its score is the
     mean of its own return and the R replays' returns
                                                                 pgkit.tabular_episode_policies]
    elite = the M episodes with the largest score (their own return, or the (1 + R)-run mean)
                                                                 pgkit.elite_mask
    π'(a|s) = (n_elite(s, a) + λ) / (n_elite(s) + λ|A|) in the states the elite visited, π(a|s)
    elsewhere;  π ← α π' + (1 − α) π                             pgkit.tabular_cem_update

The R re-simulations start from fresh resets, run ``num_steps`` steps each and count as
simulated steps (N·(1 + R)·num_steps per update); only the fit to the elite's own episodes
changes π.

No variant uses a value function. Each update starts N (or N·K) fresh episodes and runs
``num_steps`` steps; only the first episode of each environment counts (an episode still
running after ``num_steps`` counts with its partial return), so ``num_steps`` should cover a
whole episode (500 on CartPole-v1, 200 on Pendulum-v1). ``episode_return`` is the mean return of
those N (or N·K) first episodes: the population, noise included, not the mean policy.

The policy parameters live in a flat vector (``jax.flatten_util.ravel_pytree`` of the equinox
policy) in the first two variants: the search distribution's mean for parameter CEM, the trained
network for approximate CEM; the tabular variant keeps π(a|s) there, flattened row-major ``[S·A]``.

Defaults: ``variant="parameter"`` with a linear policy (``hidden_sizes=()``, 10 parameters on
CartPole-v1), N = 64 candidates, M = 10 elites, K = 1 episode each, 500 steps per episode,
initial σ 1.0, smoothing α 0.9, σ_min 0.02, 640,000 simulated steps (20 updates). The
approximate variant takes 10 Adam steps per update at lr 3e-2 by default; its learning test
uses ``population=32, num_elites=8, hidden_sizes=(32,), lr=1e-2``. The tabular variant refits
with λ = ``pseudocount`` and α = ``smoothing``; on ``FrozenLake-misc`` set ``num_steps=100`` (its
time limit), on ``Chain-pgkit`` ``num_steps`` ≥ the chain's length (10).

Tested configurations, measured returns and tuning history: ``docs/recipes/cem.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from gymnax.environments import spaces
from jax.flatten_util import ravel_pytree

import pgkit
from pgkit import envs, nn, rollout
from pgkit.recipe import ConfigError, Recipe, hyperparameters, option

NAME = "cem"
DESCRIPTION = (
    "Cross-entropy method: Gaussian search over policy parameters, approximate CEM on elite episodes, "
    "or tabular CEM"
)
DEFAULT_ENV = "CartPole-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(640_000, "environment steps per seed (all N·K·num_steps simulated steps count)", positive=True)
    variant: str = option(
        "parameter", "Gaussian search over parameters, maximum likelihood on elite episodes, or a policy table "
        "refit to the elite's state-action counts (discrete-state environments)",
        choices=("parameter", "approximate", "tabular"),
    )
    population: int = option(64, "N: candidate parameter vectors (parameter) or episodes (approximate) per update", positive=True)
    num_elites: int = option(10, "M: elite candidates / episodes kept (M <= N)", positive=True)
    episodes_per_candidate: int = option(1, "K: episodes averaged per candidate (parameter variant)", positive=True)
    num_steps: int = option(500, "steps simulated per update and environment (should cover one episode)", positive=True)
    hidden_sizes: tuple[int, ...] = option((), "hidden layer widths of the policy (() is linear)")
    activation: str = option("tanh", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))
    gradient_steps: int = option(10, "Adam steps on the elite log-likelihood per update (approximate variant)", positive=True)
    log_std_init: float = option(0.0, "initial log-std of the Gaussian policy (continuous actions)")
    resimulations: int = option(
        0, "R: re-simulations of each episode's state-action choices, averaged to score it (tabular; 0: its own return)",
        low=0,
    )


@hyperparameters
class HParams:
    init_std: float = option(1.0, "initial std of the parameter search distribution (parameter)", positive=True)
    smoothing: float = option(0.9, "weight α of the new elite fit (parameter, tabular)", positive=True, high=1.0)
    min_std: float = option(0.02, "floor on the search std (parameter)", low=0.0)
    lr: float = option(3e-2, "Adam learning rate of the elite fit (approximate)", positive=True)
    pseudocount: float = option(0.1, "λ added to every elite count of the table refit (tabular)", low=0.0)


class State(NamedTuple):
    mean: jax.Array  # [D] flat policy parameters: the search mean (parameter), the network (approximate), π [S·A] (tabular)
    std: jax.Array  # [D] the search std (parameter variant; unused, zeros, for approximate)
    opt_state: Any  # Adam state over ``mean`` (approximate variant; () for parameter)
    env_state: Any
    key: jax.Array  # PRNGKey (uint32[2])
    last_return: jax.Array  # mean return of the last update's episodes


def make(config: Config, env_name: str) -> Recipe:
    """Build the cross-entropy method's pure ``init``/``update``/``act`` for ``env_name``."""
    if config.num_elites > config.population:
        raise ConfigError(f"option 'num_elites' must be <= population={config.population}, got {config.num_elites}")
    if any(h < 1 for h in config.hidden_sizes):
        raise ConfigError(f"option 'hidden_sizes' must be positive widths, got {config.hidden_sizes}")
    parameter, tabular = config.variant == "parameter", config.variant == "tabular"
    if not parameter and config.episodes_per_candidate != 1:
        raise ConfigError("option 'episodes_per_candidate' applies to variant 'parameter' only; leave it at 1")
    if not tabular and config.resimulations != 0:
        raise ConfigError("option 'resimulations' applies to variant 'tabular' only; leave it at 0")
    num_envs = config.population * (config.episodes_per_candidate if parameter else 1)
    env = envs.make(env_name, num_envs=num_envs)
    steps_per_update = num_envs * config.num_steps * (1 + config.resimulations)
    num_updates = config.total_steps // steps_per_update

    def build_policy(key):
        net = dict(hidden_sizes=config.hidden_sizes, activation=config.activation, key=key)
        return nn.policy_for(env, log_std_init=config.log_std_init, **net)

    # the structure (static parts and the unflattening) does not depend on the key
    template_params, static = eqx.partition(build_policy(jax.random.PRNGKey(0)), eqx.is_array)
    _, unravel = ravel_pytree(template_params)

    def policy(flat):
        return eqx.combine(unravel(flat), static)

    def init(key, hp: HParams) -> State:
        key, policy_key, env_key = jax.random.split(key, 3)
        mean, _ = ravel_pytree(eqx.filter(build_policy(policy_key), eqx.is_array))
        env_state, _ = env.reset(env_key)
        if parameter:
            std = jnp.full_like(mean, hp.init_std)
            opt_state = ()
        else:
            std = jnp.zeros_like(mean)
            opt_state = optax.adam(hp.lr).init(mean)  # built from the traced hp: a new lr does not recompile
        return State(mean, std, opt_state, env_state, key, jnp.float32(0.0))

    def first_episodes(key, act_fn, env=env):
        """Run ``num_steps`` steps from a reset; the first episode's return and step mask per env."""
        reset_key, rollout_key = jax.random.split(key)
        env_state, obs = env.reset(reset_key)
        env_state, _, traj = rollout.rollout(
            rollout_key, env, env_state, obs, act_fn, num_steps=config.num_steps, gamma=1.0
        )
        undiscounted = 1.0 - traj.terminated.astype(jnp.float32)
        returns = pgkit.episode_returns(traj.rewards, undiscounted, traj.dones)[0]  # [E]
        in_first = rollout.first_episode_mask(traj.dones)  # [T, E]: steps up to the first done
        return env_state, traj, returns, in_first

    def parameter_update(state: State, hp: HParams):
        key, sample_key, episode_key = jax.random.split(state.key, 3)
        noise = jax.random.normal(sample_key, (config.population,) + state.mean.shape, state.mean.dtype)
        candidates = state.mean + state.std * noise  # [N, D]
        per_env = jnp.repeat(candidates, config.episodes_per_candidate, axis=0)  # [N·K, D], env i ↦ candidate i // K

        def act_fn(key, obs):
            del key

            def one(flat, o):  # candidate ``flat`` acting on its own environment's observation
                return nn.greedy_action(jax.vmap(policy(flat))(o[None]), discrete=env.discrete)[0]

            actions = jax.vmap(one)(per_env, obs)
            zeros = jnp.zeros(obs.shape[:1], jnp.float32)
            return actions, zeros, zeros

        env_state, _, returns, _ = first_episodes(episode_key, act_fn)
        scores = returns.reshape(config.population, config.episodes_per_candidate).mean(axis=1)  # [N]
        elite = pgkit.elite_indices(scores, num_elites=config.num_elites)
        fit = pgkit.gaussian_refit(candidates, elite, state.mean, state.std, smoothing=hp.smoothing, min_std=hp.min_std)
        mean_return = jnp.mean(returns)
        stats = {
            "episode_return": mean_return,
            "elite_return": jnp.mean(scores[elite]),
            "best_return": jnp.max(scores),
            "search_std": jnp.mean(fit.std),
        }
        return State(fit.mean, fit.std, (), env_state, key, mean_return), stats

    def approximate_update(state: State, hp: HParams):
        key, episode_key = jax.random.split(state.key)
        actor = policy(state.mean)

        def act_fn(key, obs):
            dist = nn.policy_distribution(jax.vmap(actor)(obs), discrete=env.discrete)
            actions, log_probs = dist.sample_and_log_prob(seed=key)
            return actions, log_probs, jnp.zeros(obs.shape[:1], jnp.float32)

        env_state, traj, returns, in_first = first_episodes(episode_key, act_fn)
        elite = pgkit.elite_mask(returns, num_elites=config.num_elites)  # [N]
        weights = jnp.logical_and(elite[None, :], in_first)  # [T, N]: steps of the elite episodes
        count = jnp.maximum(jnp.sum(weights), 1).astype(jnp.float32)

        obs_flat = traj.obs.reshape((-1, env.observation_size))  # [T·N, obs_size]
        actions_flat = traj.actions.reshape((obs_flat.shape[0],) + traj.actions.shape[2:])

        def loss_fn(flat):
            dist = nn.policy_distribution(jax.vmap(policy(flat))(obs_flat), discrete=env.discrete)
            log_probs = dist.log_prob(actions_flat)
            return jnp.sum(pgkit.approximate_cem_loss(log_probs.reshape(weights.shape), weights)) / count

        def gradient_step(carry, _):
            flat, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(flat)
            updates, opt_state = optax.adam(hp.lr).update(grads, opt_state)
            return (optax.apply_updates(flat, updates), opt_state), loss

        (mean, opt_state), losses = jax.lax.scan(
            gradient_step, (state.mean, state.opt_state), None, length=config.gradient_steps
        )
        mean_return = jnp.mean(returns)
        stats = {
            "episode_return": mean_return,
            "elite_return": jnp.sum(jnp.where(elite, returns, 0.0)) / config.num_elites,
            "elite_nll": losses[-1],
        }
        return State(mean, state.std, opt_state, env_state, key, mean_return), stats

    def act(state: State, key, obs):
        """Greedy evaluation policy of the mean parameters: argmax (discrete) or the mean action."""
        del key
        return nn.greedy_action(jax.vmap(policy(state.mean))(obs), discrete=env.discrete)

    if tabular:
        return _make_tabular(config, env, first_episodes, steps_per_update, num_updates)
    update = parameter_update if parameter else approximate_update
    return Recipe(init, update, act, env, steps_per_update, num_updates)


def _make_tabular(config: Config, env, first_episodes, steps_per_update: int, num_updates: int) -> Recipe:
    """The tabular variant's ``init``/``update``/``act`` (see the module docstring)."""
    space = env.env.observation_space(env.env_params)
    if not (isinstance(space, spaces.Discrete) and env.observation_size == 1 and env.discrete):
        raise ConfigError(
            f"option 'variant' = 'tabular' needs an environment whose observation is a discrete state index "
            f"(a Discrete observation space, e.g. FrozenLake-misc, Chain-pgkit) and discrete actions; "
            f"{env.name} observes {type(space).__name__}{tuple(env.observation_shape)}"
            + ("" if env.discrete else " and takes continuous actions")
            + "; choose variant 'parameter' or 'approximate' for it"
        )
    num_states, num_actions = int(space.n), env.num_actions
    resimulations = config.resimulations
    resimulation_env = env.with_num_envs(config.population * max(resimulations, 1))

    def state_index(obs):  # [..., 1] float observation -> [...] int32 state
        return jnp.clip(obs[..., 0].astype(jnp.int32), 0, num_states - 1)

    def table_act_fn(tables):
        """Sample from π(·|s): one shared table ``[S, A]``, or one per environment ``[E, S, A]``."""

        def act_fn(key, obs):
            s = state_index(obs)
            probs = tables[s] if tables.ndim == 2 else tables[jnp.arange(s.shape[0]), s]
            sample = pgkit.categorical_sample_and_log_prob(jnp.log(probs), key=key)
            return sample.action, sample.log_prob, jnp.zeros(s.shape, jnp.float32)

        return act_fn

    def init(key, hp: HParams) -> State:
        key, _, env_key = jax.random.split(key, 3)
        table = jnp.full((num_states * num_actions,), 1.0 / num_actions, jnp.float32)
        env_state, _ = env.reset(env_key)
        return State(table, jnp.zeros_like(table), (), env_state, key, jnp.float32(0.0))

    def update(state: State, hp: HParams):
        key, episode_key, resimulation_key = jax.random.split(state.key, 3)
        table = state.mean.reshape(num_states, num_actions)
        env_state, traj, returns, in_first = first_episodes(episode_key, table_act_fn(table))
        states, actions = state_index(traj.obs), traj.actions  # [T, N]
        if resimulations:
            replays = pgkit.tabular_episode_policies(states, actions, in_first, table)  # [N, S, A]
            per_env = jnp.repeat(replays, resimulations, axis=0)  # [N·R, S, A], env j ↦ episode j // R
            _, _, again, _ = first_episodes(resimulation_key, table_act_fn(per_env), resimulation_env)
            scores = (returns + jnp.sum(again.reshape(config.population, resimulations), axis=1)) / (1 + resimulations)
        else:
            scores = returns
        elite = pgkit.elite_mask(scores, num_elites=config.num_elites)  # [N]
        weights = jnp.logical_and(elite[None, :], in_first)  # [T, N]: steps of the elite episodes
        new_table = pgkit.tabular_cem_update(
            states, actions, weights, table, lambda_=hp.pseudocount, smoothing=hp.smoothing
        )
        mean_return = jnp.mean(returns)
        entropy = -jnp.sum(jnp.where(new_table > 0, new_table * jnp.log(new_table), 0.0), axis=1)
        stats = {
            "episode_return": mean_return,
            "elite_return": jnp.sum(jnp.where(elite, scores, 0.0)) / config.num_elites,
            "best_return": jnp.max(scores),
            "policy_entropy": jnp.mean(entropy),
        }
        if resimulations:
            stats["elite_episode_return"] = jnp.sum(jnp.where(elite, returns, 0.0)) / config.num_elites
        return State(new_table.reshape(-1), state.std, (), env_state, key, mean_return), stats

    def act(state: State, key, obs):
        """Greedy evaluation policy of the table: argmax_a π(a|s)."""
        del key
        return jnp.argmax(state.mean.reshape(num_states, num_actions)[state_index(obs)], axis=-1).astype(jnp.int32)

    return Recipe(init, update, act, env, steps_per_update, num_updates)
