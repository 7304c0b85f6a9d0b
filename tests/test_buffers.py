"""pgkit.buffers: ring-buffer adds against a NumPy reference, uniform sampling, errors, vmap."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
from pgkit import buffers
from pgkit.buffers import ReplayBuffer

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


def test_docstring_examples_run():
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(buffers, buffers.__name__, globs={"pgkit": pgkit}):
        runner.run(test)
    assert runner.failures == 0
