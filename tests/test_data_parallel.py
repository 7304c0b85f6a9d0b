"""Data-parallel members (``data_shards``, pgkit.recipe.DATA_AXIS): one member's environments and
minibatches split into shards that average their gradients. PPO's shards on two devices
(shard_map) against the same shards vmapped on one device; the driver's checkpoint, resume and
evaluation of a sharded state; the options it refuses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from pgkit import experiment
from pgkit.recipes import ppo

ROOT = Path(__file__).parents[1]
# one member, 8 envs in 2 shards of 4, minibatches of 128 (2 x 64), 6 updates
CONFIG = dict(num_envs=8, num_steps=32, epochs=2, minibatches=2, total_steps=8 * 32 * 6, data_shards=2)
SCRIPT = """
import json, sys
import numpy as np
from pgkit import experiment
result = experiment.train("ppo", env="CartPole-v1", seeds=1, config=json.loads(sys.argv[1]), chunk=2, log=None,
                          preset=False)
np.savez(sys.argv[2], **{k: v for k, v in result.metrics.items()})
"""


def test_shards_on_two_devices_learn_as_the_same_shards_on_one_to_rounding(tmp_path):
    for devices in (1, 2):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
               "PGKIT_CACHE_DIR": "", "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CONFIG), str(tmp_path / f"{devices}.npz")],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = np.load(tmp_path / "1.npz"), np.load(tmp_path / "2.npz")
    # the same episodes (the returns are exact), the losses to float32 rounding of the all-reduce
    np.testing.assert_array_equal(one["episode_return"], two["episode_return"])
    for name in one.files:
        np.testing.assert_allclose(one[name], two[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_a_sharded_run_checkpoints_resumes_bit_identically_and_evaluates(tmp_path):
    whole = experiment.train("ppo", env="CartPole-v1", seeds=2, config=CONFIG, chunk=2, log=None, preset=False)
    # [members, shards, ...]; every shard holds the same networks after each update
    actor = jax.tree.leaves(whole.state.networks.actor)[0]
    assert actor.shape[:2] == (2, 2)
    np.testing.assert_array_equal(actor[:, 0], actor[:, 1])
    assert whole.state.obs.shape == (2, 2, 4, 4)  # 4 envs per shard
    out = tmp_path / "run"
    experiment.train("ppo", env="CartPole-v1", seeds=2, config=CONFIG, chunk=2, out=out, stop_after_chunks=1, log=None,
                     preset=False)
    resumed = experiment.resume(out, log=None)
    for name, values in whole.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[name], values, err_msg=name)
    returns = experiment.evaluate(out, episodes=2, log=None)
    assert returns.shape == (2, 2) and np.isfinite(returns).all()  # [members, episodes]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(num_envs=6, data_shards=4), "option 'data_shards': 4 must divide num_envs=6"),
        (dict(num_envs=4, num_steps=6, minibatches=4, data_shards=4), "and the minibatch size 6"),
        (dict(data_shards=2, normalize_observations=True), "set normalize_observations=false"),
        (dict(data_shards=2, policy="gru"), "shards need policy='mlp'"),
    ],
)
def test_what_the_shards_cannot_split_is_a_config_error(config, message):
    with pytest.raises(experiment.ConfigError, match=message):
        ppo.make(ppo.Config(**config), "CartPole-v1")
