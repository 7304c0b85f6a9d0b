"""Asynchronous advantage actor-critic (A3C) with stale gradients, and its V-trace-corrected form.

Algorithm (Mnih et al., 2016, "Asynchronous Methods for Deep Reinforcement Learning", ICML,
https://arxiv.org/abs/1602.01783, Algorithm S3; lecture notes 002, "A3C"): A actor-learners,
each with its own environments and a copy of the shared parameters θ, run t_max steps, compute
an n-step advantage gradient with their copy and apply it to θ, without waiting for the
others; so the copy a gradient was computed with is a few updates old. Here the asynchrony is
a schedule, run as one pure program (one ``update`` = one gradient arriving at the shared θ):

    actor i = u mod A (round robin) acts with θ_{u−s}: the parameters of s updates ago,
        s = min(max_staleness, u) (``staleness=fixed``) or uniform in 0..min(max_staleness, u)
    collect t_max = num_steps steps from its E environments           pgkit.rollout.rollout
    correction = none (A3C): the actor's gradient, taken at its stale copy θ_{u−s},
        R_t the n-step return bootstrapped from V_{θ_{u−s}}(s_{t_max}), A_t = R_t − V(s_t)
        g = ∇_θ [−log π_θ(a|s) A + c_v ½(V_θ(s) − R)² − c_e H(π_θ)] at θ = θ_{u−s}
                                        pgkit.n_step_returns, score_function_loss, value_loss
    correction = vtrace (IMPALA, Espeholt et al. 2018, https://arxiv.org/abs/1802.01561): the
        learner's gradient at θ_u, with V-trace targets v_t and advantages ρ̄_t(r_t + γv_{t+1} −
        V(s_t)) from the ratios π_{θ_u}(a|s)/π_{θ_{u−s}}(a|s) of the logged actions  pgkit.vtrace
    θ_{u+1} = θ_u + RMSProp step of the clipped g (shared RMSProp statistics, as in the paper)

With one actor and no staleness (``num_actors=1, max_staleness=0``) the update is A2C's on the
same data (tests/test_recipe_a3c.py). The staleness of each update is the metric
``staleness`` (its distribution over a run is in metrics.csv); ``rho`` is the mean clipped
importance weight of the V-trace form. Parameters of the last ``max_staleness`` updates are kept
in the state, so a run is a pure function of its key: it vmaps over seeds and settings, and is
bit-reproducible, like every recipe. ``mode=threads`` runs the same two halves (an actor's
rollout, the learner's update) free: A actor threads and the learner, through a queue of
``queue_size`` (:mod:`pgkit.experiment.asynchronous`); staleness is then what the threads' timing
gives (not bit-reproducible), trajectories staler than ``max_staleness`` are used or dropped
(``on_stale``). ``examples/lagged_vtrace.py`` is the other simulation: one
actor whose copy is refreshed every ``lag`` updates, and the current parameters' gradient.

Defaults: 4 actors x 8 environments x 8 steps (64 steps per update), staleness 3 (= A − 1,
round robin), separate 64x64 tanh networks, RMSProp (decay 0.99, eps 1e-5) at lr 4e-3 annealed
linearly, γ 0.99, entropy 0.01, value coefficient 0.5, gradient-norm clip 0.5, 3e5 steps.
Measured results: ``docs/recipes/a3c.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import pgkit
from pgkit import envs, nn, rollout
from pgkit.recipe import ActorLearner, ConfigError, Recipe, hyperparameters, option

NAME = "a3c"
DESCRIPTION = "A3C: actor-learners whose n-step gradients arrive stale, uncorrected or V-trace-corrected"
DEFAULT_ENV = "CartPole-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(300_000, "environment steps per seed (all actors together)", positive=True)
    num_actors: int = option(4, "actor-learners, each with its own environments (round robin)", positive=True)
    num_envs: int = option(8, "environments per actor", positive=True)
    num_steps: int = option(8, "rollout length t_max per actor per update", positive=True)
    correction: str = option(
        "none", "none: A3C's gradient at the actor's stale parameters; vtrace: the learner's gradient at the "
        "current ones with V-trace targets and advantages", choices=("none", "vtrace"),
    )
    staleness: str = option(
        "fixed", "fixed: every gradient max_staleness updates old (round robin of the actors); uniform: 0 to "
        "max_staleness, drawn per update", choices=("fixed", "uniform"),
    )
    max_staleness: int = option(3, "updates between the parameters an actor acted with and the current ones", low=0)
    hidden_sizes: tuple[int, ...] = option((64, 64), "hidden layer widths of actor and critic")
    activation: str = option("tanh", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))
    anneal_lr: bool = option(True, "anneal the learning rate linearly to 0")
    log_std_init: float = option(0.0, "initial log-std of the Gaussian policy (continuous actions)")
    mode: str = option(
        "schedule", "schedule: the asynchrony as a fixed schedule in one pure program (bit-reproducible); threads: "
        "free-running actor threads and a learner (arrival order varies: NOT bit-reproducible; staleness "
        "as it comes, recorded in the metrics)", choices=("schedule", "threads"),
    )
    queue_size: int = option(2, "mode=threads: trajectories waiting for the learner at most", positive=True)
    on_stale: str = option(
        "use", "mode=threads: a trajectory more than max_staleness updates old is used or dropped",
        choices=("use", "drop"),
    )


@hyperparameters
class HParams:
    lr: float = option(4e-3, "RMSProp learning rate (initial, if annealed)", positive=True)
    gamma: float = option(0.99, "discount factor", low=0.0, high=1.0)
    ent_coef: float = option(0.01, "entropy bonus coefficient", low=0.0)
    vf_coef: float = option(0.5, "value loss coefficient", low=0.0)
    max_grad_norm: float = option(0.5, "global gradient-norm clip", positive=True)
    rms_decay: float = option(0.99, "RMSProp decay of the squared-gradient average", low=0.0, high=1.0)
    eps: float = option(1e-5, "RMSProp epsilon", positive=True)
    vtrace_lambda: float = option(1.0, "λ of the V-trace traces (correction=vtrace)", low=0.0, high=1.0)
    clip_rho: float = option(1.0, "ρ̄, clip of the importance weights of V-trace's TD terms and advantages", positive=True)
    clip_c: float = option(1.0, "c̄, clip of V-trace's trace coefficients", positive=True)


class Networks(NamedTuple):
    actor: Any
    critic: Any


class State(NamedTuple):
    history: Networks  # leaves [max_staleness + 1, ...]: slot s holds θ_{u−s}, slot 0 the current θ_u
    opt_state: Any
    env_state: Any  # leaves [num_actors, ...]: each actor's environments
    obs: jax.Array  # [num_actors, E, obs_size]
    key: jax.Array
    step: jax.Array  # updates done (int32)
    last_return: jax.Array  # last known completed-episode return


class ActorPart(NamedTuple):
    """One actor's own slice: its environments, their observations, its key."""

    env_state: Any
    obs: jax.Array  # [E, obs_size]
    key: jax.Array


