"""KL divergences and entropies of policy distributions, and sample KL estimators.

Analytic forms act per state and reduce over the action axis only (the last axis): categorical
distributions from logits (masked actions as −inf logits are allowed) and diagonal Gaussians
from mean and log standard deviation. The sample estimators k1, k2, k3 estimate a KL from
log-ratios of sampled actions.
"""

import math

import jax
import jax.numpy as jnp

from pgkit import _checks

__all__ = [
    "categorical_entropy",
    "categorical_kl",
    "gaussian_entropy",
    "gaussian_kl",
    "kl_k1",
    "kl_k2",
    "kl_k3",
]

_HALF_LOG_2PI_E = 0.5 * (1.0 + math.log(2.0 * math.pi))


def categorical_kl(logits_p, logits_q):
    """KL(p ‖ q) between categorical distributions given by logits, per state.

    Equation:
        KL(p ‖ q) = Σ_a p(a) (log p(a) − log q(a)),  log p = log_softmax(logits_p),

    with 0 · log 0 = 0: actions with p(a) = 0 (logit −inf, a masked action) contribute nothing,
    whatever q(a) is; an action with p(a) > 0 = q(a) gives +inf, as it should.

    Args:
        logits_p: [*S, A] logits of p (unnormalised; −inf for impossible actions).
        logits_q: [*S, A] logits of q (same shape).

    Returns:
        [*S] KL(p ‖ q) ≥ 0 per state.

    Gradients:
        Through both ``logits_p`` and ``logits_q`` (finite where the KL is finite; masked
        actions receive zero gradient).

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> p = jnp.log(jnp.array([0.5, 0.5, 0.0]))  # third action masked (-inf logit)
        >>> q = jnp.log(jnp.array([0.25, 0.25, 0.5]))
        >>> round(float(pgkit.categorical_kl(p, q)), 4)  # log 2
        0.6931

    Reference:
        Kullback, Leibler (1951), "On Information and Sufficiency", Annals of Mathematical
        Statistics 22(1), https://doi.org/10.1214/aoms/1177729694
    """
    logits_p = _checks.as_float(logits_p)
    logits_q = _checks.as_float(logits_q)
    _checks.check_has_action_axis("categorical_kl", "logits_p", logits_p)
    _checks.check_same_shape("categorical_kl", "logits_p", logits_p, logits_q=logits_q)
    log_p = jax.nn.log_softmax(logits_p, axis=-1)
    log_q = jax.nn.log_softmax(logits_q, axis=-1)
    p = jnp.exp(log_p)
    support = p > 0
    # Double where: keep −inf out of both branches so gradients stay finite on masked actions.
    safe_log_p = jnp.where(support, log_p, 0.0)
    safe_log_q = jnp.where(support, log_q, 0.0)
    return jnp.sum(jnp.where(support, p * (safe_log_p - safe_log_q), 0.0), axis=-1)


def categorical_entropy(logits):
    """Entropy of a categorical distribution given by logits, per state.

    Equation:
        H(p) = −Σ_a p(a) log p(a),  log p = log_softmax(logits),  with 0 · log 0 = 0.

    Args:
        logits: [*S, A] logits (−inf for masked actions).

    Returns:
        [*S] entropies in nats, 0 ≤ H ≤ log(#unmasked actions).

    Gradients:
        Through ``logits`` (zero on masked actions).

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> round(float(pgkit.categorical_entropy(jnp.array([0.0, 0.0, -jnp.inf]))), 4)  # log 2
        0.6931

    Reference:
        Shannon (1948), "A Mathematical Theory of Communication", Bell System Technical Journal
        27, https://doi.org/10.1002/j.1538-7305.1948.tb01338.x
    """
    logits = _checks.as_float(logits)
    _checks.check_has_action_axis("categorical_entropy", "logits", logits)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(log_p)
    support = p > 0
    safe_log_p = jnp.where(support, log_p, 0.0)
    return -jnp.sum(jnp.where(support, p * safe_log_p, 0.0), axis=-1)


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q):
    """KL(p ‖ q) between diagonal Gaussians, per state (summed over the action axis).

    Equation:
        KL(p ‖ q) = Σ_a [ log σ_q − log σ_p + (σ_p² + (μ_p − μ_q)²) / (2 σ_q²) − ½ ].

    Args:
        mean_p: [*S, A] means μ_p.
        log_std_p: log σ_p, broadcastable with ``mean_p`` (e.g. [*S, A] or a state-independent
            [A]).
        mean_q: [*S, A] means μ_q, broadcastable likewise.
        log_std_q: [*S, A] or [A] log σ_q, broadcastable likewise.

    Returns:
        [*S] KL(p ‖ q) ≥ 0, where [*S, A] is the broadcast shape of the four inputs.

    Gradients:
        Through all four inputs.

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> kl = pgkit.gaussian_kl(jnp.zeros(2), jnp.zeros(2), jnp.ones(2), jnp.zeros(2))
        >>> float(kl)  # two dimensions, each (0 - 1)^2 / 2
        1.0

    Reference:
        Kullback, Leibler (1951), "On Information and Sufficiency", Annals of Mathematical
        Statistics 22(1), https://doi.org/10.1214/aoms/1177729694; Schulman, Levine, Moritz,
        Jordan, Abbeel (2015), "Trust Region Policy Optimization", ICML,
        https://arxiv.org/abs/1502.05477
    """
    mean_p, log_std_p = _checks.as_float(mean_p), _checks.as_float(log_std_p)
    mean_q, log_std_q = _checks.as_float(mean_q), _checks.as_float(log_std_q)
    _checks.check_has_action_axis("gaussian_kl", "mean_p", mean_p)
    shape = _checks.broadcast_shape(
        "gaussian_kl", "mean_p", mean_p, log_std_p=log_std_p, mean_q=mean_q, log_std_q=log_std_q
    )
    variance_ratio = jnp.exp(2.0 * (log_std_p - log_std_q))
    scaled_gap = (mean_p - mean_q) * jnp.exp(-log_std_q)
    per_dim = log_std_q - log_std_p + 0.5 * (variance_ratio + scaled_gap**2) - 0.5
    return jnp.sum(jnp.broadcast_to(per_dim, shape), axis=-1)


