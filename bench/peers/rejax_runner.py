"""rejax side of bench/compare.py: PPO, SAC, TD3 from the rejax package (installed, called).

Runs in bench/.venvs/rejax (rejax 0.1.3, gymnax 0.0.9, the same jax as pgkit). N seeds are one
``jit(vmap(train))`` program, as rejax's README does it; the run is cut into chunks by calling
``algo.train(train_state=ts)`` with ``total_timesteps = eval_freq = chunk`` and rejax's own
in-training evaluation switched off (``eval_callback`` replaced by a no-op through the
dataclass ``replace``), so that every framework is evaluated the same way: the greedy policy,
between chunks, outside the timed region.

Mapping from the workload's (pgkit) hyperparameters, and what rejax cannot express:
  - PPO: separate actor and critic Adam optimisers (pgkit: one over both); the gradient clip
    is rejax's ``optax.clip`` (element-wise at max_grad_norm), not a global-norm clip; the
    annealed learning rate is passed as an optax linear schedule over all minibatch steps.
  - SAC/TD3: one learning rate for actor, critic (and temperature); ``polyak = 1 - tau``;
    rejax's ``done`` is terminated-or-truncated, so Pendulum's time limit is treated as a
    terminal state (pgkit bootstraps it); SAC's warm-up acts with the initial policy (pgkit:
    uniform actions). TD3's noises are in environment units in rejax and in [-1, 1] units in
    pgkit: they are multiplied by the action scale (2 for Pendulum).
"""

from __future__ import annotations

import sys
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import rejax  # noqa: E402


def no_evaluation(algo, ts, rng):
    return jnp.zeros(())


def build(spec: dict, chunk_steps: int, total_updates: int):
    """The rejax algorithm object, its steps per training iteration, and a greedy act(params, obs)."""
    c, h = spec["config"], spec["hparams"]
    common_kwargs = dict(env=spec["env"], total_timesteps=chunk_steps, eval_freq=chunk_steps,
                         skip_initial_evaluation=True)
    algo_name = spec["algo"]
    if algo_name == "ppo":
        total_opt_steps = total_updates * c["epochs"] * c["minibatches"]
        lr = optax.linear_schedule(h["lr"], 0.0, total_opt_steps) if c["anneal_lr"] else h["lr"]
        algo = rejax.PPO.create(
            **common_kwargs, num_envs=c["num_envs"], num_steps=c["num_steps"], num_epochs=c["epochs"],
            num_minibatches=c["minibatches"], learning_rate=lr, gamma=h["gamma"],
            gae_lambda=h["gae_lambda"], clip_eps=h["clip_eps"], ent_coef=h["ent_coef"],
            vf_coef=h["vf_coef"], max_grad_norm=h["max_grad_norm"],
            agent_kwargs=dict(activation=c["activation"], hidden_layer_sizes=tuple(c["hidden_sizes"])),
        )
        per_iteration = c["num_envs"] * c["num_steps"]

        def act(ts, obs):
            logits = algo.actor.apply(ts.actor_ts.params, obs, method="_action_dist").logits
            return jnp.argmax(logits, axis=-1)

    elif algo_name == "sac":
        algo = rejax.SAC.create(
            **common_kwargs, num_envs=c["num_envs"], learning_rate=h["actor_lr"], gamma=h["gamma"],
            polyak=1.0 - h["tau"], target_update_freq=1, batch_size=c["batch_size"],
            buffer_size=c["buffer_size"], fill_buffer=c["learning_starts"], num_epochs=1,
            hidden_layer_sizes=tuple(c["hidden_sizes"]), agent_kwargs=dict(activation=c["activation"]),
        )
        per_iteration = c["num_envs"]

        def act(ts, obs):
            mean = algo.actor.apply(ts.actor_ts.params, obs, method="_action_dist").mean()
            space = algo.env.action_space(algo.env_params)
            loc, scale = (space.high + space.low) / 2, (space.high - space.low) / 2
            return loc + jnp.tanh(mean) * scale

    elif algo_name == "td3":
        space = None
        algo = rejax.TD3.create(
            **common_kwargs, num_envs=c["num_envs"], learning_rate=h["actor_lr"], gamma=h["gamma"],
            polyak=1.0 - h["tau"], target_update_freq=1, batch_size=c["batch_size"],
            buffer_size=c["buffer_size"], fill_buffer=c["learning_starts"], num_epochs=1,
            policy_delay=c["policy_delay"], exploration_noise=h["exploration_noise"],
            target_noise=h["policy_noise"], target_noise_clip=h["noise_clip"],
            actor_kwargs=dict(activation=c["activation"]), critic_kwargs=dict(activation=c["activation"]),
        )
        space = algo.env.action_space(algo.env_params)
        scale = float(np.max((space.high - space.low) / 2))
        algo = algo.replace(exploration_noise=h["exploration_noise"] * scale,
                            target_noise=h["policy_noise"] * scale,
                            target_noise_clip=h["noise_clip"] * scale)
        per_iteration = c["num_envs"] * c["policy_delay"]

        def act(ts, obs):
            return algo.actor.apply(ts.actor_ts.params, obs)

    else:
        raise SystemExit(f"rejax has no {algo_name}")
    return algo.replace(eval_callback=no_evaluation), per_iteration, act


