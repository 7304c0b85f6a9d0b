"""pgkit.rollout: Trajectory shapes and episode semantics, next values, determinism, vmap."""

import doctest

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
from pgkit import envs, nn, rollout

T, E = 40, 3
# Short episodes so that one rollout holds both terminations and truncations.
ENV = envs.make("CartPole-v1", num_envs=E, env_params={"max_steps_in_episode": 12})
W = jnp.array([0.5, -1.0, 2.0, 0.25])
TRACES = []


def value_fn(obs):
    return obs @ W


def act_fn(key, obs):
    actions = jax.random.bernoulli(key, 0.5, (obs.shape[0],)).astype(jnp.int32)
    return actions, jnp.full((obs.shape[0],), -0.5) * (actions + 1), value_fn(obs) + 1.0


def run(key, gamma, with_value_fn=True):
    TRACES.append(1)
    reset_key, key = jax.random.split(key)
    state, obs = ENV.reset(reset_key)
    out = rollout.rollout(
        key, ENV, state, obs, act_fn, num_steps=T, gamma=gamma, value_fn=value_fn if with_value_fn else None
    )
    return obs, out


run_jit = jax.jit(run, static_argnames="with_value_fn")


@pytest.fixture(scope="module")
def result():
    obs0, (env_state, last_obs, traj) = run_jit(jax.random.key(0), 0.97)
    return obs0, env_state, last_obs, traj


def test_shapes_and_dtypes(result):
    _, _, last_obs, traj = result
    assert last_obs.shape == (E, 4)
    for name in ("obs", "next_obs"):
        assert getattr(traj, name).shape == (T, E, 4), name
    for name in ("actions", "rewards", "discounts", "dones", "terminated", "truncated", "log_probs", "values",
                 "next_values", "episode_returns", "episode_lengths"):
        assert getattr(traj, name).shape == (T, E), name
    assert traj.dones.dtype == jnp.bool_ and traj.actions.dtype == jnp.int32


def test_episode_semantics(result):
    obs0, _, last_obs, traj = result
    traj = jax.tree.map(np.asarray, traj)
    assert traj.terminated.any() and traj.truncated.any(), "both kinds of boundary should occur"
    np.testing.assert_allclose(traj.discounts, 0.97 * (1.0 - traj.terminated), rtol=1e-6)
    np.testing.assert_array_equal(traj.dones, traj.terminated | traj.truncated)
    np.testing.assert_array_equal(traj.obs[0], obs0)
    # next_obs[t] is obs[t+1] unless the episode ended at t (then obs[t+1] is a reset state).
    not_done = ~traj.dones[:-1]
    np.testing.assert_array_equal(traj.next_obs[:-1][not_done], traj.obs[1:][not_done])
    assert np.all(np.any(traj.next_obs[:-1][~not_done] != traj.obs[1:][~not_done], axis=-1))
    np.testing.assert_array_equal(np.where(traj.dones[-1][:, None], last_obs, traj.next_obs[-1]), last_obs)
    # Truncation at 12 steps: the episode length there is 12; CartPole rewards are 1 per step.
    np.testing.assert_array_equal(traj.episode_lengths[traj.truncated], 12)
    np.testing.assert_allclose(traj.episode_returns[traj.dones], traj.episode_lengths[traj.dones])


