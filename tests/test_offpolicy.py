"""pgkit.offpolicy: the interaction loop, replay and checks that DDPG, TD3 and SAC share."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgkit import envs, offpolicy, rollout
from pgkit.buffers import ReplayBuffer, Transition
from pgkit.recipe import ConfigError


def test_collect_keeps_final_observations_and_termination_discounts():
    env = envs.make("CartPole-v1", num_envs=3)
    gamma = 0.9

    def behaviour(key, obs, steps_since_reset):
        # the "noise state" counts steps since the episode began: it must restart at every done
        return offpolicy.uniform_actions(key, env), steps_since_reset + 1.0

    @jax.jit
    def run_collect(key):
        state, obs = env.reset(key)
        noise = jnp.zeros((3, 1))
        return offpolicy.collect(key, env, state, obs, behaviour, noise, num_steps=80, gamma=gamma)

    _, last_obs, noise, traj = run_collect(jax.random.key(0))
    terminated = np.asarray(traj.terminated)
    dones = np.asarray(traj.dones)
    assert terminated.sum() >= 3  # random CartPole episodes end after ~20 steps
    np.testing.assert_allclose(traj.discounts, gamma * (1.0 - terminated))
    # next_obs is s_{t+1} within an episode, and the true final observation (not the reset one) at a done
    following = np.concatenate([np.asarray(traj.obs[1:]), np.asarray(last_obs)[None]], axis=0)
    same = np.all(np.asarray(traj.next_obs) == following, axis=-1)
    assert same[~dones].all()
    assert not same[dones].any()
    # CartPole terminates when the pole or cart leaves its bounds: visible in the true final observation
    final = np.asarray(traj.next_obs)[terminated]
    assert np.all((np.abs(final[:, 0]) > 2.4) | (np.abs(final[:, 2]) > 0.2095))
    # the noise state restarted at every episode end
    for e in range(3):
        ends = np.nonzero(dones[:, e])[0]
        expected = 80 - (ends[-1] + 1) if len(ends) else 80
        assert float(noise[e, 0]) == expected
    # episode statistics: returns of completed CartPole episodes are their lengths
    np.testing.assert_array_equal(
        np.asarray(traj.episode_returns)[dones], np.asarray(traj.episode_lengths)[dones].astype(np.float32)
    )


def test_truncated_pendulum_steps_bootstrap():
    env = envs.make("Pendulum-v1", num_envs=2)

    @jax.jit
    def run_collect(key):
        state, obs = env.reset(key)
        behaviour = lambda key, obs, noise: (offpolicy.uniform_actions(key, env), noise)
        return offpolicy.collect(key, env, state, obs, behaviour, (), num_steps=201, gamma=0.99)

    _, _, _, traj = run_collect(jax.random.key(1))
    truncated = np.asarray(traj.truncated)
    np.testing.assert_array_equal(np.nonzero(truncated[:, 0])[0], [199])  # time limit of 200 steps
    assert not np.asarray(traj.terminated).any()
    np.testing.assert_allclose(traj.discounts, 0.99)  # truncation keeps the discount: it bootstraps


def test_store_writes_time_major_transitions_in_order():
    env = envs.make("Pendulum-v1", num_envs=2)
    buffer = offpolicy.empty_buffer(env, 5)
    traj = rollout.Trajectory(*([None] * 13))._replace(
        obs=jnp.zeros((2, 2, 3)),
        actions=jnp.zeros((2, 2, 1)),
        rewards=jnp.array([[1.0, 2.0], [3.0, 4.0]]),  # [T, E]: stored as t=0 (e=0, e=1), then t=1
        discounts=jnp.full((2, 2), 0.9),
        next_obs=jnp.ones((2, 2, 3)),
    )
    buffer = offpolicy.store(buffer, traj)
    assert int(buffer.size) == 4 and int(buffer.position) == 4
    np.testing.assert_array_equal(buffer.data.reward, [1.0, 2.0, 3.0, 4.0, 0.0])
    np.testing.assert_allclose(buffer.data.discount, [0.9, 0.9, 0.9, 0.9, 0.0])
    sample = ReplayBuffer.sample(buffer, jax.random.key(2), 64)
    assert set(np.asarray(sample.reward).tolist()) <= {1.0, 2.0, 3.0, 4.0}
    assert sample.obs.shape == (64, 3) and sample.action.shape == (64, 1)


def test_gated_scan_skips_and_reports_zeros():
    def step(carry, key):
        return carry + 1.0, {"value": carry + jax.random.uniform(key)}

    carry, stats = jax.jit(lambda flag: offpolicy.gated_scan(flag, step, jnp.float32(2.0), jax.random.key(0), 3))(False)
    assert float(carry) == 2.0 and float(stats["value"]) == 0.0
    carry, stats = jax.jit(lambda flag: offpolicy.gated_scan(flag, step, jnp.float32(2.0), jax.random.key(0), 3))(True)
    assert float(carry) == 5.0 and 3.0 <= float(stats["value"]) <= 4.0


@dataclasses.dataclass(frozen=True)
class _Options:  # the options every off-policy Config has
    num_envs: int = 1
    num_steps: int = 1
    updates_per_step: float = 1.0
    learning_starts: int = 64
    batch_size: int = 64
    buffer_size: int = 1000
    hidden_sizes: tuple = (8,)


def test_config_checks_name_the_option():
    offpolicy.check_config(_Options())
    assert offpolicy.gradient_steps_per_update(_Options(num_envs=4, num_steps=2, updates_per_step=0.25)) == 2
    for overrides, message in [
        ({"updates_per_step": 0.3}, "'updates_per_step' times num_envs\\*num_steps=1 must be a positive integer"),
        ({"hidden_sizes": ()}, "'hidden_sizes' must be positive widths"),
        ({"num_envs": 4, "buffer_size": 3, "batch_size": 2, "learning_starts": 2}, "'buffer_size' must hold one update's"),
        ({"buffer_size": 32}, "'buffer_size' must be >= batch_size=64"),
        ({"learning_starts": 10}, "'learning_starts' must be >= batch_size=64, got 10"),
    ]:
        with pytest.raises(ConfigError, match=message):
            offpolicy.check_config(_Options(**overrides))


def test_make_env_checks_the_action_space_and_the_empty_buffer_fits_it():
    with pytest.raises(ConfigError, match="'CartPole-v1' must have continuous \\(Box\\) actions"):
        offpolicy.make_env(_Options(), "CartPole-v1", discrete=False)
    with pytest.raises(ConfigError, match="'Pendulum-v1' must have discrete"):
        offpolicy.make_env(_Options(), "Pendulum-v1", discrete=True)
    for name, action_shape, dtype in (("Pendulum-v1", (7, 1), jnp.float32), ("CartPole-v1", (7,), jnp.int32)):
        env = offpolicy.make_env(_Options(num_envs=3), name, discrete=None)
        buffer = offpolicy.empty_buffer(env, 7)
        assert isinstance(buffer.data, Transition) and int(buffer.size) == 0
        assert buffer.data.action.shape == action_shape and buffer.data.action.dtype == dtype
        assert buffer.data.obs.shape == buffer.data.next_obs.shape == (7, env.observation_size)
        actions = offpolicy.uniform_actions(jax.random.key(0), env)
        assert actions.shape == (3, *action_shape[1:])


def test_uniform_actions_cover_the_action_space_uniformly():
    env = envs.make("Pendulum-v1", num_envs=4000)
    actions = np.asarray(offpolicy.uniform_actions(jax.random.key(3), env))
    assert actions.min() >= -1.0 and actions.max() <= 1.0
    # U[-1, 1]: mean 0, variance 1/3; 4000 draws, 4 standard errors
    assert abs(actions.mean()) < 4 * np.sqrt(1 / 3 / 4000)
    discrete = envs.make("CartPole-v1", num_envs=4000)
    counts = np.bincount(np.asarray(offpolicy.uniform_actions(jax.random.key(4), discrete)), minlength=2)
    assert abs(counts[0] - 2000) < 4 * np.sqrt(4000 * 0.25)