class Targets(NamedTuple):
    """What the learner regresses on and weights the score function with, ``[T, E]`` each."""

    advantages: jax.Array
    targets: jax.Array
    rho: jax.Array  # clipped importance weights ρ̄_t (ones for correction=none)


def learner_targets(config: Config, current: Networks, traj: rollout.Trajectory, hp: HParams, *, discrete: bool) -> Targets:
    """The advantages and value targets of one arriving trajectory (no gradient through them).

    ``none``: the n-step returns bootstrapped from the behaviour critic's values logged in
    ``traj`` (what the actor computed with its copy), A = R − V_behaviour. ``vtrace``:
    :func:`pgkit.vtrace` with the current critic's V(s_t), V(s'_t) and the log-ratios of the
    current policy to the logged behaviour log-probabilities.
    """
    if config.correction == "none":
        returns = pgkit.n_step_returns(traj.rewards, traj.discounts, traj.dones, traj.next_values, n=config.num_steps)
        return Targets(returns - traj.values, returns, jnp.ones_like(returns))
    values, next_values = (jax.vmap(jax.vmap(current.critic))(o) for o in (traj.obs, traj.next_obs))
    log_ratios = _log_probs_and_entropy(current.actor, traj, discrete=discrete)[0] - traj.log_probs
    vt = pgkit.vtrace(traj.rewards, traj.discounts, traj.dones, values, next_values, log_ratios,
                      lambda_=hp.vtrace_lambda, clip_rho=hp.clip_rho, clip_c=hp.clip_c)
    rho = jnp.minimum(hp.clip_rho, jnp.exp(log_ratios))
    return Targets(vt.pg_advantages, vt.targets, jax.lax.stop_gradient(rho))


