"""pgkit.nn: shapes, orthogonal initialisation, distributions, vmap, twin critics.

All networks use the same small sizes (obs 4, hidden (8, 8), 2 actions, batch 3) so that JAX's
per-shape compilation cache is shared across tests and with the docstring examples.
"""

import doctest
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
from pgkit import nn

KEY = jax.random.key(0)
OBS, ACT, HID, B = 4, 2, (8, 8), 3


def _orthogonality_error(weight, gain):
    """Max deviation of the smaller Gram matrix of `weight` from gain² I."""
    w = np.asarray(weight, np.float64)
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    return np.max(np.abs(gram - gain**2 * np.eye(gram.shape[0])))


@pytest.fixture(scope="module")
def batch():
    obs = jax.random.normal(jax.random.key(1), (B, OBS))
    actions = jax.random.uniform(jax.random.key(2), (B, ACT), minval=-1.0, maxval=1.0)
    return obs, actions


def test_mlp_shapes_and_scalar_output(batch):
    obs, _ = batch
    net = nn.MLP(OBS, ACT, hidden_sizes=HID, key=KEY)
    assert net(obs[0]).shape == (ACT,)
    assert jax.vmap(net)(obs).shape == (B, ACT)
    assert nn.MLP(OBS, "scalar", hidden_sizes=HID, key=KEY)(obs[0]).shape == ()
    linear = nn.MLP(OBS, ACT, hidden_sizes=(), key=KEY)
    assert len(linear.layers) == 1 and linear(obs[0]).shape == (ACT,)


def test_mlp_matches_manual_forward_pass(batch):
    obs, _ = batch
    for activation, sigma in [("tanh", np.tanh), ("relu", lambda z: np.maximum(z, 0.0))]:
        net = nn.MLP(OBS, ACT, hidden_sizes=HID, activation=activation, key=KEY)
        h = np.asarray(obs[0], np.float64)
        for layer in net.layers[:-1]:
            h = sigma(h @ np.asarray(layer.kernel) + np.asarray(layer.bias))
        expected = h @ np.asarray(net.layers[-1].kernel) + np.asarray(net.layers[-1].bias)
        np.testing.assert_allclose(net(obs[0]), expected, rtol=1e-5, atol=1e-6)


def test_orthogonal_init_square_layers_and_gains():
    net = nn.MLP(OBS, ACT, hidden_sizes=HID, final_gain=0.5, key=KEY)
    square = net.layers[1].kernel  # 8 x 8
    np.testing.assert_allclose(square.T @ square, 2.0 * np.eye(8), atol=1e-5)
    assert net.layers[0].kernel.shape == (OBS, 8) and net.layers[-1].kernel.shape == (8, ACT)
    assert _orthogonality_error(net.layers[0].kernel, math.sqrt(2.0)) < 1e-5  # 4 x 8
    assert _orthogonality_error(net.layers[-1].kernel, 0.5) < 1e-6  # 8 x 2
    assert all(np.all(np.asarray(layer.bias) == 0.0) for layer in net.layers)
    # The initialisation depends on the key.
    other = nn.MLP(OBS, ACT, hidden_sizes=HID, key=jax.random.key(1))
    assert not np.allclose(net.layers[1].kernel, other.layers[1].kernel)


def test_orthogonal_linear_is_the_positive_diagonal_qr_of_lapack():
    # orthogonal_linear(in, out, key=k) orthogonalises the Gaussian matrix drawn from k in its tall
    # shape [max, min], as torch.nn.init.orthogonal_ does. Oracle: NumPy's LAPACK QR of that matrix
    # with the sign fix diag(R) > 0 (the unique thin QR); the kernel is Q for a wide layer, Qᵀ else.
    for i, (in_size, out_size) in enumerate([(8, 8), (4, 8), (8, 4), (3, 16), (1, 5), (64, 64)]):
        key = jax.random.key(10 + i)
        tall = (max(in_size, out_size), min(in_size, out_size))
        a = np.asarray(jax.random.normal(key, tall, jnp.float32), np.float64)
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        kernel = nn.orthogonal_linear(in_size, out_size, gain=1.0, key=key).kernel
        np.testing.assert_allclose(kernel, q.T if out_size >= in_size else q, atol=2e-5)


