"""Stable-Baselines3 side of bench/compare.py: PPO, A2C, SAC, TD3, DDPG, and TRPO (sb3-contrib).

Runs in bench/.venvs/sb3 (PyTorch CPU build). Seeds run one after the other in this process;
steps/s is the total steps over the total timed seconds. Each seed is one ``model.learn`` call
(so learning-rate schedules see the whole run); a callback stops the clock at every chunk
boundary (checked at the start of each rollout, i.e. after the previous training phase),
evaluates the greedy policy (``evaluate_policy(deterministic=True)``) and restarts the clock.

Mapping from the workload's (pgkit) hyperparameters; differences that SB3 cannot express:
  - environments are gymnasium's CartPole-v1 / Pendulum-v1 (same dynamics as gymnax's) in a
    DummyVecEnv; A2C's n-step returns are GAE with lambda = 1; TRPO's critic minibatches are
    ``batch_size = num_envs * num_steps / critic_minibatches``;
  - SAC/TD3/DDPG: one learning rate for actor and critic (both 1e-3 in the workloads).
"""

from __future__ import annotations

import sys
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import A2C, DDPG, PPO, SAC, TD3  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.noise import NormalActionNoise  # noqa: E402

ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}


def linear(start: float):
    return lambda progress_remaining: progress_remaining * start


def build(spec: dict, seed: int):
    c, h = spec["config"], spec["hparams"]
    algo, env_id = spec["algo"], spec["env"]
    act = ACTIVATIONS[c["activation"]]
    sizes = list(c["hidden_sizes"])
    if algo in ("ppo", "a2c", "trpo"):
        env = make_vec_env(env_id, n_envs=c["num_envs"], seed=seed)
        policy_kwargs = dict(net_arch=dict(pi=sizes, vf=sizes), activation_fn=act)
        if algo == "ppo":
            batch = c["num_envs"] * c["num_steps"]
            lr = linear(h["lr"]) if c["anneal_lr"] else h["lr"]
            model = PPO("MlpPolicy", env, n_steps=c["num_steps"], batch_size=batch // c["minibatches"],
                        n_epochs=c["epochs"], learning_rate=lr, gamma=h["gamma"],
                        gae_lambda=h["gae_lambda"], clip_range=h["clip_eps"],
                        clip_range_vf=h["clip_eps"] if c["clip_value"] else None,
                        normalize_advantage=c["normalize_advantages"], ent_coef=h["ent_coef"],
                        vf_coef=h["vf_coef"], max_grad_norm=h["max_grad_norm"],
                        policy_kwargs=policy_kwargs, seed=seed, device="cpu")
        elif algo == "a2c":
            lr = linear(h["lr"]) if c["anneal_lr"] else h["lr"]
            model = A2C("MlpPolicy", env, n_steps=c["num_steps"], learning_rate=lr, gamma=h["gamma"],
                        gae_lambda=1.0, ent_coef=h["ent_coef"], vf_coef=h["vf_coef"],
                        max_grad_norm=h["max_grad_norm"], use_rms_prop=c["optimizer"] == "rmsprop",
                        rms_prop_eps=h["eps"], normalize_advantage=c["normalize_advantages"],
                        policy_kwargs=policy_kwargs,  # RMSprop(alpha=0.99, eps=rms_prop_eps): rms_decay 0.99
                        seed=seed, device="cpu")
        else:
            from sb3_contrib import TRPO

            batch = c["num_envs"] * c["num_steps"]
            model = TRPO("MlpPolicy", env, n_steps=c["num_steps"], batch_size=batch // c["critic_minibatches"],
                         n_critic_updates=c["critic_epochs"], learning_rate=h["critic_lr"],
                         gamma=h["gamma"], gae_lambda=h["gae_lambda"], target_kl=h["max_kl"],
                         cg_damping=h["damping"], cg_max_steps=c["cg_iterations"],
                         line_search_max_iter=c["max_backtracks"],
                         line_search_shrinking_factor=h["backtrack_ratio"],
                         normalize_advantage=c["normalize_advantages"],
                         policy_kwargs=policy_kwargs, seed=seed, device="cpu")
        return model, env.num_envs * c["num_steps"]
    # off-policy, one environment
    env = make_vec_env(env_id, n_envs=c["num_envs"], seed=seed)
    common_kwargs = dict(learning_rate=h["actor_lr"], buffer_size=c["buffer_size"],
                         learning_starts=c["learning_starts"], batch_size=c["batch_size"], tau=h["tau"],
                         gamma=h["gamma"], train_freq=1, gradient_steps=1,
                         policy_kwargs=dict(net_arch=sizes, activation_fn=act), seed=seed, device="cpu")
    n_actions = env.action_space.shape[0]
    if algo == "sac":
        model = SAC("MlpPolicy", env, ent_coef=f"auto_{h['alpha_init']}",
                    target_entropy=-h["target_entropy_scale"] * n_actions, **common_kwargs)
    elif algo == "td3":
        noise = NormalActionNoise(np.zeros(n_actions), h["exploration_noise"] * np.ones(n_actions))
        model = TD3("MlpPolicy", env, action_noise=noise, policy_delay=c["policy_delay"],
                    target_policy_noise=h["policy_noise"], target_noise_clip=h["noise_clip"], **common_kwargs)
    elif algo == "ddpg":
        noise = NormalActionNoise(np.zeros(n_actions), h["exploration_noise"] * np.ones(n_actions))
        model = DDPG("MlpPolicy", env, action_noise=noise, **common_kwargs)
    else:
        raise SystemExit(f"no SB3 mapping for {algo}")
    return model, c["num_envs"]