def _log_probs_and_entropy(actor, traj: rollout.Trajectory, *, discrete: bool):
    """log π(a_t|s_t) and H(π(·|s_t)) of the logged actions under ``actor``, ``[T, E]`` each."""
    shape = traj.log_probs.shape
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731  [T·E, ...]: one batched distribution
    dist = nn.policy_distribution(jax.vmap(actor)(flat(traj.obs)), discrete=discrete)
    return dist.log_prob(flat(traj.actions)).reshape(shape), dist.entropy().reshape(shape)


def make(config: Config, env_name: str) -> Recipe:
    """Build A3C's pure ``init``/``update``/``act`` for ``env_name``."""
    if any(h < 1 for h in config.hidden_sizes) or not config.hidden_sizes:
        raise ConfigError(f"option 'hidden_sizes' must be positive widths, got {config.hidden_sizes}")
    env = envs.make(env_name, num_envs=config.num_envs)
    steps_per_update = config.num_envs * config.num_steps
    num_updates = config.total_steps // steps_per_update
    threads = config.mode == "threads"
    slots = 1 if threads else config.max_staleness + 1  # threads: the actors hold their own copies

    def optimizer(hp: HParams):
        """Clip the gradient's global norm, then RMSProp at ``hp.lr`` (annealed linearly to 0 over the run)."""
        lr = optax.linear_schedule(hp.lr, 0.0, max(num_updates, 1)) if config.anneal_lr else hp.lr
        step = optax.rmsprop(lr, decay=hp.rms_decay, eps=hp.eps)
        return optax.flatten(optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), step))

    def init(key, hp: HParams) -> State:
        key, model_key, env_key = jax.random.split(key, 3)
        actor_key, critic_key = jax.random.split(model_key)
        net = dict(hidden_sizes=config.hidden_sizes, activation=config.activation)
        actor = nn.policy_for(env, log_std_init=config.log_std_init, key=actor_key, **net)
        networks = Networks(actor, nn.ValueCritic(env.observation_size, key=critic_key, **net))
        # before any update every slot holds θ_0: the first gradients are as stale as there are updates
        history = jax.tree.map(lambda x: jnp.stack([x] * slots) if eqx.is_array(x) else x, networks)
        env_state, obs = jax.vmap(env.reset)(jax.random.split(env_key, config.num_actors))
        opt_state = optimizer(hp).init(eqx.filter(networks, eqx.is_array))
        return State(history, opt_state, env_state, obs, key, jnp.int32(0), jnp.float32(0.0))

    def slot(history: Networks, s):
        return jax.tree.map(lambda x: x[s] if eqx.is_array(x) else x, history)

    def loss_fn(networks: Networks, traj, estimates: Targets, hp: HParams):
        log_probs, entropy = _log_probs_and_entropy(networks.actor, traj, discrete=env.discrete)
        values = jax.vmap(jax.vmap(networks.critic))(traj.obs)
        policy_loss = pgkit.score_function_loss(log_probs, estimates.advantages)
        value_loss = pgkit.value_loss(values, estimates.targets)
        loss = policy_loss.mean() + hp.vf_coef * value_loss.mean() - hp.ent_coef * entropy.mean()
        return loss, {"policy_loss": policy_loss.mean(), "value_loss": value_loss.mean(), "entropy": entropy.mean()}

    def act_half(part: ActorPart, behaviour: Networks, hp: HParams):
        """One actor's rollout of t_max steps with ``behaviour``: (its part after, the trajectory)."""
        key, rollout_key = jax.random.split(part.key)
        act_fn = rollout.actor_critic_act_fn(behaviour.actor, behaviour.critic, discrete=env.discrete, per_env_keys=True)
        env_state, obs, traj = rollout.rollout(
            rollout_key, env, part.env_state, part.obs, act_fn,
            num_steps=config.num_steps, gamma=hp.gamma, value_fn=jax.vmap(behaviour.critic),
        )
        return ActorPart(env_state, obs, key), traj

    def gradient(at: Networks, current: Networks, traj, hp: HParams):
        """The loss gradient at ``at`` for ``traj`` (targets from :func:`learner_targets` with ``current``)."""
        estimates = learner_targets(config, current, traj, hp, discrete=env.discrete)
        grads, stats = jax.grad(loss_fn, has_aux=True)(at, traj, estimates, hp)
        return grads, dict(stats, rho=estimates.rho.mean(), advantage=estimates.advantages.mean())

    def apply_gradient(state: State, traj, grads, stats, staleness, hp: HParams):
        """θ_{u+1} = θ_u + the RMSProp step of ``grads``; the history shifts by one slot."""
        current = slot(state.history, 0)
        updates, opt_state = optimizer(hp).update(grads, state.opt_state)
        new = optax.apply_updates(current, updates)
        history = jax.tree.map(
            lambda h, n: jnp.concatenate([n[None], h[:-1]]) if eqx.is_array(h) else h, state.history, new
        )
        last_return, episodes = rollout.latest_episode_return(traj, state.last_return)
        stats = dict(stats, episode_return=last_return, episodes=episodes.astype(jnp.float32),
                     staleness=jnp.asarray(staleness, jnp.float32))
        return state._replace(history=history, opt_state=opt_state, step=state.step + 1, last_return=last_return), stats

    def learn_half(state: State, behaviour: Networks, traj, staleness, hp: HParams):
        """The learner's update from ``traj``, collected with ``behaviour`` (``staleness`` updates old)."""
        current = slot(state.history, 0)
        # A3C: the actor's gradient with its own (stale) copy; V-trace: the learner's at θ_u
        at = behaviour if config.correction == "none" else current
        grads, stats = gradient(at, current, traj, hp)
        return apply_gradient(state, traj, grads, stats, staleness, hp)

    def update(state: State, hp: HParams):
        """The schedule: actor u mod A acts with θ_{u−s} and the learner applies its gradient."""
        key = jax.random.split(state.key)[0]  # what act_half leaves in the part's key
        u = state.step
        ready = jnp.minimum(u, slots - 1)  # updates that have happened, up to the bound
        if config.staleness == "fixed":
            staleness = ready
        else:
            staleness = jax.random.randint(jax.random.fold_in(key, 0), (), 0, ready + 1)
        actor_index = u % config.num_actors
        behaviour = slot(state.history, staleness)
        part = ActorPart(jax.tree.map(lambda x: x[actor_index], state.env_state), state.obs[actor_index], state.key)
        part, traj = act_half(part, behaviour, hp)
        state, stats = learn_half(state, behaviour, traj, staleness, hp)
        env_state = jax.tree.map(lambda all_, one: all_.at[actor_index].set(one), state.env_state, part.env_state)
        return state._replace(env_state=env_state, obs=state.obs.at[actor_index].set(part.obs), key=part.key), stats

    def actor_part(state: State, i: int) -> ActorPart:
        return ActorPart(jax.tree.map(lambda x: x[i], state.env_state), state.obs[i], jax.random.fold_in(state.key, i))

    def with_actors(state: State, parts) -> State:
        env_state = jax.tree.map(lambda *xs: jnp.stack(xs), *(p.env_state for p in parts))
        obs = jnp.stack([p.obs for p in parts])  # the next chunk's actor keys: from a new state key
        return state._replace(env_state=env_state, obs=obs, key=jax.random.fold_in(state.key, config.num_actors))

    def act_and_gradient(part: ActorPart, behaviour: Networks, hp: HParams):
        """A3C's actor-learner: its rollout and the gradient with its own copy (n-step targets need no θ_u)."""
        part, traj = act_half(part, behaviour, hp)
        return part, (traj, *gradient(behaviour, behaviour, traj, hp))

    def learn_from_gradient(state: State, behaviour: Networks, message, staleness, hp: HParams):
        del behaviour  # the gradient was taken with it already
        return apply_gradient(state, *message, staleness, hp)

    actor_learner = None
    if threads:  # A3C: the actors compute the gradients, the learner applies them; V-trace: the learner does both
        actor_learner = ActorLearner(
            num_actors=config.num_actors, actor_part=actor_part,
            act=act_and_gradient if config.correction == "none" else act_half,
            learn=learn_from_gradient if config.correction == "none" else learn_half,
            params=lambda state: slot(state.history, 0), with_actors=with_actors,
            max_staleness=config.max_staleness, drop_stale=config.on_stale == "drop", queue_size=config.queue_size,
        )

    def act(state: State, key, obs):
        """Greedy evaluation policy of the current θ: argmax (discrete) or the mean (continuous)."""
        del key
        return nn.greedy_action(jax.vmap(slot(state.history, 0).actor)(obs), discrete=env.discrete)

    return Recipe(init, update, act, env, steps_per_update, num_updates, actor_learner=actor_learner)