def test_thin_q_stays_orthogonal_for_an_ill_conditioned_matrix():
    # Gram-Schmidt once loses orthogonality in proportion to the condition number; twice does not.
    u, _ = np.linalg.qr(np.asarray(jax.random.normal(jax.random.key(20), (32, 32)), np.float64))
    v, _ = np.linalg.qr(np.asarray(jax.random.normal(jax.random.key(21), (32, 32)), np.float64))
    a = (u * np.logspace(0, -5, 32)) @ v.T  # condition number 1e5
    q = np.asarray(jax.jit(nn.thin_q)(jnp.asarray(a, jnp.float32)), np.float64)
    assert np.max(np.abs(q.T @ q - np.eye(32))) < 1e-5
    with pytest.raises(ValueError, match="tall"):
        nn.thin_q(jnp.ones((2, 3)))


def test_mlp_layers_are_the_single_layers_of_its_split_keys():
    # An MLP orthogonalises its layers' matrices together (zero-padded to the largest); each
    # layer is orthogonal_linear's, alone, from the same key, up to rounding.
    net = nn.MLP(OBS, "scalar", hidden_sizes=(16, 8), final_gain=0.3, key=KEY)
    keys = jax.random.split(KEY, 3)
    alone = [
        nn.orthogonal_linear(OBS, 16, gain=nn.HIDDEN_GAIN, key=keys[0]),
        nn.orthogonal_linear(16, 8, gain=nn.HIDDEN_GAIN, key=keys[1]),
        nn.orthogonal_linear(8, "scalar", gain=0.3, key=keys[2]),
    ]
    for layer, single in zip(net.layers, alone):
        assert layer.kernel.shape == single.kernel.shape and layer.scalar == single.scalar
        np.testing.assert_allclose(layer.kernel, single.kernel, atol=2e-6)


def test_vmapped_initialisation_calls_no_lapack_kernel():
    # LAPACK's batched QR waits on XLA's CPU thread pool from inside it: several in one vmapped
    # init could deadlock a 2-core machine. The orthogonal init must lower to plain XLA ops.
    def init(key):
        return nn.MLP(OBS, ACT, hidden_sizes=HID, key=key)

    hlo = jax.jit(jax.vmap(init)).lower(jax.random.split(KEY, 4)).as_text()
    assert "lapack" not in hlo.lower() and "custom_call" not in hlo


def test_head_gains_of_policies_and_critics():
    policy_heads = [
        nn.CategoricalPolicy(OBS, ACT, hidden_sizes=HID, key=KEY).net,
        nn.GaussianPolicy(OBS, ACT, hidden_sizes=HID, key=KEY).net,
        nn.DeterministicPolicy(OBS, ACT, hidden_sizes=HID, key=KEY).net,
        nn.TanhGaussianPolicy(OBS, ACT, hidden_sizes=HID, key=KEY).net,
    ]
    for net in policy_heads:
        assert _orthogonality_error(net.layers[-1].kernel, 0.01) < 1e-7
        assert _orthogonality_error(net.layers[1].kernel, math.sqrt(2.0)) < 1e-5
    value_heads = [
        nn.ValueCritic(OBS, hidden_sizes=HID, key=KEY).net,
        nn.QCritic(OBS, ACT, hidden_sizes=HID, key=KEY).net,
    ]
    for net in value_heads:
        assert net.layers[-1].kernel.shape == (8, 1)
        np.testing.assert_allclose(np.linalg.norm(net.layers[-1].kernel), 1.0, rtol=1e-5)


