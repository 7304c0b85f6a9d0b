"""A3C recipe: with one actor and no staleness its update is A2C's; its V-trace targets are
pgkit.vtrace's on independently computed inputs; the staleness schedule and the parameter history
are what the docstring says; V-trace-corrected learning from 3-updates-stale data solves CartPole."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
from pgkit import experiment, rollout
from pgkit.recipes import a2c, a3c

ENV = "CartPole-v1"
SMALL = {"num_envs": 8, "num_steps": 32, "hidden_sizes": (16, 16), "total_steps": 8 * 32 * 20}


def f32(hp):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), hp)


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def current(state):
    return jax.tree.map(lambda x: x[0], state.history)


def run_updates(recipe, hp, n, key=0):
    """``n`` jitted updates from init; the states after each (the first is init's) and the metrics."""
    update = jax.jit(recipe.update)
    states, metrics = [recipe.init(jax.random.PRNGKey(key), hp)], []
    for _ in range(n):
        state, stats = update(states[-1], hp)
        states.append(state)
        metrics.append(jax.device_get(stats))
    return states, metrics


def test_one_actor_without_staleness_is_a2c_on_the_same_data():
    """num_actors=1, max_staleness=0: A3C's update from a state equals A2C's from the same state.

    A2C at the matching options (n-step returns, separate networks, RMSProp, entropy 0.01, the
    same learning rate and schedule) is started from A3C's initial parameters, optimiser state,
    environments and key; three updates later both hold the same parameters and metrics.
    """
    tiny = {"num_envs": 4, "num_steps": 8, "hidden_sizes": (16, 16), "total_steps": 4 * 8 * 10}
    one = a3c.make(a3c.Config(num_actors=1, max_staleness=0, **tiny), ENV)
    sync = a2c.make(a2c.Config(advantages="n_step", shared=False, optimizer="rmsprop", **tiny), ENV)
    hp3, hp2 = f32(a3c.HParams(lr=4e-3, ent_coef=0.01)), f32(a2c.HParams(lr=4e-3, ent_coef=0.01))
    s3 = one.init(jax.random.PRNGKey(3), hp3)
    net = current(s3)
    s2 = a2c.State(a2c.SeparateActorCritic(net.actor, net.critic), s3.opt_state,
                   jax.tree.map(lambda x: x[0], s3.env_state), s3.obs[0], s3.key, s3.step, s3.last_return)
    up3, up2 = jax.jit(one.update), jax.jit(sync.update)
    for _ in range(3):
        s3, m3 = up3(s3, hp3)
        s2, m2 = up2(s2, hp2)
        np.testing.assert_array_equal(s3.obs[0], s2.obs)  # the same actions were drawn
        for name in ("policy_loss", "value_loss", "entropy", "advantage", "episode_return"):
            np.testing.assert_allclose(m3[name], m2[name], rtol=1e-5, atol=1e-6, err_msg=name)
        assert float(m3["staleness"]) == 0.0 and float(m3["rho"]) == 1.0
    for a, b in zip(leaves(current(s3)), leaves((s2.model.actor, s2.model.critic))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(leaves(current(s3))[0], leaves(net)[0]), "the update should move the parameters"


def trajectory(recipe, behaviour, state, key):
    """One actor's rollout of SMALL's length with ``behaviour``, from actor 0's environments."""
    act_fn = rollout.actor_critic_act_fn(behaviour.actor, behaviour.critic, discrete=True, per_env_keys=True)
    env_state = jax.tree.map(lambda x: x[0], state.env_state)
    return rollout.rollout(key, recipe.env, env_state, state.obs[0], act_fn, num_steps=SMALL["num_steps"],
                           gamma=0.99, value_fn=jax.vmap(behaviour.critic))[2]


def independent_vtrace(networks, traj, hp):
    """pgkit.vtrace on V(s), V(s') and log π/μ computed one example at a time with distrax."""
    critic = jax.vmap(jax.vmap(networks.critic))
    log_pi = jax.vmap(jax.vmap(lambda o, a: distrax.Categorical(logits=networks.actor(o)).log_prob(a)))
    log_ratios = log_pi(traj.obs, traj.actions) - traj.log_probs
    out = pgkit.vtrace(traj.rewards, traj.discounts, traj.dones, critic(traj.obs), critic(traj.next_obs), log_ratios,
                       lambda_=hp.vtrace_lambda, clip_rho=hp.clip_rho, clip_c=hp.clip_c)
    return out, log_ratios


def test_on_policy_vtrace_targets_are_the_n_step_returns():
    """Behaviour = current parameters: ρ = 1, and V-trace (λ = 1) is the rollout's n-step return."""
    vtrace_config = a3c.Config(correction="vtrace", **SMALL)
    recipe = a3c.make(vtrace_config, ENV)
    hp = f32(a3c.HParams())
    state = recipe.init(jax.random.PRNGKey(1), hp)
    net = current(state)
    traj = trajectory(recipe, net, state, jax.random.PRNGKey(2))
    assert bool(traj.dones.any()), "the rollout should cross episode ends"
    v = a3c.learner_targets(vtrace_config, net, traj, hp, discrete=True)
    n = a3c.learner_targets(a3c.Config(correction="none", **SMALL), net, traj, hp, discrete=True)
    # to rounding: the learner recomputes the log-probabilities in another batch shape than the rollout
    np.testing.assert_allclose(v.rho, 1.0, rtol=1e-6, atol=0)
    np.testing.assert_allclose(v.targets, n.targets, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v.advantages, n.advantages, rtol=1e-5, atol=1e-5)


def test_stale_vtrace_targets_and_the_updates_statistics_are_pgkit_vtrace():
    """Three updates stale: the learner's targets and advantages equal pgkit.vtrace on inputs built
    independently, the ratios are not one, and the update reports the ρ̄ and advantages of exactly
    that computation on the trajectory it collected."""
    config = a3c.Config(correction="vtrace", num_actors=1, max_staleness=3, **SMALL)
    recipe = a3c.make(config, ENV)
    hp = f32(a3c.HParams(lr=3e-2, clip_rho=1.5))  # a large step: the stale policy differs visibly
    states, _ = run_updates(recipe, hp, 5)
    state = states[-1]
    behaviour, net = jax.tree.map(lambda x: x[3], state.history), current(state)
    traj = trajectory(recipe, behaviour, state, jax.random.split(state.key)[1])  # the update's rollout key
    expected, log_ratios = independent_vtrace(net, traj, hp)
    got = a3c.learner_targets(config, net, traj, hp, discrete=True)
    assert float(jnp.abs(log_ratios).max()) > 1e-2, "staleness should change the policy's probabilities"
    np.testing.assert_allclose(got.targets, expected.targets, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.advantages, expected.pg_advantages, rtol=1e-5, atol=1e-5)
    _, stats = jax.jit(recipe.update)(state, hp)
    assert float(stats["staleness"]) == 3.0
    np.testing.assert_allclose(stats["rho"], jnp.minimum(1.5, jnp.exp(log_ratios)).mean(), rtol=1e-5)
    np.testing.assert_allclose(stats["advantage"], expected.pg_advantages.mean(), rtol=1e-4, atol=1e-6)


def test_fixed_staleness_and_the_parameter_history():
    """staleness=fixed: updates 0..5 are 0, 1, 2, 3, 3, 3 updates stale, and slot s of the history
    holds exactly the parameters of s updates ago."""
    recipe = a3c.make(a3c.Config(num_actors=2, max_staleness=3, **SMALL), ENV)
    hp = f32(a3c.HParams())
    states, metrics = run_updates(recipe, hp, 6)
    assert [float(m["staleness"]) for m in metrics] == [0, 1, 2, 3, 3, 3]
    for s in range(4):
        for a, b in zip(leaves(jax.tree.map(lambda x: x[s], states[6].history)), leaves(current(states[6 - s]))):
            np.testing.assert_array_equal(a, b)


def test_uniform_staleness_stays_within_the_bound():
    recipe = a3c.make(a3c.Config(staleness="uniform", max_staleness=3, **SMALL), ENV)
    _, metrics = run_updates(recipe, f32(a3c.HParams()), 24)
    drawn = np.array([float(m["staleness"]) for m in metrics])
    bound = np.minimum(np.arange(24), 3)
    assert np.all(drawn >= 0) and np.all(drawn <= bound) and np.all(drawn == np.round(drawn))
    assert len(set(drawn[3:].tolist())) > 1, f"the draws should vary: {drawn}"


@pytest.mark.parametrize("correction", ["none", "vtrace"])
def test_continuous_actions_run_through_the_driver(correction):
    config = {"correction": correction, "num_envs": 4, "num_steps": 8, "hidden_sizes": (16,), "total_steps": 4 * 8 * 8}
    result = experiment.train("a3c", env="Pendulum-v1", seeds=2, config=config, chunk=4, log=None, preset=False)
    for name, values in result.metrics.items():
        assert np.all(np.isfinite(values)), name
    assert result.metrics["staleness"].shape == (2, 8)
    np.testing.assert_array_equal(result.metrics["staleness"][0], [0, 1, 2, 3, 3, 3, 3, 3])


def test_vtrace_learns_cartpole_from_stale_data():
    """V-trace, 4 actors round robin, every gradient 3 updates stale: mean >= 450 over 4 seeds.

    Budget 2e5 environment steps per seed (3125 updates of 64 steps), the recipe's defaults
    otherwise; score = each seed's mean episode_return over the last 200 updates. Calibrated in
    bench/calibrate_learning_tests.py (case a3c/vtrace_stale_cartpole; docs/recipes/a3c.md).
    """
    result = experiment.train("a3c", env=ENV, seeds=4, seed=0, config={"correction": "vtrace", "total_steps": 200_000},
                              log=None, preset=False)
    final = result.metrics["episode_return"][:, -200:].mean(axis=1)
    assert np.all(result.metrics["staleness"][:, 3:] == 3.0)
    assert final.mean() >= 450.0, f"final returns {final}"


def test_threads_mode_runs_through_the_driver_and_records_its_staleness(tmp_path):
    """mode=threads: 2 actor threads, a queue of 1, stale data dropped beyond 2 updates; the run
    finishes, checkpoints and resumes, every used update is at most 2 stale, and the runner's
    bookkeeping (queue_wait, dropped) is in the metrics."""
    config = {"mode": "threads", "num_actors": 2, "queue_size": 1, "max_staleness": 2, "on_stale": "drop",
              "num_envs": 4, "num_steps": 8, "hidden_sizes": (16,), "total_steps": 4 * 8 * 40}
    out = tmp_path / "run"
    first = experiment.train("a3c", seeds=2, config=config, chunk=10, out=out, stop_after_chunks=2, log=None,
                             preset=False)
    assert first.metrics["staleness"].shape == (2, 20)
    result = experiment.resume(out, log=None)
    m = result.metrics
    assert m["staleness"].shape == (2, 40)
    for name, values in m.items():
        assert np.all(np.isfinite(values)), name
    assert np.all(m["staleness"] >= 0) and np.all(m["staleness"] <= 2)
    assert np.all(m["queue_wait"] >= 0) and np.all(m["dropped"] >= 0)
    np.testing.assert_array_equal(m["staleness"][0], m["staleness"][1])  # members move in lockstep


def test_threads_halves_are_the_schedules_update():
    """mode=threads' actor and learner halves (A3C: the gradient on the actor's side) give the
    schedule's update: two actors, actor 1 acting with 1-update-old parameters, the same state,
    part and key; parameters, optimiser state and metrics equal to 1e-6."""
    tiny = {"num_envs": 4, "num_steps": 8, "hidden_sizes": (16, 16), "total_steps": 4 * 8 * 10,
            "num_actors": 2, "max_staleness": 1, "correction": "none"}  # vtrace's threads run act_half, learn_half
    schedule = a3c.make(a3c.Config(**tiny), ENV)
    threads = a3c.make(a3c.Config(mode="threads", **tiny), ENV).actor_learner
    assert threads is not None and schedule.actor_learner is None
    hp = f32(a3c.HParams())
    state, _ = jax.jit(schedule.update)(schedule.init(jax.random.PRNGKey(5), hp), hp)  # update 0: actor 0
    expected, expected_metrics = jax.jit(schedule.update)(state, hp)  # update 1: actor 1 with θ_0, learner at θ_1
    behaviour = jax.tree.map(lambda x: x[1], state.history)
    part = a3c.ActorPart(jax.tree.map(lambda x: x[1], state.env_state), state.obs[1], state.key)
    part, message = jax.jit(threads.act)(part, behaviour, hp)
    alone = state._replace(history=jax.tree.map(lambda x: x[:1], state.history))  # threads keep one slot
    got, got_metrics = jax.jit(threads.learn)(alone, behaviour, message, jnp.int32(1), hp)
    for a, b in zip(leaves((threads.params(got), got.opt_state)), leaves((current(expected), expected.opt_state))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(part.obs), np.asarray(expected.obs[1]))
    assert set(got_metrics) == set(expected_metrics)
    for name in expected_metrics:
        np.testing.assert_allclose(got_metrics[name], expected_metrics[name], rtol=1e-6, atol=1e-6, err_msg=name)
