"""pgkit side of bench/compare.py: one workload, N seeds as one jit(vmap(scan(update))) program.

Uses the driver's compiled chunk and member placement (``pgkit.experiment.driver.programs``,
``_shard_members``: one JAX CPU device per core, as ``pgkit train``) and evaluates the greedy
policy (``recipe.act``) between chunks, outside the timed region. Run with pgkit's Python (the project's .venv or /work/venv).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: recipes/

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import pgkit  # noqa: E402
from pgkit import experiment  # noqa: E402
from pgkit.recipe import validate
from pgkit.experiment import devices, driver


def greedy_evaluation(recipe, episodes: int):
    """jit(vmap over members) of ``episodes`` greedy episodes: returns [members, episodes]."""
    eval_env = recipe.env.with_num_envs(episodes)
    max_steps = int(eval_env.env_params.max_steps_in_episode)

    def one_member(state, key):
        reset_key, key = jax.random.split(key)
        normalization = getattr(getattr(state, "env_state", None), "normalization", None)
        env_state, obs = eval_env.reset(reset_key, normalization=normalization, training=False)

        def step(carry, key):
            env_state, obs, total, alive = carry
            act_key, step_key = jax.random.split(key)
            actions = recipe.act(state, act_key, obs)
            env_state, out = eval_env.step(step_key, env_state, actions, training=False)
            done = out.terminated | out.truncated
            total = jnp.where(alive & done, out.episode_return, total)
            return (env_state, out.obs, total, alive & ~done), None

        carry = (env_state, obs, jnp.zeros(episodes), jnp.ones(episodes, bool))
        (_, _, total, _), _ = jax.lax.scan(step, carry, jax.random.split(key, max_steps))
        return total

    return jax.jit(jax.vmap(one_member))


def main() -> None:
    spec = common.parse_spec()
    # as `pgkit train`: one JAX CPU device per core the seeds fill, seeds split over them
    experiment.use_cpu_cores(members=spec["seeds"])
    module = experiment.load_recipe(spec["algo"])
    n, env_name = spec["seeds"], spec["env"]
    config = module.Config(**{**spec["config"], "total_steps": spec["steps"]})
    hparams = module.HParams(**spec["hparams"])
    validate(config)
    validate(hparams)
    rec = common.Recorder(spec)

    t0, c0 = time.perf_counter(), time.process_time()
    recipe = module.make(config, env_name)
    per_chunk, num_chunks = common.chunk_plan(
        recipe.num_updates * recipe.env_steps_per_update, recipe.env_steps_per_update, spec["chunks"]
    )
    # as the driver starts: members placed over the devices, the chunk compiled during the init
    state, hp, compiled = driver.start_members(module, config, env_name, per_chunk, hparams, n, seed=spec["seed"])
    rec.compile_seconds = time.perf_counter() - t0
    rec.compile_cpu_seconds = time.process_time() - c0
    common.log(f"# pgkit {spec['algo']} {env_name} seeds={n}: compile {rec.compile_seconds:.1f} s, "
               f"{num_chunks} chunks x {per_chunk} updates x {recipe.env_steps_per_update} steps")

    evaluate = greedy_evaluation(recipe, spec["eval_episodes"])
    eval_key = jax.random.PRNGKey(10_000 + spec["seed"])
    steps_per_chunk = per_chunk * recipe.env_steps_per_update
    for i in range(num_chunks):
        t1, c1 = time.perf_counter(), time.process_time()
        state, metrics = compiled(state, hp)
        train_returns = np.asarray(metrics["episode_return"])  # blocks, moves to host as the driver does
        seconds, cpu_seconds = time.perf_counter() - t1, time.process_time() - c1
        eval_key, k = jax.random.split(eval_key)
        returns = np.asarray(evaluate(state, jax.random.split(k, n)))
        rec.chunk((i + 1) * steps_per_chunk, n * steps_per_chunk, seconds, cpu_seconds, returns.mean(),
                  train_returns[:, -1].mean())

    versions = {"pgkit": getattr(pgkit, "__version__", "dev"), "jax": jax.__version__,
                "backend": jax.default_backend(), "devices": devices.devices_used(n)}
    notes = []
    common.emit(rec.result("pgkit", spec["algo"].upper(), versions, notes))


if __name__ == "__main__":
    main()
