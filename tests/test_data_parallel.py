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
import jax.numpy as jnp
import numpy as np
import pytest

from pgkit import experiment
from pgkit.recipe import DATA_AXIS, shard_key, shard_mean
from pgkit.recipes import a2c, ppo

ROOT = Path(__file__).parents[1]
# 8 envs in 2 shards of 4, PPO's minibatches of 128 (2 x 64), 6 updates
CONFIG = dict(num_envs=8, num_steps=32, epochs=2, minibatches=2, total_steps=8 * 32 * 6, data_shards=2)
A2C_CONFIG = dict(num_envs=8, num_steps=8, total_steps=8 * 8 * 6, normalize_advantages=True, data_shards=2)
SCRIPT = """
import json, sys
import numpy as np
from pgkit import experiment
for recipe, config in json.loads(sys.argv[1]).items():
    result = experiment.train(recipe, env="CartPole-v1", seeds=2, config=config, chunk=2, log=None, preset=False)
    np.savez(f"{sys.argv[2]}-{recipe}.npz", **{k: v for k, v in result.metrics.items()})
"""


def test_shards_on_two_devices_learn_as_the_same_shards_on_one_to_rounding(tmp_path):
    # 2 members: on 2 devices each member's shards split over both; on 4, a (members 2, data 2) mesh
    for devices in (1, 2, 4):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
               "PGKIT_CACHE_DIR": "", "PYTHONPATH": str(ROOT)}
        recipes = json.dumps({"ppo": CONFIG, "a2c": A2C_CONFIG})
        done = subprocess.run([sys.executable, "-c", SCRIPT, recipes, str(tmp_path / str(devices))],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
    for recipe in ("ppo", "a2c"):
        one = np.load(tmp_path / f"1-{recipe}.npz")
        for devices in (2, 4):
            other = np.load(tmp_path / f"{devices}-{recipe}.npz")
            # the same episodes (the returns are exact), the losses to float32 rounding of the all-reduce
            np.testing.assert_array_equal(one["episode_return"], other["episode_return"])
            for name in one.files:
                np.testing.assert_allclose(one[name], other[name], rtol=1e-4, atol=1e-6,
                                           err_msg=f"{recipe} {name}, {devices} devices")


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


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(num_envs=6, data_shards=4), "option 'data_shards': 4 must divide num_envs=6"),
        (dict(data_shards=2, policy="gru"), "shards need policy='mlp' and normalize_observations=false"),
    ],
)
def test_what_a2c_shards_cannot_split_is_a_config_error(config, message):
    with pytest.raises(experiment.ConfigError, match=message):
        a2c.make(a2c.Config(**config), "CartPole-v1")


def test_a_shard_has_its_own_key_and_the_shards_share_their_mean():
    key = jax.random.key(3)
    keys, means = jax.vmap(lambda x: (shard_key(key, 3), shard_mean(x, 3)), axis_name=DATA_AXIS)(jnp.arange(3.0))
    for i in range(3):
        np.testing.assert_array_equal(jax.random.key_data(keys[i]), jax.random.key_data(jax.random.fold_in(key, i)))
    np.testing.assert_array_equal(means, [1.0, 1.0, 1.0])
    assert shard_key(key, 1) is key and shard_mean(means, 1) is means  # one shard: untouched
