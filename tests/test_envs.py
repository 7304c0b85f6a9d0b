"""pgkit.envs: auto-reset semantics, truncation, action rescaling, normalisation, episode stats.

Each scenario is one jitted ``lax.scan`` (one compilation); NumPy oracles recompute the
running statistics, scaled rewards and episode returns from the raw stream of a twin
environment driven by the same keys and actions.
"""

import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
from pgkit import envs

E = 3


@functools.partial(jax.jit, static_argnames=("env", "training"))
def _run(env, key, actions, training=True):
    """Reset, then step with the given actions [T, E, ...]; return every step and state."""
    reset_key, key = jax.random.split(key)
    state, obs = env.reset(reset_key, training=training)

    def body(state, xs):
        step_key, action = xs
        state, step = env.step(step_key, state, action, training=training)
        return state, (step, state)

    final, (steps, states) = jax.lax.scan(body, state, (jax.random.split(key, actions.shape[0]), actions))
    return final, obs, steps, states


def _np(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64) if x.dtype != bool else np.asarray(x), tree)


@pytest.fixture(scope="module")
def cartpole():
    """Raw and normalised CartPole driven by identical keys and random actions (30 steps)."""
    actions = jax.random.bernoulli(jax.random.key(7), 0.5, (30, E)).astype(jnp.int32)
    raw = _run(envs.make("CartPole-v1", num_envs=E), jax.random.key(1), actions)
    norm_env = envs.make("CartPole-v1", num_envs=E, normalize_observations=True)
    norm = _run(norm_env, jax.random.key(1), actions)
    return norm_env, raw, norm


@pytest.fixture(scope="module")
def pendulum():
    """Raw and reward-scaled Pendulum (205 steps: one truncation at step 200)."""
    actions = jax.random.uniform(jax.random.key(3), (205, E, 1), minval=-1.5, maxval=1.5)
    raw = _run(envs.make("Pendulum-v1", num_envs=E), jax.random.key(2), actions)
    scaled = _run(envs.make("Pendulum-v1", num_envs=E, scale_rewards=True, gamma=0.9), jax.random.key(2), actions)
    return np.asarray(actions), raw, scaled


def test_unknown_name_lists_available_envs():
    with pytest.raises(ValueError, match="NoSuchEnv-v0") as info:
        envs.make("NoSuchEnv-v0", num_envs=2)
    assert "CartPole-v1" in str(info.value) and "Pendulum-v1" in str(info.value)
    assert "CartPole-v1" in envs.available_envs()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_envs"):
        envs.make("CartPole-v1", num_envs=0)
    with pytest.raises(ValueError, match="env_params"):
        envs.make("CartPole-v1", num_envs=2, env_params={"no_such_field": 1})
    env = envs.make("CartPole-v1", num_envs=2)
    with pytest.raises(ValueError, match="actions"):
        env.step(jax.random.key(0), None, jnp.zeros((2, 1), jnp.int32))
    cont = envs.make("Pendulum-v1", num_envs=2)
    with pytest.raises(ValueError, match="actions"):
        cont.step(jax.random.key(0), None, jnp.zeros((2,)))


def test_static_description_and_flattening():
    env = envs.make("CartPole-v1", num_envs=4)
    assert (env.observation_size, env.discrete, env.num_actions, env.num_envs) == (4, True, 2, 4)
    assert env == envs.make("CartPole-v1", num_envs=4) and hash(env) == hash(envs.make("CartPole-v1", num_envs=4))
    assert env != envs.make("CartPole-v1", num_envs=5) and env.with_num_envs(5) == envs.make("CartPole-v1", num_envs=5)
    assert jax.tree.leaves(env) == []  # a static pytree: safe to pass through jit
    minatar = envs.make("Breakout-MinAtar", num_envs=2)
    assert minatar.observation_size == 10 * 10 * 4
    _, obs = jax.eval_shape(minatar.reset, jax.random.key(0))
    assert obs.shape == (2, 400) and obs.dtype == jnp.float32