class ChunkClock(BaseCallback):
    """Stops the clock at chunk boundaries to evaluate; records (steps, seconds, cpu, return)."""

    def __init__(self, chunk_steps: int, eval_env, episodes: int):
        super().__init__()
        self.chunk_steps, self.eval_env, self.episodes = chunk_steps, eval_env, episodes
        self.next = chunk_steps
        self.records: list[tuple[int, float, float, float]] = []

    def start(self):
        self.t, self.c = time.perf_counter(), time.process_time()

    def stop_and_evaluate(self):
        seconds, cpu = time.perf_counter() - self.t, time.process_time() - self.c
        mean, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.episodes, deterministic=True)
        self.records.append((self.model.num_timesteps, seconds, cpu, float(mean)))
        self.start()

    def _on_training_start(self):
        self.start()

    def _on_rollout_start(self):
        if self.model.num_timesteps >= self.next:
            self.stop_and_evaluate()
            self.next += self.chunk_steps

    def _on_step(self):
        return True


def main() -> None:
    spec = common.parse_spec()
    # one intra-op thread by default: these networks are tiny, and on a shared machine extra
    # OpenMP threads only spin (the spec's "torch_threads" overrides it; 0 keeps torch's default)
    if spec.get("torch_threads", 1):
        torch.set_num_threads(spec.get("torch_threads", 1))
    rec = common.Recorder(spec)
    per_seed = []
    for s in range(spec["seeds"]):
        t0, c0 = time.perf_counter(), time.process_time()
        model, per_iteration = build(spec, spec["seed"] + s)
        per_chunk, num_chunks = common.chunk_plan(spec["steps"], per_iteration, spec["chunks"])
        chunk_steps, total = per_chunk * per_iteration, per_chunk * per_iteration * num_chunks
        rec.compile_seconds += time.perf_counter() - t0
        rec.compile_cpu_seconds += time.process_time() - c0
        eval_env = make_vec_env(spec["env"], n_envs=1, seed=10_000 + spec["seed"] + s)
        clock = ChunkClock(chunk_steps, eval_env, spec["eval_episodes"])
        model.learn(total_timesteps=total, callback=clock)
        clock.stop_and_evaluate()  # the last chunk
        records = clock.records[:num_chunks]
        per_seed.append(records)
        rates = [round((r[0] - (records[i - 1][0] if i else 0)) / max(r[1], 1e-9)) for i, r in enumerate(records)]
        common.log(f"# sb3 {spec['algo']} seed {s}: steps/s per chunk {rates}")
    # combine seeds chunk by chunk: steps and seconds add up (sequential), returns average
    for i in range(min(len(r) for r in per_seed)):
        rows = [r[i] for r in per_seed]
        prev = [r[i - 1][0] if i else 0 for r in per_seed]
        steps = sum(row[0] - p for row, p in zip(rows, prev))
        rec.chunk(rows[0][0], steps, sum(r[1] for r in rows), sum(r[2] for r in rows),
                  float(np.mean([r[3] for r in rows])))
    versions = {name: metadata.version(name) for name in ("stable-baselines3", "sb3-contrib", "torch", "gymnasium")}
    versions["torch_threads"] = torch.get_num_threads()
    name = spec["algo"].upper()
    notes = ["seeds run sequentially"] + (["GAE lambda=1 for n-step returns"] if spec["algo"] == "a2c" else [])
    common.emit(rec.result("sb3", name, versions, notes, sequential_seeds=True))


if __name__ == "__main__":
    main()
