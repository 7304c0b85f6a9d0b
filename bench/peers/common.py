"""What every runner shares: the workloads (identical hyperparameters), the chunk schedule,
timing and the JSON protocol. Standard library only: each runner imports it from its own venv.

A runner is called as ``python bench/peers/<framework>_runner.py --spec '<json>'`` and prints
one line ``RESULT {json}`` on stdout (progress goes to stderr). The spec names a workload of
``WORKLOADS``, the number of seeds, the environment steps per seed, the number of chunks, the
evaluation episodes per seed and the return threshold.

Timing protocol (the same for every framework):
  - the run is cut into ``chunks`` equal chunks; after each chunk the greedy policy of every
    seed is evaluated (``eval_episodes`` episodes per seed) *outside* the timed region;
  - ``env_steps_per_second`` counts the steps of all seeds together: the median over the
    timed chunks, skipping chunks that lie in an off-policy warm-up (``learning_starts``); for
    sequential seeds (Stable-Baselines3) the sum of steps over the sum of chunk times;
  - ``env_steps_per_cpu_second``: the same over the process's CPU time (all its threads);
    steadier than wall time on a shared, oversubscribed machine;
  - ``compile_seconds``: JAX tracing + XLA compilation of init and of one chunk (for
    Stable-Baselines3: building the model and its environments);
  - ``time_to_threshold_seconds``: compile + timed training until the first chunk boundary
    at which the mean over seeds of the greedy evaluation return reaches ``threshold``
    (None if never reached);
  - ``final_return``: mean over seeds of the last greedy evaluation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

# Hyperparameters in pgkit's names (recipes/<algo>.py Config / HParams); each runner maps them
# onto its framework and says where the framework cannot express one.
WORKLOADS = {
    "ppo-cartpole": dict(
        algo="ppo", env="CartPole-v1", threshold=450.0, learning_starts=0,
        config=dict(num_envs=4, num_steps=128, epochs=4, minibatches=4, hidden_sizes=(64, 64),
                    activation="tanh", clip_value=True, normalize_advantages=True, anneal_lr=True),
        hparams=dict(lr=2.5e-4, gamma=0.99, gae_lambda=0.95, clip_eps=0.2, ent_coef=0.01,
                     vf_coef=0.5, max_grad_norm=0.5),
    ),
    "a2c-cartpole": dict(
        algo="a2c", env="CartPole-v1", threshold=450.0, learning_starts=0,
        config=dict(num_envs=16, num_steps=8, advantages="n_step", shared=False, optimizer="rmsprop",
                    hidden_sizes=(64, 64), activation="tanh", anneal_lr=True, normalize_advantages=False),
        hparams=dict(lr=2e-3, gamma=0.99, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5,
                     rms_decay=0.99, eps=1e-5),
    ),
    "trpo-cartpole": dict(
        algo="trpo", env="CartPole-v1", threshold=450.0, learning_starts=0,
        config=dict(num_envs=8, num_steps=256, hidden_sizes=(64, 64), activation="tanh",
                    cg_iterations=10, max_backtracks=10, critic_epochs=5, critic_minibatches=4,
                    normalize_advantages=True),
        hparams=dict(max_kl=0.02, damping=0.1, backtrack_ratio=0.8, gamma=0.99, gae_lambda=0.97,
                     critic_lr=1e-3),
    ),
    "sac-pendulum": dict(
        algo="sac", env="Pendulum-v1", threshold=-250.0, learning_starts=1000,
        config=dict(num_envs=1, num_steps=1, updates_per_step=1.0, learning_starts=1000,
                    batch_size=128, buffer_size=100_000, hidden_sizes=(64, 64), activation="relu",
                    autotune=True),
        hparams=dict(actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, gamma=0.98, tau=0.005,
                     alpha_init=1.0, target_entropy_scale=1.0),
    ),
    "td3-pendulum": dict(
        algo="td3", env="Pendulum-v1", threshold=-250.0, learning_starts=1000,
        config=dict(num_envs=1, num_steps=2, updates_per_step=1.0, policy_delay=2,
                    learning_starts=1000, batch_size=128, buffer_size=100_000,
                    hidden_sizes=(64, 64), activation="relu"),
        hparams=dict(actor_lr=1e-3, critic_lr=1e-3, gamma=0.98, tau=0.005,
                     exploration_noise=0.1, policy_noise=0.2, noise_clip=0.5),
    ),
    "ddpg-pendulum": dict(
        algo="ddpg", env="Pendulum-v1", threshold=-250.0, learning_starts=1000,
        config=dict(num_envs=1, num_steps=1, updates_per_step=1.0, learning_starts=1000,
                    batch_size=128, buffer_size=100_000, hidden_sizes=(64, 64), activation="relu",
                    exploration="gaussian"),
        hparams=dict(actor_lr=1e-3, critic_lr=1e-3, gamma=0.98, tau=0.005, exploration_noise=0.1),
    ),
}


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def parse_spec() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True, help="JSON: workload, seeds, steps, chunks, eval_episodes, seed")
    spec = json.loads(parser.parse_args().spec)
    spec.setdefault("chunks", 10)
    spec.setdefault("eval_episodes", 16)
    spec.setdefault("seed", 0)
    workload = WORKLOADS[spec["workload"]]
    spec.setdefault("threshold", workload["threshold"])
    return {**workload, **spec}


def chunk_plan(total_steps: int, steps_per_iteration: int, chunks: int) -> tuple[int, int]:
    """(iterations per chunk, number of chunks): whole iterations, at most ``total_steps``."""
    iterations = max(1, total_steps // steps_per_iteration)
    per_chunk = max(1, iterations // chunks)
    return per_chunk, max(1, iterations // per_chunk)


class Recorder:
    """Collects the timed chunks and the evaluations; builds the result dictionary."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.chunks: list[dict] = []
        self.compile_seconds = 0.0
        self.compile_cpu_seconds = 0.0
        self.train_seconds = 0.0
        self.t_start = time.perf_counter()

    def chunk(self, steps_per_seed_done: int, steps_all_seeds: int, seconds: float, cpu_seconds: float,
              eval_return: float, train_return: float | None = None) -> None:
        self.train_seconds += seconds
        self.chunks.append(dict(
            steps_per_seed=int(steps_per_seed_done), steps=int(steps_all_seeds), seconds=seconds,
            cpu_seconds=cpu_seconds, rate=steps_all_seeds / seconds,
            cpu_rate=steps_all_seeds / max(cpu_seconds, 1e-9), eval_return=float(eval_return),
            train_return=None if train_return is None else float(train_return),
            elapsed=self.compile_seconds + self.train_seconds,
        ))
        log(f"  {steps_per_seed_done:>9} steps/seed  {steps_all_seeds / seconds:>10,.0f} steps/s  "
            f"eval {eval_return:8.1f}")

    def result(self, framework: str, algo_name: str, versions: dict, notes: list[str],
               sequential_seeds: bool = False) -> dict:
        spec = self.spec
        warm = spec["learning_starts"]
        steady = [c for c in self.chunks if c["steps_per_seed"] - c["steps"] / spec["seeds"] >= warm]
        steady = steady or self.chunks
        if sequential_seeds:
            rate = sum(c["steps"] for c in steady) / sum(c["seconds"] for c in steady)
            cpu_rate = sum(c["steps"] for c in steady) / sum(c["cpu_seconds"] for c in steady)
        else:
            rate = statistics.median(c["rate"] for c in steady)
            cpu_rate = statistics.median(c["cpu_rate"] for c in steady)
        ttt = None
        for i, c in enumerate(self.chunks):
            following = self.chunks[i + 1 : i + 2]  # the next evaluation must agree (less luck)
            if all(x["eval_return"] >= spec["threshold"] for x in [c, *following]):
                ttt = c["elapsed"]
                break
        return dict(
            framework=framework, algorithm=algo_name, workload=spec["workload"], env=spec["env"],
            seeds=spec["seeds"], steps_per_seed=self.chunks[-1]["steps_per_seed"] if self.chunks else 0,
            env_steps_per_second=rate, env_steps_per_cpu_second=cpu_rate,
            compile_seconds=self.compile_seconds, compile_cpu_seconds=self.compile_cpu_seconds,
            train_seconds=self.train_seconds, wall_seconds=time.perf_counter() - self.t_start,
            time_to_threshold_seconds=ttt, threshold=spec["threshold"],
            final_return=self.chunks[-1]["eval_return"] if self.chunks else None,
            final_train_return=self.chunks[-1]["train_return"] if self.chunks else None,
            chunks=self.chunks, versions=versions, notes=notes,
            sequential_seeds=sequential_seeds,
        )


def emit(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)