def test_act_fn_outputs_and_next_values(result):
    _, _, _, traj = result
    np.testing.assert_allclose(traj.values, np.asarray(traj.obs) @ np.asarray(W) + 1.0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(traj.log_probs, -0.5 * (np.asarray(traj.actions) + 1), rtol=1e-6)
    np.testing.assert_allclose(traj.next_values, np.asarray(traj.next_obs) @ np.asarray(W), rtol=1e-5, atol=1e-5)
    # Fresh randomness at every step: the actions are not one repeated pattern.
    actions = np.asarray(traj.actions)
    assert len({tuple(a) for a in actions}) > 3


def test_identical_keys_identical_results_and_no_retrace(result):
    n_traces = len(TRACES)
    _, (_, _, again) = run_jit(jax.random.key(0), 0.97)
    jax.tree.map(np.testing.assert_array_equal, again, result[3])
    _, (_, _, other_gamma) = run_jit(jax.random.key(0), 0.5)
    assert len(TRACES) == n_traces, "a new gamma must not retrace"
    np.testing.assert_allclose(other_gamma.discounts, 0.5 * (1.0 - np.asarray(other_gamma.terminated)))
    _, (_, _, other_key) = run_jit(jax.random.key(1), 0.97)
    assert not np.array_equal(other_key.obs, result[3].obs)


def test_no_jit_and_vmap_agree_with_jit(result):
    _, (_, _, eager) = run(jax.random.key(0), 0.97)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), eager, result[3])
    keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
    _, (_, _, batched) = jax.jit(jax.vmap(run, in_axes=(0, None)))(keys, 0.97)
    _, (_, _, second) = run_jit(jax.random.key(1), 0.97)
    for i, single in enumerate((result[3], second)):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6), batched, single)


def test_next_values_are_zero_without_value_fn():
    _, (_, _, traj) = run_jit(jax.random.key(0), 0.97, with_value_fn=False)
    np.testing.assert_array_equal(traj.next_values, 0.0)


def test_completed_episode_statistics_against_numpy(result):
    traj = result[3]
    stats = rollout.completed_episode_statistics(traj)
    dones, returns = np.asarray(traj.dones), np.asarray(traj.episode_returns)
    assert int(stats.num_episodes) == dones.sum() > 0
    np.testing.assert_allclose(stats.mean_return, returns[dones].mean(), rtol=1e-6)
    empty = traj._replace(dones=jnp.zeros_like(traj.dones))
    mean, count = rollout.completed_episode_statistics(empty)
    assert float(mean) == 0.0 and int(count) == 0


def test_latest_episode_return_carries_the_last_value_over_updates_without_episodes(result):
    traj = result[3]
    dones, returns = np.asarray(traj.dones), np.asarray(traj.episode_returns)
    stats = jax.jit(rollout.latest_episode_return)(traj, jnp.float32(-3.0))
    assert int(stats.num_episodes) == dones.sum() > 0
    np.testing.assert_allclose(stats.mean_return, returns[dones].mean(), rtol=1e-6)
    empty = traj._replace(dones=jnp.zeros_like(traj.dones))
    mean, count = rollout.latest_episode_return(empty, jnp.float32(-3.0))
    assert float(mean) == -3.0 and int(count) == 0


def test_actor_critic_act_fn_draws_as_distrax_and_evaluates_the_critic():
    # Identity oracle: distrax's distributions on the vmapped raw outputs, the same key.
    obs = jax.random.normal(jax.random.key(3), (5, 4))
    critic = nn.ValueCritic(4, hidden_sizes=(8,), key=jax.random.key(4))
    key = jax.random.key(5)
    categorical = nn.CategoricalPolicy(4, 3, hidden_sizes=(8,), key=jax.random.key(6))
    gaussian = nn.GaussianPolicy(4, 2, hidden_sizes=(8,), log_std_init=-0.5, key=jax.random.key(7))
    expected = [
        distrax.Categorical(logits=jax.vmap(categorical)(obs)).sample_and_log_prob(seed=key),
        distrax.MultivariateNormalDiag(jax.vmap(gaussian)(obs)[0], jnp.exp(jax.vmap(gaussian)(obs)[1]))
        .sample_and_log_prob(seed=key),
    ]
    for actor, discrete, (actions, log_probs) in zip((categorical, gaussian), (True, False), expected):
        got = jax.jit(rollout.actor_critic_act_fn(actor, critic, discrete=discrete))(key, obs)
        if discrete:
            np.testing.assert_array_equal(got[0], actions)
        else:  # eager against jitted: the Gaussian's arithmetic may round one ulp apart
            np.testing.assert_allclose(got[0], actions, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got[1], log_probs, rtol=1e-6)
        np.testing.assert_allclose(got[2], jax.vmap(critic)(obs), rtol=1e-6)
        assert got[1].shape == got[2].shape == (5,)


