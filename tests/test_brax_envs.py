"""Brax's tasks through pgkit.envs: terminated and truncated kept apart, the true final observation,
against Brax's own environment stepped by hand on the same keys and actions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgkit import brax_envs, cli, envs

brax = pytest.importorskip("brax.envs")

TASK = "inverted_pendulum"  # compiles in about a second; terminates when the pole falls past 0.2 rad
E, LIMIT, STEPS = 3, 6, 14


@pytest.fixture(scope="module")
def runs():
    """E pendulums with a 6-step limit under pgkit, pushed by constant actions (one gentle, two hard)
    for 14 steps; and Brax's raw environment stepped with the same actions from the same reset keys."""
    env = envs.make(TASK + "-brax", num_envs=E, env_params={"max_steps_in_episode": LIMIT})
    raw = brax.get_environment(TASK)
    actions = jnp.asarray([[0.0], [1.0], [-1.0]], jnp.float32)
    key = jax.random.key(0)

    @jax.jit
    def pgkit_run(key):
        state, obs = env.reset(key)

        def body(state, k):
            state, step = env.step(k, state, actions)
            return state, step

        return obs, jax.lax.scan(body, state, jax.random.split(jax.random.fold_in(key, 1), STEPS))[1]

    obs0, steps = jax.device_get(pgkit_run(key))
    raw_state = jax.jit(jax.vmap(raw.reset))(jax.random.split(key, E))  # VecEnv.reset's keys
    return env, raw, raw_state, actions, obs0, steps


def test_a_brax_task_is_a_continuous_environment_with_bounded_actions():
    env = envs.make(TASK + "-brax", num_envs=2)  # ant, halfcheetah, ... are built alike (and compile longer)
    raw = brax.get_environment(TASK)
    assert not env.discrete and env.action_size == raw.action_size == 1
    assert env.observation_size == raw.observation_size == 4
    np.testing.assert_array_equal(env.action_low, [-1.0])
    np.testing.assert_array_equal(env.action_high, [1.0])
    assert "ant-brax" in envs.available_envs() and set(brax_envs.registered_envs) <= set(envs.available_envs())


def test_the_first_episode_equals_brax_stepped_by_hand_and_ends_as_brax_or_the_limit_says(runs):
    """Until its first episode ends, each environment's rewards and observations are Brax's own;
    a step where Brax says done is terminated (not truncated), the 6th step of a surviving episode
    is truncated (not terminated), and final_obs is Brax's observation of that last step."""
    env, raw, raw_state, actions, obs0, steps = runs
    np.testing.assert_allclose(obs0, np.asarray(raw_state.obs), rtol=1e-6, atol=1e-6)
    step_raw = jax.jit(jax.vmap(raw.step))
    kinds = set()
    ended = np.zeros(E, bool)
    for t in range(STEPS):
        raw_state = step_raw(raw_state, actions)
        raw_done = np.asarray(raw_state.done) > 0.5
        for i in np.flatnonzero(~ended):
            np.testing.assert_allclose(steps.reward[t, i], raw_state.reward[i], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(steps.final_obs[t, i], raw_state.obs[i], rtol=1e-5, atol=1e-5)
            assert steps.terminated[t, i] == raw_done[i], (t, i)
            assert steps.truncated[t, i] == (t + 1 == LIMIT), (t, i)  # a step may be both
            if raw_done[i] or t + 1 == LIMIT:
                kinds.add("terminated" if raw_done[i] else "truncated")
                assert steps.episode_length[t, i] == t + 1
                assert not np.allclose(steps.obs[t, i], steps.final_obs[t, i])  # obs is the reset's
                ended[i] = True
            else:
                np.testing.assert_array_equal(steps.obs[t, i], steps.final_obs[t, i])
    assert ended.all() and kinds == {"terminated", "truncated"}, kinds


def test_episodes_go_on_after_the_reset(runs):
    """Later episodes are counted from the reset: lengths never pass the limit, every truncation is at
    length 6, and the hard-pushed pendulums terminate again."""
    *_, steps = runs
    lengths = np.asarray(steps.episode_length)
    assert lengths.max() <= LIMIT
    assert np.all(lengths[np.asarray(steps.truncated)] == LIMIT)
    assert np.asarray(steps.terminated)[:, 1:].sum(axis=0).min() >= 2


def test_a_missing_brax_is_one_line_naming_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "brax", None)  # import brax now fails
    with pytest.raises(ImportError, match=r"'hopper-brax' needs Brax.*pip install 'pgkit\[brax\]'"):
        envs.make("hopper-brax", num_envs=1)
    with pytest.raises(ValueError, match="one of the Brax environments"):
        brax_envs.make("cartpole-brax")


def test_pgkit_train_without_brax_exits_2_with_one_line(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "brax", None)
    assert cli.main(["train", "ppo", "--env", "hopper-brax", "--seeds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "option '--env'" in err[0] and "pip install 'pgkit[brax]'" in err[0], err
