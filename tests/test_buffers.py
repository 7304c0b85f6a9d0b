"""pgkit.buffers: ring-buffer adds against a NumPy reference, uniform sampling, errors, vmap;
the off-policy recipes' transition buffer and trajectory adds."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
from pgkit import buffers, envs, rollout
from pgkit.buffers import ReplayBuffer, Transition

CAPACITY = 8


class NumpyRing:
    """Reference: items appended one at a time with an explicit write pointer."""

    def __init__(self, capacity):
        self.capacity, self.items, self.position, self.size = capacity, [None] * capacity, 0, 0

    def add(self, batch):
        n = len(batch["id"])
        for i in range(n):
            self.items[self.position] = {k: np.asarray(v[i]) for k, v in batch.items()}
            self.position = (self.position + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)


def _example():
    return {"obs": jnp.zeros(2), "action": jnp.zeros((), jnp.int32), "id": jnp.zeros(())}


def _batch(start, n):
    ids = np.arange(start, start + n, dtype=np.float32)
    return {
        "obs": jnp.asarray(np.stack([ids, -ids], axis=1)),
        "action": jnp.asarray(ids.astype(np.int32) % 3),
        "id": jnp.asarray(ids),
    }


add = jax.jit(ReplayBuffer.add)
sample = jax.jit(ReplayBuffer.sample, static_argnames=("batch_size", "min_size"))


def test_init_shapes_and_dtypes():
    state = ReplayBuffer.init(_example(), CAPACITY)
    assert state.data["obs"].shape == (CAPACITY, 2) and state.data["action"].dtype == jnp.int32
    assert state.data["id"].shape == (CAPACITY,)
    assert int(state.position) == 0 and int(state.size) == 0


def test_adds_with_wrap_around_match_numpy_reference():
    state = ReplayBuffer.init(_example(), CAPACITY)
    reference = NumpyRing(CAPACITY)
    start = 0
    for n in (3, 3, 3, 5, 1, 8, 11, 1, 1, 1, 1, 1, 1, 1, 1, 1):  # wraps; 11 exceeds the capacity
        batch = _batch(start, n)
        state = add(state, batch) if n <= CAPACITY else ReplayBuffer.add(state, batch)
        reference.add(jax.tree.map(np.asarray, batch))
        start += n
        assert int(state.position) == reference.position and int(state.size) == reference.size
        for slot in range(reference.size):
            for name in ("obs", "action", "id"):
                np.testing.assert_array_equal(state.data[name][slot], reference.items[slot][name])


def test_sampling_is_uniform_over_the_filled_part():
    state = add(ReplayBuffer.init(_example(), CAPACITY), _batch(100, 5))
    drawn = sample(state, jax.random.key(0), batch_size=4000)
    ids = np.asarray(drawn["id"])
    assert set(np.unique(ids)) == {100.0, 101.0, 102.0, 103.0, 104.0}  # never an empty slot
    # Items stay whole: every field of a sample comes from the same transition.
    np.testing.assert_array_equal(np.asarray(drawn["obs"]), np.stack([ids, -ids], axis=1))
    np.testing.assert_array_equal(np.asarray(drawn["action"]), ids.astype(np.int32) % 3)
    frequencies = np.bincount(ids.astype(int) - 100) / len(ids)
    standard_error = np.sqrt(0.2 * 0.8 / len(ids))
    assert np.all(np.abs(frequencies - 0.2) < 4 * standard_error)
    # After wrapping, all slots are valid and the oldest items are gone.
    full = add(state, _batch(200, 6))
    ids = np.asarray(sample(full, jax.random.key(1), batch_size=4000)["id"])
    assert set(np.unique(ids)) == {103.0, 104.0, 200.0, 201.0, 202.0, 203.0, 204.0, 205.0}


def test_sampling_too_early_raises_under_jit_and_eagerly():
    empty = ReplayBuffer.init(_example(), CAPACITY)
    with pytest.raises(Exception, match="replay buffer: it holds 0 item"):
        jax.block_until_ready(sample(empty, jax.random.key(0), batch_size=2))
    partial = add(empty, _batch(0, 3))
    with pytest.raises(Exception, match="replay buffer: it holds 3 item.*min_size=5"):
        jax.block_until_ready(ReplayBuffer.sample(partial, jax.random.key(0), 2, min_size=5))
    assert ReplayBuffer.sample(partial, jax.random.key(0), 2, min_size=3)["id"].shape == (2,)


def test_sampling_too_early_raises_under_jit_of_vmap():
    # one buffer per seed, stacked; only the middle one holds fewer than min_size items
    empty = ReplayBuffer.init(_example(), CAPACITY)
    sizes = (4, 2, 5)
    stacked = jax.tree.map(
        lambda *xs: jnp.stack(xs), *[add(empty, _batch(10 * s, n)) for s, n in enumerate(sizes)]
    )
    keys = jax.random.split(jax.random.key(0), len(sizes))

    def draw(min_size):
        return jax.jit(jax.vmap(lambda state, key: ReplayBuffer.sample(state, key, 6, min_size=min_size)))

    with pytest.raises(Exception, match=r"replay buffer: it holds 2 item\(s\), fewer than min_size=3"):
        jax.block_until_ready(draw(3)(stacked, keys))
    # every buffer large enough: no error, and each seed draws from its own items only
    drawn = jax.block_until_ready(draw(2)(stacked, keys))
    for s, n in enumerate(sizes):
        assert set(np.asarray(drawn["id"][s]).tolist()) <= set(range(10 * s, 10 * s + n))
    # the default min_size=1 forbids an empty buffer among the seeds
    with_empty = jax.tree.map(lambda x, e: x.at[1].set(e), stacked, empty)
    with pytest.raises(Exception, match=r"replay buffer: it holds 0 item\(s\), fewer than min_size=1"):
        jax.block_until_ready(jax.jit(jax.vmap(lambda s, k: ReplayBuffer.sample(s, k, 6)))(with_empty, keys))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer.init(_example(), 0)
    state = ReplayBuffer.init(_example(), CAPACITY)
    with pytest.raises(ValueError, match="structure"):
        ReplayBuffer.add(state, {"obs": jnp.zeros((2, 2))})
    bad = dict(_batch(0, 2), obs=jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        ReplayBuffer.add(state, bad)
    with pytest.raises(ValueError, match="batch_size"):
        ReplayBuffer.sample(state, jax.random.key(0), 0)


def test_vmap_over_seeds_equals_separate_buffers():
    seeds = 3
    init = jax.vmap(lambda _: ReplayBuffer.init(_example(), CAPACITY))(jnp.arange(seeds))
    batches = [_batch(10 * s, 6) for s in range(seeds)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    keys = jax.random.split(jax.random.key(5), seeds)

    @jax.jit
    def step(state, batch, key):
        state = jax.vmap(ReplayBuffer.add)(state, batch)
        state = jax.vmap(ReplayBuffer.add)(state, batch)  # wraps: 12 items into 8 slots
        return state, jax.vmap(lambda s, k: ReplayBuffer.sample(s, k, 4))(state, key)

    state, drawn = step(init, stacked, keys)
    for s in range(seeds):
        single = add(add(ReplayBuffer.init(_example(), CAPACITY), batches[s]), batches[s])
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[s], b), state, single)
        expected = sample(single, keys[s], batch_size=4)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[s], b), drawn, expected)


def _trajectory(num_steps, num_envs, start=0):
    """A [K, E] Trajectory whose rewards number the steps in time-major order (start, start+1, ...)."""
    ids = jnp.arange(start, start + num_steps * num_envs, dtype=jnp.float32).reshape(num_steps, num_envs)
    return rollout.Trajectory(*([None] * 13))._replace(
        obs=jnp.stack([ids, -ids, 2 * ids], axis=-1),
        actions=(ids / 100.0)[..., None],
        rewards=ids,
        discounts=jnp.where(ids % 3 == 0, 0.0, 0.9),
        next_obs=jnp.stack([ids + 0.5, -ids, 2 * ids], axis=-1),
    )


@pytest.mark.parametrize("name, action_shape, dtype", [("Pendulum-v1", (1,), jnp.float32), ("CartPole-v1", (), jnp.int32)])
def test_transition_buffer_fits_the_environment(name, action_shape, dtype):
    env = envs.make(name, num_envs=3)
    state = buffers.transition_buffer(env, 7)
    assert isinstance(state.data, Transition) and int(state.size) == 0 and int(state.position) == 0
    assert state.data.action.shape == (7, *action_shape) and state.data.action.dtype == dtype
    assert state.data.obs.shape == state.data.next_obs.shape == (7, env.observation_size)
    assert state.data.reward.shape == state.data.discount.shape == (7,)
    assert all(leaf.dtype == jnp.float32 for leaf in (state.data.obs, state.data.reward, state.data.discount))


def test_add_trajectory_writes_time_major_transitions_in_order():
    env = envs.make("Pendulum-v1", num_envs=2)
    state = buffers.add_trajectory(buffers.transition_buffer(env, 5), _trajectory(2, 2))
    assert int(state.size) == 4 and int(state.position) == 4
    # [T, E] = [[0, 1], [2, 3]]: stored as t=0 (e=0, e=1), then t=1
    np.testing.assert_array_equal(state.data.reward, [0.0, 1.0, 2.0, 3.0, 0.0])
    np.testing.assert_array_equal(state.data.discount, np.float32([0.0, 0.9, 0.9, 0.0, 0.0]))
    np.testing.assert_array_equal(state.data.obs[:4, 0], [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(state.data.next_obs[:4, 0], [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_array_equal(state.data.action[:4, 0], np.float32([0.0, 1.0, 2.0, 3.0]) / np.float32(100.0))
    drawn = ReplayBuffer.sample(state, jax.random.key(2), 64)
    assert set(np.asarray(drawn.reward).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    # items stay whole: each sampled field comes from the same step
    np.testing.assert_array_equal(drawn.obs[:, 0], drawn.reward)
    np.testing.assert_array_equal(drawn.next_obs[:, 0], drawn.reward + 0.5)


def test_add_trajectory_equals_adding_the_steps_one_by_one():
    # identity: K·E items at once == item by item in time-major order, also when the ring wraps
    env = envs.make("Pendulum-v1", num_envs=3)
    empty = buffers.transition_buffer(env, 10)
    at_once, one_by_one = empty, empty
    start = 0
    for num_steps in (2, 3, 1, 4):  # 6, 9, 3 and 12 items: wraps, and the last exceeds the capacity
        traj = _trajectory(num_steps, 3, start)
        start += 3 * num_steps
        at_once = jax.jit(buffers.add_trajectory)(at_once, traj)
        for t in range(num_steps):
            for e in range(3):
                item = Transition(traj.obs[t, e], traj.actions[t, e], traj.rewards[t, e], traj.discounts[t, e],
                                  traj.next_obs[t, e])
                one_by_one = ReplayBuffer.add(one_by_one, jax.tree.map(lambda x: x[None], item))
        jax.tree.map(np.testing.assert_array_equal, at_once, one_by_one)
    assert int(at_once.size) == 10 and int(at_once.position) == start % 10


def test_discrete_actions_are_stored_as_int32():
    env = envs.make("CartPole-v1", num_envs=2)
    traj = _trajectory(2, 2)._replace(actions=jnp.array([[0, 1], [1, 0]], jnp.int32), obs=jnp.zeros((2, 2, 4)),
                                      next_obs=jnp.ones((2, 2, 4)))
    state = buffers.add_trajectory(buffers.transition_buffer(env, 4), traj)
    np.testing.assert_array_equal(state.data.action, [0, 1, 1, 0])
    assert state.data.action.dtype == jnp.int32


def test_docstring_examples_run():
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(buffers, buffers.__name__, globs={"pgkit": pgkit}):
        runner.run(test)
    assert runner.failures == 0