def test_categorical_distribution_matches_logits(batch):
    obs, _ = batch
    policy = nn.CategoricalPolicy(OBS, ACT, hidden_sizes=HID, key=KEY)
    logits = np.asarray(jax.vmap(policy)(obs), np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    actions = jnp.array([0, 1, 1])
    log_probs = jax.vmap(lambda o, a: policy.distribution(o).log_prob(a))(obs, actions)
    np.testing.assert_allclose(log_probs, log_softmax[np.arange(B), np.asarray(actions)], rtol=1e-5)


def test_gaussian_distribution_matches_mean_and_log_std(batch):
    obs, actions = batch
    policy = nn.GaussianPolicy(OBS, ACT, hidden_sizes=HID, log_std_init=-0.7, key=KEY)
    mean, log_std = jax.vmap(policy)(obs)
    np.testing.assert_allclose(log_std, np.full((B, ACT), -0.7), rtol=1e-6)
    m, s, a = (np.asarray(x, np.float64) for x in (mean, np.exp(log_std), actions))
    expected = np.sum(-0.5 * ((a - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi), axis=-1)
    log_probs = jax.vmap(lambda o, a: policy.distribution(o).log_prob(a))(obs, actions)
    np.testing.assert_allclose(log_probs, expected, rtol=1e-5)
    # log_std is a trainable parameter: the log-prob has a gradient with respect to it.
    grads = jax.grad(lambda p: p.distribution(obs[0]).log_prob(actions[0]))(policy)
    assert np.all(np.asarray(grads.log_std) != 0.0)


def test_tanh_gaussian_log_std_is_bounded_and_state_dependent(batch):
    obs, _ = batch
    policy = nn.TanhGaussianPolicy(OBS, ACT, hidden_sizes=HID, log_std_min=-4.0, log_std_max=1.0, key=KEY)
    extreme = jnp.concatenate([obs, 1e4 * obs[:1], -1e4 * obs[:1]])
    mean, log_std = jax.vmap(policy)(extreme)
    assert mean.shape == log_std.shape == (B + 2, ACT)
    assert np.all(np.asarray(log_std) >= -4.0) and np.all(np.asarray(log_std) <= 1.0)
    out = np.asarray(jax.vmap(policy.net)(extreme), np.float64)
    np.testing.assert_allclose(mean, out[:, :ACT], rtol=1e-6)
    np.testing.assert_allclose(log_std, -4.0 + 2.5 * (np.tanh(out[:, ACT:]) + 1.0), rtol=1e-5, atol=1e-6)
    assert np.std(np.asarray(log_std[:B, 0])) > 0  # state-dependent
    # Composes with the squashed sampler of pgkit.actions (which owns sampling and log-probs).
    action, log_prob = pgkit.tanh_gaussian_sample_and_log_prob(mean, log_std, key=jax.random.key(3))
    assert action.shape == (B + 2, ACT) and log_prob.shape == (B + 2,)
    assert np.all(np.abs(np.asarray(action)) <= 1.0)
    with pytest.raises(ValueError, match="log_std_min"):
        nn.TanhGaussianPolicy(OBS, ACT, log_std_min=1.0, log_std_max=0.0, key=KEY)


def test_deterministic_policy_in_unit_box(batch):
    obs, _ = batch
    actor = nn.DeterministicPolicy(OBS, ACT, hidden_sizes=HID, key=KEY)
    extreme = jnp.concatenate([obs, 1e4 * obs[:1]])
    actions = jax.vmap(actor)(extreme)
    np.testing.assert_allclose(actions, np.tanh(np.asarray(jax.vmap(actor.net)(extreme))), rtol=1e-6)
    assert np.all(np.abs(np.asarray(actions)) <= 1.0)


@pytest.mark.parametrize(
    "make, takes_action",
    [
        (lambda: nn.CategoricalPolicy(OBS, ACT, hidden_sizes=HID, key=KEY), False),
        (lambda: nn.GaussianPolicy(OBS, ACT, hidden_sizes=HID, key=KEY), False),
        (lambda: nn.TanhGaussianPolicy(OBS, ACT, hidden_sizes=HID, key=KEY), False),
        (lambda: nn.ValueCritic(OBS, hidden_sizes=HID, key=KEY), False),
        (lambda: nn.QCritic(OBS, ACT, hidden_sizes=HID, key=KEY), True),
        (lambda: nn.TwinQCritic(OBS, ACT, hidden_sizes=HID, key=KEY), True),
        (lambda: nn.DiscreteTwinQCritic(OBS, ACT, hidden_sizes=HID, key=KEY), False),
    ],
    ids=["categorical", "gaussian", "tanh_gaussian", "value", "q", "twin_q", "discrete_twin_q"],
)
def test_vmap_equals_per_example_calls(batch, make, takes_action):
    module = make()
    inputs = batch if takes_action else batch[:1]
    batched = jax.vmap(module)(*inputs)
    for i in range(B):
        single = module(*(x[i] for x in inputs))
        jax.tree.map(lambda b, s: np.testing.assert_allclose(b[i], s, rtol=1e-5, atol=1e-6), batched, single)


def test_twin_q_critics_are_independent(batch):
    obs, actions = batch[0][0], batch[1][0]
    twin = nn.TwinQCritic(OBS, ACT, hidden_sizes=HID, key=KEY)
    q1, q2 = twin(obs, actions)
    assert q1.shape == q2.shape == ()
    # Each member equals a stand-alone QCritic holding that slice of the parameters.
    for i, q in enumerate((q1, q2)):
        member = jax.tree.map(lambda x: x[i], twin.critics)
        assert isinstance(member, nn.QCritic)
        np.testing.assert_allclose(member(obs, actions), q, rtol=1e-6)
    np.testing.assert_allclose(twin.q1(obs, actions), q1, rtol=1e-6)
    weights = [layer.kernel for layer in twin.critics.net.layers]
    assert all(not np.allclose(w[0], w[1]) for w in weights)
    # The gradient of Q1 reaches only the first member's parameters, and vice versa.
    for index in (0, 1):
        grads = eqx.filter_grad(lambda t: t(obs, actions)[index])(twin)
        leaves = jax.tree.leaves(grads.critics)
        assert all(np.all(np.asarray(g[1 - index]) == 0.0) for g in leaves)
        assert any(np.any(np.asarray(g[index]) != 0.0) for g in leaves)


def test_discrete_twin_q_independent_and_shaped(batch):
    obs = batch[0][0]
    twin = nn.DiscreteTwinQCritic(OBS, ACT, hidden_sizes=HID, key=KEY)
    q1, q2 = twin(obs)
    assert q1.shape == q2.shape == (ACT,)
    assert not np.allclose(q1, q2)
    grads = eqx.filter_grad(lambda t: t(obs)[1].sum())(twin)
    assert all(np.all(np.asarray(g[0]) == 0.0) for g in jax.tree.leaves(grads.critics))


def test_policy_distribution_equals_the_policies_own_distributions(batch):
    obs, _ = batch
    for policy, discrete in (
        (nn.CategoricalPolicy(OBS, ACT, key=KEY), True),
        (nn.GaussianPolicy(OBS, ACT, log_std_init=-0.3, key=KEY), False),
    ):
        dist = nn.policy_distribution(jax.vmap(policy)(obs), discrete=discrete)
        assert dist.batch_shape == (obs.shape[0],)
        actions = dist.sample(seed=jax.random.key(1))
        for i in range(obs.shape[0]):
            one = policy.distribution(obs[i])  # the per-example distribution: an independent oracle
            np.testing.assert_allclose(dist.log_prob(actions)[i], one.log_prob(actions[i]), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(dist.entropy()[i], one.entropy(), rtol=1e-6, atol=1e-6)


def test_greedy_action_is_the_argmax_or_the_clipped_mean():
    logits = np.array([[0.1, 2.0, -1.0], [3.0, -1.0, 3.5]], np.float32)
    np.testing.assert_array_equal(nn.greedy_action(jnp.asarray(logits), discrete=True), [1, 2])
    mean = np.array([[0.5, -2.0], [1.5, -0.25]], np.float32)
    got = nn.greedy_action((jnp.asarray(mean), jnp.zeros_like(mean)), discrete=False)
    np.testing.assert_array_equal(got, [[0.5, -1.0], [1.0, -0.25]])  # NumPy: np.clip(mean, -1, 1)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="activation"):
        nn.MLP(OBS, ACT, activation="sigmoidish", key=KEY)
    with pytest.raises(ValueError, match="num_actions"):
        nn.CategoricalPolicy(OBS, 0, key=KEY)
    with pytest.raises(ValueError, match="out_size"):
        nn.MLP(OBS, "vector", key=KEY)


def test_docstring_examples_run():
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(nn, nn.__name__, globs={"pgkit": pgkit}):
        runner.run(test)
    assert runner.failures == 0


# ----------------------------------------------------------------------------- policy_for, fit_value


def test_policy_for_builds_the_policy_of_the_action_space():
    from pgkit import envs

    key = jax.random.key(3)
    discrete = nn.policy_for(envs.make("CartPole-v1", num_envs=1), hidden_sizes=(8,), key=key)
    expected = nn.CategoricalPolicy(4, 2, hidden_sizes=(8,), key=key)
    continuous = nn.policy_for(envs.make("Pendulum-v1", num_envs=1), hidden_sizes=(8,), activation="relu",
                               log_std_init=-0.5, key=key)
    expected_continuous = nn.GaussianPolicy(3, 1, hidden_sizes=(8,), activation="relu", log_std_init=-0.5, key=key)
    for got, want in ((discrete, expected), (continuous, expected_continuous)):
        assert type(got) is type(want)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(a, b)


def test_fit_value_equals_a_loop_of_optimiser_steps_and_fits():
    import optax

    critic = nn.ValueCritic(3, hidden_sizes=(16,), key=jax.random.key(0))
    obs = jax.random.normal(jax.random.key(1), (32, 3))
    targets = obs @ jnp.array([1.0, -2.0, 0.5]) + 3.0
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(eqx.filter(critic, eqx.is_array))
    key = jax.random.key(2)
    fitted, state, loss = jax.jit(
        lambda c, s: nn.fit_value(c, s, optimizer, obs, targets, key, epochs=3, minibatches=4)
    )(critic, opt_state)
    # the same steps written out: a permutation per epoch, 4 minibatches of 8
    params, losses = critic, []
    for epoch_key in jax.random.split(key, 3):
        for indices in jax.random.permutation(epoch_key, 32).reshape(4, 8):
            def loss_fn(c):
                return jnp.mean(0.5 * (jax.vmap(c)(obs[indices]) - targets[indices]) ** 2)
            value, grads = eqx.filter_value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(params, eqx.is_array))
            params, losses = eqx.apply_updates(params, updates), losses + [value]
    for a, b in zip(jax.tree.leaves(fitted), jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loss, np.mean(losses), rtol=1e-5)
    long_fit, _, long_loss = nn.fit_value(critic, optimizer.init(eqx.filter(critic, eqx.is_array)), optimizer, obs,
                                          targets, key, epochs=200, minibatches=4)
    assert float(jnp.mean(0.5 * (jax.vmap(long_fit)(obs) - targets) ** 2)) < 0.05 * float(jnp.var(targets))
    with pytest.raises(ValueError, match="minibatches"):
        nn.fit_value(critic, state, optimizer, obs, targets, key, epochs=1, minibatches=5)
    with pytest.raises(ValueError, match="targets"):
        nn.fit_value(critic, state, optimizer, obs, targets[:5], key, epochs=1, minibatches=4)