def greedy_evaluation(algo, act, episodes: int):
    env, params = algo.env, algo.env_params
    max_steps = int(params.max_steps_in_episode)

    def one_seed(ts, key):
        reset_key, key = jax.random.split(key)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, episodes), params)

        def step(carry, key):
            env_state, obs, ret, total, alive = carry
            actions = act(ts, obs)
            obs, env_state, reward, done, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(key, episodes), env_state, actions, params
            )
            ret = ret + reward.reshape(episodes)
            total = jnp.where(alive & done, ret, total)
            return (env_state, obs, ret, total, alive & ~done), None

        carry = (env_state, obs, jnp.zeros(episodes), jnp.zeros(episodes), jnp.ones(episodes, bool))
        (_, _, _, total, _), _ = jax.lax.scan(step, carry, jax.random.split(key, max_steps))
        return total

    return jax.jit(jax.vmap(one_seed))


def main() -> None:
    spec = common.parse_spec()
    n = spec["seeds"]
    rec = common.Recorder(spec)
    t0, c0 = time.perf_counter(), time.process_time()
    # steps of one training iteration, to size the chunks like pgkit's
    _, per_iteration, _ = build(spec, 1, 1)
    per_chunk, num_chunks = common.chunk_plan(spec["steps"], per_iteration, spec["chunks"])
    chunk_steps = per_chunk * per_iteration
    algo, _, act = build(spec, chunk_steps, spec["steps"] // per_iteration)
    keys = jax.random.split(jax.random.PRNGKey(spec["seed"]), n)
    ts = jax.block_until_ready(jax.jit(jax.vmap(algo.init_state))(keys))
    train_chunk = jax.jit(jax.vmap(lambda ts: algo.train(train_state=ts)[0]))
    compiled = train_chunk.lower(ts).compile()
    rec.compile_seconds = time.perf_counter() - t0
    rec.compile_cpu_seconds = time.process_time() - c0
    common.log(f"# rejax {spec['algo']} {spec['env']} seeds={n}: compile {rec.compile_seconds:.1f} s, "
               f"{num_chunks} chunks x {chunk_steps} steps")

    evaluate = greedy_evaluation(algo, act, spec["eval_episodes"])
    eval_key = jax.random.PRNGKey(10_000 + spec["seed"])
    for i in range(num_chunks):
        t1, c1 = time.perf_counter(), time.process_time()
        ts = jax.block_until_ready(compiled(ts))
        seconds, cpu_seconds = time.perf_counter() - t1, time.process_time() - c1
        eval_key, k = jax.random.split(eval_key)
        returns = np.asarray(evaluate(ts, jax.random.split(k, n)))
        rec.chunk((i + 1) * chunk_steps, n * chunk_steps, seconds, cpu_seconds, returns.mean())

    versions = {name: metadata.version(name) for name in ("rejax", "gymnax", "jax", "flax")}
    versions["backend"] = jax.default_backend()
    notes = {
        "ppo": ["separate actor/critic Adam", "element-wise gradient clip (optax.clip)"],
        "sac": ["time limit treated as terminal", "warm-up with the initial policy"],
        "td3": ["time limit treated as terminal"],
    }[spec["algo"]]
    common.emit(rec.result("rejax", spec["algo"].upper(), versions, notes))


if __name__ == "__main__":
    main()