def test_actor_critic_act_fn_with_per_env_keys_draws_each_environment_from_its_own_key():
    # Oracle: distrax per example, environment i drawn with split(key, E)[i]
    obs = jax.random.normal(jax.random.key(3), (5, 4))
    critic = nn.ValueCritic(4, hidden_sizes=(8,), key=jax.random.key(4))
    categorical = nn.CategoricalPolicy(4, 3, hidden_sizes=(8,), key=jax.random.key(6))
    gaussian = nn.GaussianPolicy(4, 2, hidden_sizes=(8,), log_std_init=-0.5, key=jax.random.key(7))
    key = jax.random.key(5)
    keys = jax.random.split(key, 5)
    for actor, discrete in ((categorical, True), (gaussian, False)):
        def one(o, k, actor=actor, discrete=discrete):
            out = actor(o)
            dist = distrax.Categorical(logits=out) if discrete else distrax.MultivariateNormalDiag(out[0], jnp.exp(out[1]))
            return dist.sample_and_log_prob(seed=k)

        actions, log_probs = zip(*(one(obs[i], keys[i]) for i in range(5)))
        got = jax.jit(rollout.actor_critic_act_fn(actor, critic, discrete=discrete, per_env_keys=True))(key, obs)
        np.testing.assert_allclose(got[0], np.stack(actions), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got[1], np.stack(log_probs), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got[2], jax.vmap(critic)(obs), rtol=1e-6)
        one_key = jax.jit(rollout.actor_critic_act_fn(actor, critic, discrete=discrete))(key, obs)
        assert not np.array_equal(got[0], one_key[0]), "per-environment keys should give other draws"


def test_bad_arguments_raise(result):
    obs0, env_state, _, _ = result
    with pytest.raises(ValueError, match="num_steps"):
        rollout.rollout(jax.random.key(0), ENV, env_state, obs0, act_fn, num_steps=0, gamma=0.9)
    with pytest.raises(ValueError, match="obs"):
        rollout.rollout(jax.random.key(0), ENV, env_state, obs0[:2], act_fn, num_steps=3, gamma=0.9)


def test_docstring_examples_run():
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(rollout, rollout.__name__, globs={"pgkit": pgkit}):
        runner.run(test)
    assert runner.failures == 0


def test_gae_rollout_is_rollout_then_gae():
    env = envs.make("CartPole-v1", num_envs=3)
    actor = nn.CategoricalPolicy(4, 2, hidden_sizes=(8,), key=jax.random.key(1))
    critic = nn.ValueCritic(4, hidden_sizes=(8,), key=jax.random.key(2))
    state, obs = env.reset(jax.random.key(0))

    @jax.jit
    def both(key):
        got = rollout.gae_rollout(key, env, state, obs, actor, critic, num_steps=40, gamma=0.9, lambda_=0.8)
        act_fn = rollout.actor_critic_act_fn(actor, critic, discrete=True)
        _, last, traj = rollout.rollout(key, env, state, obs, act_fn, num_steps=40, gamma=0.9, value_fn=jax.vmap(critic))
        estimates = pgkit.gae(traj.rewards, traj.discounts, traj.dones, traj.values, traj.next_values, lambda_=0.8)
        return got, (last, traj, estimates)

    (_, last, traj, estimates), expected = both(jax.random.key(4))
    assert bool(traj.dones.any())
    for a, b in zip(jax.tree.leaves((last, traj, estimates)), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)


def test_first_episode_mask_keeps_each_column_up_to_its_first_done():
    dones = jnp.array([[0, 0, 1], [1, 0, 0], [0, 1, 1], [1, 0, 0]], bool)
    mask = np.asarray(jax.jit(rollout.first_episode_mask)(dones))
    expected = np.zeros((4, 3), bool)  # loop oracle
    for e in range(3):
        for t in range(4):
            expected[t, e] = not np.asarray(dones)[:t, e].any()
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
