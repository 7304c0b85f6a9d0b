"""pgkit.trust_region: a policy's surrogate, KL and Fisher product on a batch, against identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import pgkit
from pgkit import nn, rollout, trust_region


def _batch(key, discrete, n=12, obs_size=3):
    keys = jax.random.split(key, 4)
    obs = jax.random.normal(keys[0], (n, obs_size))
    actions = jax.random.randint(keys[1], (n,), 0, 2) if discrete else jax.random.uniform(keys[1], (n, 2), minval=-1, maxval=1)
    return trust_region.Batch(obs, actions, jnp.zeros(n), jax.random.normal(keys[2], (n,)), jnp.zeros(n))


def _policy(discrete, key):
    if discrete:
        return nn.CategoricalPolicy(3, 2, hidden_sizes=(8,), key=key)
    return nn.GaussianPolicy(3, 2, hidden_sizes=(8,), log_std_init=-0.3, key=key)


@pytest.mark.parametrize("discrete", [True, False])
def test_surrogate_gradient_is_the_score_function_gradient_and_kl_vanishes_at_the_old_policy(discrete):
    actor = _policy(discrete, jax.random.key(0))
    batch = _batch(jax.random.key(1), discrete)
    log_probs = nn.policy_distribution(jax.vmap(actor)(batch.obs), discrete=discrete).log_prob(batch.actions)
    batch = batch._replace(log_probs=log_probs)
    objectives = trust_region.policy_objectives(actor, batch, discrete=discrete)
    params = objectives.params
    # at θ_old every ratio is 1: L = mean(A), and ∇L = mean(A ∇log π) (the score-function estimate)
    np.testing.assert_allclose(objectives.surrogate(params), batch.advantages.mean(), rtol=1e-5)

    def score_loss(p):
        lp = nn.policy_distribution(objectives.outputs(p), discrete=discrete).log_prob(batch.actions)
        return pgkit.score_function_loss(lp, batch.advantages).mean()

    expected = ravel_pytree(jax.grad(score_loss)(params))[0]
    np.testing.assert_allclose(ravel_pytree(jax.grad(objectives.surrogate)(params))[0], -expected, rtol=1e-4, atol=1e-6)
    assert abs(float(objectives.kl(params))) < 1e-6
    # the Fisher product equals the Hessian of the mean KL at θ_old (plus the damping)
    flat, unravel = ravel_pytree(params)
    hessian = jax.jit(jax.hessian(lambda v: objectives.kl(unravel(v))))(flat)  # jit: eager, it took 20 s
    v = jax.random.normal(jax.random.key(2), flat.shape)
    product = ravel_pytree(trust_region.fisher_product(objectives, damping=0.1)(unravel(v)))[0]
    np.testing.assert_allclose(product, hessian @ v + 0.1 * v, rtol=2e-3, atol=2e-5)
    entropy = pgkit.categorical_entropy(jax.vmap(actor)(batch.obs)) if discrete else pgkit.gaussian_entropy(
        jax.vmap(actor)(batch.obs)[1])
    np.testing.assert_allclose(objectives.entropy, entropy.mean(), rtol=1e-6)
    assert jax.tree.structure(objectives.rebuild(params)) == jax.tree.structure(actor)


def test_flatten_batch_orders_samples_time_major():
    traj = rollout.Trajectory(*([None] * 13))._replace(
        obs=jnp.arange(3 * 2 * 4.0).reshape(3, 2, 4), actions=jnp.arange(6).reshape(3, 2),
        log_probs=jnp.zeros((3, 2)), rewards=jnp.zeros((3, 2)),
    )
    gae = pgkit.returns.GAE(jnp.arange(6.0).reshape(3, 2), 10 + jnp.arange(6.0).reshape(3, 2))
    batch = trust_region.flatten_batch(traj, gae)
    np.testing.assert_array_equal(batch.actions, [0, 1, 2, 3, 4, 5])  # sample t·E + e
    np.testing.assert_array_equal(batch.obs[3], traj.obs[1, 1])
    np.testing.assert_array_equal(batch.targets, 10 + np.arange(6.0))


def test_make_env_checks_the_shared_options_and_init_state_builds_the_networks():
    import dataclasses

    import equinox as eqx
    import optax

    from pgkit.recipe import ConfigError
    from pgkit.recipes import trpo

    with pytest.raises(ConfigError, match="'critic_minibatches' must divide num_envs\\*num_steps=1024, got 3"):
        trust_region.make_env(trpo.Config(critic_minibatches=3), "CartPole-v1")
    with pytest.raises(ConfigError, match="'hidden_sizes' must be positive widths"):
        trust_region.make_env(trpo.Config(hidden_sizes=(0,)), "CartPole-v1")
    config = dataclasses.replace(trpo.Config(), num_envs=2, hidden_sizes=(8,), log_std_init=-0.5)
    env = trust_region.make_env(config, "Pendulum-v1")
    assert env.num_envs == 2 and not env.discrete
    state = trust_region.init_state(jax.random.key(0), env, config, optax.adam(1e-3))
    _, actor_key, critic_key, _ = jax.random.split(jax.random.key(0), 4)
    expected = nn.policy_for(env, hidden_sizes=(8,), activation="tanh", log_std_init=-0.5, key=actor_key)
    for a, b in zip(jax.tree.leaves(state.networks.actor), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)
    assert isinstance(state.networks.critic, nn.ValueCritic) and state.obs.shape == (2, 3)
    assert jax.tree.structure(state.critic_opt_state) == jax.tree.structure(
        optax.adam(1e-3).init(eqx.filter(state.networks.critic, eqx.is_array)))
