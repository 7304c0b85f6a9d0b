"""DDPG recipe: learns Pendulum-v1, bit-identical reruns, warm-up gating, configuration errors
(the off-policy machinery it shares with TD3 and SAC: tests/test_offpolicy.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgkit import experiment, offpolicy
from pgkit.recipes import ddpg

from offpolicy import (
    SMALL,
    SMALL_CHUNK,
    check_reruns_and_resume_are_bit_identical,
    check_warm_up_actions_are_uniform,
    full_buffer_copies,
    members_differ,
    sharpen,
)

# The documented learning-test configuration (see the recipe's module docstring): small
# networks and minibatches so that four seeds train in well under a minute on two CPU cores.
CONFIG = {
    "total_steps": 20_000,
    "learning_starts": 1_000,
    "batch_size": 64,
    "buffer_size": 20_000,
    "hidden_sizes": (64, 64),
}
# Calibrated (bench/calibrate_learning_tests.py, 32 seeds of master seed 1): per-seed mean -157,
# sd 32, min -220; 4-seed means -178 to -128. -225 is 4.2 standard errors (16) of a 4-seed mean
# below the mean.
SEEDS = 4
LAST_STEPS = 2_000  # "final return": mean over the last 10 Pendulum episodes of each seed
THRESHOLD = -225.0


@pytest.fixture(scope="module")
def run():
    return experiment.train("ddpg", env="Pendulum-v1", seeds=SEEDS, seed=0, config=CONFIG, log=None)


def final_returns(metrics):
    return metrics["episode_return"][:, -LAST_STEPS:].mean(axis=1)


def test_ddpg_learns_pendulum(run):
    returns = final_returns(run.metrics)
    assert returns.shape == (SEEDS,)
    assert returns.mean() >= THRESHOLD, f"final returns per seed {returns}"
    for name, values in run.metrics.items():
        assert np.isfinite(values).all(), name


def test_same_key_gives_bit_identical_learning_run_and_resume(tmp_path):
    run = check_reruns_and_resume_are_bit_identical(
        tmp_path, "ddpg", env="Pendulum-v1", config=SMALL, chunk=SMALL_CHUNK
    )
    # the compared runs learn in 5 of their 6 chunks: one gradient step per update from update
    # learning_starts - 1 on, and the seeds end with different networks
    first_learning = SMALL["learning_starts"] - 1
    np.testing.assert_array_equal(run.state.critic_opt[0].count, SMALL["total_steps"] - first_learning)
    np.testing.assert_array_equal(run.state.actor_opt[0].count, SMALL["total_steps"] - first_learning)
    assert (run.metrics["critic_loss"][:, first_learning:] > 0).all()
    assert members_differ(run.state.networks) and members_differ(run.state.targets)


def test_no_gradient_steps_before_learning_starts(run):
    # update u (0-based) has taken u + 1 steps: learning starts at update learning_starts - 1
    first = CONFIG["learning_starts"] - 1
    losses = run.metrics["critic_loss"]
    assert (losses[:, :first] == 0).all()
    assert (losses[:, first:] > 0).all()
    # the learning run's optimizers took exactly one step per update from then on
    counts = np.asarray(run.state.critic_opt[0].count)
    np.testing.assert_array_equal(counts, CONFIG["total_steps"] - first)


def test_greedy_act_is_the_deterministic_actor(run):
    module = experiment.load_recipe("ddpg")
    recipe = module.make(module.Config(**CONFIG), "Pendulum-v1")
    member = jax.tree.map(lambda x: x[0], run.state)
    obs = jax.random.normal(jax.random.key(0), (5, recipe.env.observation_size))
    actions = recipe.act(member, jax.random.key(1), obs)
    assert actions.shape == (5, 1)
    np.testing.assert_array_equal(actions, jax.vmap(member.networks.actor)(obs))
    assert bool(jnp.all(jnp.abs(actions) <= 1.0))


def test_warm_up_actions_are_uniform_over_the_box():
    check_warm_up_actions_are_uniform(
        ddpg, "Pendulum-v1", SMALL, SMALL_CHUNK,
        sharpened=lambda s: s._replace(networks=s.networks._replace(actor=sharpen(s.networks.actor))),
    )


@pytest.mark.parametrize(
    "overrides, env_name, option",
    [
        ({"updates_per_step": 0.3}, "Pendulum-v1", "updates_per_step"),
        ({"num_envs": 2, "updates_per_step": 0.5, "hidden_sizes": ()}, "Pendulum-v1", "hidden_sizes"),
        ({"num_envs": 4, "buffer_size": 3}, "Pendulum-v1", "buffer_size"),
        ({}, "CartPole-v1", "CartPole-v1"),
        # a minibatch needs batch_size stored transitions: by the first gradient step, and at all
        ({"learning_starts": 63, "batch_size": 64}, "Pendulum-v1", "'learning_starts' must be >= batch_size=64"),
        ({"learning_starts": 0, "num_envs": 4, "batch_size": 8}, "Pendulum-v1", "'learning_starts' must be >= batch_size=8"),
        ({"buffer_size": 100, "batch_size": 128}, "Pendulum-v1", "'buffer_size' must be >= batch_size=128"),
    ],
)
def test_invalid_configurations_are_config_errors(overrides, env_name, option):
    with pytest.raises(experiment.ConfigError, match=option):
        ddpg.make(ddpg.Config(**overrides), env_name)


def test_learning_starts_counts_all_environments_and_one_update_may_fill_a_minibatch():
    # learning_starts counts a seed's environment steps, all environments together
    ddpg.make(ddpg.Config(learning_starts=64, num_envs=4, batch_size=64), "Pendulum-v1")
    # one update stores num_envs*num_steps transitions before its gradient steps
    ddpg.make(ddpg.Config(learning_starts=0, num_envs=8, num_steps=2, batch_size=16), "Pendulum-v1")
    # the driver checks at build time, before compiling anything
    with pytest.raises(experiment.ConfigError, match="'learning_starts' must be >= batch_size=256, got 100"):
        experiment.train("ddpg", seeds=1, config={"learning_starts": 100}, log=None, preset=False)


def test_fractional_update_ratio_that_gives_whole_steps_is_accepted():
    recipe = ddpg.make(ddpg.Config(num_envs=4, updates_per_step=0.5), "Pendulum-v1")
    assert recipe.env_steps_per_update == 4
    assert offpolicy.gradient_steps_per_update(ddpg.Config(num_envs=4, updates_per_step=0.5)) == 2


def test_two_updates_per_step_take_two_gradient_steps_per_update():
    config = {**SMALL, "total_steps": 200, "updates_per_step": 2.0}
    run = experiment.train("ddpg", env="Pendulum-v1", seeds=1, config=config, log=None)
    learning_updates = config["total_steps"] - (SMALL["learning_starts"] - 1)
    np.testing.assert_array_equal(run.state.critic_opt[0].count, 2 * learning_updates)
    np.testing.assert_array_equal(run.state.actor_opt[0].count, 2 * learning_updates)
    assert np.isfinite(run.metrics["critic_loss"]).all()


def test_ornstein_uhlenbeck_exploration_runs_and_restarts_with_each_episode():
    config = ddpg.Config(
        exploration="ornstein_uhlenbeck", learning_starts=8, batch_size=8, buffer_size=256, hidden_sizes=(8,)
    )
    recipe = ddpg.make(config, "Pendulum-v1")
    hp = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), ddpg.HParams())

    def step(state, _):
        state, metrics = recipe.update(state, hp)
        return state, (state.noise, metrics["critic_loss"])

    @jax.jit
    def run(key):
        return jax.lax.scan(step, recipe.init(key, hp), None, length=200)[1]

    noise, critic_loss = run(jax.random.key(0))
    assert noise.shape == (200, 1, 1)
    assert float(jnp.abs(noise[198]).max()) > 0.0  # the process wandered during the episode
    np.testing.assert_array_equal(noise[199], 0.0)  # Pendulum's 200-step episode ended: restart at 0
    assert (np.asarray(critic_loss[:7]) == 0).all()  # warm-up: 8 steps
    assert (np.asarray(critic_loss[7:]) > 0).all()  # then every update learns


@pytest.mark.parametrize("recipe", ["ddpg", "td3", "sac"])
def test_an_update_does_not_copy_the_replay_buffer(recipe):
    # The default loop shapes: one environment step per update (DDPG, SAC), where XLA:CPU would
    # copy the whole buffer in every update if the one-row write were a dynamic-update-slice
    # (pgkit.buffers), and two (TD3).
    assert full_buffer_copies(recipe, "Pendulum-v1") == []
