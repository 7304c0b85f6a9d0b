"""Helpers shared by the off-policy recipe tests (DDPG, TD3, SAC): a short configuration that
learns over several chunks, bit-identity of reruns and resume, and the warm-up action check."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgkit import experiment
from pgkit.experiment import driver

from reference import assert_bit_identical

# A short run that learns over several chunks: 600 updates in 6 chunks of 100, one gradient step
# per update from update 99 on (small networks and minibatches: it compiles in about 10 s).
SMALL = {
    "total_steps": 600,
    "learning_starts": 100,
    "batch_size": 32,
    "buffer_size": 600,
    "hidden_sizes": (16, 16),
}
SMALL_CHUNK = 100


def members_differ(tree) -> bool:
    """Whether member 0 and member 1 of a tree with a leading member axis differ anywhere."""
    return any(not np.array_equal(np.asarray(x)[0], np.asarray(x)[1]) for x in jax.tree.leaves(tree))


def check_reruns_and_resume_are_bit_identical(tmp_path, recipe: str, **kwargs):
    """Train twice with the same key, and once interrupted after 2 chunks and resumed: all equal.

    ``kwargs`` go to ``experiment.train`` (two seeds unless given); returns the first run.
    """
    kwargs = {"seeds": 2, "seed": 0, "log": None, **kwargs}
    first = experiment.train(recipe, **kwargs)
    assert_bit_identical(first, experiment.train(recipe, **kwargs))
    part = experiment.train(recipe, **kwargs, out=tmp_path / "run", stop_after_chunks=2)
    updates = first.metrics["episode_return"].shape[1]
    assert 0 < part.metrics["episode_return"].shape[1] < updates  # really interrupted
    assert_bit_identical(first, experiment.resume(tmp_path / "run", log=None))
    return first


def assert_uniform_and_independent_of_the_state(actions, obs, env):
    """``actions`` (the recipe's: ints, or [-1, 1]^A) are uniform over the action space and
    uncorrelated with ``obs`` ``[n, obs_size]``, each within 4 standard errors.

    Discrete: each action's frequency. Continuous, mapped to the Box as ``VecEnv`` does: the
    mean, the share of each quarter of [low, high], and the span (the smallest and largest
    action lie within a fraction t of the width from the bounds, (1 - t)^n = 1e-6).
    """
    n = len(obs)
    if env.discrete:
        p = 1.0 / env.num_actions
        frequencies = np.bincount(actions.reshape(n), minlength=env.num_actions) / n
        np.testing.assert_array_less(np.abs(frequencies - p), 4 * np.sqrt(p * (1 - p) / n))
        actions = actions.reshape(n, 1).astype(np.float64)
    else:
        low, high = env.action_low.astype(np.float64), env.action_high.astype(np.float64)
        actions = low + 0.5 * (actions.reshape(n, env.action_size) + 1.0) * (high - low)
        width, t = high - low, 1.0 - 1e-6 ** (1.0 / n)
        assert np.all((actions >= low) & (actions <= high))
        np.testing.assert_array_less(actions.min(axis=0), low + t * width)
        np.testing.assert_array_less(high - t * width, actions.max(axis=0))
        standard_error = width / np.sqrt(12 * n)
        np.testing.assert_array_less(np.abs(actions.mean(axis=0) - (low + high) / 2), 4 * standard_error)
        quarters = np.clip(np.floor(4 * (actions - low) / width), 0, 3).astype(int)
        for a in range(env.action_size):
            frequencies = np.bincount(quarters[:, a], minlength=4) / n
            np.testing.assert_array_less(np.abs(frequencies - 0.25), 4 * np.sqrt(0.25 * 0.75 / n))
    # independent of the state: a sample correlation has standard error 1/sqrt(n) around 0
    for a in range(actions.shape[1]):
        for o in range(obs.shape[1]):
            correlation = np.corrcoef(actions[:, a], obs[:, o])[0, 1]
            assert abs(correlation) < 4 / np.sqrt(n), f"action {a} and observation {o}: correlation {correlation}"


def sharpen(actor):
    """The actor with every parameter times 50: near-deterministic, saturated, state-dependent."""
    return jax.tree.map(lambda x: 50.0 * x if eqx.is_inexact_array(x) else x, actor)


def check_warm_up_actions_are_uniform(module, env_name, config, chunk, *, sharpened, hparams=None):
    """Fill two seeds' buffers with warm-up steps only (the driver's compiled chunk, as in the
    bit-identity test), from a sharpened actor, and check the stored actions.

    ``sharpened(state)`` returns the state with :func:`sharpen` applied to its actor.
    ``env_steps`` is set back to 0 before every chunk, so every behaviour action is a warm-up
    one; ``config["buffer_size"]`` steps per seed are stored.
    """
    recipe, init, chunk_fn = driver.programs(module, module.Config(**config), env_name, chunk)
    hp = jax.tree.map(lambda x: jnp.full((2,), x, jnp.float32), module.HParams(**(hparams or {})))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    state = sharpened(init(keys, hp))
    steps_per_chunk = chunk * recipe.env_steps_per_update
    assert steps_per_chunk <= config["learning_starts"] and config["buffer_size"] % steps_per_chunk == 0
    program = chunk_fn.lower(state, hp).compile()  # as the driver compiles it (cached after a run)
    for _ in range(config["buffer_size"] // steps_per_chunk):
        state, _ = program(state._replace(env_steps=jnp.zeros_like(state.env_steps)), hp)
    assert (np.asarray(state.buffer.size) == config["buffer_size"]).all()
    obs = np.asarray(state.buffer.data.obs).reshape(-1, recipe.env.observation_size)
    actions = np.asarray(state.buffer.data.action).reshape(len(obs), -1)
    assert_uniform_and_independent_of_the_state(actions, obs, recipe.env)
    # not vacuous: the sharpened actor's own actions on these states fail the same check
    first = jax.tree.map(lambda x: x[0], sharpened(init(keys, hp)))
    policy_actions = np.asarray(recipe.act(first, jax.random.key(0), jnp.asarray(obs)))
    with pytest.raises(AssertionError):
        assert_uniform_and_independent_of_the_state(policy_actions, obs, recipe.env)


def full_buffer_copies(recipe: str, env_name: str, **config) -> list[str]:
    """The instructions of a compiled one-member training chunk that copy a whole replay buffer.

    The buffer gets a capacity no other array has (4,099), so that its arrays can be told apart
    in XLA's optimised program. Copying it in every update would cost O(capacity) per
    environment step (see ``pgkit.buffers.ReplayBuffer.add``).
    """
    capacity = 4_099
    module = experiment.load_recipe(recipe)
    config = module.Config(**{**SMALL, "buffer_size": capacity, **config})
    _, init, chunk_fn = driver.programs(module, config, env_name, 8)
    keys = jax.random.split(jax.random.key(0), 1)
    hparams = jax.tree.map(lambda x: np.full((1,), x, np.float32), module.HParams())
    shapes = jax.eval_shape(init, keys, hparams)
    text = chunk_fn.lower(shapes, hparams).compile().as_text()
    return [line.strip() for line in text.splitlines() if " copy(" in line and f"{capacity}" in line.split("copy(")[0]]
