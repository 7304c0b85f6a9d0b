"""Equinox networks for policies and critics.

Every module acts on ONE example (an observation vector ``[obs_size]``, an action vector
``[action_size]``); callers batch with ``jax.vmap`` (or ``eqx.filter_vmap``)::

    logits = jax.vmap(policy)(obs)            # obs [E, obs_size] -> logits [E, A]

Initialisation follows the usual PPO recipe (Engstrom et al., 2020; Huang et al., 2022):
orthogonal weights with gain √2 on hidden layers, 0.01 on policy heads and 1.0 on value / Q
heads, zero biases. Activations are named by string (``'tanh'``, ``'relu'``, ``'elu'``,
``'gelu'``, ``'silu'``) and stored as static fields, so modules stay plain pytrees of arrays.

Sampling and log-probabilities go through distrax (``distribution(obs)``); pass raw parameters
(logits, mean, log-std) across jit/vmap boundaries and build distributions inside. Squashed
(tanh) Gaussian actions are sampled by ``pgkit.actions.tanh_gaussian_sample_and_log_prob``
from the ``(mean, log_std)`` that :class:`TanhGaussianPolicy` returns.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from pgkit.baselines import value_loss

__all__ = [
    "Linear",
    "MLP",
    "ConvNetwork",
    "RecurrentNetwork",
    "RecurrentPolicy",
    "CategoricalPolicy",
    "GaussianPolicy",
    "TanhGaussianPolicy",
    "DeterministicPolicy",
    "ValueCritic",
    "QCritic",
    "TwinQCritic",
    "DiscreteTwinQCritic",
    "orthogonal_linear",
    "policy_distribution",
    "greedy_action",
    "policy_for",
    "recurrent_policy_for",
    "torso_for",
    "is_spatial",
    "fit_value",
    "thin_q",
]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
}
"""Activation functions by name (the names accepted by every ``activation=`` argument)."""

HIDDEN_GAIN = math.sqrt(2.0)
POLICY_GAIN = 0.01
VALUE_GAIN = 1.0


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
        )


def _check_size(name: str, value, *, allow_scalar: bool = False) -> None:
    if allow_scalar and value == "scalar":
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        expected = "a positive int or 'scalar'" if allow_scalar else "a positive int"
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def thin_q(a: Array) -> Array:
    """Q of the thin QR a = QR ([n, m], n >= m) with diag(R) > 0, by Gram–Schmidt twice.

    Column k of Q is column k of ``a`` with its components along columns 0..k−1 of Q removed
    twice ("twice is enough": Giraud, Langou, Rozložník, 2005, orthogonal to rounding for a
    numerically full-rank ``a``), then normalised; that makes diag(R) = the norms > 0, the
    unique thin QR, as NumPy's QR with its sign fixed. Plain JAX (one ``fori_loop`` of
    matrix-vector products) instead of ``jnp.linalg.qr``: LAPACK's batched QR runs on XLA's CPU
    thread pool and waits on that same pool, and several of them in one vmapped init (one per
    layer) can take every thread and wait forever (seen with 24 vmapped members on 2 cores). One
    loop of small products also compiles in half the time of Householder reflections.
    """
    n, m = a.shape
    if n < m:
        raise ValueError(f"a must be tall ([n, m] with n >= m), got shape {a.shape}")

    def column(k, q):  # columns k.. of q are still zero, so q @ (qᵀ x) projects on columns < k
        x = jax.lax.dynamic_index_in_dim(a, k, axis=1, keepdims=False)
        for _ in range(2):
            x = x - q @ (q.T @ x)
        norm = jnp.linalg.norm(x)  # 0 only for a zero column (padding, _orthogonal_matrices): left 0
        return jax.lax.dynamic_update_index_in_dim(q, x / jnp.where(norm > 0, norm, 1.0), k, axis=1)

    return jax.lax.fori_loop(0, m, column, jnp.zeros_like(a))


@functools.partial(jax.jit, static_argnums=(1,))
def _orthogonal_matrices(keys: PRNGKeyArray, shapes: tuple[tuple[int, int], ...], gains: Array) -> list[Array]:
    """gains[i]·Q_i, Q_i Haar-distributed of shape ``shapes[i]``, orthonormal along its smaller side.

    Each Gaussian matrix is drawn from ``keys[i]`` in its tall shape [max, min] (Q_i is as
    ``torch.nn.init.orthogonal_`` makes it from that matrix) and zero-padded to the largest;
    one vmapped Gram–Schmidt loop then serves every layer of a network (one compile per set of
    shapes): the thin Q of a zero-padded matrix is its thin Q padded (zero rows stay zero in
    every projection; padding columns come out zero).
    """
    tall = [(max(rows, cols), min(rows, cols)) for rows, cols in shapes]
    n, m = max(t[0] for t in tall), max(t[1] for t in tall)
    gaussians = [jax.random.normal(key, shape, jnp.float32) for key, shape in zip(keys, tall)]
    padded = jnp.stack([jnp.pad(g, ((0, n - g.shape[0]), (0, m - g.shape[1]))) for g in gaussians])
    qs = jax.vmap(thin_q)(padded)
    matrices = []
    for i, ((rows, cols), (long, short)) in enumerate(zip(shapes, tall)):
        q = qs[i, :long, :short]
        matrices.append(gains[i] * (q.T if rows < cols else q))
    return matrices


def _orthogonal_linears(sizes: Sequence[tuple[int, int | str]], gains: Sequence[float], keys: PRNGKeyArray):
    """``orthogonal_linear(in, out, gain=g, key=k)`` for each (in, out), g, k of ``keys``, in one loop."""
    shapes = tuple((1 if out == "scalar" else out, in_size) for in_size, out in sizes)  # torch's [out, in]
    weights = _orthogonal_matrices(keys, shapes, jnp.asarray(gains, jnp.float32))
    return tuple(
        Linear(kernel=w.T, bias=jnp.asarray(np.zeros((w.shape[0],), np.float32)), scalar=out == "scalar")
        for w, (_, out) in zip(weights, sizes)
    )


class Linear(eqx.Module):
    """An affine map y = x·K + b on one example (kernel ``[in, out]``, bias ``[out]``).

    Built by :func:`orthogonal_linear`; with ``out_size='scalar'`` the kernel is ``[in, 1]``, the
    bias ``[1]`` and the output a scalar. The kernel is stored input-major (as Flax's ``Dense``;
    ``kernel.T`` is PyTorch's and Equinox's ``weight``): under ``vmap`` the product of a batch
    ``[B, in]`` with it is ``[B, out]`` as XLA's CPU matrix kernels produce it, with no transpose
    of the result or of the kernel (PPO CartPole at one seed: a chunk of updates runs 1.2x
    faster than with ``[out, in]``; docs/benchmarks.md).
    """

    kernel: Float[Array, "in out"]
    bias: Float[Array, " out"]
    scalar: bool = eqx.field(static=True)

    def __call__(self, x: Float[Array, " in"]) -> Array:
        y = x @ self.kernel + self.bias
        return y[0] if self.scalar else y


def orthogonal_linear(
    in_size: int,
    out_size: int | Literal["scalar"],
    *,
    gain: float,
    key: PRNGKeyArray,
) -> Linear:
    """A :class:`Linear` layer with an orthogonal kernel scaled by ``gain`` and zero bias.

    For a square layer KᵀK = gain²·I; otherwise the rows or the columns (whichever are fewer)
    are orthonormal, times ``gain``: the transpose of what ``torch.nn.init.orthogonal_`` makes
    of a PyTorch ``weight [out, in]`` from the same Gaussian matrix.

    Args:
        in_size: input features (static int).
        out_size: output features (static int) or ``'scalar'`` for a scalar output.
        gain: scale of the orthogonal matrix.
        key: PRNG key.

    Returns:
        A :class:`Linear` whose kernel has shape ``[in_size, out_size]`` (``[in_size, 1]`` for
        ``'scalar'``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> layer = pgkit.nn.orthogonal_linear(8, 8, gain=2.0, key=jax.random.key(0))
        >>> bool(jnp.allclose(layer.kernel.T @ layer.kernel, 4.0 * jnp.eye(8), atol=1e-5))
        True

    Reference:
        Saxe, McClelland, Ganguli, "Exact solutions to the nonlinear dynamics of learning in
        deep linear neural networks", 2014. https://arxiv.org/abs/1312.6120
    """
    (layer,) = _orthogonal_linears([(in_size, out_size)], [gain], key[None])
    return layer


class MLP(eqx.Module):
    """A multilayer perceptron on one example, orthogonally initialised.

    y = σ(…σ(x·K_1 + b_1)…)·K_L + b_L with σ = ``activation`` on every hidden layer and no
    activation on the output layer.

    Args:
        in_size: input size (static int).
        out_size: output size (static int), or ``'scalar'`` for a scalar output (shape ``[]``).
        hidden_sizes: widths of the hidden layers (static; ``()`` gives a linear map).
        activation: name of the hidden activation, a key of :data:`ACTIVATIONS`.
        final_gain: orthogonal gain of the output layer (0.01 for policy heads, 1.0 for value
            heads).
        hidden_gain: orthogonal gain of the hidden layers (default √2).
        key: PRNG key (keyword-only).

    ``__call__(x)``: ``x`` of shape ``[in_size]`` → ``[out_size]`` (or ``[]`` for ``'scalar'``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = pgkit.nn.MLP(4, 2, hidden_sizes=(8, 8), key=jax.random.key(0))
        >>> net(jnp.ones(4)).shape
        (2,)
        >>> jax.vmap(net)(jnp.ones((3, 4))).shape
        (3, 2)
        >>> pgkit.nn.MLP(4, "scalar", hidden_sizes=(8, 8), key=jax.random.key(0))(jnp.ones(4)).shape
        ()
    """

    layers: tuple[Linear, ...]
    activation: str = eqx.field(static=True)
    in_size: int = eqx.field(static=True)
    out_size: int | str = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int | Literal["scalar"],
        *,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        final_gain: float = 1.0,
        hidden_gain: float = HIDDEN_GAIN,
        key: PRNGKeyArray,
    ):
        _check_size("in_size", in_size)
        _check_size("out_size", out_size, allow_scalar=True)
        for width in hidden_sizes:
            _check_size("hidden_sizes entries", width)
        _check_activation(activation)
        sizes = (in_size, *hidden_sizes)
        # layer i as orthogonal_linear(.., key=split(key)[i]), all orthogonalised in one loop
        self.layers = _orthogonal_linears(
            [*zip(sizes[:-1], sizes[1:]), (sizes[-1], out_size)],
            [hidden_gain] * len(hidden_sizes) + [final_gain],
            jax.random.split(key, len(sizes)),
        )
        self.activation = activation
        self.in_size = in_size
        self.out_size = out_size

    def __call__(self, x: Float[Array, " in_size"]) -> Array:
        sigma = ACTIVATIONS[self.activation]
        for layer in self.layers[:-1]:
            x = sigma(layer(x))
        return self.layers[-1](x)


def is_spatial(observation_shape: Sequence[int]) -> bool:
    """Whether an observation of this shape is an image: ``[H, W]`` or ``[H, W, C]`` with H, W > 1.

    Example:
        >>> pgkit.nn.is_spatial((10, 10, 4)), pgkit.nn.is_spatial((4,))
        (True, False)
    """
    shape = tuple(observation_shape)
    return len(shape) in (2, 3) and shape[0] > 1 and shape[1] > 1


def torso_for(observation_shape: Sequence[int], torso: str) -> str:
    """The torso a network gets for observations of ``observation_shape``: ``'mlp'`` or ``'cnn'``.

    ``torso='auto'`` is ``'cnn'`` where :func:`is_spatial` holds (MinAtar's ``[10, 10, C]``) and
    ``'mlp'`` otherwise; ``'mlp'`` is kept; ``'cnn'`` is checked to have a spatial shape.

    Raises:
        ValueError: an unknown ``torso``, or ``'cnn'`` for a flat observation.

    Example:
        >>> pgkit.nn.torso_for((10, 10, 4), "auto"), pgkit.nn.torso_for((4,), "auto")
        ('cnn', 'mlp')
    """
    if torso not in ("mlp", "cnn", "auto"):
        raise ValueError(f"torso must be one of 'mlp', 'cnn', 'auto', got {torso!r}")
    if torso == "auto":
        return "cnn" if is_spatial(observation_shape) else "mlp"
    if torso == "cnn" and not is_spatial(observation_shape):
        raise ValueError(
            f"torso 'cnn' needs an observation of shape [H, W] or [H, W, C], got {tuple(observation_shape)}"
        )
    return torso


class ConvNetwork(eqx.Module):
    """A convolutional network on one flattened image observation, then an MLP head.

    The input x ``[H·W·C]`` (as :class:`pgkit.envs.VecEnv` flattens observations) is reshaped to
    ``[H, W, C]`` (C = 1 for an ``[H, W]`` shape); each layer is z ← σ(conv(z, K_i) + b_i) with
    ``kernel_size`` x ``kernel_size`` kernels, stride 1 and no padding; the result is flattened
    and fed to an :class:`MLP` (``hidden_sizes``, ``final_gain``). Kernels are orthogonal with
    gain √2 as matrices ``[k·k·C_in, C_out]`` (as :func:`orthogonal_linear`), biases zero.
    Each convolution is computed as one matrix product of the image's k·k patches with that
    matrix (im2col): the same sums as ``jax.lax.conv_general_dilated``, and on the CPU PPO's
    update with kernels batched over vmapped seeds runs ten times faster this way
    (``bench/conv_torso.py``; docs/benchmarks.md, "Convolutional torso").

    Args:
        observation_shape: ``(H, W)`` or ``(H, W, C)`` (static).
        out_size: output size (static int), or ``'scalar'``.
        channels: output channels of the convolutional layers (static), default ``(16,)``.
        kernel_size: static int, default 3.
        hidden_sizes: hidden widths of the MLP after the convolutions (static), default ``(128,)``.
        activation: hidden activation name (convolutions and MLP).
        final_gain: orthogonal gain of the output layer.
        key: PRNG key (keyword-only).

    ``__call__(x)``: ``x [H·W·C]`` → ``[out_size]`` (or ``[]`` for ``'scalar'``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = pgkit.nn.ConvNetwork((10, 10, 4), 3, key=jax.random.key(0))
        >>> net(jnp.ones(400)).shape, jax.vmap(net)(jnp.ones((2, 400))).shape
        ((3,), (2, 3))
    """

    kernels: tuple[Array, ...]
    biases: tuple[Array, ...]
    head: MLP
    image_shape: tuple[int, int, int] = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        observation_shape: Sequence[int],
        out_size: int | Literal["scalar"],
        *,
        channels: Sequence[int] = (16,),
        kernel_size: int = 3,
        hidden_sizes: Sequence[int] = (128,),
        activation: str = "relu",
        final_gain: float = 1.0,
        key: PRNGKeyArray,
    ):
        shape = tuple(int(s) for s in observation_shape)
        if not is_spatial(shape):
            raise ValueError(f"observation_shape must be (H, W) or (H, W, C) with H, W > 1, got {shape}")
        height, width, depth = shape if len(shape) == 3 else (*shape, 1)
        _check_size("kernel_size", kernel_size)
        for c in channels:
            _check_size("channels entries", c)
        _check_activation(activation)
        if height - len(channels) * (kernel_size - 1) < 1 or width - len(channels) * (kernel_size - 1) < 1:
            raise ValueError(
                f"channels: {len(channels)} convolutions of size {kernel_size} do not fit an image of {height}x{width}"
            )
        conv_key, head_key = jax.random.split(key)
        ins = (depth, *channels[:-1])
        shapes = tuple((c_out, kernel_size * kernel_size * c_in) for c_in, c_out in zip(ins, channels))  # [out, in]
        keys = jax.random.split(conv_key, max(len(shapes), 1))
        matrices = _orthogonal_matrices(keys, shapes, jnp.full((len(shapes),), HIDDEN_GAIN, jnp.float32)) if shapes else []
        self.kernels = tuple(
            jnp.reshape(m.T, (kernel_size, kernel_size, c_in, c_out)) for m, c_in, c_out in zip(matrices, ins, channels)
        )
        self.biases = tuple(jnp.zeros((c,), jnp.float32) for c in channels)
        shrink = len(channels) * (kernel_size - 1)
        flat = (height - shrink) * (width - shrink) * (channels[-1] if channels else depth)
        self.head = MLP(flat, out_size, hidden_sizes=hidden_sizes, activation=activation,
                        final_gain=final_gain, key=head_key)
        self.image_shape = (height, width, depth)
        self.activation = activation

    def __call__(self, x: Float[Array, " in_size"]) -> Array:
        sigma = ACTIVATIONS[self.activation]
        z = jnp.reshape(x, self.image_shape)
        for kernel, bias in zip(self.kernels, self.biases):
            k = kernel.shape[0]
            height, width = z.shape[0] - k + 1, z.shape[1] - k + 1
            patches = jnp.concatenate([z[i:i + height, j:j + width] for i in range(k) for j in range(k)], axis=-1)
            z = sigma(patches @ jnp.reshape(kernel, (-1, kernel.shape[-1])) + bias)
        return self.head(jnp.reshape(z, (-1,)))


def _torso(in_size, out_size, *, hidden_sizes, activation, final_gain, observation_shape, key):
    """An :class:`MLP` on ``in_size`` inputs, or a :class:`ConvNetwork` where ``observation_shape`` is given."""
    if observation_shape is None:
        return MLP(in_size, out_size, hidden_sizes=hidden_sizes, activation=activation, final_gain=final_gain, key=key)
    return ConvNetwork(observation_shape, out_size, hidden_sizes=hidden_sizes, activation=activation,
                       final_gain=final_gain, key=key)


CELLS = ("gru", "lstm")
"""Recurrent cells :class:`RecurrentNetwork` accepts (``eqx.nn.GRUCell``, ``eqx.nn.LSTMCell``)."""


class RecurrentNetwork(eqx.Module):
    """A recurrent network stepped one example at a time: encoder, GRU or LSTM cell, MLP head.

    One step: e = σ(encoder(x)), h' = cell(e, h), y = head(h') (for an LSTM the state is the
    pair (h, c) and the head reads h). The encoder is one linear layer of width
    ``hidden_sizes[0]`` (or a :class:`ConvNetwork` ending in that width where
    ``observation_shape`` is given); the cell has ``cell_size`` units (equinox's
    ``GRUCell``/``LSTMCell`` and their initialisation); the head is an :class:`MLP` with hidden
    widths ``hidden_sizes[1:]`` and output gain ``final_gain``. The state of a fresh episode is
    :meth:`initial_state` (zeros); rollouts reset to it after every done
    (:mod:`pgkit.recurrent`).

    Args:
        in_size: input size (static int).
        out_size: output size (static int) or ``'scalar'``.
        cell: ``'gru'`` or ``'lstm'`` (static).
        cell_size: units of the cell (static int), default 64.
        hidden_sizes: encoder width then the head's hidden widths (static), default ``(64, 64)``.
        activation: hidden activation name.
        final_gain: orthogonal gain of the output layer.
        observation_shape: ``(H, W[, C])`` for a convolutional encoder, or ``None`` (static).
        key: PRNG key (keyword-only).

    ``__call__(state, x)``: state (``[cell_size]``, or a pair of them for an LSTM) and
    ``x [in_size]`` → ``(state', y [out_size])``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> net = pgkit.nn.RecurrentNetwork(3, 2, cell="gru", cell_size=8, hidden_sizes=(8,), key=jax.random.key(0))
        >>> state, y = net(net.initial_state(), jnp.ones(3))
        >>> state.shape, y.shape
        ((8,), (2,))
    """

    encoder: Any
    cell: Any
    head: MLP
    cell_type: str = eqx.field(static=True)
    cell_size: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int | Literal["scalar"],
        *,
        cell: str = "gru",
        cell_size: int = 64,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        final_gain: float = 1.0,
        observation_shape: Sequence[int] | None = None,
        key: PRNGKeyArray,
    ):
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        _check_size("in_size", in_size)
        _check_size("cell_size", cell_size)
        if not hidden_sizes:
            raise ValueError("hidden_sizes must hold at least the encoder's width, got ()")
        for width in hidden_sizes:
            _check_size("hidden_sizes entries", width)
        _check_activation(activation)
        encoder_key, cell_key, head_key = jax.random.split(key, 3)
        width, *head_sizes = hidden_sizes
        self.encoder = _torso(in_size, width, hidden_sizes=(), activation=activation, final_gain=HIDDEN_GAIN,
                              observation_shape=observation_shape, key=encoder_key)
        make_cell = eqx.nn.GRUCell if cell == "gru" else eqx.nn.LSTMCell
        self.cell = make_cell(width, cell_size, key=cell_key)
        self.head = MLP(cell_size, out_size, hidden_sizes=tuple(head_sizes), activation=activation,
                        final_gain=final_gain, key=head_key)
        self.cell_type = cell
        self.cell_size = cell_size
        self.activation = activation

    def initial_state(self):
        """The state of a fresh episode: zeros ``[cell_size]`` (GRU) or a pair of them (LSTM: h, c)."""
        zeros = jnp.zeros((self.cell_size,), jnp.float32)
        return zeros if self.cell_type == "gru" else (zeros, zeros)

    def __call__(self, state, x: Float[Array, " in_size"]):
        features = ACTIVATIONS[self.activation](self.encoder(x))
        state = self.cell(features, state)
        return state, self.head(state if self.cell_type == "gru" else state[0])


class RecurrentPolicy(eqx.Module):
    """A stochastic policy π(a_t | o_0..o_t) with memory: a :class:`RecurrentNetwork` and a head.

    Discrete actions: logits ``[A]`` (a categorical policy, head gain 0.01); continuous actions:
    the mean ``[A]`` (gain 0.01) and a state-independent ``log_std`` ``[A]``, as
    :class:`GaussianPolicy`. Built by :func:`recurrent_policy_for`.

    ``__call__(state, obs)`` → ``(state', logits)`` or ``(state', (mean, log_std))``; the
    outputs are what :func:`policy_distribution` takes (vmapped over a batch).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import pgkit.envs
        >>> env = pgkit.envs.make("CartPole-v1[0,2]", num_envs=1)
        >>> policy = pgkit.nn.recurrent_policy_for(env, cell="lstm", cell_size=8, hidden_sizes=(8,), key=jax.random.key(0))
        >>> (h, c), logits = policy(policy.initial_state(), jnp.ones(2))
        >>> h.shape, logits.shape
        ((8,), (2,))
    """

    net: RecurrentNetwork
    log_std: Any  # [A] for continuous actions, None for discrete

    def initial_state(self):
        """The state of a fresh episode (:meth:`RecurrentNetwork.initial_state`)."""
        return self.net.initial_state()

    def __call__(self, state, obs: Float[Array, " obs_size"]):
        state, out = self.net(state, obs)
        if self.log_std is None:
            return state, out
        return state, (out, jnp.broadcast_to(self.log_std, out.shape))


def recurrent_policy_for(env, *, cell: str = "gru", cell_size: int = 64, hidden_sizes: Sequence[int] = (64, 64),
                         activation: str = "tanh", log_std_init=0.0, torso: str = "mlp", key: PRNGKeyArray):
    """The :class:`RecurrentPolicy` that fits ``env``'s action space (as :func:`policy_for` for memoryless policies).

    Logits over ``env.num_actions`` (discrete) or a Gaussian mean over ``env.action_size`` with
    ``log_std`` = ``log_std_init`` (continuous), from a :class:`RecurrentNetwork` on
    ``env.observation_size`` inputs with a convolutional encoder where :func:`torso_for` gives
    ``'cnn'`` for ``env.observation_shape``.

    Example:
        >>> import jax
        >>> import pgkit.envs
        >>> env = pgkit.envs.make("Pendulum-v1", num_envs=1)
        >>> policy = pgkit.nn.recurrent_policy_for(env, cell_size=8, hidden_sizes=(8,), key=jax.random.key(0))
        >>> policy.log_std.shape
        (1,)
    """
    spatial = torso_for(env.observation_shape, torso) == "cnn"
    outputs = env.num_actions if env.discrete else env.action_size
    net = RecurrentNetwork(env.observation_size, outputs, cell=cell, cell_size=cell_size, hidden_sizes=hidden_sizes,
                           activation=activation, final_gain=POLICY_GAIN,
                           observation_shape=env.observation_shape if spatial else None, key=key)
    log_std = None if env.discrete else jnp.full((env.action_size,), log_std_init, jnp.float32)
    return RecurrentPolicy(net, log_std)


class CategoricalPolicy(eqx.Module):
    """A categorical policy π(a|s) = softmax(logits(s))_a for discrete actions.

    Args:
        obs_size: observation size (static int).
        num_actions: number of actions A (static int).
        hidden_sizes: hidden widths (static), default ``(64, 64)``.
        activation: hidden activation name, default ``'tanh'``.
        observation_shape: ``(H, W[, C])`` for a :class:`ConvNetwork` torso instead of the MLP
            (static), or ``None``.
        key: PRNG key (keyword-only).

    ``__call__(obs)``: ``obs [obs_size]`` → logits ``[A]``.
    ``distribution(obs)``: a ``distrax.Categorical`` over ``A`` actions.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> policy = pgkit.nn.CategoricalPolicy(4, 2, hidden_sizes=(8, 8), key=jax.random.key(0))
        >>> policy(jnp.ones(4)).shape
        (2,)
        >>> policy.distribution(jnp.ones(4)).sample(seed=jax.random.key(1)).shape
        ()
    """

    net: MLP | ConvNetwork
    num_actions: int = eqx.field(static=True)

    def __init__(
        self,
        obs_size: int,
        num_actions: int,
        *,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        observation_shape: Sequence[int] | None = None,
        key: PRNGKeyArray,
    ):
        _check_size("num_actions", num_actions)
        self.net = _torso(obs_size, num_actions, hidden_sizes=hidden_sizes, activation=activation,
                          final_gain=POLICY_GAIN, observation_shape=observation_shape, key=key)
        self.num_actions = num_actions

    def __call__(self, obs: Float[Array, " obs_size"]) -> Float[Array, " A"]:
        return self.net(obs)

    def distribution(self, obs: Float[Array, " obs_size"]) -> distrax.Categorical:
        """``distrax.Categorical(logits=self(obs))``."""
        return distrax.Categorical(logits=self(obs))


class GaussianPolicy(eqx.Module):
    """A diagonal Gaussian policy N(μ(s), diag(exp(2·log_std))) with state-independent log-std.

    The mean is an MLP (output gain 0.01); ``log_std`` is a free parameter vector of shape
    ``[action_size]`` initialised to ``log_std_init``.

    Args:
        obs_size: observation size (static int).
        action_size: action dimension (static int).
        hidden_sizes: hidden widths (static), default ``(64, 64)``.
        activation: hidden activation name, default ``'tanh'``.
        log_std_init: initial value of every log-std entry.
        observation_shape: ``(H, W[, C])`` for a :class:`ConvNetwork` torso (static), or ``None``.
        key: PRNG key (keyword-only).

    ``__call__(obs)``: ``obs [obs_size]`` → ``(mean [action_size], log_std [action_size])``.
    ``distribution(obs)``: a ``distrax.MultivariateNormalDiag``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> policy = pgkit.nn.GaussianPolicy(4, 2, hidden_sizes=(8, 8), key=jax.random.key(0))
        >>> mean, log_std = policy(jnp.ones(4))
        >>> mean.shape, log_std.tolist()
        ((2,), [0.0, 0.0])
    """

    net: MLP | ConvNetwork
    log_std: Float[Array, " action_size"]
    action_size: int = eqx.field(static=True)

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        *,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
        observation_shape: Sequence[int] | None = None,
        key: PRNGKeyArray,
    ):
        _check_size("action_size", action_size)
        self.net = _torso(obs_size, action_size, hidden_sizes=hidden_sizes, activation=activation,
                          final_gain=POLICY_GAIN, observation_shape=observation_shape, key=key)
        self.log_std = jnp.full((action_size,), log_std_init, dtype=jnp.float32)
        self.action_size = action_size

    def __call__(self, obs: Float[Array, " obs_size"]):
        mean = self.net(obs)
        return mean, jnp.broadcast_to(self.log_std, mean.shape)

    def distribution(self, obs: Float[Array, " obs_size"]) -> distrax.MultivariateNormalDiag:
        """``distrax.MultivariateNormalDiag(mean, exp(log_std))``."""
        mean, log_std = self(obs)
        return distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))


class TanhGaussianPolicy(eqx.Module):
    """The pre-squash Gaussian of a tanh-Gaussian (SAC) policy, with state-dependent log-std.

    One MLP outputs ``2·action_size`` numbers (μ, u); the log-std is bounded smoothly,
    log σ = log_std_min + ½(log_std_max − log_std_min)(tanh(u) + 1) ∈ [log_std_min, log_std_max].
    Actions a = tanh(μ + σ·ε) (rescaled to the bounds) and their log-probabilities come from
    ``pgkit.actions.tanh_gaussian_sample_and_log_prob(mean, log_std, key=...)``.

    Args:
        obs_size: observation size (static int).
        action_size: action dimension (static int).
        hidden_sizes: hidden widths (static), default ``(256, 256)``.
        activation: hidden activation name, default ``'relu'``.
        log_std_min: lower bound of log σ (static float), default −5.
        log_std_max: upper bound of log σ (static float), default 2.
        key: PRNG key (keyword-only).

    ``__call__(obs)``: ``obs [obs_size]`` → ``(mean [action_size], log_std [action_size])``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> policy = pgkit.nn.TanhGaussianPolicy(4, 2, hidden_sizes=(8, 8), key=jax.random.key(0))
        >>> mean, log_std = policy(jnp.ones(4))
        >>> mean.shape, bool(jnp.all((log_std >= -5.0) & (log_std <= 2.0)))
        ((2,), True)
    """

    net: MLP
    action_size: int = eqx.field(static=True)
    log_std_min: float = eqx.field(static=True)
    log_std_max: float = eqx.field(static=True)

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "relu",
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
        key: PRNGKeyArray,
    ):
        _check_size("action_size", action_size)
        if not log_std_min < log_std_max:
            raise ValueError(
                f"log_std_min must be < log_std_max, got {log_std_min} and {log_std_max}"
            )
        self.net = MLP(
            obs_size,
            2 * action_size,
            hidden_sizes=hidden_sizes,
            activation=activation,
            final_gain=POLICY_GAIN,
            key=key,
        )
        self.action_size = action_size
        self.log_std_min = float(log_std_min)
        self.log_std_max = float(log_std_max)

    def __call__(self, obs: Float[Array, " obs_size"]):
        out = self.net(obs)
        mean, raw = out[: self.action_size], out[self.action_size :]
        half_range = 0.5 * (self.log_std_max - self.log_std_min)
        log_std = self.log_std_min + half_range * (jnp.tanh(raw) + 1.0)
        return mean, log_std


def policy_distribution(outputs, *, discrete: bool):
    """The distrax distribution of a batch of raw policy outputs: logits, or (mean, log-std).

    π(·|s) = Categorical(logits) for ``discrete``, else π(·|s) = N(mean, diag(exp(2·log_std))):
    what :class:`CategoricalPolicy` and :class:`GaussianPolicy` return, vmapped over states,
    turned into one distribution with a batch shape (a distrax distribution built inside
    ``vmap`` loses its batch shape, so build it from the stacked outputs).

    Args:
      outputs: ``[N, A]`` logits, or a ``(mean [N, A], log_std [N, A])`` pair.
      discrete: static bool, which of the two.

    Returns:
      ``distrax.Categorical`` with batch shape ``[N]``, or ``distrax.MultivariateNormalDiag``
      with batch shape ``[N]`` and event shape ``[A]``.

    Gradients:
      Through the outputs (its ``log_prob``, ``entropy`` and ``kl_divergence`` are
      differentiable in them).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from pgkit import nn
      >>> policy = nn.CategoricalPolicy(4, 2, key=jax.random.key(0))
      >>> dist = nn.policy_distribution(jax.vmap(policy)(jnp.zeros((3, 4))), discrete=True)
      >>> dist.batch_shape
      (3,)

    Reference:
      Sutton, McAllester, Singh, Mansour. Policy gradient methods for reinforcement learning
      with function approximation. NIPS 2000 (a parameterised stochastic policy π(a|s, θ)).
    """
    if discrete:
        return distrax.Categorical(logits=outputs)
    mean, log_std = outputs
    return distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))


def greedy_action(outputs, *, discrete: bool):
    """The greedy action of a batch of raw policy outputs: the argmax, or the clipped mean.

    a = argmax_i logits_i for ``discrete``, else a = clip(mean, −1, 1) (actions live in [−1, 1];
    the environment wrapper rescales them to the Box): the evaluation policy of the recipes whose
    policies are :class:`CategoricalPolicy` or :class:`GaussianPolicy`.

    Args:
      outputs: ``[N, A]`` logits, or a ``(mean [N, A], log_std [N, A])`` pair.
      discrete: static bool, which of the two.

    Returns:
      ``[N]`` int32 actions, or ``[N, A]`` actions in [−1, 1].

    Gradients:
      None for the argmax; the clipped mean passes gradients where it is inside (−1, 1).

    Example:
      >>> import jax.numpy as jnp
      >>> from pgkit import nn
      >>> nn.greedy_action(jnp.array([[0.1, 2.0], [3.0, -1.0]]), discrete=True).tolist()
      [1, 0]

    Reference:
      Sutton, Barto. Reinforcement Learning: An Introduction, 2nd ed., 2018, section 2.2 (the
      greedy action).
    """
    if discrete:
        return jnp.argmax(outputs, axis=-1)
    return jnp.clip(outputs[0], -1.0, 1.0)


class DeterministicPolicy(eqx.Module):
    """A deterministic policy μ(s) = tanh(MLP(s)) ∈ [−1, 1]^action_size (DDPG / TD3 actor).

    Args:
        obs_size: observation size (static int).
        action_size: action dimension (static int).
        hidden_sizes: hidden widths (static), default ``(256, 256)``.
        activation: hidden activation name, default ``'relu'``.
        key: PRNG key (keyword-only).

    ``__call__(obs)``: ``obs [obs_size]`` → action ``[action_size]`` in [−1, 1] (the
    environment wrapper rescales to the Box bounds).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> actor = pgkit.nn.DeterministicPolicy(4, 2, hidden_sizes=(8, 8), key=jax.random.key(0))
        >>> action = actor(100.0 * jnp.ones(4))
        >>> action.shape, bool(jnp.all(jnp.abs(action) <= 1.0))
        ((2,), True)
    """

    net: MLP
    action_size: int = eqx.field(static=True)

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "relu",
        key: PRNGKeyArray,
    ):
        _check_size("action_size", action_size)
        self.net = MLP(
            obs_size,
            action_size,
            hidden_sizes=hidden_sizes,
            activation=activation,
            final_gain=POLICY_GAIN,
            key=key,
        )
        self.action_size = action_size

    def __call__(self, obs: Float[Array, " obs_size"]) -> Float[Array, " action_size"]:
        return jnp.tanh(self.net(obs))


class ValueCritic(eqx.Module):
    """A state-value critic V(s): an MLP with a scalar head (gain 1.0).

    Args:
        obs_size: observation size (static int).
        hidden_sizes: hidden widths (static), default ``(64, 64)``.
        activation: hidden activation name, default ``'tanh'``.
        observation_shape: ``(H, W[, C])`` for a :class:`ConvNetwork` torso (static), or ``None``.
        key: PRNG key (keyword-only).

    ``__call__(obs)``: ``obs [obs_size]`` → scalar ``[]``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> critic = pgkit.nn.ValueCritic(4, hidden_sizes=(8, 8), key=jax.random.key(0))
        >>> critic(jnp.ones(4)).shape, jax.vmap(critic)(jnp.ones((3, 4))).shape
        ((), (3,))
    """

    net: MLP | ConvNetwork

    def __init__(
        self,
        obs_size: int,
        *,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        observation_shape: Sequence[int] | None = None,
        key: PRNGKeyArray,
    ):
        self.net = _torso(obs_size, "scalar", hidden_sizes=hidden_sizes, activation=activation,
                          final_gain=VALUE_GAIN, observation_shape=observation_shape, key=key)

    def __call__(self, obs: Float[Array, " obs_size"]) -> Float[Array, ""]:
        return self.net(obs)


class QCritic(eqx.Module):
    """An action-value critic Q(s, a) = MLP([s, a]) with a scalar head (gain 1.0).

    Args:
        obs_size: observation size (static int).
        action_size: action dimension (static int).
        hidden_sizes: hidden widths (static), default ``(256, 256)``.
        activation: hidden activation name, default ``'relu'``.
        key: PRNG key (keyword-only).

    ``__call__(obs, action)``: ``obs [obs_size]``, ``action [action_size]`` → scalar ``[]``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> q = pgkit.nn.QCritic(4, 2, hidden_sizes=(8, 8), key=jax.random.key(0))
        >>> q(jnp.ones(4), jnp.zeros(2)).shape
        ()
    """

    net: MLP
    obs_size: int = eqx.field(static=True)
    action_size: int = eqx.field(static=True)

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "relu",
        key: PRNGKeyArray,
    ):
        _check_size("obs_size", obs_size)
        _check_size("action_size", action_size)
        self.net = MLP(
            obs_size + action_size,
            "scalar",
            hidden_sizes=hidden_sizes,
            activation=activation,
            final_gain=VALUE_GAIN,
            key=key,
        )
        self.obs_size = obs_size
        self.action_size = action_size

    def __call__(
        self, obs: Float[Array, " obs_size"], action: Float[Array, " action_size"]
    ) -> Float[Array, ""]:
        return self.net(jnp.concatenate([obs, action], axis=-1))


def _stack(modules):
    """Stack identically structured modules into one whose arrays gain a leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *modules)


class TwinQCritic(eqx.Module):
    """Two independent Q critics (clipped double-Q, TD3 / SAC), stored as one stacked pair.

    ``critics`` is a :class:`QCritic` whose arrays carry a leading axis of size 2 (evaluated
    with ``eqx.filter_vmap``), so both critics run in one batched matmul; their
    parameters are initialised from different keys and share nothing.

    Args:
        obs_size: observation size (static int).
        action_size: action dimension (static int).
        hidden_sizes: hidden widths (static), default ``(256, 256)``.
        activation: hidden activation name, default ``'relu'``.
        key: PRNG key (keyword-only).

    ``__call__(obs, action)`` → ``(q1 [], q2 [])``; ``q1(obs, action)`` → the first only.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> twin = pgkit.nn.TwinQCritic(4, 2, hidden_sizes=(8, 8), key=jax.random.key(0))
        >>> q1, q2 = twin(jnp.ones(4), jnp.zeros(2))
        >>> q1.shape, q2.shape, bool(q1 != q2)
        ((), (), True)
    """

    critics: QCritic

    def __init__(
        self,
        obs_size: int,
        action_size: int,
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "relu",
        key: PRNGKeyArray,
    ):
        def make(k):
            return QCritic(
                obs_size, action_size, hidden_sizes=hidden_sizes, activation=activation, key=k
            )

        self.critics = _stack(make(k) for k in jax.random.split(key, 2))

    def __call__(self, obs: Float[Array, " obs_size"], action: Float[Array, " action_size"]):
        q = eqx.filter_vmap(lambda critic: critic(obs, action))(self.critics)
        return q[0], q[1]

    def q1(
        self, obs: Float[Array, " obs_size"], action: Float[Array, " action_size"]
    ) -> Float[Array, ""]:
        """Q₁(s, a) alone (the TD3 actor loss uses only the first critic)."""
        first = jax.tree.map(lambda x: x[0], self.critics)
        return first(obs, action)


class DiscreteTwinQCritic(eqx.Module):
    """Two independent discrete-action Q critics: s ↦ (Q₁(s, ·), Q₂(s, ·)) ∈ ℝ^A × ℝ^A.

    Stacked like :class:`TwinQCritic`: ``critics`` is an :class:`MLP` whose arrays carry a
    leading axis of size 2.

    Args:
        obs_size: observation size (static int).
        num_actions: number of actions A (static int).
        hidden_sizes: hidden widths (static), default ``(256, 256)``.
        activation: hidden activation name, default ``'relu'``.
        key: PRNG key (keyword-only).

    ``__call__(obs)``: ``obs [obs_size]`` → ``(q1 [A], q2 [A])``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> twin = pgkit.nn.DiscreteTwinQCritic(4, 2, hidden_sizes=(8, 8), key=jax.random.key(0))
        >>> q1, q2 = twin(jnp.ones(4))
        >>> q1.shape, q2.shape
        ((2,), (2,))
    """

    critics: MLP
    num_actions: int = eqx.field(static=True)

    def __init__(
        self,
        obs_size: int,
        num_actions: int,
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "relu",
        key: PRNGKeyArray,
    ):
        _check_size("num_actions", num_actions)

        def make(k):
            return MLP(
                obs_size,
                num_actions,
                hidden_sizes=hidden_sizes,
                activation=activation,
                final_gain=VALUE_GAIN,
                key=k,
            )

        self.critics = _stack(make(k) for k in jax.random.split(key, 2))
        self.num_actions = num_actions

    def __call__(self, obs: Float[Array, " obs_size"]):
        q = eqx.filter_vmap(lambda critic: critic(obs))(self.critics)
        return q[0], q[1]


def policy_for(env, *, hidden_sizes: Sequence[int] = (64, 64), activation: str = "tanh", log_std_init=0.0,
               torso: str = "mlp", key: PRNGKeyArray):
    """The stochastic policy network that fits ``env``'s action space.

    A :class:`CategoricalPolicy` over ``env.num_actions`` actions for a discrete environment, a
    :class:`GaussianPolicy` over ``env.action_size`` dimensions (state-independent log-std,
    starting at ``log_std_init``) for a continuous one; either acts on ``env.observation_size``
    observations. ``env`` is a :class:`pgkit.envs.VecEnv` (or anything with its ``discrete``,
    ``observation_shape``, ``observation_size``, ``num_actions`` and ``action_size``). ``torso``:
    ``'mlp'``, ``'cnn'`` (a :class:`ConvNetwork` on the image) or ``'auto'`` (:func:`torso_for`).

    Example:
        >>> import jax
        >>> import pgkit.envs
        >>> env = pgkit.envs.make("Pendulum-v1", num_envs=1)
        >>> type(pgkit.nn.policy_for(env, hidden_sizes=(8,), key=jax.random.key(0))).__name__
        'GaussianPolicy'
    """
    net = dict(hidden_sizes=hidden_sizes, activation=activation, key=key)
    if torso_for(env.observation_shape, torso) == "cnn":  # else the MLP, built exactly as before torsos existed
        net["observation_shape"] = env.observation_shape
    if env.discrete:
        return CategoricalPolicy(env.observation_size, env.num_actions, **net)
    return GaussianPolicy(env.observation_size, env.action_size, log_std_init=log_std_init, **net)


def fit_value(critic, opt_state, optimizer, obs, targets, key: PRNGKeyArray, *, epochs: int, minibatches: int):
    """Regress a value network on targets: ``epochs`` shuffled passes of ``minibatches`` optimiser steps.

    Each step minimises mean ½(V(s_i) − target_i)² (:func:`pgkit.value_loss`) over one minibatch
    of N / ``minibatches`` samples; each epoch draws a new permutation of the N samples. The
    critic-fitting phase of NPG and TRPO (and of any algorithm that fits V apart from the policy).

    Args:
        critic: a network ``critic(obs [obs_size]) -> []`` (an equinox module).
        opt_state: ``optimizer.init(eqx.filter(critic, eqx.is_array))``, carried between calls.
        optimizer: an optax ``GradientTransformation`` (e.g. ``optax.adam(hp.critic_lr)``, built
            from a traced learning rate).
        obs: ``[N, obs_size]`` observations; targets: ``[N]`` regression targets (no gradient).
        key: PRNG key of the permutations.
        epochs, minibatches: static ints; ``minibatches`` must divide N.

    Returns:
        ``(critic, opt_state, mean_loss)``: the fitted network, the optimiser state and the mean
        minibatch loss over all steps.

    Example:
        >>> import jax, jax.numpy as jnp, equinox as eqx, optax
        >>> critic = pgkit.nn.ValueCritic(3, hidden_sizes=(8,), key=jax.random.key(0))
        >>> optimizer = optax.adam(1e-2)
        >>> opt_state = optimizer.init(eqx.filter(critic, eqx.is_array))
        >>> obs, targets = jnp.ones((8, 3)), jnp.full((8,), 2.0)
        >>> critic, opt_state, loss = pgkit.nn.fit_value(critic, opt_state, optimizer, obs, targets,
        ...                                             jax.random.key(1), epochs=2, minibatches=4)
        >>> loss.shape
        ()
    """
    count = obs.shape[0]
    if not isinstance(minibatches, int) or minibatches < 1 or count % minibatches:
        raise ValueError(f"minibatches must be a positive int dividing N={count}, got {minibatches!r}")
    if tuple(targets.shape) != (count,):
        raise ValueError(f"targets must have shape [N]=({count},), got {targets.shape}")
    params, static = eqx.partition(critic, eqx.is_array)
    minibatch_size = count // minibatches

    def loss_fn(p, obs, targets):
        values = jax.vmap(eqx.combine(p, static))(obs)
        return jnp.mean(value_loss(values, targets))

    def minibatch_step(carry, indices):
        p, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(p, obs[indices], targets[indices])
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (eqx.apply_updates(p, updates), opt_state), loss

    def epoch(carry, key):
        perm = jax.random.permutation(key, count).reshape(minibatches, minibatch_size)
        return jax.lax.scan(minibatch_step, carry, perm)

    (params, opt_state), losses = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, epochs))
    return eqx.combine(params, static), opt_state, jnp.mean(losses)
