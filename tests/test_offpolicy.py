"""pgkit.offpolicy: the interaction loop, warm-up gate and checks that DDPG, TD3 and SAC share
(their transition buffer is tested in tests/test_buffers.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgkit import envs, offpolicy
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


def _hand_stepped(key, env, env_state, obs, behaviour, noise, num_steps, gamma):
    """Oracle: the loop written out step by step in Python, one jitted env.step at a time."""
    keys = jax.random.split(key, (num_steps, 2))
    step_fn = jax.jit(env.step)
    fields = {name: [] for name in ("obs", "actions", "rewards", "discounts", "dones", "terminated", "truncated",
                                    "next_obs", "episode_returns", "episode_lengths")}
    for t in range(num_steps):
        actions, noise = behaviour(keys[t, 0], obs, noise)
        env_state, step = step_fn(keys[t, 1], env_state, actions)
        terminated, truncated = np.asarray(step.terminated), np.asarray(step.truncated)
        done = terminated | truncated
        for name, value in (("obs", obs), ("actions", actions), ("rewards", step.reward),
                            ("discounts", gamma * (1.0 - terminated.astype(np.float32))), ("dones", done),
                            ("terminated", terminated), ("truncated", truncated), ("next_obs", step.final_obs),
                            ("episode_returns", step.episode_return), ("episode_lengths", step.episode_length)):
            fields[name].append(np.asarray(value))
        noise = np.where(done[:, None], 0.0, np.asarray(noise))  # a new episode starts its noise afresh
        obs = step.obs
    return np.asarray(obs), noise, {name: np.stack(values) for name, values in fields.items()}


@pytest.mark.parametrize("name, num_envs, num_steps", [("CartPole-v1", 3, 60), ("Pendulum-v1", 2, 203)])
def test_collect_equals_the_hand_stepped_loop(name, num_envs, num_steps):
    env = envs.make(name, num_envs=num_envs)
    gamma = 0.95

    def behaviour(key, obs, noise):
        # a noise state that decays and accumulates draws: it must restart at 0 at every done
        noise = 0.5 * noise + jax.random.uniform(key, noise.shape, minval=-1.0, maxval=1.0)
        if env.discrete:
            return (noise[:, 0] > 0).astype(jnp.int32), noise
        return jnp.clip(noise, -1.0, 1.0), noise

    env_state, obs = env.reset(jax.random.key(7))
    noise = jnp.zeros((num_envs, 1))
    key = jax.random.key(8)
    run = jax.jit(lambda k, s, o, n: offpolicy.collect(k, env, s, o, behaviour, n, num_steps=num_steps, gamma=gamma))
    _, last_obs, last_noise, traj = run(key, env_state, obs, noise)
    expected_obs, expected_noise, expected = _hand_stepped(key, env, env_state, obs, behaviour, noise, num_steps, gamma)
    assert traj.obs.shape == (num_steps, num_envs, env.observation_size)
    assert expected["dones"].any()  # episode ends inside the rollout: terminations (CartPole), the time limit (Pendulum)
    for field, value in expected.items():
        if value.dtype == np.float32:
            np.testing.assert_allclose(getattr(traj, field), value, rtol=1e-6, atol=1e-6, err_msg=field)
        else:
            np.testing.assert_array_equal(getattr(traj, field), value, err_msg=field)
    np.testing.assert_allclose(last_obs, expected_obs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(last_noise, expected_noise, rtol=1e-6, atol=1e-6)
    for zeros in (traj.log_probs, traj.values, traj.next_values):
        np.testing.assert_array_equal(zeros, 0.0)


def test_truncated_next_obs_is_the_final_observation_not_the_reset_one():
    # Pendulum's observation (cos θ, sin θ, θ̇) follows θ_{t+1} = θ_t + θ̇_{t+1}·dt, dt = 0.05: every
    # stored (obs, next_obs) pair, the truncated one included, must be one step of the dynamics,
    # while the reset observation after the time limit is not.
    env = envs.make("Pendulum-v1", num_envs=2)
    behaviour = lambda key, obs, noise: (offpolicy.uniform_actions(key, env), noise)

    @jax.jit
    def run_collect(key):
        state, obs = env.reset(key)
        return offpolicy.collect(key, env, state, obs, behaviour, (), num_steps=202, gamma=0.9)

    _, _, _, traj = run_collect(jax.random.key(3))
    obs, next_obs = np.asarray(traj.obs, np.float64), np.asarray(traj.next_obs, np.float64)

    def step_error(before, after):
        turned = np.arctan2(after[..., 1], after[..., 0]) - np.arctan2(before[..., 1], before[..., 0])
        wrapped = (turned - after[..., 2] * 0.05 + np.pi) % (2 * np.pi) - np.pi
        return np.abs(wrapped)

    truncated = np.asarray(traj.truncated)
    assert truncated[199].all() and truncated.sum() == 2
    assert step_error(obs, next_obs).max() < 1e-5  # every transition, the truncated ones included
    np.testing.assert_allclose(traj.discounts[199], 0.9)  # and they bootstrap
    reset_obs = obs[200]  # what the environments act on after the time limit: a fresh random state
    assert (step_error(obs[199], reset_obs) > 1e-3).all()
    assert not np.allclose(next_obs[199], reset_obs)


def test_gated_scan_skips_and_reports_zeros():
    def step(carry, key):
        return carry + 1.0, {"value": carry + jax.random.uniform(key)}

    carry, stats = jax.jit(lambda flag: offpolicy.gated_scan(flag, step, jnp.float32(2.0), jax.random.key(0), 3))(False)
    assert float(carry) == 2.0 and float(stats["value"]) == 0.0
    carry, stats = jax.jit(lambda flag: offpolicy.gated_scan(flag, step, jnp.float32(2.0), jax.random.key(0), 3))(True)
    assert float(carry) == 5.0 and 3.0 <= float(stats["value"]) <= 4.0


def test_gated_scan_under_vmap_leaves_the_waiting_members_untouched():
    # vmap turns the cond into a select: both branches run, each member keeps its own result
    def step(carry, key):
        return {"w": carry["w"] + 1.0, "n": carry["n"] + 1}, {"loss": jax.random.uniform(key) + 1.0}

    flags = jnp.array([False, True, False, True])
    carry = {"w": jnp.arange(4.0), "n": jnp.zeros(4, jnp.int32)}
    keys = jax.random.split(jax.random.key(1), 4)
    run = jax.jit(jax.vmap(lambda flag, c, k: offpolicy.gated_scan(flag, step, c, k, 5)))
    new, stats = run(flags, carry, keys)
    np.testing.assert_array_equal(new["w"], [0.0, 6.0, 2.0, 8.0])
    np.testing.assert_array_equal(new["n"], [0, 5, 0, 5])
    assert new["n"].dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(stats["loss"])[[0, 2]], 0.0)
    assert (np.asarray(stats["loss"])[[1, 3]] > 1.0).all()
    # a learning member's statistics are the mean over its steps, with the keys split from its key
    single_carry, single_stats = offpolicy.gated_scan(True, step, {"w": jnp.float32(1.0), "n": jnp.int32(0)}, keys[1], 5)
    draws = jax.vmap(jax.random.uniform)(jax.random.split(keys[1], 5)) + 1.0
    np.testing.assert_allclose(single_stats["loss"], draws.mean(), rtol=1e-6)
    np.testing.assert_allclose(stats["loss"][1], single_stats["loss"], rtol=1e-6)


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
    offpolicy.check_config(_Options(num_envs=8, num_steps=8, learning_starts=0))  # one update fills a minibatch
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


def test_make_env_checks_the_action_space():
    with pytest.raises(ConfigError, match="'CartPole-v1' must have continuous \\(Box\\) actions"):
        offpolicy.make_env(_Options(), "CartPole-v1", discrete=False)
    with pytest.raises(ConfigError, match="'Pendulum-v1' must have discrete"):
        offpolicy.make_env(_Options(), "Pendulum-v1", discrete=True)
    for name, action_shape, dtype in (("Pendulum-v1", (3, 1), jnp.float32), ("CartPole-v1", (3,), jnp.int32)):
        env = offpolicy.make_env(_Options(num_envs=3), name, discrete=None)
        assert env.num_envs == 3
        actions = offpolicy.uniform_actions(jax.random.key(0), env)
        assert actions.shape == action_shape and actions.dtype == dtype


def test_uniform_actions_cover_the_action_space_uniformly():
    env = envs.make("Pendulum-v1", num_envs=4000)
    actions = np.asarray(offpolicy.uniform_actions(jax.random.key(3), env))
    assert actions.min() >= -1.0 and actions.max() <= 1.0
    # U[-1, 1]: mean 0, variance 1/3; 4000 draws, 4 standard errors
    assert abs(actions.mean()) < 4 * np.sqrt(1 / 3 / 4000)
    discrete = envs.make("CartPole-v1", num_envs=4000)
    counts = np.bincount(np.asarray(offpolicy.uniform_actions(jax.random.key(4), discrete)), minlength=2)
    assert abs(counts[0] - 2000) < 4 * np.sqrt(4000 * 0.25)


def test_exploratory_actions_match_their_noise_processes_and_name_the_option():
    # Oracles: the closed forms of the two processes (Gaussian: mu + sigma*eps, clipped; OU: one
    # Euler-Maruyama step x' = x - theta*x*dt + sigma*sqrt(dt)*eps, then mu + x', clipped).
    hp = dataclasses.make_dataclass("HP", ["exploration_noise", "ou_theta", "ou_sigma", "ou_dt"])(0.3, 0.15, 0.5, 0.01)
    greedy = jnp.array([[0.2, -0.9], [0.95, 0.0]])
    state = jnp.array([[0.1, -0.2], [0.3, 0.0]])
    key = jax.random.key(3)
    eps = np.asarray(jax.random.normal(key, greedy.shape))
    actions, kept = offpolicy.exploratory_actions("gaussian", greedy, state, key=key, hp=hp)
    np.testing.assert_allclose(actions, np.clip(np.asarray(greedy) + 0.3 * eps, -1, 1), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(kept, state)
    actions, new_state = offpolicy.exploratory_actions("ornstein_uhlenbeck", greedy, state, key=key, hp=hp)
    x = np.asarray(state) - 0.15 * np.asarray(state) * 0.01 + 0.5 * np.sqrt(0.01) * eps
    np.testing.assert_allclose(new_state, x, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(actions, np.clip(np.asarray(greedy) + x, -1, 1), rtol=1e-6, atol=1e-7)
    with pytest.raises(ConfigError, match="option 'exploration' must be one of gaussian, ornstein_uhlenbeck, got 'pink'"):
        offpolicy.exploratory_actions("pink", greedy, state, key=key, hp=hp)
