"""Recurrent rollouts: the hidden state is reset exactly after dones, and replaying the stored
sequences from their initial hidden states gives back the rollout's log-probabilities.

The probe is ``Cue-pgkit`` (a cue at step 0 to recall at a query some steps later, a fresh cue
each episode) with a time limit of 3 steps, so episodes end both ways: terminated at the query
(delays 1, 2) and truncated before it (delays 3, 4).
"""

import doctest

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
from pgkit import envs, nn, recurrent, rollout

T, E = 24, 4


def make_env(num_envs=E):
    return envs.make("Cue-pgkit", num_envs=num_envs, env_params={"max_steps_in_episode": 3})


def networks(cell, env):
    actor = nn.recurrent_policy_for(env, cell=cell, cell_size=8, hidden_sizes=(8,), key=jax.random.key(1))
    # a head 100 times larger than the initial 0.01 gain: log-probabilities far from log ½, so memory shows in them
    actor = eqx.tree_at(lambda a: a.net.head.layers[-1].kernel, actor, replace_fn=lambda k: 100.0 * k)
    critic = nn.RecurrentNetwork(env.observation_size, "scalar", cell=cell, cell_size=8, hidden_sizes=(8,),
                                 key=jax.random.key(2))
    return actor, critic


def two_rollouts(cell):
    """Two consecutive rollouts (the second starts from the first's last hidden state)."""
    env = make_env()
    actor, critic = networks(cell, env)
    h0 = (actor.initial_state(), critic.initial_state())
    act_fn = recurrent.recurrent_actor_critic_act_fn(actor, critic, discrete=True)
    value_fn = lambda o, h: jax.vmap(critic)(h[1], o)[1]  # noqa: E731

    @jax.jit
    def run(key):
        state, obs = env.reset(jax.random.key(0))
        hidden = recurrent.fresh_hidden_batch(h0, E)
        out = []
        for k in jax.random.split(key, 2):
            state, obs, hidden, batch = recurrent.recurrent_rollout(
                k, env, state, obs, hidden, act_fn, num_steps=T, gamma=0.99, fresh_hidden=h0, value_fn=value_fn
            )
            out.append(batch)
        return out, hidden

    batches, last_hidden = run(jax.random.key(3))
    return env, actor, critic, h0, batches, last_hidden


@pytest.fixture(scope="module", params=["gru", "lstm"])
def rollouts(request):
    return two_rollouts(request.param)


def log_probs_of(params, actions):
    return nn.policy_distribution(params, discrete=True).log_prob(actions)


def test_the_probe_ends_episodes_both_ways(rollouts):
    *_, batches, _ = rollouts
    traj = batches[1].trajectory
    assert traj.terminated.sum() >= 3 and (traj.truncated & ~traj.terminated).sum() >= 3
    # the cue is observed at each episode's first step only, the query at its delay only
    starts = np.concatenate([np.ones((1, E), bool), np.asarray(traj.dones[:-1])])
    np.testing.assert_array_equal(np.asarray(traj.obs[..., 0] != 0)[1:], starts[1:])


def test_each_episode_sees_only_its_own_observations(rollouts):
    """The hidden state is reset exactly after every done: each episode's log-probabilities equal
    those of the episode replayed alone from a fresh state (nothing leaks in from the episode
    before), and the same check with the reset one step early or one step late fails."""
    env, actor, critic, h0, batches, _ = rollouts
    traj = batches[1].trajectory
    dones, obs = np.asarray(traj.dones), np.asarray(traj.obs)
    step = jax.jit(lambda h, o: actor(h, o))
    checked = 0
    for e in range(E):
        bounds = [0] + [t + 1 for t in range(T) if dones[t, e]]
        for start, end in zip(bounds[:-1], bounds[1:]):
            if start == 0:
                continue  # the first segment continues an episode of the previous rollout
            h = actor.initial_state()
            for t in range(start, end):
                h, logits = step(h, obs[t, e])
                expected = log_probs_of(logits[None], traj.actions[t, e][None])[0]
                np.testing.assert_allclose(np.asarray(traj.log_probs[t, e]), np.asarray(expected), rtol=1e-6, atol=1e-6)
                checked += 1
    assert checked > T  # most steps lie in episodes that began inside the rollout

    def replayed(dones_used):
        params = recurrent.replay(jax.vmap(actor), traj.obs, dones_used, batches[1].initial_hidden[0], h0[0])
        return np.asarray(log_probs_of(params, traj.actions))

    np.testing.assert_allclose(replayed(traj.dones), np.asarray(traj.log_probs), rtol=1e-6, atol=1e-6)
    early = jnp.concatenate([traj.dones[1:], jnp.zeros((1, E), bool)])  # reset before the done step acts
    late = jnp.concatenate([jnp.zeros((1, E), bool), traj.dones[:-1]])  # the next episode's first step keeps memory
    for wrong in (early, late, jnp.zeros_like(traj.dones)):
        assert np.abs(replayed(wrong) - np.asarray(traj.log_probs)).max() > 1e-2


