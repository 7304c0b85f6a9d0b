"""Evaluation: the greedy return of every member's final policy, from a run directory."""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pgkit.experiment import store
from pgkit.experiment.driver import Run
from pgkit.recipe import ConfigError

__all__ = ["evaluate"]


def evaluate(
    run_dir,
    *,
    episodes: int = 10,
    seed: int = 0,
    recipe: str | os.PathLike | types.ModuleType | None = None,
    log: Callable[[str], None] | None = print,
) -> np.ndarray:
    """Greedy evaluation of every member's final policy: ``[members, episodes]`` returns.

    Each member's ``act`` runs on ``episodes`` fresh environments until every one has ended
    once (the time limit bounds it). ``recipe`` overrides where ``config.json`` says the recipe
    came from (a module, name or path, as for :func:`pgkit.experiment.train`).
    """
    run_dir = Path(run_dir)
    if store.updates_done(run_dir) is None:
        raise ConfigError(f"run directory {str(run_dir)!r} not found or holds no checkpoint")
    if episodes < 1:
        raise ConfigError(f"option 'episodes' must be >= 1, got {episodes}")
    spec = store.read_config(run_dir)
    run = Run(spec, run_dir, log or (lambda _: None), recipe)
    keys, member_hparams = run.member_inputs()
    recipe, init, _ = run.functions(run.chunk)
    state, record = run.read_checkpoint(jax.eval_shape(init, keys, member_hparams))
    diverged = {int(m): int(u) for m, u in record.get("diverged", [])}
    if recipe.data_shards > 1:  # the shards of a member hold the same policy: shard 0's state
        state = jax.tree.map(lambda x: x[:, 0], state)
    eval_env = recipe.env.with_num_envs(episodes)
    max_steps = int(eval_env.env_params.max_steps_in_episode)

    def one_member(member_state, key):
        reset_key, key = jax.random.split(key)
        # frozen observation statistics of the training environment, if the recipe has them
        training_env = getattr(member_state, "env_state", None)
        normalization = getattr(training_env, "normalization", None)
        env_state, obs = eval_env.reset(reset_key, normalization=normalization, training=False)

        def step(carry, key):
            env_state, obs, total, alive = carry
            act_key, step_key = jax.random.split(key)
            actions = recipe.act(member_state, act_key, obs)
            env_state, out = eval_env.step(step_key, env_state, actions, training=False)
            done = out.terminated | out.truncated
            total = jnp.where(alive & done, out.episode_return, total)
            return (env_state, out.obs, total, alive & ~done), None

        init_carry = (env_state, obs, jnp.zeros(episodes), jnp.ones(episodes, bool))
        (_, _, total, _), _ = jax.lax.scan(step, init_carry, jax.random.split(key, max_steps))
        return total

    member_keys = jax.random.split(jax.random.PRNGKey(seed), run.num_members)
    returns = np.asarray(jax.jit(jax.vmap(one_member))(state, member_keys))
    for g, label in enumerate(run.labels()):
        values = returns[g * run.seeds : (g + 1) * run.seeds]
        lost = [m - g * run.seeds for m in range(g * run.seeds, (g + 1) * run.seeds) if m in diverged]
        (log or (lambda _: None))(
            f"eval [{label}]: mean return {values.mean():.2f} over "
            f"{run.seeds} seed(s) x {episodes} episode(s) (min {values.min():.2f}, max {values.max():.2f})"
            + (f"; seed(s) {', '.join(map(str, lost))} diverged: their policies are frozen before it" if lost else "")
        )
    return returns