def test_cartpole_truncation_at_500_steps():
    """A balancing controller survives 500 steps: the episode is truncated, not terminated."""
    env = envs.make("CartPole-v1", num_envs=E)

    @jax.jit
    def run(key):
        state, obs = env.reset(key)

        def body(carry, step_key):
            state, obs = carry
            push = obs[:, 2] * 10.0 + obs[:, 3] + 0.1 * obs[:, 0] + 0.5 * obs[:, 1]
            state, step = env.step(step_key, state, (push > 0).astype(jnp.int32))
            return (state, step.obs), step

        return jax.lax.scan(body, (state, obs), jax.random.split(key, 502))[1]

    steps = _np(run(jax.random.key(0)))
    done = steps.terminated | steps.truncated
    assert not done[:499].any()
    assert steps.truncated[499].all() and not steps.terminated[499].any()
    np.testing.assert_array_equal(steps.episode_length[499], 500)
    np.testing.assert_array_equal(steps.episode_return[499], 500.0)
    # final_obs is the true last state; obs is a fresh reset state in [-0.05, 0.05]^4.
    assert np.all(np.abs(steps.obs[499]) <= 0.05)
    assert np.all(np.abs(steps.final_obs[499] - steps.obs[499]).max(axis=-1) > 0.05)
    np.testing.assert_array_equal(steps.final_obs[:499], steps.obs[:499])
    np.testing.assert_array_equal(steps.episode_length[500], 1)  # accumulators restarted


def test_cartpole_terminations_and_episode_statistics(cartpole):
    _, (_, obs0, steps, _), _ = cartpole
    steps, obs0 = _np(steps), np.asarray(obs0)
    assert steps.obs.shape == steps.final_obs.shape == (30, E, 4)
    assert steps.terminated.any(), "random CartPole should fail within 30 steps"
    not_done = ~(steps.terminated | steps.truncated)
    np.testing.assert_array_equal(steps.final_obs[not_done], steps.obs[not_done])
    terminal = steps.final_obs[steps.terminated]
    assert np.all((np.abs(terminal[:, 0]) > 2.4) | (np.abs(terminal[:, 2]) > 12 * 2 * np.pi / 360))
    # Episode statistics against a manual count (reward 1 per step).
    length = np.zeros(E)
    for t in range(30):
        length += 1
        done = steps.terminated[t] | steps.truncated[t]
        np.testing.assert_array_equal(steps.episode_length[t], length)
        np.testing.assert_allclose(steps.episode_return[t], length)
        length[done] = 0


