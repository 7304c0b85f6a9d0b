"""APG recipe: a short run takes finite, clipped Adam steps through the differentiable Pendulum,
bit-identical reruns, the greedy action, and a clear error for an environment that is not
differentiable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgkit import experiment
from pgkit.recipes import apg

# One compiled program for the tests that share it: 2 seeds, 8 environments x 16 steps, 6 updates.
SMALL = {"total_steps": 768, "num_envs": 8, "horizon": 16, "hidden_sizes": (16, 16)}


@pytest.fixture(scope="module")
def small():
    return experiment.train("apg", env="Pendulum-v1", seeds=2, seed=0, config=SMALL, chunk=3, log=None)


def test_short_run_is_finite_and_steps_the_actor(small):
    for name, values in small.metrics.items():
        assert np.isfinite(values).all(), name
    assert small.metrics["loss"].shape == (2, 6)
    assert (small.metrics["grad_norm"] > 0).all() and not small.metrics["skipped"].any()
    counts = small.state.opt.inner_state[1][0].count  # Adam's step count: one step per update
    np.testing.assert_array_equal(counts, 6)
    recipe = apg.make(apg.Config(**SMALL), "Pendulum-v1")
    initial = recipe.init(jax.random.key(0), apg.HParams())
    assert not np.allclose(jax.tree.leaves(small.state.actor)[0][0], jax.tree.leaves(initial.actor)[0])


def test_same_key_gives_a_bit_identical_run(small):
    again = experiment.train("apg", env="Pendulum-v1", seeds=2, seed=0, config=SMALL, chunk=2, log=None)
    for name in small.metrics:
        np.testing.assert_array_equal(again.metrics[name], small.metrics[name], err_msg=name)


def test_greedy_act_is_tanh_of_the_mean(small):
    recipe = apg.make(apg.Config(**SMALL), "Pendulum-v1")
    member = jax.tree.map(lambda x: x[1], small.state)
    obs = jax.random.normal(jax.random.key(0), (5, recipe.env.observation_size))
    np.testing.assert_array_equal(recipe.act(member, jax.random.key(1), obs), jnp.tanh(jax.vmap(member.actor)(obs)))


def test_an_environment_without_transition_gradients_is_a_config_error():
    with pytest.raises(experiment.ConfigError, match="apg needs a differentiable environment: .*CartPole-v1 is not"):
        apg.make(apg.Config(), "CartPole-v1")
    with pytest.raises(experiment.ConfigError, match="option 'hidden_sizes' must be positive widths"):
        apg.make(apg.Config(hidden_sizes=(0,)), "Pendulum-v1")