def gaussian_entropy(log_std):
    """Differential entropy of a diagonal Gaussian, per state (summed over the action axis).

    Equation:
        H = Σ_a [ log σ_a + ½ (1 + log 2π) ]   (independent of the mean).

    Args:
        log_std: [*S, A] log standard deviations.

    Returns:
        [*S] entropies in nats.

    Gradients:
        Through ``log_std`` (∂H/∂log σ_a = 1).

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> round(float(pgkit.gaussian_entropy(jnp.zeros(2))), 4)  # 1 + log 2π
        2.8379

    Reference:
        Cover, Thomas (2006), "Elements of Information Theory", 2nd ed., Wiley, section 8.1,
        https://doi.org/10.1002/047174882X
    """
    log_std = _checks.as_float(log_std)
    _checks.check_has_action_axis("gaussian_entropy", "log_std", log_std)
    return jnp.sum(log_std + _HALF_LOG_2PI_E, axis=-1)


def kl_k1(log_ratios):
    """Sample KL estimator k1 = −log r: unbiased for KL(q ‖ p), high variance.

    Equation:
        k1 = −log r,  log r = log p(x) − log q(x),  x ∼ q;   E_{x∼q}[k1] = KL(q ‖ p).

    Direction: the samples come from q (usually the old / behaviour policy), p is the other
    distribution (the new policy), so the estimate is of KL(q ‖ p) = KL(sampling ‖ other).
    Individual values can be negative.

    Args:
        log_ratios: [T, *B] (any sample shape) log p(x) − log q(x) for samples x ∼ q.

    Returns:
        [T, *B] per-sample estimates (same shape); average them.

    Gradients:
        Through ``log_ratios`` (not through the sampling distribution).

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> pgkit.kl_k1(jnp.array([0.5, -0.5])).tolist()
        [-0.5, 0.5]

    Reference:
        Schulman (2020), "Approximating KL Divergence", blog post,
        http://joschu.net/blog/kl-approx.html
    """
    return -_checks.as_float(log_ratios)


def kl_k2(log_ratios):
    """Sample KL estimator k2 = ½ (log r)²: biased, low variance, nonnegative.

    Equation:
        k2 = ½ (log r)²,  log r = log p(x) − log q(x),  x ∼ q;
        E_{x∼q}[k2] = KL(q ‖ p) + O(‖p − q‖³).

    Direction: samples from q; it approximates KL(q ‖ p) (to second order also KL(p ‖ q): it is
    an f-divergence with the same curvature), and is accurate only when p and q are close.

    Args:
        log_ratios: [T, *B] (any sample shape) log p(x) − log q(x) for samples x ∼ q.

    Returns:
        [T, *B] per-sample values ≥ 0 (same shape).

    Gradients:
        Through ``log_ratios``.

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> pgkit.kl_k2(jnp.array([0.5, -0.5])).tolist()
        [0.125, 0.125]

    Reference:
        Schulman (2020), "Approximating KL Divergence", blog post,
        http://joschu.net/blog/kl-approx.html
    """
    log_ratios = _checks.as_float(log_ratios)
    return 0.5 * log_ratios**2


def kl_k3(log_ratios):
    """Sample KL estimator k3 = (r − 1) − log r: unbiased for KL(q ‖ p), nonnegative.

    Equation:
        k3 = (r − 1) − log r,  r = p(x)/q(x),  x ∼ q;   E_{x∼q}[k3] = KL(q ‖ p),

    since E_q[r − 1] = 0 (a control variate for k1); k3 ≥ 0 because log r ≤ r − 1. Computed as
    expm1(log r) − log r, and for |log r| < 0.1 (where that subtraction cancels) by its Taylor
    series x²/2 + x³/6 + x⁴/24 + x⁵/120 + x⁶/720 in x = log r, accurate to float precision.

    Direction: samples from q, estimates KL(q ‖ p) (the same direction as :func:`kl_k1`).

    Args:
        log_ratios: [T, *B] (any sample shape) log p(x) − log q(x) for samples x ∼ q.

    Returns:
        [T, *B] per-sample estimates ≥ 0 (same shape); average them.

    Gradients:
        Through ``log_ratios``.

    Example:
        >>> import jax.numpy as jnp
        >>> import pgkit
        >>> [round(x, 4) for x in pgkit.kl_k3(jnp.array([0.5, -0.5, 0.0])).tolist()]
        [0.1487, 0.1065, 0.0]

    Reference:
        Schulman (2020), "Approximating KL Divergence", blog post,
        http://joschu.net/blog/kl-approx.html
    """
    x = _checks.as_float(log_ratios)
    small = jnp.abs(x) < 0.1
    xs = jnp.where(small, x, 0.0)
    series = xs * xs * (1 / 2 + xs * (1 / 6 + xs * (1 / 24 + xs * (1 / 120 + xs / 720))))
    return jnp.where(small, series, jnp.expm1(x) - x)