def test_observation_normalisation_matches_numpy(cartpole):
    norm_env, (_, raw_obs0, raw_steps, _), (final_state, obs0, steps, states) = cartpole
    raw_steps, steps = _np(raw_steps), _np(steps)
    seen = [np.asarray(raw_obs0, np.float64)]
    for t in range(30):
        seen.append(raw_steps.obs[t])
        stats = jax.tree.map(lambda x: np.asarray(x[t], np.float64), states.normalization.obs)
        everything = np.concatenate(seen)
        np.testing.assert_allclose(stats.mean, everything.mean(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(stats.var, everything.var(0), rtol=1e-3, atol=1e-7)
        assert stats.count == len(everything)
        scale = 1.0 / np.sqrt(stats.var + 1e-8)
        expected_obs = np.clip((raw_steps.obs[t] - stats.mean) * scale, -10, 10)
        expected_final = np.clip((raw_steps.final_obs[t] - stats.mean) * scale, -10, 10)
        np.testing.assert_allclose(steps.obs[t], expected_obs, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(steps.final_obs[t], expected_final, rtol=1e-3, atol=1e-4)
    not_done = ~(steps.terminated | steps.truncated)
    np.testing.assert_array_equal(steps.final_obs[not_done], steps.obs[not_done])  # exactly, by construction
    # Reset observations are normalised with the statistics of the reset batch itself.
    r0 = np.asarray(raw_obs0, np.float64)
    np.testing.assert_allclose(obs0, (r0 - r0.mean(0)) / np.sqrt(r0.var(0) + 1e-8), rtol=1e-3, atol=1e-4)
    # Rewards are untouched without scale_rewards.
    np.testing.assert_array_equal(steps.reward, raw_steps.reward)

    # training=False freezes the statistics (evaluation).
    frozen_step = jax.jit(functools.partial(norm_env.step, training=False))
    new_state, step = frozen_step(jax.random.key(9), final_state, jnp.ones(E, jnp.int32))
    jax.tree.map(np.testing.assert_array_equal, new_state.normalization, final_state.normalization)


def test_pendulum_truncation_and_action_rescaling(pendulum):
    actions, (_, _, steps, states), _ = pendulum
    steps = _np(steps)
    done = steps.terminated | steps.truncated
    assert not steps.terminated.any()
    assert steps.truncated[199].all() and not done[:199].any() and not done[200:].any()
    np.testing.assert_array_equal(steps.episode_length[199], 200)
    # Actions in [-1, 1] are clipped and rescaled to the torque bounds [-2, 2].
    # (The state after a done step is the reset state, whose last_u is 0.)
    applied = np.asarray(states.env_state.last_u, np.float64)[~done]
    np.testing.assert_allclose(applied, 2.0 * np.clip(actions[..., 0][~done], -1.0, 1.0), rtol=1e-6, atol=1e-6)
    assert applied.min() == -2.0 and applied.max() == 2.0
    np.testing.assert_array_equal(np.asarray(states.env_state.last_u)[199], 0.0)
    env = envs.make("Pendulum-v1", num_envs=E)
    np.testing.assert_array_equal(env.action_low, [-2.0])
    np.testing.assert_array_equal(env.action_high, [2.0])
    np.testing.assert_array_equal(steps.final_obs[~done], steps.obs[~done])
    assert not np.allclose(steps.final_obs[199], steps.obs[199])


def test_episode_return_is_the_manual_sum(pendulum):
    _, (_, _, raw, _), (_, _, scaled, _) = pendulum
    raw, scaled = _np(raw), _np(scaled)
    running = np.zeros(E)
    checked = 0
    for t in range(raw.reward.shape[0]):
        running += raw.reward[t]
        done = raw.terminated[t] | raw.truncated[t]
        np.testing.assert_allclose(raw.episode_return[t][done], running[done], rtol=1e-4)
        checked += done.sum()
        running[done] = 0.0
    assert checked == E
    # Reward scaling does not change the reported (raw) episode returns.
    np.testing.assert_allclose(scaled.episode_return, raw.episode_return, rtol=1e-6)


def test_reward_scaling_matches_numpy_reference(pendulum):
    _, (_, _, raw, _), (final_state, _, scaled, _) = pendulum
    raw, scaled = _np(raw), _np(scaled)
    gamma, returns, seen = 0.9, np.zeros(E), []
    for t in range(raw.reward.shape[0]):
        returns = gamma * returns + raw.reward[t]
        seen.extend(returns)
        expected = np.clip(raw.reward[t] / np.sqrt(np.var(seen) + 1e-8), -10.0, 10.0)
        np.testing.assert_allclose(scaled.reward[t], expected, rtol=2e-4, atol=1e-5)
        returns[raw.terminated[t] | raw.truncated[t]] = 0.0
    np.testing.assert_allclose(final_state.discounted_return, returns, rtol=1e-4, atol=1e-5)
    assert int(final_state.normalization.returns.count) == len(seen)
    assert np.abs(scaled.reward).max() < np.abs(raw.reward).max()  # it actually rescales


def test_reward_scaling_uses_the_gamma_given_to_step(pendulum):
    # An env made with gamma 0.99, stepped with a traced gamma of 0.9 (as rollout passes the
    # agent's), scales exactly as an env made with 0.9.
    actions, _, (_, _, scaled_09, _) = pendulum
    env = envs.make("Pendulum-v1", num_envs=E, scale_rewards=True, gamma=0.99)
    reset_key, key = jax.random.split(jax.random.key(2))

    @jax.jit
    def run(gamma):
        state, _ = env.reset(reset_key)

        def body(state, xs):
            state, step = env.step(xs[0], state, xs[1], gamma=gamma)
            return state, step.reward

        return jax.lax.scan(body, state, (jax.random.split(key, actions.shape[0]), jnp.asarray(actions)))[1]

    np.testing.assert_allclose(run(jnp.float32(0.9)), scaled_09.reward, rtol=1e-5, atol=1e-6)
    assert not np.allclose(run(jnp.float32(0.99)), scaled_09.reward)


def test_docstring_examples_run():
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(envs, envs.__name__, globs={"pgkit": pgkit}):
        runner.run(test)
    assert runner.failures == 0


def test_an_environment_whose_data_cannot_be_downloaded_raises_a_clear_error(offline_gymnax):
    with pytest.raises(envs.EnvUnavailableError, match="'MNISTBandit-bsuite' could not be created.*download failed"):
        envs.make("MNISTBandit-bsuite", num_envs=2)


# gymnax downloads MNIST to make MNISTBandit-bsuite: the tests never download; Brax's tasks
# compile for seconds each: tests/test_brax_envs.py steps one of them
@pytest.mark.parametrize(
    "name", [n for n in envs.available_envs() if n != "MNISTBandit-bsuite" and not n.endswith("-brax")]
)
def test_every_registered_environment_resets_and_steps(name):
    env = envs.make(name, num_envs=2)
    reset_key, action_key, step_key = jax.random.split(jax.random.key(0), 3)
    state, obs = env.reset(reset_key)
    if env.discrete:
        actions = jax.random.randint(action_key, (2,), 0, env.num_actions)
    else:
        actions = jax.random.uniform(action_key, (2, env.action_size), minval=-1.0, maxval=1.0)
    state, step = jax.jit(env.step)(step_key, state, actions)
    assert obs.shape == step.obs.shape == step.final_obs.shape == (2, env.observation_size)
    assert obs.dtype == step.obs.dtype == jnp.float32
    assert step.reward.shape == step.terminated.shape == step.truncated.shape == (2,)
    assert step.reward.dtype == jnp.float32 and step.terminated.dtype == jnp.bool_
    assert np.all(np.isfinite(np.asarray(step.obs))) and np.all(np.isfinite(np.asarray(step.reward)))


def test_observe_keeps_the_listed_components_of_every_observation():
    """CartPole-v1 with observe=[2, 0] (angle, then position; no velocities): reset, next and
    final observations are those columns of the full environment's, on the same keys."""
    full = envs.make("CartPole-v1", num_envs=4)
    part = envs.make("CartPole-v1", num_envs=4, observe=[2, 0])
    assert part.observation_size == 2 and part.observation_shape == (2,) and part != full
    (full_state, full_obs), (part_state, part_obs) = full.reset(jax.random.key(0)), part.reset(jax.random.key(0))
    np.testing.assert_array_equal(part_obs, full_obs[:, [2, 0]])
    done = False
    for t in range(40):  # long enough for some episodes to end (random actions)
        key, actions = jax.random.key(t + 1), jnp.asarray(np.random.default_rng(t).integers(0, 2, 4), jnp.int32)
        full_state, full_step = full.step(key, full_state, actions)
        part_state, part_step = part.step(key, part_state, actions)
        np.testing.assert_array_equal(part_step.obs, full_step.obs[:, [2, 0]])
        np.testing.assert_array_equal(part_step.final_obs, full_step.final_obs[:, [2, 0]])
        np.testing.assert_array_equal(part_step.reward, full_step.reward)
        done = done or bool(np.any(full_step.terminated))
    assert done


def test_observe_by_name_and_its_errors():
    by_name = envs.make(envs.observed_name("CartPole-v1", [0, 2]), num_envs=2)
    assert by_name == envs.make("CartPole-v1", num_envs=2, observe=(0, 2))
    assert hash(by_name) == hash(envs.make("CartPole-v1[0,2]", num_envs=2))
    assert envs.split_observed_name("Pendulum-v1") == ("Pendulum-v1", None)
    assert envs.make("CartPole-v1[0,2]", num_envs=2, observe=[0, 2]) == by_name
    for observe in ([0, 4], [1, 1], [], [-1], [0.5]):
        with pytest.raises(ValueError, match=r"observe must list distinct observation indices in 0\.\.3"):
            envs.make("CartPole-v1", num_envs=1, observe=observe)
    with pytest.raises(ValueError, match="contradicts"):
        envs.make("CartPole-v1[0,2]", num_envs=1, observe=[1])
    with pytest.raises(ValueError, match=r"must end in \[i,j,...\]"):
        envs.make("CartPole-v1[a]", num_envs=1)
