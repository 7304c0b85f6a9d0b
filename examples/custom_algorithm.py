"""REINFORCE with a leave-one-out baseline: an algorithm of your own, run by pgkit's driver.

Nothing here is built into pgkit: this file follows the recipe protocol (:mod:`pgkit.recipe`),
so the driver trains it like a built-in recipe, seeds x a sweep as one compiled program, with
progress, metrics, plot, checkpoints, ``resume`` and ``eval``::

    pgkit train examples/custom_algorithm.py --seeds 4 --sweep lr=3e-3,1e-2 --out runs/loo
    pgkit resume runs/loo          # after an interruption: bit-identical continuation
    pgkit eval runs/loo            # greedy return of every final policy
    python examples/custom_algorithm.py runs/loo   # train (stopped early), resume, eval from Python

Algorithm, one ``update`` (Williams 1992; the baseline of Kool, van Hoof and Welling 2019,
"Buy 4 REINFORCE Samples, Get a Baseline for Free!"), with E environments stepped in parallel:

    roll out T steps of every environment with π_θ                   pgkit.rollout.rollout
    G_t = Σ_k γ^k r_{t+k}, cut at episode ends (0 after the rollout)  pgkit.reward_to_go
    b_t^e = mean of G_t over the other E − 1 environments             pgkit.leave_one_out_baseline
    θ ← Adam step on −(1/TE) Σ log π_θ(a_t|s_t) (G_t − b_t)           pgkit.score_function_loss

The baseline of environment e at step t uses only the other environments' returns, so it is
independent of e's actions and the estimate stays unbiased, without a learned critic.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import pgkit
from pgkit import envs, nn, rollout
from pgkit.recipe import ConfigError, Recipe, hyperparameters, option

NAME = "reinforce_loo"
DESCRIPTION = "REINFORCE with a leave-one-out baseline over parallel environments (an example recipe)"
DEFAULT_ENV = "CartPole-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(100_000, "environment steps per seed", positive=True)
    num_envs: int = option(8, "parallel environments (>= 2: each baseline uses the others)", low=2)
    num_steps: int = option(100, "rollout length per environment per update", positive=True)
    hidden_sizes: tuple[int, ...] = option((32,), "hidden layer widths of the policy")


@hyperparameters
class HParams:
    lr: float = option(1e-2, "Adam learning rate", positive=True)
    gamma: float = option(0.99, "discount factor", low=0.0, high=1.0)


class State(NamedTuple):
    policy: nn.CategoricalPolicy
    opt_state: Any
    env_state: Any
    obs: jax.Array  # [E, obs_size]
    key: jax.Array
    last_return: jax.Array  # last known mean return of completed episodes


def make(config: Config, env_name: str) -> Recipe:
    """Build the pure ``init``/``update``/``act`` of REINFORCE-LOO for ``env_name`` (discrete actions)."""
    env = envs.make(env_name, num_envs=config.num_envs)
    if not env.discrete:
        raise ConfigError(f"environment {env_name!r} must have discrete actions for {NAME}")
    steps_per_update = config.num_envs * config.num_steps

    def optimizer(hp: HParams):
        return optax.adam(hp.lr)  # hp.lr is traced: one program serves a whole sweep

    def init(key, hp: HParams) -> State:
        key, policy_key, env_key = jax.random.split(key, 3)
        policy = nn.CategoricalPolicy(
            env.observation_size, env.num_actions, hidden_sizes=config.hidden_sizes, key=policy_key
        )
        env_state, obs = env.reset(env_key)
        opt_state = optimizer(hp).init(eqx.filter(policy, eqx.is_array))
        return State(policy, opt_state, env_state, obs, key, jnp.float32(0.0))

    def update(state: State, hp: HParams):
        key, rollout_key = jax.random.split(state.key)
        act_fn = rollout.actor_critic_act_fn(state.policy, lambda obs: jnp.zeros(()), discrete=True)
        env_state, obs, traj = rollout.rollout(
            rollout_key, env, state.env_state, state.obs, act_fn, num_steps=config.num_steps, gamma=hp.gamma
        )
        returns = pgkit.reward_to_go(traj.rewards, traj.discounts, traj.dones, traj.next_values)
        advantages = returns - pgkit.leave_one_out_baseline(returns, axis=1)  # [T, E]

        def loss_fn(policy):
            logits = jax.vmap(jax.vmap(policy))(traj.obs)
            log_probs = nn.policy_distribution(logits, discrete=True).log_prob(traj.actions)
            return pgkit.score_function_loss(log_probs, advantages).mean()

        loss, grads = eqx.filter_value_and_grad(loss_fn)(state.policy)
        updates, opt_state = optimizer(hp).update(grads, state.opt_state)
        policy = eqx.apply_updates(state.policy, updates)
        mean_return, episodes = rollout.completed_episode_statistics(traj)
        last_return = jnp.where(episodes > 0, mean_return, state.last_return)
        metrics = {"episode_return": last_return, "policy_loss": loss, "episodes": episodes.astype(jnp.float32)}
        return State(policy, opt_state, env_state, obs, key, last_return), metrics

    def act(state: State, key, obs):
        """Greedy evaluation policy: the most probable action."""
        del key
        return nn.greedy_action(jax.vmap(state.policy)(obs), discrete=True)

    return Recipe(init, update, act, env, steps_per_update, config.total_steps // steps_per_update)


if __name__ == "__main__":
    from pgkit import experiment

    out = sys.argv[1] if len(sys.argv) > 1 else "runs/reinforce_loo"
    this = sys.modules[__name__]
    experiment.train(this, seeds=4, sweep={"lr": [3e-3, 1e-2]}, out=out, stop_after_chunks=10)
    experiment.resume(out)  # continues where the first call stopped, bit-identically
    experiment.evaluate(out, episodes=10)