def test_next_hidden_continues_the_episode_and_the_next_rollout_starts_reset(rollouts):
    env, actor, critic, h0, batches, last_hidden = rollouts
    first, second = batches
    # h_0 of the second rollout: h'_{T-1} of the first, reset where its last step was done
    expected = recurrent.reset_where_done(
        jax.tree.map(lambda h: h[-1], first.next_hidden), first.trajectory.dones[-1], h0
    )
    for a, b in zip(jax.tree.leaves(second.initial_hidden), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # next_values are V(s'_t) from the un-reset h'_t: where not done they are the next step's values
    traj = second.trajectory
    inside = ~np.asarray(traj.dones[:-1])
    np.testing.assert_allclose(np.asarray(traj.next_values[:-1])[inside], np.asarray(traj.values[1:])[inside],
                               rtol=1e-5, atol=1e-6)
    done_next = np.asarray(jax.tree.leaves(second.next_hidden)[0])[np.asarray(traj.dones)]
    assert np.abs(done_next).max() > 0  # the done step's state was not zeroed before V(s'_t)
    for a, b in zip(jax.tree.leaves(last_hidden), jax.tree.leaves(recurrent.reset_where_done(
            jax.tree.map(lambda h: h[-1], second.next_hidden), traj.dones[-1], h0))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_replay_from_the_stored_initial_state_reproduces_the_log_probs_exactly(rollouts):
    """With the behaviour parameters, replaying the whole batch, or any minibatch of environments
    (whole sequences), from the stored h_0 gives the rollout's log-probabilities and values."""
    env, actor, critic, h0, batches, _ = rollouts
    batch = batches[1]
    traj = batch.trajectory
    replay = jax.jit(recurrent.actor_critic_replay, static_argnums=())
    params, values = replay(actor, critic, traj.obs, traj.dones, batch.initial_hidden, h0)
    np.testing.assert_array_equal(np.asarray(log_probs_of(params, traj.actions)), np.asarray(traj.log_probs))
    np.testing.assert_array_equal(np.asarray(values), np.asarray(traj.values))
    for indices in np.asarray(recurrent.env_minibatch_indices(jax.random.key(5), E, 2)):
        (traj_mb,), hidden_mb = recurrent.take_envs((traj,), batch.initial_hidden, jnp.asarray(indices))
        params_mb, _ = replay(actor, critic, traj_mb.obs, traj_mb.dones, hidden_mb, h0)
        np.testing.assert_allclose(np.asarray(log_probs_of(params_mb, traj_mb.actions)),
                                   np.asarray(traj.log_probs)[:, indices], rtol=1e-6, atol=1e-7)


def test_a_memoryless_act_fn_gives_rollouts_trajectory():
    """Same keys, same episode semantics as pgkit.rollout.rollout."""
    env = envs.make("CartPole-v1", num_envs=3)
    actor = nn.CategoricalPolicy(4, 2, hidden_sizes=(8,), key=jax.random.key(0))
    critic = nn.ValueCritic(4, hidden_sizes=(8,), key=jax.random.key(1))
    act = rollout.actor_critic_act_fn(actor, critic, discrete=True)
    state, obs = env.reset(jax.random.key(2))
    _, _, plain = rollout.rollout(jax.random.key(3), env, state, obs, act, num_steps=40, gamma=0.9,
                                  value_fn=jax.vmap(critic))
    _, _, _, batch = recurrent.recurrent_rollout(
        jax.random.key(3), env, state, obs, jnp.zeros((3, 1)), lambda k, o, h: (*act(k, o), h + 1.0),
        num_steps=40, gamma=0.9, fresh_hidden=jnp.zeros(1), value_fn=lambda o, h: jax.vmap(critic)(o),
    )
    assert plain.dones.any()
    for a, b in zip(plain, batch.trajectory):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the counter h counts the steps since each episode began
    since = np.asarray(batch.next_hidden)[..., 0]
    starts = np.concatenate([np.ones((1, 3), bool), np.asarray(plain.dones[:-1])])
    counts = np.zeros((40, 3))
    for t in range(40):
        counts[t] = 1 if t == 0 else np.where(starts[t], 1, counts[t - 1] + 1)
    np.testing.assert_array_equal(since, counts)


def test_bad_arguments_name_the_argument():
    env = make_env()
    with pytest.raises(ValueError, match="minibatches"):
        recurrent.env_minibatch_indices(jax.random.key(0), 4, 3)
    with pytest.raises(ValueError, match="hidden"):
        recurrent.recurrent_rollout(jax.random.key(0), env, *env.reset(jax.random.key(0)), jnp.zeros((3, 2)),
                                    None, num_steps=2, gamma=0.9, fresh_hidden=jnp.zeros(2))
    with pytest.raises(ValueError, match="dones"):
        recurrent.replay(lambda h, o: (h, o), jnp.zeros((3, 2, 1)), jnp.zeros((3, 1), bool), jnp.zeros(2), 0.0)
    with pytest.raises(ValueError, match="cell"):
        nn.RecurrentNetwork(2, 2, cell="rnn", key=jax.random.key(0))
    with pytest.raises(ValueError, match="torso"):
        nn.torso_for((4,), "cnn")


def test_conv_network_is_a_convolution_then_the_mlp():
    """ConvNetwork against a NumPy loop convolution (3x3, stride 1, no padding, HWC)."""
    net = nn.ConvNetwork((5, 6, 2), 3, channels=(4,), hidden_sizes=(), activation="relu", key=jax.random.key(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (60,)))
    image, kernel, bias = x.reshape(5, 6, 2), np.asarray(net.kernels[0]), np.asarray(net.biases[0])
    z = np.zeros((3, 4, 4))
    for i in range(3):
        for j in range(4):
            z[i, j] = np.einsum("abc,abco->o", image[i:i + 3, j:j + 3], kernel) + bias
    expected = np.maximum(z, 0).reshape(-1) @ np.asarray(net.head.layers[0].kernel) + np.asarray(net.head.layers[0].bias)
    np.testing.assert_allclose(np.asarray(net(jnp.asarray(x))), expected, rtol=1e-4, atol=1e-5)
    flat = np.asarray(net.kernels[0]).reshape(18, 4)  # orthogonal columns, gain √2
    np.testing.assert_allclose(flat.T @ flat, 2.0 * np.eye(4), atol=1e-5)


def test_docstring_examples_run():
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(recurrent, "pgkit.recurrent", globs={"pgkit": pgkit}):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0
