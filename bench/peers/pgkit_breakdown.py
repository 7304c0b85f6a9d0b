"""Where pgkit's PPO time goes (CartPole-v1, standard configuration): small timing experiments.

Each experiment is one ``jit(vmap over seeds(scan over K updates(...)))`` program, timed after
compilation over ``--repeats`` calls (median); compile time (tracing + lowering, then XLA) is
reported separately. Both wall and process CPU time are recorded (the CPU time is steadier on
a shared machine).

  update             the recipe's whole update (rollout + GAE + 4 epochs x 4 minibatches)
  rollout            pgkit.rollout.rollout with the recipe's act_fn (actor sample + critic) and
                     value_fn (critic on the final observations): the data-collection half
  rollout_no_next_v  the same without value_fn (no critic pass over the final observations)
  env_pgkit          pgkit.envs VecEnv.step with random actions (wrapper + gymnax auto-reset)
  env_gymnax         gymnax env.step (auto-reset: a reset_env draw and a select every step)
  env_no_reset       gymnax env.step_env only (no auto-reset; episodes run past their end)
  rng_only           the key splitting of one env step alone (E step keys + gymnax's split)
  update_1_epoch     the update with 1 epoch instead of 4
  learn              update minus rollout, by subtraction: GAE, minibatch gradients, Adam
  one_epoch          (update - update_1_epoch) / 3: one epoch of 4 minibatch gradient steps
  learn_fixed        learn minus 4 epochs: GAE, the old-policy forward pass, statistics

    python bench/peers/pgkit_breakdown.py [--seeds 1 32] [--updates 20] [--repeats 5] [--json f]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from pgkit import experiment, nn, rollout  # noqa: E402


def timed(fn, args, repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    lowered = jax.jit(fn).lower(*args)
    trace_s, trace_cpu = time.perf_counter() - t0, time.process_time() - c0
    compiled = lowered.compile()
    compile_s, compile_cpu = time.perf_counter() - t0, time.process_time() - c0
    jax.block_until_ready(compiled(*args))  # warm
    walls, cpus = [], []
    for _ in range(repeats):
        t1, c1 = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(*args))
        walls.append(time.perf_counter() - t1)
        cpus.append(time.process_time() - c1)
    return dict(compile_s=compile_s, compile_cpu_s=compile_cpu, trace_s=trace_s, trace_cpu_s=trace_cpu,
                wall_s=statistics.median(walls),
                cpu_s=statistics.median(cpus))


def experiments(num_seeds: int, updates: int, repeats: int) -> dict:
    module = experiment.load_recipe("ppo")
    config = module.Config()
    recipe = module.make(config, "CartPole-v1")
    env = recipe.env
    T, E = config.num_steps, config.num_envs
    hp = jax.tree.map(lambda x: jnp.full((num_seeds,), x, jnp.float32), module.HParams())
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    state = jax.jit(jax.vmap(recipe.init))(keys, hp)
    out = {}

    # the whole update, K times
    def updates_fn(state, hp):
        return jax.vmap(lambda s, h: jax.lax.scan(lambda s, _: recipe.update(s, h), s, None, length=updates))(state, hp)

    out["update"] = timed(updates_fn, (state, hp), repeats)

    # the same update with one epoch: (update - update_1_epoch) / 3 is the cost of one epoch
    recipe_1 = module.make(dataclasses.replace(config, epochs=1), "CartPole-v1")

    def updates_1_fn(state, hp):
        return jax.vmap(lambda s, h: jax.lax.scan(lambda s, _: recipe_1.update(s, h), s, None, length=updates))(state, hp)

    out["update_1_epoch"] = timed(updates_1_fn, (state, hp), repeats)

    # the rollout alone, K times, with the recipe's act_fn
    def rollouts_fn(state, hp, value_fn=True):
        def one(state, h):
            actor, critic = state.networks

            def act_fn(key, obs):
                dist = nn.policy_distribution(jax.vmap(actor)(obs), discrete=env.discrete)
                actions, log_probs = dist.sample_and_log_prob(seed=key)
                return actions, log_probs, jax.vmap(critic)(obs)

            def body(carry, key):
                env_state, obs = carry
                env_state, obs, traj = rollout.rollout(key, env, env_state, obs, act_fn, num_steps=T, gamma=h.gamma,
                                                       value_fn=jax.vmap(critic) if value_fn else None)
                return (env_state, obs), traj.rewards.sum()

            return jax.lax.scan(body, (state.env_state, state.obs), jax.random.split(state.key, updates))

        return jax.vmap(one)(state, hp)

    out["rollout"] = timed(rollouts_fn, (state, hp), repeats)
    with_next_values = rollouts_fn

    # the same rollout without the critic pass over the final observations (next_values = 0)
    def rollouts_no_next_values(state, hp):
        return with_next_values(state, hp, value_fn=False)

    out["rollout_no_next_v"] = timed(rollouts_no_next_values, (state, hp), repeats)

    steps = updates * T  # env steps per env per experiment

    def env_loop(step_one):
        def fn(state):
            def one(state):
                def body(carry, key):
                    return step_one(key, carry), None

                carry, _ = jax.lax.scan(body, state, jax.random.split(state.key, steps))
                return carry

            return jax.vmap(one)(state)

        return fn

    def pgkit_step(key, state):
        env_state = state.env_state
        a_key, s_key = jax.random.split(key)
        actions = jax.random.randint(a_key, (E,), 0, 2)
        env_state, step = env.step(s_key, env_state, actions)
        return state._replace(env_state=env_state, obs=step.obs)

    out["env_pgkit"] = timed(env_loop(pgkit_step), (state,), repeats)

    gym, params = env.env, env.env_params

    def gymnax_step(key, state):
        a_key, s_key = jax.random.split(key)
        actions = jax.random.randint(a_key, (E,), 0, 2)
        obs, env_state, *_ = jax.vmap(gym.step, in_axes=(0, 0, 0, None))(
            jax.random.split(s_key, E), state.env_state.env_state, actions, params)
        return state._replace(env_state=state.env_state._replace(env_state=env_state), obs=obs)

    out["env_gymnax"] = timed(env_loop(gymnax_step), (state,), repeats)

    def no_reset_step(key, state):
        a_key, s_key = jax.random.split(key)
        actions = jax.random.randint(a_key, (E,), 0, 2)
        obs, env_state, *_ = jax.vmap(gym.step_env, in_axes=(0, 0, 0, None))(
            jax.random.split(s_key, E), state.env_state.env_state, actions, params)
        return state._replace(env_state=state.env_state._replace(env_state=env_state), obs=obs)

    out["env_no_reset"] = timed(env_loop(no_reset_step), (state,), repeats)

    def rng_step(key, state):
        a_key, s_key = jax.random.split(key)
        actions = jax.random.randint(a_key, (E,), 0, 2)
        ks = jax.vmap(jax.random.split)(jax.random.split(s_key, E))
        bump = (ks.sum() + actions.sum()).astype(jnp.float32) * 0.0
        return state._replace(obs=state.obs + bump)

    out["rng_only"] = timed(env_loop(rng_step), (state,), repeats)

    env_steps = num_seeds * updates * T * E
    derived = {
        "learn": {k: out["update"][k] - out["rollout"][k] for k in ("wall_s", "cpu_s")},
        "one_epoch": {k: (out["update"][k] - out["update_1_epoch"][k]) / (config.epochs - 1)
                      for k in ("wall_s", "cpu_s")},
    }
    derived["learn_fixed"] = {k: derived["learn"][k] - config.epochs * derived["one_epoch"][k]
                              for k in ("wall_s", "cpu_s")}
    out.update(derived)
    for name, r in out.items():
        r["env_steps"] = env_steps
        r["us_per_env_step_wall"] = 1e6 * r["wall_s"] / env_steps
        r["us_per_env_step_cpu"] = 1e6 * r["cpu_s"] / env_steps
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = {}
    print(f"# jax {jax.__version__}, {jax.default_backend()}; PPO CartPole-v1, 4 envs x 128 steps; "
          f"{args.updates} updates per call; medians of {args.repeats} calls")
    print(f"{'seeds':>5} {'experiment':>17} {'trace CPU s':>11} {'compile s':>10} {'compile CPU s':>14} {'us/step wall':>13} "
          f"{'us/step CPU':>12} {'share of update (CPU)':>22}")
    for n in args.seeds:
        res = experiments(n, args.updates, args.repeats)
        results[n] = res
        for name, r in res.items():
            share = r["cpu_s"] / res["update"]["cpu_s"]
            print(f"{n:>5} {name:>17} {r.get('trace_cpu_s', float('nan')):>11.1f} {r.get('compile_s', float('nan')):>10.1f} "
                  f"{r.get('compile_cpu_s', float('nan')):>14.1f} {r['us_per_env_step_wall']:>13.2f} "
                  f"{r['us_per_env_step_cpu']:>12.2f} {share:>22.0%}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
