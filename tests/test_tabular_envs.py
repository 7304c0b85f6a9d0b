"""pgkit.tabular_envs: the chain's dynamics against a plain-Python loop, its random-policy success
rate against the closed form |A|^-L, and its registration with pgkit.envs.make."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

import pgkit
from pgkit import envs, tabular_envs


def _python_chain(actions, length, num_actions):
    """Oracle: positions, rewards and terminations of one stream of actions, auto-reset at 0."""
    position, out = 0, []
    for a in actions:
        correct = a == position % num_actions
        nxt = position + 1 if correct else position
        terminated = (not correct) or nxt >= length
        out.append((nxt, float(correct), terminated))
        position = 0 if terminated else nxt
    return out


@pytest.mark.parametrize("length, num_actions", [(5, 2), (4, 3)])
def test_chain_steps_match_a_python_loop(length, num_actions):
    env = envs.make("Chain-pgkit", num_envs=3, length=length, num_actions=num_actions)
    rng = np.random.default_rng(length)
    # mostly correct actions so that episodes get deep, with some mistakes
    state, obs = env.reset(jax.random.key(0))
    step = jax.jit(env.step)
    streams = [[] for _ in range(3)]
    positions = [0, 0, 0]
    seen = []
    for t in range(40):
        actions = [p % num_actions if rng.uniform() < 0.8 else int(rng.integers(num_actions)) for p in positions]
        state, out = step(jax.random.key(t), state, jnp.asarray(actions))
        seen.append((np.asarray(out.final_obs[:, 0]), np.asarray(out.reward), np.asarray(out.terminated),
                     np.asarray(out.obs[:, 0])))
        for i in range(3):
            streams[i].append(actions[i])
        positions = [int(o) for o in np.asarray(out.obs[:, 0])]
    for i in range(3):
        expected = _python_chain(streams[i], length, num_actions)
        for t, (position, reward, terminated) in enumerate(expected):
            final, rewards, terms, obs = seen[t]
            assert (final[i], rewards[i], terms[i]) == (position, reward, terminated), (i, t)
            assert obs[i] == (0 if terminated else position)
    assert any(r == length for r in [s[0][i] for s in seen for i in range(3)])  # the goal was reached


def test_random_policy_reaches_the_goal_with_probability_a_to_the_minus_length():
    length, num_actions, n = 3, 2, 4096
    env = envs.make("Chain-pgkit", num_envs=n, length=length, num_actions=num_actions)

    @jax.jit
    def run(key):
        state, _ = env.reset(key)

        def body(carry, key):
            state, alive, total = carry
            action_key, step_key = jax.random.split(key)
            actions = jax.random.randint(action_key, (n,), 0, num_actions)
            state, out = env.step(step_key, state, actions)
            return (state, alive & ~out.terminated, total + jnp.where(alive, out.reward, 0.0)), None

        carry = (state, jnp.ones(n, bool), jnp.zeros(n))
        (_, _, total), _ = jax.lax.scan(body, carry, jax.random.split(key, length))
        return total

    returns = np.asarray(run(jax.random.key(3)))
    success = returns == length
    p = num_actions ** -length
    assert abs(success.mean() - p) <= 4 * np.sqrt(p * (1 - p) / n), success.mean()
    # the return counts states passed: P(return = k) = (1/|A|)^k (1 - 1/|A|) for k < L
    assert abs((returns == 0).mean() - 0.5) <= 4 * np.sqrt(0.25 / n)


def test_registered_with_pgkit_envs():
    assert "Chain-pgkit" in envs.available_envs()
    env = envs.make("Chain-pgkit", num_envs=2)
    assert env.discrete and env.num_actions == 2 and env.observation_size == 1
    space = env.env.observation_space(env.env_params)
    assert isinstance(space, spaces.Discrete) and space.n == 11
    np.testing.assert_array_equal(np.asarray(env.env.correct_actions()), np.arange(10) % 2)
    assert envs.make("Chain-pgkit", num_envs=2, length=4) == envs.make("Chain-pgkit", num_envs=2, length=4)
    assert envs.make("Chain-pgkit", num_envs=2, length=4) != envs.make("Chain-pgkit", num_envs=2, length=5)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="length"):
        tabular_envs.make("Chain-pgkit", length=0)
    with pytest.raises(ValueError, match="num_actions"):
        tabular_envs.make("Chain-pgkit", num_actions=1)
    with pytest.raises(ValueError, match="Chain-pgkit"):
        tabular_envs.make("Ladder-pgkit")


def test_docstring_examples_run():
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(tabular_envs, tabular_envs.__name__, globs={"pgkit": pgkit}):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0
