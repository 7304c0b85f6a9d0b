"""Digests of train()'s metrics and final state for every built-in recipe: check a refactor changes no number.

Each case trains 2 seeds for 2 chunks at the recipe's defaults (and a few mode switches) on one
device with one XLA thread, and prints a digest of the metrics and one of metrics and final state:

    python bench/digests.py [RECIPE ...] > after.txt     # then diff against a run before the change

The "metrics" digest covers every number a run reports; "all" also covers the state's layout
(an optimiser that gains a counter changes "all" but not "metrics").
"""
import hashlib, sys, json
from pgkit import experiment
experiment.use_cpu_cores(1, threads=1)
import jax, numpy as np

CASES = [
    ("ppo", None, {}), ("ppo", None, {"objective": "adaptive_kl"}), ("ppo", "Pendulum-v1", {}),
    ("a2c", None, {}), ("a2c", None, {"optimizer": "adam", "shared": True, "advantages": "gae"}),
    ("reinforce", None, {}), ("reinforce", None, {"baseline": "optimal"}),
    ("actor_critic", None, {}), ("actor_critic", None, {"variant": "qac"}), ("actor_critic", None, {"variant": "td_lambda", "optimizer": "sgd"}),
    ("npg", None, {}), ("npg", None, {"direction": "compatible"}) , ("trpo", None, {}), ("trpo", "Pendulum-v1", {}),
    ("cem", None, {}), ("cem", None, {"variant": "approximate"}),
    ("ddpg", None, {}), ("ddpg", None, {"exploration": "ornstein_uhlenbeck"}), ("td3", None, {}),
    ("sac", None, {}), ("sac", "CartPole-v1", {}),
    # options added after the recipe-protocol reference (docs/benchmark_results/digests-0.5.txt)
    ("ppo", None, {"kl_stop": "k3"}), ("td3", None, {"target_update": "periodic"}),
    ("reinforce", None, {"baseline": "optimal_per_parameter"}), ("reinforce", None, {"baseline": "leave_one_out"}),
    ("reinforce", None, {"relaxation_episodes": 16, "importance_weights": "truncated"}),
    ("cem", "FrozenLake-misc", {"variant": "tabular", "num_steps": 100}),
    ("cem", "FrozenLake-misc", {"variant": "tabular", "num_steps": 100, "resimulations": 1}),
    ("npg", None, {"direction": "nac"}), ("td3", None, {"exploration": "ornstein_uhlenbeck"}),
]
only = sys.argv[1:]
for name, env, cfg in CASES:
    if only and name not in only:
        continue
    try:
        r = experiment.train(name, env=env, seeds=2, config=cfg, stop_after_chunks=2, log=None, preset=False)
    except Exception as e:  # an option name that does not exist in this recipe
        print(name, env, cfg, "ERROR", type(e).__name__, str(e)[:100], flush=True); continue
    d = hashlib.sha256()
    for k in sorted(r.metrics):
        d.update(k.encode()); d.update(np.asarray(r.metrics[k], np.float64).tobytes())
    md = d.hexdigest()[:16]
    for leaf in jax.tree.leaves(r.state):
        if hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        d.update(np.asarray(leaf).tobytes())
    print(name, env, json.dumps(cfg), "metrics", md, "all", d.hexdigest()[:16], flush=True)
