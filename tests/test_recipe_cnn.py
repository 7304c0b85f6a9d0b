"""PPO's convolutional torso (``--set torso=cnn``, the default ``auto`` for image observations):
chosen from the observation's shape, a clear error for a flat one, and on Breakout-MinAtar it
learns faster than the MLP at equal environment steps."""

import jax
import jax.numpy as jnp
import pytest

from pgkit import experiment, nn
from pgkit.recipes import ppo

ENV = "Breakout-MinAtar"  # observations [10, 10, 4]
# 1e5 steps, 16 envs x 64 steps, otherwise PPO's defaults. Calibrated (bench/calibrate_learning_tests.py
# ppo/cnn_breakout ppo/mlp_breakout --groups 2, 8 seeds of master seed 1, mean of the last 10
# updates): the CNN 4.8 per seed (sd 0.4, min 4.2), the MLP 3.1 (sd 0.2, max 3.4). The standard
# error of the difference of two 4-seed means is 0.22: a margin of 0.8 is 4 of them below the
# measured difference of 1.7. At 5e4 steps the difference (2.6 against 1.3) was under 4 standard errors.
BREAKOUT = dict(total_steps=100_000, num_envs=16, num_steps=64)
SEEDS = 4


@pytest.mark.parametrize(("torso", "network"), [("auto", nn.ConvNetwork), ("cnn", nn.ConvNetwork), ("mlp", nn.MLP)])
def test_the_torso_follows_the_observation_shape_unless_named(torso, network):
    recipe = ppo.make(ppo.Config(torso=torso), ENV)
    state = recipe.init(jax.random.key(0), ppo.HParams())
    assert isinstance(state.networks.actor.net, network)
    assert isinstance(state.networks.critic.net, network)
    assert jnp.isfinite(recipe.act(state, jax.random.key(1), state.obs)).all()


def test_a_cnn_for_a_flat_observation_is_a_config_error():
    with pytest.raises(experiment.ConfigError, match="option 'torso': torso 'cnn' needs an observation of shape"):
        ppo.make(ppo.Config(torso="cnn"), "CartPole-v1")


def test_the_cnn_learns_breakout_faster_than_the_mlp_at_equal_steps():
    def final(torso):  # about 50 s (cnn) and 15 s (mlp) on 2 cores
        result = experiment.train("ppo", env=ENV, seeds=SEEDS, seed=0, config=dict(BREAKOUT, torso=torso), log=None,
                                  preset=False)
        return result.metrics["episode_return"][:, -10:].mean(axis=1)

    cnn, mlp = final("cnn"), final("mlp")
    assert cnn.mean() >= mlp.mean() + 0.8, (cnn, mlp)
