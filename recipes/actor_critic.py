"""Online actor-critic: one environment step, one update (QAC, TD(0) or TD(λ) with eligibility traces).

Algorithms (lecture notes 002 "One step Actor Critic (QAC)" and "Advantage Actor Critic";
Sutton & Barto, 2018, "Reinforcement Learning: An Introduction", 2nd ed., Sec. 13.5,
http://incompleteideas.net/book/the-book-2nd.html; Konda & Tsitsiklis, 2000, "Actor-Critic
Algorithms", NeurIPS), one ``update`` = one step of each of the E environments:

    variant 'qac' (critic Q_w(s, a), SARSA target):
        take a (sampled from π_θ(·|s) at the previous step), observe r, s'; sample a' ~ π_θ(·|s')
        δ = r + γ(1 − terminated) Q_w(s', a') − Q_w(s, a)               pgkit.td_targets, pgkit.q_loss
        w ← w + β δ ∇_w Q_w(s, a);   θ ← θ + α ∇_θ log π_θ(a|s) Q_w(s, a)   pgkit.score_function_loss
    variant 'td' (critic V_w, the TD error as the advantage):
        a ~ π_θ(·|s), observe r, s';  δ = r + γ(1 − terminated) V_w(s') − V_w(s)    pgkit.td_errors
        w ← w + β δ ∇_w V_w(s);   θ ← θ + α δ ∇_θ log π_θ(a|s)    pgkit.value_loss, pgkit.score_function_loss
    variant 'td_lambda' (backward view, accumulating traces for critic and actor):
        z^w ← γλ^w z^w + ∇_w V_w(s),  z^θ ← γλ^θ z^θ + ∇_θ log π_θ(a|s)
        w ← w + β δ z^w,  θ ← θ + α δ z^θ                      pgkit.td_lambda_actor_critic_update

The E environments run in parallel and their per-environment increments are averaged (E = 1 is
the textbook single stream). Step sizes come from Adam (default) or plain SGD (``optimizer``),
fed with the negated ascent directions; an optional entropy bonus c_e·∇H(π_θ(·|s)) is added to
the actor's direction. Sutton & Barto's discount factor I = γ^t on the actor step is left out,
as in common practice. Episode semantics (CONTRIBUTING, convention 2): a truncated step
bootstraps from the critic at the final observation (with a fresh a' ~ π_θ there for QAC), a
terminated one does not; the traces are cut after every done (terminated or truncated), both
through ``discount = γ(1 − done)`` of the previous step. In QAC the a' sampled at the next state
is the action taken at the next update (SARSA); after a done, the next state is a reset one and a
new action is drawn there.

Defaults (the configuration of the 'td' learning test, CartPole-v1): variant 'td', 8
environments, separate 64x64 tanh actor and critic, Adam, actor lr 1e-3, critic lr 5e-4,
γ = 0.99, entropy 0, gradient-norm clip 1, trace decays λ^w = λ^θ = 0.9 (td_lambda), 160k steps
per seed (20k updates).

Tested configurations, measured returns and tuning history: ``docs/recipes/actor_critic.md``.
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
from pgkit.recipe import ConfigError, Recipe, hyperparameters, option

NAME = "actor_critic"
DESCRIPTION = "Online actor-critic updated every step: QAC (SARSA critic), TD(0) or TD(lambda) with eligibility traces"
DEFAULT_ENV = "CartPole-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(160_000, "environment steps per seed (num_envs per update)", positive=True)
    num_envs: int = option(8, "parallel environments (their per-step increments are averaged)", positive=True)
    variant: str = option("td", "critic and actor weight", choices=("qac", "td", "td_lambda"))
    qac_baseline: str = option(
        "none", "QAC's actor weight: Q_w(s,a) (none) or Q_w(s,a) - sum_a pi(a|s) Q_w(s,a) (expected)",
        choices=("none", "expected"),
    )
    optimizer: str = option("adam", "step-size rule applied to the ascent directions", choices=("adam", "sgd"))
    hidden_sizes: tuple[int, ...] = option((64, 64), "hidden layer widths of actor and critic")
    activation: str = option("tanh", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))
    normalize_observations: bool = option(False, "running mean/variance observation normalisation")
    log_std_init: float = option(0.0, "initial log-std of the Gaussian policy (continuous actions)")


@hyperparameters
class HParams:
    lr: float = option(1e-3, "actor step size alpha", positive=True)
    critic_lr: float = option(5e-4, "critic step size beta", positive=True)
    gamma: float = option(0.99, "discount factor", low=0.0, high=1.0)
    lambda_actor: float = option(0.9, "trace decay of the actor (td_lambda)", low=0.0, high=1.0)
    lambda_critic: float = option(0.9, "trace decay of the critic (td_lambda)", low=0.0, high=1.0)
    ent_coef: float = option(0.0, "entropy bonus coefficient", low=0.0)
    max_grad_norm: float = option(1.0, "global norm clip of each update direction", positive=True)


class Traces(NamedTuple):
    critic: Any  # z^w: the critic's arrays with a leading [E] axis
    actor: Any  # z^θ: the actor's arrays with a leading [E] axis
    discount: jax.Array  # [E] decay of the incoming traces: γ(1 − done) of the previous step


class State(NamedTuple):
    actor: Any
    critic: Any
    actor_opt_state: Any
    critic_opt_state: Any
    env_state: Any
    obs: jax.Array  # [E, obs_size]
    actions: jax.Array  # [E] or [E, action_size]: the action chosen at obs (QAC's a')
    traces: Any  # Traces (td_lambda) or None
    key: jax.Array  # PRNGKey (uint32[2])
    last_return: jax.Array  # last known completed-episode return


class DiscreteQCritic(eqx.Module):
    """Q_w(s, ·) for discrete actions: one MLP with A outputs, indexed by the action."""

    net: nn.MLP

    def __call__(self, obs, action):
        return self.net(obs)[action]


def make(config: Config, env_name: str) -> Recipe:
    """Build the online actor-critic's pure ``init``/``update``/``act`` for ``env_name``."""
    if any(h < 1 for h in config.hidden_sizes) or not config.hidden_sizes:
        raise ConfigError(f"option 'hidden_sizes' must be positive widths, got {config.hidden_sizes}")
    if config.qac_baseline != "none" and config.variant != "qac":
        raise ConfigError(f"option 'qac_baseline' applies to variant 'qac' only, got variant {config.variant!r}")
    env = envs.make(env_name, num_envs=config.num_envs, normalize_observations=config.normalize_observations)
    num_updates = config.total_steps // config.num_envs
    E = config.num_envs

    def optimizer(lr, hp: HParams):
        """Clip the update direction's global norm, then Adam or plain SGD at step size ``lr``.

        Built from the traced hyperparameters inside ``init``/``update`` (a new step size does
        not recompile); ``lr`` is ``hp.lr`` for the actor, ``hp.critic_lr`` for the critic.
        """
        step = optax.adam(lr) if config.optimizer == "adam" else optax.sgd(lr)
        return optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), step)

    # distributions are built one example at a time, never batched across a vmap boundary
    def sample(actor, key, obs):
        keys = jax.random.split(key, obs.shape[0])
        return jax.vmap(lambda o, k: actor.distribution(o).sample(seed=k))(obs, keys)

    def log_probs(actor, obs, actions):
        return jax.vmap(lambda o, a: actor.distribution(o).log_prob(a))(obs, actions)

    def init(key, hp: HParams) -> State:
        key, actor_key, critic_key, env_key, action_key = jax.random.split(key, 5)
        net = dict(hidden_sizes=config.hidden_sizes, activation=config.activation)
        actor = nn.policy_for(env, log_std_init=config.log_std_init, key=actor_key, **net)
        if config.variant != "qac":
            critic = nn.ValueCritic(env.observation_size, key=critic_key, **net)
        elif env.discrete:
            critic = DiscreteQCritic(nn.MLP(env.observation_size, env.num_actions, final_gain=nn.VALUE_GAIN,
                                            key=critic_key, **net))
        else:
            critic = nn.QCritic(env.observation_size, env.action_size, key=critic_key, **net)
        env_state, obs = env.reset(env_key)
        actions = sample(actor, action_key, obs)
        traces = None
        if config.variant == "td_lambda":
            stacked = lambda tree: jax.tree.map(lambda x: jnp.zeros((E,) + x.shape, x.dtype), tree)  # noqa: E731
            traces = Traces(stacked(critic), stacked(actor), jnp.zeros((E,), jnp.float32))
        return State(
            actor, critic, optimizer(hp.lr, hp).init(actor), optimizer(hp.critic_lr, hp).init(critic), env_state, obs, actions,
            traces, key, jnp.float32(0.0),
        )

    def expected_q(actor, critic, key, obs):
        """b(s) = Σ_a π(a|s) Q_w(s, a) (discrete); one independent ã ~ π(·|s), Q_w(s, ã) (continuous)."""
        if env.discrete:
            probs = jax.vmap(lambda o: actor.distribution(o).probs)(obs)
            return pgkit.expected_q_baseline(probs, jax.vmap(critic.net)(obs))
        return jax.vmap(critic)(obs, sample(actor, key, obs))

    def entropy_of(actor, obs):
        return jax.vmap(lambda o: actor.distribution(o).entropy())(obs).mean()

    def apply(params, opt_state, ascent, lr, hp):
        """One optimiser step along the ascent direction (optax minimises: it is given −ascent)."""
        updates, opt_state = optimizer(lr, hp).update(jax.tree.map(jnp.negative, ascent), opt_state)
        return optax.apply_updates(params, updates), opt_state

    def update(state: State, hp: HParams):
        key, rollout_key, next_key, final_key, baseline_key = jax.random.split(state.key, 5)
        actor, critic = state.actor, state.critic
        qac = config.variant == "qac"

        def act_fn(key, obs):
            actions = state.actions if qac else sample(actor, key, obs)
            values = jnp.zeros(obs.shape[:1]) if qac else jax.vmap(critic)(obs)
            return actions, jnp.zeros(obs.shape[:1]), values

        value_fn = None if qac else jax.vmap(critic)
        env_state, obs, traj = rollout.rollout(
            rollout_key, env, state.env_state, state.obs, act_fn, num_steps=1, gamma=hp.gamma, value_fn=value_fn
        )
        s, a, s_final = traj.obs[0], traj.actions[0], traj.next_obs[0]  # [E, ...]
        done = traj.dones[0]
        next_actions = sample(actor, next_key, obs)  # a' ~ π_θ(·|s'), taken at the next update
        stats = {}

        if qac:
            # bootstrap from Q_w(s', a') with a' the next action, or a fresh one at a final observation
            final_actions = sample(actor, final_key, s_final)
            where_done = done.reshape(done.shape + (1,) * (a.ndim - 1))
            bootstrap_actions = jnp.where(where_done, final_actions, next_actions)
            next_q = jax.vmap(critic)(s_final, bootstrap_actions)
            targets = pgkit.td_targets(traj.rewards[0], traj.discounts[0], next_q)

            def critic_loss(critic):
                return pgkit.q_loss(jax.vmap(critic)(s, a), targets).mean()

            def actor_loss(actor):
                weight = jax.vmap(critic)(s, a)  # Q_w(s, a) weights the score (no baseline, as in the box)
                if config.qac_baseline == "expected":
                    weight = weight - expected_q(actor, critic, baseline_key, s)
                return pgkit.score_function_loss(log_probs(actor, s, a), weight).mean() - hp.ent_coef * entropy_of(actor, s)

            value_loss, critic_grad = jax.value_and_grad(critic_loss)(critic)
            policy_loss, actor_grad = jax.value_and_grad(actor_loss)(actor)
            critic_ascent = jax.tree.map(jnp.negative, critic_grad)
            actor_ascent = jax.tree.map(jnp.negative, actor_grad)
            stats.update(value_loss=value_loss, policy_loss=policy_loss, q_value=jax.vmap(critic)(s, a).mean())
            traces = None
        else:
            td = pgkit.td_errors(traj.rewards, traj.discounts, traj.values, traj.next_values)[0]  # δ [E]
            stats["td_error"] = td.mean()
            stats["value_loss"] = pgkit.value_loss(traj.values, traj.values + td).mean()
            if config.variant == "td":
                targets = pgkit.td_targets(traj.rewards[0], traj.discounts[0], traj.next_values[0])

                def critic_loss(critic):
                    return pgkit.value_loss(jax.vmap(critic)(s), targets).mean()

                def actor_loss(actor):
                    return pgkit.score_function_loss(log_probs(actor, s, a), td).mean() - hp.ent_coef * entropy_of(actor, s)

                critic_ascent = jax.tree.map(jnp.negative, jax.grad(critic_loss)(critic))
                actor_ascent = jax.tree.map(jnp.negative, jax.grad(actor_loss)(actor))
                traces = None
            else:
                # per-environment gradients ∇_w V(s_e) and ∇_θ log π(a_e|s_e): leaves [E, ...]
                critic_grads = jax.vmap(jax.grad(lambda c, o: c(o)), in_axes=(None, 0))(critic, s)
                actor_grads = jax.vmap(
                    jax.grad(lambda p, o, u: p.distribution(o).log_prob(u)), in_axes=(None, 0, 0)
                )(actor, s, a)
                step = pgkit.td_lambda_actor_critic_update(
                    state.traces.critic, state.traces.actor, critic_grads, actor_grads, td,
                    discount=state.traces.discount, lambda_critic=hp.lambda_critic, lambda_actor=hp.lambda_actor,
                )
                critic_ascent = jax.tree.map(lambda x: x.mean(axis=0), step.critic_increment)
                actor_ascent = jax.tree.map(lambda x: x.mean(axis=0), step.actor_increment)
                entropy_grad = jax.grad(entropy_of)(actor, s)
                actor_ascent = jax.tree.map(lambda x, g: x + hp.ent_coef * g, actor_ascent, entropy_grad)
                # the next step's incoming-trace decay: γ(1 − terminated)(1 − done) = γ(1 − done)
                discount = traj.discounts[0] * (1.0 - done.astype(jnp.float32))
                traces = Traces(step.critic_trace, step.actor_trace, discount)

        critic, critic_opt = apply(critic, state.critic_opt_state, critic_ascent, hp.critic_lr, hp)
        actor, actor_opt = apply(actor, state.actor_opt_state, actor_ascent, hp.lr, hp)

        last_return, episodes = rollout.latest_episode_return(traj, state.last_return)
        stats["episode_return"] = last_return
        stats["episodes"] = episodes.astype(jnp.float32)
        stats["entropy"] = entropy_of(state.actor, s)
        new_state = State(actor, critic, actor_opt, critic_opt, env_state, obs, next_actions, traces, key, last_return)
        return new_state, stats

    def act(state: State, key, obs):
        """Greedy evaluation policy: argmax (discrete) or the mean (continuous); obs as the env gives them."""
        del key
        return nn.greedy_action(jax.vmap(state.actor)(obs), discrete=env.discrete)

    return Recipe(init, update, act, env, config.num_envs, num_updates)
